"""The rollout helper never loses or corrupts the stack file.

Atomic replacement, an advisory lock for the whole read-edit-write, a content check right before the
replace, one-line errors for files it cannot edit, byte-for-byte style preservation, and the
promote-after-rollback rule. The program runs are faked where their result is irrelevant (they take
seconds); tests/test_rollout_helper.py keeps the end-to-end runs through the real program.
"""

from __future__ import annotations

import difflib
import errno
import fcntl
import os
import resource
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from preflight import rollout
from preflight.engine import ProgramRun
from preflight.rollout import RolloutEditError, edit
from preflight.stackconfig import StackConfig, load_stack_config
from tests.conftest import ROOT, project_copy

PROD = (ROOT / "Pulumi.prod.yaml").read_bytes().decode("utf-8")
CANARY_LINE = "canary: {version: 1.4.2, weight: 10}"
STABLE_LINE = "stable: {version: 1.4.1}"
WEIGHT_50 = ["set-weight", "--stack", "prod", "--service", "web", "--weight", "50"]


# -- helpers -----------------------------------------------------------------------------------------


def make_project(tmp_path: Path, content: str | bytes = PROD, stack: str = "prod") -> Path:
    """A project sharing the real code, whose stack file holds exactly `content` (bytes as given)."""
    project = project_copy(tmp_path / "project", stack, {})
    raw = content if isinstance(content, bytes) else content.encode("utf-8")
    (project / f"Pulumi.{stack}.yaml").write_bytes(raw)
    return project


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def run(project: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = rollout.main(argv, project)
    out = capsys.readouterr().out
    assert "Traceback" not in out
    return code, out


def one_error_line(out: str) -> str:
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith("error: ")
    return lines[0]


def fake_run(project_dir: Path, config: StackConfig, preview: bool = True) -> ProgramRun:
    return ProgramRun(stack=config.stack, project=config.project, resources=[], outputs={}, secret_outputs=[])


@pytest.fixture(autouse=True)
def _no_stray_files(tmp_path: Path) -> Iterator[None]:
    """Whatever a test does, no temporary file and no lock file stays next to the stack file."""
    yield
    strays = [p.name for p in tmp_path.rglob(".Pulumi.*") if not p.is_symlink()]
    assert strays == [], "temporary or lock files left behind"


@pytest.fixture
def fake_programs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The program result is irrelevant to file safety: skip the seconds-long runs."""
    monkeypatch.setattr(rollout, "run_program", fake_run)


def only_tmp_files(tmp_path: Path) -> Callable[[int], bool]:
    """Whether a file descriptor writes under tmp_path (so pytest's own output is left alone)."""

    def is_ours(fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path))
        except OSError:
            return False

    return is_ours


# -- 1. atomic writes --------------------------------------------------------------------------------


def test_a_size_limited_write_leaves_the_original_intact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_programs: None
) -> None:
    """A real short write (RLIMIT_FSIZE): truncating the file in place would leave half a stack file."""
    project = make_project(tmp_path)
    path = project / "Pulumi.prod.yaml"
    before, files = path.read_bytes(), listing(project)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, limits[1]))
    try:
        code = rollout.main(WEIGHT_50, project)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    out = capsys.readouterr().out
    assert code == 2
    assert "wrote" not in out
    assert out.strip().splitlines()[-1].startswith(f"error: {path}: cannot write")
    assert path.read_bytes() == before
    assert listing(project) == files  # no temporary file, no lock file left behind


def test_enospc_mid_write_leaves_the_original_intact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_programs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path)
    path = project / "Pulumi.prod.yaml"
    before, files = path.read_bytes(), listing(project)
    real_write = os.write
    ours = only_tmp_files(tmp_path)

    def full_disk(fd: int, data: Any) -> int:
        if not ours(fd):
            return real_write(fd, data)
        real_write(fd, bytes(data)[:100])  # part of it lands, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full_disk)
    code = rollout.main(WEIGHT_50, project)
    monkeypatch.undo()
    out = capsys.readouterr().out
    assert code == 2 and "wrote" not in out and "Traceback" not in out
    last = out.strip().splitlines()[-1]
    assert last == f"error: {path}: cannot write (No space left on device); it is unchanged, run again"
    assert path.read_bytes() == before
    assert listing(project) == files


def test_short_writes_complete_and_the_mode_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_programs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path)
    path = project / "Pulumi.prod.yaml"
    path.chmod(0o664)
    files = listing(project)
    real_write = os.write
    ours = only_tmp_files(tmp_path)
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[:7] if ours(fd) else data))
    code, out = run(project, WEIGHT_50, capsys)
    monkeypatch.undo()
    assert code == 0 and f"wrote {path}" in out
    assert path.read_text() == PROD.replace(CANARY_LINE, "canary: {version: 1.4.2, weight: 50}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o664
    assert listing(project) == files


def test_an_interrupt_mid_write_removes_the_temporary_file(
    tmp_path: Path, fake_programs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path)
    path = project / "Pulumi.prod.yaml"
    before, files = path.read_bytes(), listing(project)

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rollout.main(WEIGHT_50, project)
    assert path.read_bytes() == before
    assert listing(project) == files


def test_a_symlinked_stack_file_stays_a_symlink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_programs: None
) -> None:
    project = make_project(tmp_path)
    shared = tmp_path / "shared.yaml"
    (project / "Pulumi.prod.yaml").rename(shared)
    (project / "Pulumi.prod.yaml").symlink_to(shared)
    code, _ = run(project, WEIGHT_50, capsys)
    assert code == 0
    assert (project / "Pulumi.prod.yaml").is_symlink()
    assert "weight: 50}" in shared.read_text()


# -- 2. concurrency ----------------------------------------------------------------------------------


def test_an_edit_saved_while_the_helper_runs_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path)
    path = project / "Pulumi.prod.yaml"
    theirs = PROD.replace("owner: platform-team", "owner: web-team")

    def editor_saves_meanwhile(project_dir: Path, config: StackConfig, preview: bool = True) -> ProgramRun:
        path.write_text(theirs)  # an editor (or a teammate's pull) writes while the program runs
        return fake_run(project_dir, config)

    monkeypatch.setattr(rollout, "run_program", editor_saves_meanwhile)
    code, out = run(project, WEIGHT_50, capsys)
    assert code == 2
    assert "wrote" not in out
    assert out.strip().splitlines()[-1] == f"error: {path}: the file changed since it was read; run again"
    assert path.read_text() == theirs  # their edit survives


def test_a_held_lock_stops_a_second_helper(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_programs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path)
    path = project / "Pulumi.prod.yaml"
    before = path.read_bytes()
    monkeypatch.setattr(rollout, "LOCK_WAIT_SECONDS", 0.2, raising=False)
    lock = project / ".Pulumi.prod.yaml.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another helper is mid-edit
        started = time.monotonic()
        code, out = run(project, WEIGHT_50, capsys)
        waited = time.monotonic() - started
        lock.unlink()  # as the holder does on release
    assert code == 2
    line = one_error_line(out)
    assert line == (
        f"error: {lock} is held: another rollout helper is editing {path.name}; "
        "wait for it to finish, then run again"
    )
    assert 0.2 <= waited < 2  # it waited briefly, then gave up
    assert path.read_bytes() == before


def test_concurrent_helpers_serialise_and_keep_both_edits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A's run is slow; B starts meanwhile, waits for the lock, then edits A's result (not the original)."""
    project = make_project(tmp_path)
    path = project / "Pulumi.prod.yaml"
    a_inside, release_a = threading.Event(), threading.Event()

    def slow_for_a(project_dir: Path, config: StackConfig, preview: bool = True) -> ProgramRun:
        if threading.current_thread().name == "A" and not a_inside.is_set():
            a_inside.set()
            assert release_a.wait(10)
        return fake_run(project_dir, config)

    monkeypatch.setattr(rollout, "run_program", slow_for_a)
    codes: dict[str, int] = {}
    a = threading.Thread(target=lambda: codes.update(A=rollout.main(WEIGHT_50, project)), name="A")
    b = threading.Thread(
        target=lambda: codes.update(
            B=rollout.main(["promote", "--stack", "prod", "--service", "worker"], project)
        ),
        name="B",
    )
    a.start()
    assert a_inside.wait(10)
    b.start()
    time.sleep(0.3)  # B is now waiting for A's lock
    assert b.is_alive() and "B" not in codes
    release_a.set()
    a.join(10)
    b.join(10)
    out = capsys.readouterr().out
    assert codes == {"A": 0, "B": 0}, out
    assert out.count("wrote") == 2
    text = path.read_text()
    assert "canary: {version: 1.4.2, weight: 50}" in text  # A's edit ...
    assert "activeSlot: green" in text  # ... and B's
    assert not (project / ".Pulumi.prod.yaml.lock").exists()


# -- 3. a current file the helper cannot edit --------------------------------------------------------


def line_of(fragment: str) -> int:
    """The 1-based line of PROD holding `fragment` (once)."""
    hits = [n for n, line in enumerate(PROD.splitlines(), 1) if fragment in line]
    assert len(hits) == 1, fragment
    return hits[0]


def _drop(line: str) -> str:
    assert PROD.count(line) == 1
    return PROD.replace(line, "")


INVALID: dict[str, tuple[str | bytes, list[str], str]] = {
    "malformed YAML": (
        PROD.replace(CANARY_LINE, "canary: {version: 1.4.2, weight: 10"),
        WEIGHT_50,
        f"Pulumi.prod.yaml line {line_of(CANARY_LINE) + 1}: not valid YAML: expected ',' or '}}', "
        f"but got ':' (while parsing a flow mapping that starts at line {line_of(CANARY_LINE)}); "
        "fix the syntax there",
    ),
    "duplicate key (flow)": (
        PROD.replace(CANARY_LINE, "canary: {version: 1.4.2, weight: 10, weight: 20}"),
        WEIGHT_50,
        f"Pulumi.prod.yaml line {line_of(CANARY_LINE)}: duplicate key weight; remove one",
    ),
    "duplicate key (block)": (
        PROD.replace("  pouw-cicd:owner: platform-team\n", "  pouw-cicd:owner: platform-team\n" * 2),
        WEIGHT_50,
        f"Pulumi.prod.yaml line {line_of('pouw-cicd:owner:') + 1}: duplicate key pouw-cicd:owner; remove one",
    ),
    "empty file": ("", WEIGHT_50, "Pulumi.prod.yaml: the file is empty; restore it"),
    "only comments": ("# nothing here\n", WEIGHT_50, "Pulumi.prod.yaml: the file is empty; restore it"),
    "not UTF-8": (PROD.encode("utf-16"), WEIGHT_50, "Pulumi.prod.yaml byte 0: not UTF-8"),
    "blue-green without activeSlot": (
        _drop("        activeSlot: blue\n"),
        ["promote", "--stack", "prod", "--service", "worker"],
        "pouw-cicd:services[1].rollout.activeSlot is missing; set it to the slot serving traffic now "
        "(blue or green)",
    ),
    "slot without version": (
        PROD.replace("green: {version: 2.0.1}", "green: {}"),
        ["promote", "--stack", "prod", "--service", "worker"],
        f"line {line_of('green: {version: 2.0.1}')}: pouw-cicd:services[1].rollout.slots.green.version "
        "is missing; set the version",
    ),
    "canary without slots.stable": (
        _drop(f"          {STABLE_LINE}\n"),
        WEIGHT_50,
        "pouw-cicd:services[0].rollout.slots.stable is missing; a canary needs the stable slot",
    ),
    "canary weight not a number": (
        PROD.replace(CANARY_LINE, "canary: {version: 1.4.2, weight: ten}"),
        ["promote", "--stack", "prod", "--service", "web"],
        "pouw-cicd:services[0].rollout.slots.canary.weight is 'ten'; set an integer 0..100",
    ),
    "a key of another strategy": (
        PROD.replace("        strategy: canary\n", "        strategy: canary\n        activeSlot: blue\n"),
        WEIGHT_50,
        f"Pulumi.prod.yaml line {line_of('strategy: canary') + 1}: pouw-cicd:services[0].rollout.activeSlot: "
        "is for blue-green; a canary routes by slot weights",
    ),
    "steps the model refuses": (
        PROD.replace("- setWeight: 50", "- setWeight: 5"),
        ["rollback", "--stack", "prod", "--service", "web"],
        f"Pulumi.prod.yaml line {line_of('- setWeight: 50')}: "
        "pouw-cicd:services[0].rollout.steps[2].setWeight: 5 goes down from setWeight 10 (steps[0])",
    ),
    "rollout not a mapping": (
        PROD.replace("      rollout:\n        strategy: canary\n", "      rollout: canary\n      x:\n"),
        WEIGHT_50,
        "pouw-cicd:services[0].rollout must be a mapping",
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_a_file_it_cannot_edit_is_one_line_and_untouched(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_programs: None
) -> None:
    content, argv, message = INVALID[case]
    project = make_project(tmp_path, content)
    path = project / "Pulumi.prod.yaml"
    before, files = path.read_bytes(), listing(project)
    code, out = run(project, argv, capsys)
    assert code == 2
    assert message in one_error_line(out)
    assert one_error_line(out).startswith(f"error: {path}")
    assert path.read_bytes() == before
    assert listing(project) == files


def test_duplicates_only_ruamel_sees_are_reported_too() -> None:
    """A repeated merge key or a complex key: ruamel's DuplicateKeyError, turned into the same line."""
    merged = PROD.replace("  pouw-cicd:aci:\n", "  pouw-cicd:aci: &aci\n") + (
        "  pouw-cicd:extra:\n    <<: *aci\n    <<: *aci\n"
    )
    line = merged.splitlines().index("    <<: *aci") + 2
    with pytest.raises(RolloutEditError) as found:
        edit(merged, "web", "rollback", source="Pulumi.prod.yaml")
    assert str(found.value) == f"Pulumi.prod.yaml line {line}: duplicate key <<; remove one"
    with pytest.raises(RolloutEditError, match=r"line 3: duplicate key \('a',\); remove one"):
        edit("? [a]\n: 1\n? [a]\n: 2\n", "web", "rollback")


def test_a_read_only_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_programs: None
) -> None:
    """chmod 0o444 does not stop root's writes, so the helper checks the mode itself."""
    project = make_project(tmp_path)
    path = project / "Pulumi.prod.yaml"
    path.chmod(0o444)
    code, out = run(project, WEIGHT_50, capsys)
    assert code == 2
    assert one_error_line(out) == (
        f"error: {path} is read-only; make it writable (chmod u+w {path}) or pass --dry-run"
    )
    assert path.read_text() == PROD
    assert rollout.main([*WEIGHT_50, "--dry-run"], project) == 0  # reading it is fine


def test_a_file_the_user_may_not_write_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_programs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a non-root user would see a 0o444 file, or someone else's 0o644 one."""
    project = make_project(tmp_path)
    path = project / "Pulumi.prod.yaml"
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, **kw: False if Path(p).resolve() == path.resolve() else real_access(p, mode, **kw),
    )
    code, out = run(project, WEIGHT_50, capsys)
    assert code == 2
    assert "is read-only; make it writable" in one_error_line(out)
    assert path.read_text() == PROD


def test_a_permission_error_on_replace_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_programs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path)
    path = project / "Pulumi.prod.yaml"
    files = listing(project)

    def denied(src: Any, dst: Any) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))

    monkeypatch.setattr(os, "replace", denied)
    code, out = run(project, WEIGHT_50, capsys)
    assert code == 2
    assert out.strip().splitlines()[-1] == (
        f"error: {path}: cannot write (Permission denied); it is unchanged, run again"
    )
    assert path.read_text() == PROD
    assert listing(project) == files


@pytest.mark.parametrize(
    ("stack", "message"),
    [
        ("prod", "Pulumi.prod.yaml: no such stack file; known stacks: none; pass one with --stack"),
        ("qa", "Pulumi.qa.yaml: no such stack file; known stacks: prod; pass one with --stack"),
        ("../prod", "--stack '../prod' is not a stack name; pass the <stack> of a Pulumi.<stack>.yaml"),
    ],
)
def test_a_missing_stack_file_or_unknown_stack(
    stack: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project(tmp_path)
    if stack == "prod":
        (project / "Pulumi.prod.yaml").unlink()
    argv = ["set-weight", "--stack", stack, "--service", "web", "--weight", "50"]
    code, out = run(project, argv, capsys)
    assert code == 2
    assert message in one_error_line(out)


# -- 4. style preservation ---------------------------------------------------------------------------


def four_spaces(text: str) -> str:
    """Every column doubled: 4-space indentation, sequence items as `-   key` 4 deeper than the parent."""
    out = []
    for line in text.splitlines(keepends=True):
        indent = len(line) - len(line.lstrip(" "))
        rest = line[indent:]
        rest = "-   " + rest[2:] if rest.startswith("- ") else rest
        out.append(" " * (2 * indent) + rest)
    return "".join(out)


def unindented_sequences(text: str) -> str:
    """Block sequences written at their parent's indentation (`- ` under `key:` at the same column)."""
    out: list[str] = []
    dashes: list[int] = []  # the dash columns of the enclosing block sequences
    for line in text.splitlines(keepends=True):
        indent = len(line) - len(line.lstrip(" "))
        body = line.strip()
        if body and not body.startswith("#"):
            while dashes and indent < dashes[-1]:
                dashes.pop()
            if body.startswith("- ") and (not dashes or dashes[-1] != indent):
                dashes.append(indent)
        out.append(line[min(2 * len(dashes), indent) :])
    return "".join(out)


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


STYLES: dict[str, Callable[[str], str]] = {
    "as is": lambda t: t,
    "four spaces": four_spaces,
    "unindented sequences": unindented_sequences,
    "CRLF": crlf,
    "document marker": lambda t: "---\n" + t,
    "BOM": lambda t: "\ufeff" + t,
    "all at once": lambda t: "\ufeff" + crlf("---\n" + unindented_sequences(four_spaces(t))),
}


def test_the_style_variants_are_the_same_config() -> None:
    """The variants differ in bytes only: same data, same config handed to the program."""
    values = load_stack_config(ROOT, "prod", text=PROD).values
    for name, style in STYLES.items():
        assert yaml.safe_load(style(PROD)) == yaml.safe_load(PROD), name
        assert load_stack_config(ROOT, "prod", text=style(PROD)).values == values, name
    assert "\n        -   name: web\n" in four_spaces(PROD)
    assert "\n  pouw-cicd:services:\n  - name: web\n" in unindented_sequences(PROD)
    assert "\n      steps:\n      - setWeight: 10\n" in unindented_sequences(PROD)


def sub_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def drop_line(text: str, content: str) -> str:
    """`text` without the one line holding `content` (its line break included)."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if content in line]
    assert len(hits) == 1, content
    del lines[hits[0]]
    return "".join(lines)


# What each step must do to the text, as the plainest textual edit: anything else that changes fails.
STEPS: dict[str, tuple[tuple[str, str, int | None], Callable[[str], str]]] = {
    "set-weight": (
        ("web", "set-weight", 50),
        lambda t: sub_once(t, CANARY_LINE, "canary: {version: 1.4.2, weight: 50}"),
    ),
    "rollback": (
        ("web", "rollback", None),
        lambda t: sub_once(t, CANARY_LINE, "canary: {version: 1.4.2, weight: 0}"),
    ),
    "promote canary": (
        ("web", "promote", None),
        lambda t: drop_line(sub_once(t, STABLE_LINE, "stable: {version: 1.4.2}"), CANARY_LINE),
    ),
    "promote blue-green": (
        ("worker", "promote", None),
        lambda t: sub_once(t, "activeSlot: blue", "activeSlot: green"),
    ),
}


def changed(old: str, new: str) -> list[str]:
    """The diff's changed lines, line endings included (a CRLF turned LF shows up here)."""
    return [
        line
        for line in difflib.unified_diff(old.splitlines(True), new.splitlines(True), n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("style", list(STYLES))
def test_only_the_edited_lines_change(style: str, step: str) -> None:
    old = STYLES[style](PROD)
    (service, action, weight), expected = STEPS[step]
    new = edit(old, service, action, weight)
    assert new.encode("utf-8") == expected(old).encode("utf-8")
    assert changed(old, new) == changed(old, expected(old))
    assert len(changed(old, new)) <= 3


def test_files_keep_crlf_and_bom_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_programs: None
) -> None:
    old = STYLES["all at once"](PROD)
    project = make_project(tmp_path, old)
    code, _ = run(project, ["promote", "--stack", "prod", "--service", "web"], capsys)
    assert code == 0
    assert (project / "Pulumi.prod.yaml").read_bytes() == STEPS["promote canary"][1](old).encode("utf-8")


BLOCK_CANARY = sub_once(
    PROD,
    f"          {CANARY_LINE}\n",
    "          canary:   # the release under test\n"
    "            version: 1.4.2\n"
    "            weight: 10   # its share of traffic\n",
)
FLOW_SLOTS = sub_once(
    PROD,
    f"        slots:\n          {STABLE_LINE}\n          {CANARY_LINE}\n",
    f"        slots: {{{STABLE_LINE}, {CANARY_LINE}}}\n",
)
CANARY_FIRST = sub_once(
    PROD,
    f"        slots:\n          {STABLE_LINE}\n          {CANARY_LINE}\n",
    f"        slots: {{{CANARY_LINE}, {STABLE_LINE}}}\n",
)
QUOTED = sub_once(
    sub_once(PROD, STABLE_LINE, 'stable: {version: "1.4.1", weight: 90}'),
    CANARY_LINE,
    "canary: {version: '1.4.2', weight: 10}",
)


@pytest.mark.parametrize(
    ("old", "action", "weight", "expected"),
    [
        pytest.param(
            BLOCK_CANARY,
            "promote",
            None,
            BLOCK_CANARY.replace(STABLE_LINE, "stable: {version: 1.4.2}").replace(
                "          canary:   # the release under test\n"
                "            version: 1.4.2\n"
                "            weight: 10   # its share of traffic\n",
                "",
            ),
            id="block canary promoted: its three lines go",
        ),
        pytest.param(
            BLOCK_CANARY,
            "set-weight",
            50,
            BLOCK_CANARY.replace("weight: 10   #", "weight: 50   #"),
            id="block canary weight: the comment stays",
        ),
        pytest.param(
            FLOW_SLOTS,
            "promote",
            None,
            FLOW_SLOTS.replace(f"{{{STABLE_LINE}, {CANARY_LINE}}}", "{stable: {version: 1.4.2}}"),
            id="flow slots promoted: the entry goes from the line",
        ),
        pytest.param(
            CANARY_FIRST,
            "promote",
            None,
            CANARY_FIRST.replace(f"{{{CANARY_LINE}, {STABLE_LINE}}}", "{stable: {version: 1.4.2}}"),
            id="flow slots, canary first",
        ),
        pytest.param(
            QUOTED,
            "promote",
            None,
            drop_line(QUOTED, "canary: {version: '1.4.2'").replace(
                'stable: {version: "1.4.1", weight: 90}', "stable: {version: '1.4.2', weight: 100}"
            ),
            id="quoted versions: the canary's token is copied as written",
        ),
        pytest.param(
            QUOTED,
            "set-weight",
            25,
            QUOTED.replace("weight: 90}", "weight: 75}").replace("weight: 10}", "weight: 25}"),
            id="explicit stable weight follows",
        ),
    ],
)
def test_block_flow_and_quoted_slots(old: str, action: str, weight: int | None, expected: str) -> None:
    assert edit(old, "web", action, weight) == expected


def test_an_edit_that_would_change_more_than_the_step_is_refused() -> None:
    """An anchor shared with another service: editing it in place would move both, so it is refused."""
    shared = sub_once(PROD, CANARY_LINE, "canary: &web-canary {version: 1.4.2, weight: 10}")
    shared = sub_once(shared, "      version: 2.0.1\n", "      version: 2.0.1\n      note: *web-canary\n")
    with pytest.raises(RolloutEditError, match="cannot make this edit in place"):
        edit(shared, "web", "set-weight", 50)


# -- 5. promote after rollback -----------------------------------------------------------------------


def test_promote_after_a_canary_rollback_is_refused() -> None:
    rolled_back = edit(PROD, "web", "rollback")
    with pytest.raises(RolloutEditError) as refused:
        edit(rolled_back, "web", "promote")
    assert str(refused.value) == (
        "the stack file: web: the canary 1.4.2 was rolled back (weight 0); promote would send it to 100%. "
        "Set a weight first (`rollout set-weight --weight 10`) to re-enter the steps, or remove the "
        "canary slot"
    )
    # Re-entering the steps makes promote legitimate again.
    again = edit(rolled_back, "web", "set-weight", 10)
    assert again == PROD
    assert "stable: {version: 1.4.2}" in edit(again, "web", "promote")


def test_promote_after_a_rollback_exits_2_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_programs: None
) -> None:
    project = make_project(tmp_path, edit(PROD, "web", "rollback"))
    path = project / "Pulumi.prod.yaml"
    before = path.read_bytes()
    code, out = run(project, ["promote", "--stack", "prod", "--service", "web"], capsys)
    assert code == 2
    assert one_error_line(out).startswith(f"error: {path}: web: the canary 1.4.2 was rolled back (weight 0)")
    assert path.read_bytes() == before


def test_blue_green_promote_rollback_promote_is_a_switch_back() -> None:
    """Blue-green keeps both slots at full size: promote after rollback is the same one-line switch."""
    promoted = edit(PROD, "worker", "promote")
    rolled_back = edit(promoted, "worker", "rollback")
    assert rolled_back == PROD  # the file carries no history: rolled back == not yet promoted
    assert edit(rolled_back, "worker", "promote") == promoted
    with pytest.raises(RolloutEditError, match="activeSlot is already green"):
        edit(promoted, "worker", "promote")
