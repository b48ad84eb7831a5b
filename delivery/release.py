"""`python -m delivery.release prepare|promote`: versions from the commit history, a generated changelog,
and the stack-file edits that release a version and promote it.

    python -m delivery.release prepare [--dry-run]
    python -m delivery.release promote --to staging --service web [--dry-run]
    python -m delivery.release record --service web --version 1.4.2 --digest sha256:... \
        --repository ghcr.io/<owner>/web

`prepare` computes each component's next semantic version from the conventional commits since its last
release tag, writes the new CHANGELOG.md sections, sets the dev stack's `version` of every service it
bumps (`Pulumi.dev.yaml`: the one line, see `set_version`), bumps `policies/PulumiPolicy.yaml`'s
`version` when the pack changed, and prints the tags to create once that change is merged. Pushing a
tag runs .github/workflows/release.yml (build once, sign, attest, GitHub Release; the pack is published
with `pulumi policy publish`). `promote` carries a released version one environment on (dev -> staging
-> prod) as the reviewed one-line edit of that stack's `version`; the pull request's offline diff
(pull-request.yml) shows what it changes.

Components and tags. Each service of the dev stack's `pouw-cicd:services` and the policy pack
(`policies`) is released on its own, tagged `<component>/v<version>`: `web/v1.6.0`, `policies/v0.2.0`
(the `v` as git and GitHub releases spell versions; the prefix keeps one component's tags from being
read as another's). A component's last release is its highest tag reachable from HEAD; before its first
tag, the version the repository declares (the dev stack's `version`, the newest in the promotion chain;
PulumiPolicy.yaml's for the pack) and the whole history. Tags are read from this clone: `git fetch
--tags` first.

Which commits belong to a component (see `_belongs`):
- Its scope: `feat(web): ...`, `fix(worker)!: ...`, `feat(web,worker): ...`; `policies` for the pack.
- Its files, whatever the scope. A service is the image built from its `build.context` and
  `build.dockerfile` (components/image.py; `app/` and `app/Dockerfile` by default, and every service
  of this project builds from them). A commit that changes them changes every image built from them,
  so it belongs to each of those services even when its scope names just one: otherwise the next
  `pulumi up` would rebuild an unchanged version with new bytes and the registry's immutable tags would
  refuse the push, late. For the same reason such a commit releases at least a patch even when its
  type bumps nothing (`chore:`, `build:`, a non-conventional title). The pack is everything under
  `policies/` except `policies/config/` (the per-environment enforcement, passed with
  `--policy-pack-config` and `pulumi policy enable --config`, not published in the pack's version);
  a non-bumping change there waits for the next release, since nothing rebuilds the pack meanwhile.

The bump comes from commitizen's conventional-commits rules (feat minor; fix, perf and refactor patch;
`!` or a `BREAKING CHANGE:` footer major), and the changelog from its tree and Markdown template.
Why commitizen: a maintained Python library whose parser, bump map, SemVer 2 scheme, tag rules and
changelog renderer are importable pieces, so the per-component rules above stay ours while none of the
conventional-commit or semver logic is. python-semantic-release and git-cliff drive a whole release
from their own config (one version per repository or path filter, git-cliff as a subprocess with a
TOML config) and cannot express "scope or build inputs"; `semver` and `packaging` bump versions but
parse no commits and render no changelog.

`record` is what release.yml runs once the build is signed: it adds the version's digest and source
repository to releases.yaml (the release record every stack deploys from, components/releases.py),
edited round-trip so its comments and other entries stay as they are, and puts the same digests in
every `policies/config/<stack>.json` (`image-release-recorded`'s `recorded`), so the pack refuses a
digest the release did not record on the CLI path too. A version already recorded with another digest
is refused (exit 2): a released version is never rebuilt.

A version that already exists is refused before anything is written (exit 2, one line): a tag of that
version anywhere in the clone (a release branch's, say), or the version already in a stack file (a hand
edit, or a prepared release not tagged yet). The stack file is the user's: the edit is made at the
value's exact span and checked by parsing (preflight/rollout.py's `_Edit`), under the same lock, read
and atomic write as `preflight rollout`; a file with uncommitted changes is refused, so the release
edit is reviewed on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from commitizen import changelog as cz_changelog
from commitizen.cz.conventional_commits.conventional_commits import ConventionalCommitsCz
from commitizen.git import GitCommit, GitTag
from commitizen.tags import TagRules
from commitizen.version_increment import VersionIncrement
from commitizen.version_schemes import Increment, SemVer2
from packaging.version import InvalidVersion
from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.nodes import MappingNode, ScalarNode
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from components.releases import (
    DIGEST_RE,
    GITHUB_ISSUER,
    RECORD_FILE,
    RELEASE_WORKFLOW,
    REPOSITORY_RE,
    RecordError,
    github_repository,
    parse_record,
    signer_identity,
)
from components.rollout import BlueGreenRollout, CanaryRollout, RolloutError, RolloutSettings, parse_rollout
from components.schema import BuildSettings
from preflight.cli import split_project_dir
from preflight.rollout import (
    NAMESPACE,
    StackFileError,
    _At,
    _Edit,
    _EditError,
    _end,
    _find_service,
    _line_end,
    _parse,
    _plain,
    _Splice,
    check_writable,
    read_stack_file,
    stack_lock,
    stack_path,
    write_stack_file,
)

PACK = "policies"
PACK_FILE = Path("policies") / "PulumiPolicy.yaml"
# Published with the pack's version: everything under policies/ except the per-environment config.
PACK_PATHS = ("policies/",)
PACK_EXCLUDED = ("policies/config/",)
CHANGELOG = Path("CHANGELOG.md")
CHANGELOG_HEADER = (
    "# Changelog\n"
    "\n"
    "Generated by `python -m delivery.release prepare` from the conventional commits since each\n"
    "component's last release tag (`<service>/v<version>`, `policies/v<version>`); newest first. Edit the\n"
    "commits, not this file: a section is written once, when its release is prepared.\n"
)
# Where each environment's version comes from: the one before it in deploy.yml's chain.
PROMOTES_FROM = {"staging": "dev", "prod": "staging"}
RELEASE_STACK = "dev"

# The library's conventional-commit rules (commitizen's `cz_conventional_commits`).
_RULES = ConventionalCommitsCz
# Only the scope is read here (the library's bump pattern reads the type, `!` and footers): `(a,b)`.
_SCOPE = re.compile(r"^\w+\(([^()\r\n]*)\)!?:")
_FOOTER = re.compile(r"^BREAKING[ -]CHANGE:", re.MULTILINE)  # the library's breaking footer, as it reads it
_CHANGE_TYPES = {"feat": "Features", "fix": "Bug fixes", "perf": "Performance", "refactor": "Refactoring"}
_OTHER = "Other changes to the image"
_CHANGE_ORDER = ["BREAKING CHANGE", "Features", "Bug fixes", "Performance", "Refactoring", _OTHER]
_RECORD, _FIELD = "\x1e", "\x1f"
_INCREMENTS: dict[VersionIncrement, Increment] = {
    VersionIncrement.PATCH: "PATCH",
    VersionIncrement.MINOR: "MINOR",
    VersionIncrement.MAJOR: "MAJOR",
}


class ReleaseError(Exception):
    """The release cannot be prepared or promoted; the one-line message names the problem and the fix."""


# -- the history ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    rev: str
    message: str
    files: tuple[str, ...]  # repository-relative paths the commit changed

    @property
    def title(self) -> str:
        return self.message.split("\n", 1)[0].strip()

    @property
    def scopes(self) -> frozenset[str]:
        found = _SCOPE.match(self.title)
        return frozenset(s.strip() for s in found.group(1).split(",") if s.strip()) if found else frozenset()

    def increment(self) -> VersionIncrement:
        return VersionIncrement.from_message(self.message, _RULES.bump_pattern, _RULES.bump_map)

    def git_commit(self) -> GitCommit:
        title, _, body = self.message.partition("\n")
        return GitCommit(rev=self.rev, title=title, body=body)


class Git:
    """The few git reads the release needs, in one repository (`git -C`, never the process's cwd)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        top = self.run("rev-parse", "--show-toplevel").strip()
        self.top = Path(top)
        # The project's place in the repository: git paths are relative to its top.
        self.prefix = self.run("rev-parse", "--show-prefix").strip()

    def run(self, *args: str) -> str:
        command = ["git", "-C", str(self.directory), "-c", "core.quotePath=false", *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise ReleaseError("git is not installed or not on PATH; install git and run again") from None
        if done.returncode != 0:
            problem = (done.stderr.strip().splitlines() or ["failed"])[-1]
            raise ReleaseError(
                f"git {args[0]} in {self.directory}: {problem}; run the release in a git clone"
            )
        return done.stdout

    def tags(self, merged: bool = False) -> list[str]:
        return self.run("tag", "--list", *(["--merged", "HEAD"] if merged else [])).split()

    def commits(self, since: str | None) -> list[Commit]:
        """Newest first, merges left out (their changes arrive with the commits they merge)."""
        fmt = f"--format={_RECORD}%H{_FIELD}%B{_FIELD}"
        out = self.run("log", "--no-merges", "--name-only", fmt, f"{since}..HEAD" if since else "HEAD")
        found = []
        for record in out.split(_RECORD)[1:]:
            rev, rest = record.split(_FIELD, 1)
            message, files = rest.rsplit(_FIELD, 1)
            found.append(Commit(rev, message.strip(), tuple(f for f in files.splitlines() if f)))
        return found

    def dirty(self, path: Path) -> bool:
        return bool(self.run("status", "--porcelain", "--", str(path)).strip())


# -- components -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """A thing released on its own: a service (an image) or the policy pack."""

    name: str
    declared: str  # the version the repository declares: the base before the first tag
    declared_at: str  # where, for messages
    paths: tuple[str, ...]  # repository-relative files and directories ("dir/") that ship in it
    excluded: tuple[str, ...] = ()
    rebuilt: bool = True  # rebuilt at its version by every deploy: a change of its files is a release

    @property
    def rules(self) -> TagRules:
        return TagRules(scheme=SemVer2, tag_format=f"{self.name}/v$version")

    def tag(self, version: str) -> str:
        return release_tag(self.name, version)

    def released(self, tags: Iterable[str]) -> list[tuple[SemVer2, str]]:
        """(version, tag) of each of its release tags; a tag that is no semantic version is not one."""
        found = []
        for tag in tags:
            if self.rules.is_version_tag(tag):
                with contextlib.suppress(InvalidVersion):
                    found.append((SemVer2(str(self.rules.extract_version(GitTag(tag, "", "")))), tag))
        return found

    def touched(self, commit: Commit) -> bool:
        return any(
            _under(path, prefix) and not any(_under(path, x) for x in self.excluded)
            for path in commit.files
            for prefix in self.paths
        )


def release_tag(component: str, version: str) -> str:
    """`web/v1.6.0`: the tag that releases a component's version (and starts release.yml)."""
    return f"{component}/v{version}"


def _under(path: str, prefix: str) -> bool:
    return path.startswith(prefix) if prefix.endswith("/") else path == prefix


@dataclass(frozen=True)
class Release:
    component: Component
    previous: str  # the version released last (a tag's, or the declared one)
    since: str | None  # that tag, when there is one
    version: str
    increment: VersionIncrement
    commits: tuple[Commit, ...]

    @property
    def tag(self) -> str:
        return self.component.tag(self.version)


def _belongs(commit: Commit, component: Component) -> bool:
    """The commit's scope names the component, or it changes the component's files (module docstring)."""
    return component.name in commit.scopes or component.touched(commit)


def plan(component: Component, git: Git, tags: Sequence[str], reachable: Sequence[str]) -> Release | None:
    """The component's next release, or None when nothing since its last one asks for a version."""
    released = component.released(reachable)
    since: str | None = None
    if released:
        base, since = max(released, key=lambda pair: pair[0])
    else:
        base = _semver(component.declared, component.declared_at)
    commits = tuple(c for c in git.commits(since) if _belongs(c, component))
    increment = VersionIncrement.NONE
    for commit in commits:
        level = commit.increment()
        if component.rebuilt and component.touched(commit):
            level = max(level, VersionIncrement.PATCH)
        increment = max(increment, level)
    if increment == VersionIncrement.NONE:
        return None
    return Release(component, str(base), since, str(base.bump(_INCREMENTS[increment])), increment, commits)


def _semver(text: str, where: str) -> SemVer2:
    try:
        version: SemVer2 | None = SemVer2(text)
    except InvalidVersion:
        version = None
    if version is None or len(version.release) != 3:
        raise ReleaseError(
            f"{where}: {text!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRERELEASE]); set one, or "
            "tag the last release (`git tag <component>/v<version> <commit>`) so the release starts there"
        )
    return version


# -- reading the stack and pack files -------------------------------------------------------------


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    version: str
    path: str  # pouw-cicd:services[0]
    context: str  # what its image is built from (BuildSettings' defaults when the stack sets none)
    dockerfile: str


def services(text: str, source: str, required: bool = True) -> list[ServiceEntry]:
    """The stack file's services: name, version and what their image is built from (none, when not
    `required`, for a stack that deploys no service: a CI stack, say)."""
    try:
        root = _parse(text)
        config = root.data.get("config") if isinstance(root.data, dict) else None
        listed = config.get(f"{NAMESPACE}:services") if isinstance(config, dict) else None
        if listed is None and not required:
            return []
        if not isinstance(listed, list):
            raise _EditError(f"{NAMESPACE}:services is missing or not a list; list the services there")
        found = []
        for item in listed:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                raise _EditError(f"{NAMESPACE}:services has an entry without a name; name every service")
            entry = _find_service(root, name)
            version = entry.get("version")
            if version is None or isinstance(version.data, (dict, list)):
                raise _EditError(f"{entry.path}.version is missing; set the service's version", entry.line)
            build = item.get("build")
            build = build if isinstance(build, dict) else {}
            defaults = BuildSettings()
            context = str(build.get("context", defaults.context))
            dockerfile = str(build.get("dockerfile", defaults.dockerfile))
            found.append(ServiceEntry(name, str(version.data), entry.path, context, dockerfile))
        return found
    except _EditError as problem:
        raise ReleaseError(_where(source, problem)) from None


def _where(source: str, problem: _EditError) -> str:
    return f"{source}{f' line {problem.line}' if problem.line else ''}: {problem}"


def stack_versions(project_dir: Path) -> dict[str, dict[str, str]]:
    """service -> {version: where} over every stack file: its `version` and its slots' versions."""
    found: dict[str, dict[str, str]] = {}
    for path in sorted(project_dir.glob("Pulumi.*.yaml")):
        text, _ = read_stack_file(path)
        for entry in services(text, path.name, required=False):
            seen = found.setdefault(entry.name, {})
            seen.setdefault(entry.version, f"{path.name} {entry.path}.version")
            slots = _slots_data(text, entry.name)
            for slot, version in slots.items():
                seen.setdefault(version, f"{path.name} {entry.path}.rollout.slots.{slot}.version")
    return found


def _slots_data(text: str, service: str) -> dict[str, str]:
    item = _find_service(_parse(text), service).data
    rollout = item.get("rollout") if isinstance(item, dict) else None
    slots = rollout.get("slots") if isinstance(rollout, dict) else None
    if not isinstance(slots, dict):
        return {}
    return {str(k): str(v["version"]) for k, v in slots.items() if isinstance(v, dict) and "version" in v}


def pack_version(text: str, source: str) -> _At:
    try:
        root = _parse(text)
        version = root.get("version") if isinstance(root.data, dict) else None
    except _EditError as problem:
        raise ReleaseError(_where(source, problem)) from None
    if version is None or not isinstance(version.node, ScalarNode):
        raise ReleaseError(f"{source}: `version` is missing; set the pack's version, e.g. version: 0.1.0")
    return version


# -- the edits ------------------------------------------------------------------------------------


class _VersionEdit(_Edit):
    """preflight's minimal-span edit, plus the one insertion a new canary needs (a new mapping entry)."""

    def insert(self, parent: _At, key: str, value: Any, flow: str) -> None:
        """`key: flow` as the mapping's last entry, in its style (a line of its own, or `, key: ...`)."""
        node = parent.node
        assert isinstance(node, MappingNode) and node.value
        last_key, last_value = node.value[-1]
        end = _end(last_value)
        if node.flow_style:
            self.splices.append(_Splice(end, end, f", {key}: {flow}"))
        else:
            line_end = _line_end(self.text, end)
            newline = self.text[end:line_end][len(self.text[end:line_end].rstrip("\r\n")) :] or "\n"
            indent = " " * last_key.start_mark.column
            prefix = "" if self.text[:line_end].endswith(("\n", "\r")) else newline
            self.splices.append(_Splice(line_end, line_end, f"{prefix}{indent}{key}: {flow}{newline}"))
        self._set((*parent.keys, key), value)


def _token(at: _At, value: str) -> str:
    """`value` quoted as the token it replaces was (a plain x.y.z is a string in YAML anyway)."""
    style = at.node.style if isinstance(at.node, ScalarNode) else None
    quote = style if style in ("'", '"') else ""
    return f"{quote}{value}{quote}"


def set_version(text: str, service: str, version: str, *, source: str, stack: str) -> str:
    """The stack file's text with the service at `version`, and nothing else changed.

    Rolling (and recreate) services: the one `version` line. Blue-green and canary keep their rule that
    some slot runs the version the update builds (components/rollout.py), so the new version also
    enters one slot, as `preflight rollout` then walks it: blue-green's idle slot (its preview; promote
    switches activeSlot to it), or a new canary slot at the weight the steps start with. A slot that
    still carries an unfinished rollout (a canary slot, or an idle slot holding the current version
    that was never switched to) is refused: finish or roll back that rollout first. The edited block
    is checked by the rollout model, so a stack file it writes is one the program accepts.
    """
    try:
        root = _parse(text)
        svc = _find_service(root, service)
        change = _VersionEdit(text, root.data)
        current = svc.get("version")
        if current is None or not isinstance(current.node, ScalarNode):
            raise _EditError(f"{svc.path}.version is missing; set the service's version", svc.line)
        if str(current.data) == version:
            raise _EditError(f"{service} is already at {version} ({svc.path}.version); nothing to change")
        change.replace(current, version, _token(current, version))
        rollout = svc.get("rollout")
        if rollout is not None:
            model = _rollout_model(rollout)
            if isinstance(model, BlueGreenRollout):
                _enter_idle_slot(change, svc, rollout, model, str(current.data), version, stack)
            elif isinstance(model, CanaryRollout):
                _enter_canary(change, svc, rollout, model, version, stack)
        new_text = change.apply()
        edited = _find_service(_parse(new_text), service).get("rollout")
        if edited is not None:
            try:
                _rollout_model(edited).check(version)
            except RolloutError as refused:
                raise _EditError(f"{edited.path}.{refused.path}: {refused}", edited.line) from None
        return new_text
    except _EditError as problem:
        raise ReleaseError(_where(source, problem)) from None


def _rollout_model(rollout: _At) -> RolloutSettings:
    """The block as the rollout model (components/rollout.py), or its first problem at the block."""
    try:
        return parse_rollout(_plain(rollout.data))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(k) for k in first["loc"][1:])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise _EditError(
            f"{rollout.path}{f'.{where}' if where else ''}: {message}; fix the rollout block first",
            rollout.line,
        ) from None


def _finish(stack: str, service: str) -> str:
    return f"`python -m preflight rollout promote --stack {stack} --service {service}`"


def _enter_idle_slot(
    change: _VersionEdit,
    svc: _At,
    rollout: _At,
    model: BlueGreenRollout,
    current: str,
    version: str,
    stack: str,
) -> None:
    name = svc.data["name"]
    idle = [slot for slot in model.slots if slot != model.active_slot]
    slots = rollout.get("slots")
    slot = slots.get(idle[0]) if slots is not None and idle else None
    slot_version = slot.get("version") if slot is not None else None
    if slot_version is None:
        raise _EditError(
            f"{rollout.path}.slots: blue-green needs an idle slot next to activeSlot {model.active_slot} "
            "for the new version; define both blue and green",
            rollout.line,
        )
    if str(slot_version.data) == current and model.slots[model.active_slot].version != current:
        raise _EditError(
            f"{name}'s idle slot {idle[0]} runs {current}, which was never switched to (activeSlot: "
            f"{model.active_slot}); finish that release first with {_finish(stack, name)}, or set "
            f"{idle[0]}'s version back to the active one by hand, then promote {version}"
        )
    change.replace(slot_version, version, _token(slot_version, version))


def _enter_canary(
    change: _VersionEdit, svc: _At, rollout: _At, model: CanaryRollout, version: str, stack: str
) -> None:
    name = svc.data["name"]
    slots = rollout.get("slots")
    assert slots is not None  # a canary rollout has its stable slot
    if model.canary is not None:
        raise _EditError(
            f"{name}'s canary {model.canary.version} is still in {slots.path}; finish it with "
            f"{_finish(stack, name)} or remove the canary slot, then promote {version}"
        )
    weight = model.reentry_weight
    stable = slots.get("stable")
    stable_weight = stable.get("weight") if stable is not None else None
    if stable_weight is not None:
        change.replace(stable_weight, 100 - weight, str(100 - weight))
    change.insert(
        slots, "canary", {"version": version, "weight": weight}, f"{{version: {version}, weight: {weight}}}"
    )


def set_pack_version(text: str, version: str, source: str) -> str:
    at = pack_version(text, source)
    change = _Edit(text, _parse(text).data)
    try:
        change.replace(at, version, _token(at, version))
        return change.apply()
    except _EditError as problem:
        raise ReleaseError(_where(source, problem)) from None


# -- the changelog --------------------------------------------------------------------------------


def changelog_section(release: Release, today: date) -> str:
    """The release's Markdown section, from commitizen's tree and template."""

    def entry(message: dict[str, Any], commit: GitCommit) -> list[dict[str, Any]]:
        """Each change with its commit; a `!` header also under BREAKING CHANGE, unless a footer says it."""
        message = {**message, "message": f"{message['message']} ({commit.rev[:7]})"}
        bang = message.get("breaking") and message.get("change_type") != "BREAKING CHANGE"
        if bang and not _FOOTER.search(commit.body):
            return [message, {**message, "change_type": "BREAKING CHANGE"}]
        return [message]

    def dated(release: dict[str, Any], tag: GitTag | None) -> dict[str, Any]:
        return {**release, "date": today.isoformat()}

    commits = [c.git_commit() for c in release.commits]
    tree = list(
        cz_changelog.generate_tree_from_commits(
            commits,
            [],
            _RULES.commit_parser,
            _RULES.changelog_pattern,
            unreleased_version=f"{release.component.name} {release.version}",
            change_type_map=_CHANGE_TYPES,
            changelog_message_builder_hook=entry,
            changelog_release_hook=dated,
        )
    )
    listed = {c["sha1"] for changes in tree[0]["changes"].values() for c in changes}
    for commit in release.commits:  # what the conventional rules skip but still changes the image
        if commit.rev not in listed and release.component.rebuilt and release.component.touched(commit):
            tree[0]["changes"][_OTHER].append(
                {"scope": None, "message": f"{commit.title} ({commit.rev[:7]})"}
            )
    ordered = cz_changelog.generate_ordered_changelog_tree(tree, _CHANGE_ORDER)
    text = cz_changelog.render_changelog(ordered, _RULES.template_loader, "CHANGELOG.md.j2")
    return text.strip("\n") + "\n"


def with_sections(existing: str | None, sections: Sequence[str]) -> str:
    """CHANGELOG.md with the new sections on top (under the header), everything else as it was."""
    text = existing if existing and existing.strip() else CHANGELOG_HEADER
    block = "\n".join(sections)
    found = re.search(r"^## ", text, re.MULTILINE)
    if found:
        return f"{text[: found.start()]}{block}\n{text[found.start() :]}"
    return f"{text.rstrip(chr(10))}\n\n{block}"


# -- the commands ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Files:
    """What `prepare` reads and writes, relative to the project."""

    project: Path
    git: Git

    @property
    def pack(self) -> Path:
        return self.project / PACK_FILE

    @property
    def changelog(self) -> Path:
        return self.project / CHANGELOG

    def repo_path(self, relative: str) -> str:
        """A project-relative path as git names it (from the repository's top)."""
        return f"{self.git.prefix}{relative.strip('/')}{'/' if relative.endswith('/') else ''}"


def components(files: Files, entries: Sequence[ServiceEntry], pack_text: str, dev: Path) -> list[Component]:
    found = [
        Component(
            e.name,
            declared=e.version,
            declared_at=f"{dev.name} {e.path}.version",
            paths=(files.repo_path(f"{e.context.rstrip('/')}/"), files.repo_path(e.dockerfile)),
        )
        for e in entries
    ]
    pack_at = pack_version(pack_text, str(PACK_FILE))
    found.append(
        Component(
            PACK,
            declared=str(pack_at.data),
            declared_at=f"{PACK_FILE} version",
            paths=tuple(files.repo_path(p) for p in PACK_PATHS),
            excluded=tuple(files.repo_path(p) for p in PACK_EXCLUDED),
            rebuilt=False,
        )
    )
    return found


def refuse_existing(
    releases: Iterable[Release], tags: Sequence[str], in_stacks: dict[str, dict[str, str]], pack_declared: str
) -> None:
    """A version that exists already (a tag, or a stack or pack file's version) stops the release."""
    for release in releases:
        name, version = release.component.name, release.version
        if release.tag in tags:
            raise ReleaseError(
                f"{name} {version} already exists: tag {release.tag} is on a commit HEAD does not contain "
                "(a release branch?); merge that branch, so the release starts after it, or delete the tag"
            )
        declared = {_normal(pack_declared): f"{PACK_FILE} version"} if name == PACK else {}
        declared |= {_normal(v): where for v, where in in_stacks.get(name, {}).items()}
        where = declared.get(version)
        if where:
            raise ReleaseError(
                f"{name} {version} already exists in {where}: if it was released, tag that commit "
                f"(`git tag -a {release.tag} -m '{name} {version}' <commit>` and push it); if it was a hand "
                f"edit, restore {release.previous} there; then run prepare again"
            )


def _normal(version: str) -> str:
    """How the release spells a version (1.5.0-rc1 and 1.5.0-rc.1 are one version), else as written."""
    try:
        return str(SemVer2(version))
    except InvalidVersion:
        return version


def prepare(project_dir: Path, dry_run: bool, today: date | None = None) -> int:
    git = Git(project_dir)
    files = Files(project_dir, git)
    dev = stack_path(project_dir, RELEASE_STACK)
    if dry_run:
        return _prepare(files, dev, dry_run, today or date.today())
    for path in (dev, files.pack, files.changelog):
        if path.exists() and git.dirty(path):
            raise ReleaseError(
                f"{path} has uncommitted changes; commit or revert them first, so the release edit is "
                "reviewed on its own (or pass --dry-run)"
            )
    check_writable(dev)
    with stack_lock(dev):
        return _prepare(files, dev, dry_run, today or date.today())


def _prepare(files: Files, dev: Path, dry_run: bool, today: date) -> int:
    dev_text, dev_digest = read_stack_file(dev)
    pack_text, pack_digest = _read(files.pack)
    entries = services(dev_text, str(dev))
    tags, reachable = files.git.tags(), files.git.tags(merged=True)
    releases = [
        r for c in components(files, entries, pack_text, dev) if (r := plan(c, files.git, tags, reachable))
    ]
    if not releases:
        print("nothing to release: no commit since each component's last release asks for a version")
        return 0
    declared_pack = str(pack_version(pack_text, str(files.pack)).data)
    refuse_existing(releases, tags, stack_versions(files.project), declared_pack)

    new_dev = dev_text
    for release in releases:
        if release.component.name != PACK:
            new_dev = set_version(
                new_dev, release.component.name, release.version, source=str(dev), stack=RELEASE_STACK
            )
    pack = next((r for r in releases if r.component.name == PACK), None)
    new_pack = set_pack_version(pack_text, pack.version, str(files.pack)) if pack else pack_text
    old_changelog, changelog_digest = _read(files.changelog) if files.changelog.exists() else (None, "")
    sections = [changelog_section(r, today) for r in releases]
    new_changelog = with_sections(old_changelog, sections)

    for release in releases:
        since = f"since {release.since}" if release.since else "no tag yet: the whole history"
        print(
            f"{release.component.name}: {release.previous} -> {release.version} "
            f"({str(release.increment).lower()}; {_count(release.commits, 'commit')}, {since})"
        )
    for path, old, new in ((dev, dev_text, new_dev), (files.pack, pack_text, new_pack)):
        print("".join(_diff(path, old, new)), end="")
    print("\n".join(sections))
    if dry_run:
        print("dry run: nothing written")
    else:
        for path in (files.pack, files.changelog) if pack else (files.changelog,):
            if path.exists():
                check_writable(path)  # a read-only one stops the release before the stack is written
        write_stack_file(dev, new_dev, dev_digest)
        if pack:
            write_stack_file(files.pack, new_pack, pack_digest)
        _write_changelog(
            files.changelog, new_changelog, changelog_digest if old_changelog is not None else None
        )
        print(f"wrote {dev.name}{f', {PACK_FILE}' if pack else ''} and {CHANGELOG}; review and commit them")
    names = ", ".join(f"{r.component.name} {r.version}" for r in releases)
    print(f"commit message: chore(release): {names}")
    print("once merged, tag that commit (each tag runs .github/workflows/release.yml):")
    for release in releases:
        print(f"  git tag -a {release.tag} -m '{release.component.name} {release.version}' <commit>")
    print(f"  git push origin {' '.join(r.tag for r in releases)}")
    return 0


def promote(project_dir: Path, stack: str, service: str, dry_run: bool) -> int:
    source = stack_path(project_dir, PROMOTES_FROM[stack])
    target = stack_path(project_dir, stack)
    git = Git(project_dir)
    source_text, _ = read_stack_file(source)
    entry = next((e for e in services(source_text, str(source)) if e.name == service), None)
    if entry is None:
        raise ReleaseError(f"{source}: no service {service!r} to promote from; check --service")
    tag = release_tag(service, entry.version)
    if tag not in git.tags():
        raise ReleaseError(
            f"{service} {entry.version} ({source.name}) was never released: no tag {tag}; release it first "
            "(`python -m delivery.release prepare`, merge, push the tag): every environment runs that build"
        )
    try:
        recorded = parse_record(_record_text(project_dir), RECORD_FILE).image(service, entry.version)
    except RecordError as err:
        raise ReleaseError(str(err)) from None
    if recorded is None:
        raise ReleaseError(
            f"{service} {entry.version} was tagged but its digest is not in {RECORD_FILE}: merge the "
            f"record's pull request (release.yml's record job) first; {stack} deploys only recorded versions"
        )
    if dry_run:
        return _promote(target, stack, service, entry.version, dry_run)
    if git.dirty(target):
        raise ReleaseError(
            f"{target} has uncommitted changes; commit or revert them first, so the promotion is reviewed "
            "on its own (or pass --dry-run)"
        )
    check_writable(target)
    with stack_lock(target):
        return _promote(target, stack, service, entry.version, dry_run)


def _promote(target: Path, stack: str, service: str, version: str, dry_run: bool) -> int:
    text, digest = read_stack_file(target)
    new = set_version(text, service, version, source=str(target), stack=stack)
    print("".join(_diff(target, text, new)), end="")
    if dry_run:
        print("dry run: nothing written")
    else:
        write_stack_file(target, new, digest)
        print(f"wrote {target}; open a pull request: its preflight diff shows what the promotion changes")
    print(f"commit message: {commit_subject(stack, service, version)}")
    return 0


def commit_subject(stack: str, service: str, version: str) -> str:
    """The promotion pull request's title: `release(<stack>/<service>): <version>`."""
    return f"release({stack}/{service}): {version}"


PACK_CONFIGS = Path("policies") / "config"
RECORD_POLICY = "image-release-recorded"
RECORD_HEADER = (
    "# The release record: each service version's release digest and where release.yml pushed it.\n"
    "# Written by `python -m delivery.release record`; every stack deploys a version from here.\n"
)


def record(project_dir: Path, service: str, version: str, digest: str, repository: str, dry_run: bool) -> int:
    """Add `service` `version` -> (`repository`, `digest`) to the record and the pack configs."""
    _semver(version, "--version")
    if not re.match(DIGEST_RE, digest):
        raise ReleaseError(f"--digest {digest!r} is not sha256:<64 lowercase hex>; pass the build's digest")
    if not re.match(REPOSITORY_RE, repository):
        raise ReleaseError(
            f"--repository {repository!r} is not host/path (no tag, no digest): ghcr.io/<owner>/{service}"
        )
    path = project_dir / RECORD_FILE
    text, read_digest = read_stack_file(path) if path.exists() else (RECORD_HEADER + "services: {}\n", None)
    try:
        existing = parse_record(text, RECORD_FILE)
    except RecordError as err:
        raise ReleaseError(str(err)) from None
    found = existing.image(service, version)
    if found is not None:
        if (found.digest, found.repository) == (digest, repository):
            print(f"{service} {version} is already recorded as {found.ref}; nothing to do")
            return 0
        raise ReleaseError(
            f"{service} {version} is already recorded as {found.ref} in {RECORD_FILE}; a released version "
            "is never rebuilt: release a new version (python -m delivery.release prepare)"
        )
    new = with_record(text, service, version, repository, digest)
    updated = parse_record(new, RECORD_FILE)
    configs = {p: p.read_text(encoding="utf-8") for p in sorted((project_dir / PACK_CONFIGS).glob("*.json"))}
    new_configs = {p: pack_config(old, updated.services) for p, old in configs.items()}
    print("".join(_diff(path, text if read_digest else "", new)), end="")
    if dry_run:
        print("dry run: nothing written")
        return 0
    if read_digest is None:
        _write_changelog(path, new, None)
    else:
        write_stack_file(path, new, read_digest)
    for config_path, config_text in new_configs.items():
        config_path.write_text(config_text, encoding="utf-8")
    names = ", ".join(p.name for p in new_configs)
    print(f"wrote {RECORD_FILE} and {PACK_CONFIGS}/{{{names}}}; commit them in the record's pull request")
    print(f"commit message: chore(release): record {service} {version} {digest}")
    return 0


def deployed_images(text: str, source: str) -> tuple[str, list[tuple[str, str, str]], bool]:
    """(signer, [(service, version, its config key) of every slot], buildUnreleased) of a stack file.

    The signer is the `<owner>/<repo>` whose release.yml signs, as the program's settings read it
    (`admission.signer`, else `sourceRepository`'s), so the deploy verifies what the clusters admit."""
    data = _parse(text).data
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise ReleaseError(f"{source}: no config; run from the project (or pass --project-dir)")
    admission = config.get(f"{NAMESPACE}:admission")
    explicit = admission.get("signer") if isinstance(admission, dict) else None
    source_repository = str(config.get(f"{NAMESPACE}:sourceRepository") or "")
    repository = str(explicit) if explicit else github_repository(source_repository) or ""
    releases = config.get(f"{NAMESPACE}:releases") or {}
    unreleased = bool(releases.get("buildUnreleased")) if isinstance(releases, dict) else False
    found: dict[tuple[str, str], str] = {}
    for i, entry in enumerate(config.get(f"{NAMESPACE}:services") or []):
        slots = ((entry.get("rollout") or {}).get("slots") or {}).items()
        paths = [
            (entry.get("version"), f"services[{i}].version"),
            *((slot.get("version"), f"services[{i}].rollout.slots.{name}.version") for name, slot in slots),
        ]
        for version, path in paths:
            found.setdefault((str(entry.get("name")), str(version)), f"{NAMESPACE}:{path}")
    return repository, [(s, v, path) for (s, v), path in found.items()], unreleased


def _record_text(project_dir: Path) -> str:
    path = project_dir / RECORD_FILE
    return path.read_text(encoding="utf-8") if path.exists() else ""


def verify(project_dir: Path, stack: str, cosign: str) -> int:
    """`cosign verify` every recorded image the stack deploys, before `pulumi up` uses it.

    Each must carry a keyless signature whose certificate names release.yml at the version's tag, issued
    to a GitHub Actions OIDC token. A version with no record fails here as the program would (exit 2),
    except in a stack that builds unreleased versions (dev), where it is built, not a release.
    """
    text, _ = read_stack_file(stack_path(project_dir, stack))
    signer, deployed, unreleased = deployed_images(text, f"Pulumi.{stack}.yaml")
    try:
        recorded = parse_record(_record_text(project_dir), RECORD_FILE)
    except RecordError as err:
        raise ReleaseError(str(err)) from None
    for service, version, key in deployed:
        image = recorded.image(service, version)
        if image is None:
            if unreleased:
                print(f"{service} {version}: not released, built by this stack (dev); no release signature")
                continue
            raise ReleaseError(
                f"{key}: {service} {version} ({stack}) has no release record in {RECORD_FILE}; release it "
                f"(push the tag {service}/v{version}: release.yml builds, signs and records it), merge the "
                "record's pull request, then deploy it"
            )
        if not signer:
            raise ReleaseError(
                f"{NAMESPACE}:sourceRepository ({stack}) is not https://github.com/<owner>/<repo>, so the "
                f"release signer is unknown; set {NAMESPACE}:admission.signer to the <owner>/<repo> whose "
                "release.yml signs the images"
            )
        command = [
            cosign,
            "verify",
            image.ref,
            "--certificate-identity-regexp",
            signer_identity(signer, service, version),
            "--certificate-oidc-issuer",
            GITHUB_ISSUER,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise ReleaseError(
                f"{cosign} is not installed; install cosign (sigstore/cosign-installer)"
            ) from None
        if done.returncode != 0:
            problem = (done.stderr.strip().splitlines() or ["no valid signature"])[-1]
            raise ReleaseError(
                f"{service} {version}: {image.ref} is not signed by {RELEASE_WORKFLOW} at "
                f"{service}/v{version} ({problem}); deploy only what the release signed"
            )
        print(f"{service} {version}: {image.ref} signed by {RELEASE_WORKFLOW}@refs/tags/{service}/v{version}")
    return 0


def with_record(text: str, service: str, version: str, repository: str, digest: str) -> str:
    """The record with one more entry, edited round-trip (comments and other entries unchanged)."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    data = yaml.load(text) or CommentedMap()
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        services = data["services"] = CommentedMap()
    versions = services.get(service)
    if not isinstance(versions, dict):
        versions = services[service] = CommentedMap()
    entry = CommentedMap(repository=repository, digest=digest)
    entry.fa.set_flow_style()
    versions[DoubleQuotedScalarString(version)] = entry
    entry["digest"] = DoubleQuotedScalarString(digest)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def pack_config(text: str, recorded: Mapping[str, Mapping[str, Any]]) -> str:
    """A pack config with `image-release-recorded`'s digests set from the record, the rest as it was."""
    config = json.loads(text)
    block = config.get(RECORD_POLICY) if isinstance(config.get(RECORD_POLICY), dict) else {}
    block["recorded"] = {
        s: {v: image.digest for v, image in sorted(vs.items())} for s, vs in sorted(recorded.items())
    }
    config[RECORD_POLICY] = block
    return json.dumps(config, indent=2) + "\n"


def _count(items: Sequence[object], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _read(path: Path) -> tuple[str, str]:
    if not path.is_file():
        raise ReleaseError(f"{path}: not found; run from the project (or pass --project-dir)")
    return read_stack_file(path)


def _write_changelog(path: Path, new: str, read_digest: str | None) -> None:
    """Replace it atomically if it was read (and is unchanged), else create it, never over a new file."""
    if read_digest is not None:
        write_stack_file(path, new, read_digest)
        return
    try:
        with open(path, "x", encoding="utf-8", newline="") as created:
            created.write(new)
    except FileExistsError:
        raise ReleaseError(f"{path}: created while the release ran; run again") from None


def _diff(path: Path, old: str, new: str) -> Iterable[str]:
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), str(path), str(path), lineterm="")
    return (f"{line}\n" for line in lines)


def main(argv: list[str], project_dir: Path) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m delivery.release", description=(__doc__ or "").split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="next versions, changelog, the dev stack's versions, the pack's")
    prep.add_argument("--dry-run", action="store_true", help="print, write nothing")
    prom = sub.add_parser("promote", help="the one-line version edit that carries a release one stack on")
    prom.add_argument("--to", required=True, choices=sorted(PROMOTES_FROM))
    prom.add_argument("--service", required=True)
    prom.add_argument("--dry-run", action="store_true", help="print, write nothing")
    rec = sub.add_parser("record", help="record a release's digest (releases.yaml and the pack configs)")
    rec.add_argument("--service", required=True)
    rec.add_argument("--version", required=True)
    rec.add_argument("--digest", required=True, help="sha256:<64 hex>, the build's digest")
    rec.add_argument("--repository", required=True, help="where the release pushed it: ghcr.io/<owner>/<svc>")
    rec.add_argument("--dry-run", action="store_true", help="print, write nothing")
    ver = sub.add_parser("verify", help="cosign verify every recorded image a stack deploys")
    ver.add_argument("--stack", required=True)
    ver.add_argument("--cosign", default="cosign", help="the cosign executable")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            return prepare(project_dir, args.dry_run)
        if args.command == "verify":
            return verify(project_dir, args.stack, args.cosign)
        if args.command == "record":
            return record(project_dir, args.service, args.version, args.digest, args.repository, args.dry_run)
        return promote(project_dir, args.to, args.service, args.dry_run)
    except (ReleaseError, StackFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # one the checks did not foresee: still one line
        print(
            f"error: {err.filename or project_dir}: {err.strerror or err}; nothing more was written",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    project, rest = split_project_dir(sys.argv[1:])
    sys.exit(main(rest, project))
