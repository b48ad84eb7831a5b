"""Release management: versions and the changelog from a fixture history (a git repository made here,
no network), the stack and pack edits `prepare` and `promote` make, their refusals, and the release
workflow's order (build once, sign and attest, then publish)."""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.image import RELEASE_TAG_PREFIX
from components.releases import RECORD_FILE
from components.rollout import CanaryRollout
from components.schema import ServiceSettings
from delivery import release
from preflight.engine import run_program
from preflight.stackconfig import load_stack_config
from tests.conftest import PROJECT_ENTRIES, ROOT
from tests.test_pipelines import action, workflow

TODAY = date(2026, 3, 14)
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Release Test",
    "GIT_AUTHOR_EMAIL": "release@example.com",
    "GIT_COMMITTER_NAME": "Release Test",
    "GIT_COMMITTER_EMAIL": "release@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,  # no signing or hooks from whoever runs the tests
    "GIT_CONFIG_NOSYSTEM": "1",
}


class Repo:
    """A project clone in miniature: the real stack and pack files, stand-ins for the code."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        for stack in ("dev", "staging", "prod"):
            shutil.copy2(ROOT / f"Pulumi.{stack}.yaml", path / f"Pulumi.{stack}.yaml")
        for name in ("PulumiPolicy.yaml",):
            (path / "policies").mkdir(exist_ok=True)
            shutil.copy2(ROOT / "policies" / name, path / "policies" / name)
        for name, text in {
            "app/server.py": "print('serve')\n",
            "app/Dockerfile": "FROM python:3.12-slim\n",
            "policies/images_registries.py": "# policies\n",
            "policies/config/dev.json": "{}\n",
            "components/web.py": "# web\n",
            "components/worker.py": "# worker\n",
            "preflight/engine.py": "# preflight\n",
            "README.md": "# readme\n",
        }.items():
            self.write(name, text)
        self.commit("chore: import the project")

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.path), *args],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **GIT_ENV},
        )
        return done.stdout

    def write(self, name: str, text: str) -> None:
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def change(self, message: str, *names: str) -> str:
        """A commit that appends a line to each file; its short sha."""
        for name in names:
            with open(self.path / name, "a") as file:
                file.write(f"# {message.splitlines()[0]}\n")
        return self.commit(message)

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "--short=7", "HEAD").strip()

    def tag(self, *names: str) -> None:
        for name in names:
            self.git("tag", "-a", name, "-m", name)

    def read(self, name: str) -> str:
        return (self.path / name).read_text()


def run(repo: Repo, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = release.main(list(argv), repo.path)
    out = capsys.readouterr()
    return code, out.out, out.err


def changed(old: str, new: str) -> list[str]:
    """The -/+ lines of a diff; every other line is byte for byte the same."""
    return [
        line
        for line in difflib.unified_diff(old.splitlines(True), new.splitlines(True), n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


@pytest.fixture
def history(tmp_path: Path) -> tuple[Repo, dict[str, str]]:
    """Released web 1.5.0-rc.1, worker 2.1.0-rc.1 and the pack 0.1.0 (the versions the real files
    declare), then: a breaking change of web, a fix of worker only, an unscoped fix and a chore in the
    shared app/ (both images), a pack feature, and commits that release nothing."""
    repo = Repo(tmp_path / "repo")
    repo.tag("web/v1.5.0-rc.1", "worker/v2.1.0-rc.1", "policies/v0.1.0")
    shas = {
        "breaking": repo.change(
            "feat(web)!: serve the API under /v2 only\n\nBREAKING CHANGE: the /v1 routes are gone",
            "components/web.py",
        ),
        "worker": repo.change("fix(worker): retry the queue connection", "components/worker.py"),
        "unscoped": repo.change("fix: exit cleanly on SIGTERM", "app/server.py"),
        "chore": repo.change("chore: newer base image", "app/Dockerfile"),
        "pack": repo.change("feat(policies): refuse unsigned images", "policies/images_registries.py"),
    }
    repo.change("fix: advisory in dev", "policies/config/dev.json")  # enforcement config: no pack release
    repo.change("docs: how to release", "README.md")
    repo.change("feat(preflight): a faster gate", "preflight/engine.py")  # not a component
    repo.change("Tidy the engine", "preflight/engine.py")
    return repo, shas


# --- versions and the changelog ----------------------------------------------------------------------


def test_next_versions_and_the_changelog_come_from_the_history(
    history: tuple[Repo, dict[str, str]],
) -> None:
    repo, sha = history
    dev, pack = repo.read("Pulumi.dev.yaml"), repo.read("policies/PulumiPolicy.yaml")
    assert release.prepare(repo.path, dry_run=False, today=TODAY) == 0
    assert repo.read("CHANGELOG.md") == release.CHANGELOG_HEADER + (
        "\n"
        "## web 2.0.0 (2026-03-14)\n"
        "\n"
        "### BREAKING CHANGE\n"
        "\n"
        f"- the /v1 routes are gone ({sha['breaking']})\n"
        "\n"
        "### Features\n"
        "\n"
        f"- **web**: serve the API under /v2 only ({sha['breaking']})\n"
        "\n"
        "### Bug fixes\n"
        "\n"
        f"- exit cleanly on SIGTERM ({sha['unscoped']})\n"
        "\n"
        "### Other changes to the image\n"
        "\n"
        f"- chore: newer base image ({sha['chore']})\n"
        "\n"
        "## worker 2.1.0 (2026-03-14)\n"
        "\n"
        "### Bug fixes\n"
        "\n"
        f"- exit cleanly on SIGTERM ({sha['unscoped']})\n"
        f"- **worker**: retry the queue connection ({sha['worker']})\n"
        "\n"
        "### Other changes to the image\n"
        "\n"
        f"- chore: newer base image ({sha['chore']})\n"
        "\n"
        "## policies 0.2.0 (2026-03-14)\n"
        "\n"
        "### Features\n"
        "\n"
        f"- **policies**: refuse unsigned images ({sha['pack']})\n"
    )
    # One line per bumped service in the dev stack, one in the pack; the rest byte for byte.
    assert changed(dev, repo.read("Pulumi.dev.yaml")) == [
        "-      version: 1.5.0-rc.1\n",
        "+      version: 2.0.0\n",
        "-      version: 2.1.0-rc.1\n",
        "+      version: 2.1.0\n",
    ]
    assert len(dev.splitlines(True)) == len(repo.read("Pulumi.dev.yaml").splitlines(True))
    assert "# Developers pull dev images from GHCR too" in repo.read("Pulumi.dev.yaml")
    assert changed(pack, repo.read("policies/PulumiPolicy.yaml")) == [
        "-version: 0.1.0\n",
        "+version: 0.2.0\n",
    ]


def test_the_next_release_starts_at_the_last_tag_and_keeps_the_changelog(
    history: tuple[Repo, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, _ = history
    release.prepare(repo.path, dry_run=False, today=TODAY)
    repo.commit("chore(release): web 2.0.0, worker 2.1.0, policies 0.2.0")
    repo.tag("web/v2.0.0", "worker/v2.1.0", "policies/v0.2.0")
    first = repo.read("CHANGELOG.md")
    fix = repo.change("fix(worker): close idle connections", "components/worker.py")
    capsys.readouterr()

    code, out, _ = run(repo, "prepare", capsys=capsys)
    assert code == 0
    assert "worker: 2.1.0 -> 2.1.1 (patch; 1 commit, since worker/v2.1.0)" in out
    assert "web:" not in out and "policies:" not in out  # nothing since their tags
    assert "  git tag -a worker/v2.1.1 -m 'worker 2.1.1' <commit>" in out
    assert "  git push origin worker/v2.1.1" in out
    section = f"## worker 2.1.1 ({date.today().isoformat()})\n\n### Bug fixes\n\n"
    section += f"- **worker**: close idle connections ({fix})\n\n"
    assert repo.read("CHANGELOG.md") == first.replace("## web 2.0.0", section + "## web 2.0.0", 1)


def test_a_change_to_the_image_is_a_release_even_without_a_bumping_type(tmp_path: Path) -> None:
    """The deploy rebuilds each image at its version: new bytes under an old tag would be refused."""
    repo = Repo(tmp_path / "repo")
    repo.tag("web/v1.5.0", "worker/v2.1.0", "policies/v0.1.0")
    repo.change("build: pin pip", "app/Dockerfile")
    repo.change("chore: tidy a policy", "policies/images_registries.py")  # the pack waits for a bump
    repo.change("fix: advisory in dev", "policies/config/dev.json")  # enforcement config, not the pack
    repo.change("test: more cases", "README.md")
    releases = plans(repo)
    assert {name: r.version for name, r in releases.items()} == {"web": "1.5.1", "worker": "2.1.1"}


def test_before_the_first_tag_the_declared_versions_are_the_base(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")  # no tags: the dev stack's versions and PulumiPolicy.yaml's
    repo.change("feat: a /ready endpoint", "app/server.py")
    repo.change("fix(policies): a clearer message", "policies/images_registries.py")
    releases = plans(repo)
    assert {name: (r.previous, r.since, r.version) for name, r in releases.items()} == {
        "web": ("1.5.0-rc.1", None, "1.5.0"),
        "worker": ("2.1.0-rc.1", None, "2.1.0"),
        "policies": ("0.1.0", None, "0.1.1"),
    }


def test_a_scope_releases_its_service_and_shared_files_release_every_image_built_from_them(
    tmp_path: Path,
) -> None:
    repo = Repo(tmp_path / "repo")
    repo.tag("web/v1.0.0", "worker/v1.0.0", "policies/v1.0.0")
    repo.change("feat(web,policies): a header", "components/web.py")  # two scopes, no shared file
    repo.change("feat(worker)!: a new queue format", "app/server.py")  # scoped, but in both images
    releases = plans(repo)
    assert {name: r.version for name, r in releases.items()} == {
        "web": "2.0.0",
        "worker": "2.0.0",
        "policies": "1.1.0",
    }


def plans(repo: Repo) -> dict[str, release.Release]:
    git = release.Git(repo.path)
    files = release.Files(repo.path, git)
    dev = repo.path / "Pulumi.dev.yaml"
    entries = release.services(dev.read_text(), str(dev))
    tags, reachable = git.tags(), git.tags(merged=True)
    found = (
        release.plan(c, git, tags, reachable)
        for c in release.components(files, entries, repo.read("policies/PulumiPolicy.yaml"), dev)
    )
    return {r.component.name: r for r in found if r is not None}


# --- refusals ----------------------------------------------------------------------------------------


def test_a_version_with_a_tag_is_refused(
    history: tuple[Repo, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, _ = history
    repo.git("checkout", "-q", "-b", "hotfix")
    repo.change("fix: hotfix", "components/web.py")
    repo.tag("web/v2.0.0")  # released from a branch main does not contain
    repo.git("checkout", "-q", "main")
    before = snapshot(repo)
    code, out, err = run(repo, "prepare", capsys=capsys)
    assert code == 2 and out == ""
    assert err == (
        "error: web 2.0.0 already exists: tag web/v2.0.0 is on a commit HEAD does not contain (a release "
        "branch?); merge that branch, so the release starts after it, or delete the tag\n"
    )
    assert snapshot(repo) == before


def test_a_version_already_in_a_stack_file_is_refused(
    history: tuple[Repo, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, _ = history
    repo.write(
        "Pulumi.dev.yaml", repo.read("Pulumi.dev.yaml").replace("version: 1.5.0-rc.1", "version: 2.0.0")
    )
    repo.commit("chore: web 2.0.0 by hand")
    before = snapshot(repo)
    code, _, err = run(repo, "prepare", capsys=capsys)
    assert code == 2
    assert err == (
        "error: web 2.0.0 already exists in Pulumi.dev.yaml pouw-cicd:services[0].version: if it was "
        "released, tag that commit (`git tag -a web/v2.0.0 -m 'web 2.0.0' <commit>` and push it); if it "
        "was a hand edit, restore 1.5.0-rc.1 there; then run prepare again\n"
    )
    assert snapshot(repo) == before
    # The pack's own version counts the same way.
    repo.write(
        "Pulumi.dev.yaml", repo.read("Pulumi.dev.yaml").replace("version: 2.0.0", "version: 1.5.0-rc.1")
    )
    repo.write(
        "policies/PulumiPolicy.yaml", repo.read("policies/PulumiPolicy.yaml").replace("0.1.0", "0.2.0")
    )
    repo.commit("chore: undo, and the pack by hand")
    code, _, err = run(repo, "prepare", capsys=capsys)
    assert code == 2 and "policies 0.2.0 already exists in policies/PulumiPolicy.yaml version" in err


def test_a_dirty_or_missing_stack_file_is_one_line_and_exit_2(
    history: tuple[Repo, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, _ = history
    dev = repo.path / "Pulumi.dev.yaml"
    dev.write_text(dev.read_text() + "# a note\n")
    before = snapshot(repo)
    code, _, err = run(repo, "prepare", capsys=capsys)
    assert (code, err) == (
        2,
        f"error: {dev} has uncommitted changes; commit or revert them first, so the release edit is "
        "reviewed on its own (or pass --dry-run)\n",
    )
    assert snapshot(repo) == before
    code, out, _ = run(repo, "prepare", "--dry-run", capsys=capsys)  # a dry run writes nothing: it may
    assert code == 0 and "dry run: nothing written" in out and snapshot(repo) == before

    dev.unlink()
    repo.commit("chore: no dev stack")
    done = subprocess.run(
        [sys.executable, "-m", "delivery.release", "--project-dir", str(repo.path), "prepare"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: {dev}: no such stack file; known stacks: prod, staging; pass one with --stack"
    ]


def snapshot(repo: Repo) -> dict[str, bytes]:
    return {
        str(p.relative_to(repo.path)): p.read_bytes()
        for p in sorted(repo.path.rglob("*"))
        if p.is_file() and ".git" not in p.parts
    }


# --- promotion ---------------------------------------------------------------------------------------

# Promotion reads and edits only `pouw-cicd:services`: small stack files of each rollout kind, with the
# comments and quoting a user's file has (the real staging and prod files change with the project).
STAGING = """# staging: what passed dev, promoted by reviewed pull requests.
config:
  pouw-cicd:environment: staging
  pouw-cicd:services:
    - name: web
      version: 1.4.2 # promoted from dev
      port: 8080
      # Blue-green: the idle slot is previewed; promote switches activeSlot.
      rollout:
        strategy: blue-green
        activeSlot: blue
        slots:
          blue: {version: 1.4.1}
          green: {version: 1.4.2}
    - name: worker
      version: "2.0.1"
      targets: [ecs]
"""
PROD = """config:
  pouw-cicd:environment: prod
  pouw-cicd:services:
    - name: web
      version: 1.4.2
      # Canary: walk the steps with preflight rollout set-weight.
      rollout:
        strategy: canary
        slots:
          stable:
            version: 1.4.1
          canary: {version: 1.4.2, weight: 20}
        steps:
          - setWeight: 20
          - pause: {}
          - setWeight: 100
"""


@pytest.fixture
def stacks(tmp_path: Path) -> Repo:
    """Released web 1.5.0-rc.1 and worker 2.1.0-rc.1 (the dev stack's), and the files above."""
    repo = Repo(tmp_path / "repo")
    repo.tag("web/v1.5.0-rc.1", "worker/v2.1.0-rc.1")
    repo.write("Pulumi.staging.yaml", STAGING)
    repo.write("Pulumi.prod.yaml", PROD)
    repo.write(RECORD_FILE, RECORDED)  # what release.yml's record pull requests merged
    repo.commit("chore: staging and prod")
    return repo


RECORDED = f"""services:
  web:
    "1.5.0-rc.1": {{repository: ghcr.io/pouw/web, digest: "sha256:{"1" * 64}"}}
  worker:
    "2.1.0-rc.1": {{repository: ghcr.io/pouw/worker, digest: "sha256:{"2" * 64}"}}
"""


def test_a_tagged_version_whose_record_is_not_merged_is_not_promoted(
    stacks: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    stacks.write(RECORD_FILE, "services: {}\n")
    stacks.commit("chore: the record pull request not merged yet")
    code, _, err = run(stacks, "promote", "--to", "staging", "--service", "worker", capsys=capsys)
    assert code == 2
    assert "worker 2.1.0-rc.1 was tagged but its digest is not in releases.yaml: merge the record's" in err
    assert stacks.read("Pulumi.staging.yaml") == STAGING


def test_promote_is_the_version_line_for_a_rolling_service(
    stacks: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(stacks, "promote", "--to", "staging", "--service", "worker", capsys=capsys)
    assert code == 0
    assert changed(STAGING, stacks.read("Pulumi.staging.yaml")) == [
        '-      version: "2.0.1"\n',
        '+      version: "2.1.0-rc.1"\n',  # its quotes kept
    ]
    assert out.endswith("commit message: release(staging/worker): 2.1.0-rc.1\n")
    stacks.commit("release(staging/worker): 2.1.0-rc.1")
    code, _, err = run(stacks, "promote", "--to", "staging", "--service", "worker", capsys=capsys)
    assert code == 2 and "worker is already at 2.1.0-rc.1 (pouw-cicd:services[1].version)" in err


def test_promote_puts_the_version_into_the_idle_blue_green_slot(
    stacks: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(stacks, "promote", "--to", "staging", "--service", "web", capsys=capsys)
    assert code == 2 and err == (
        f"error: {stacks.path / 'Pulumi.staging.yaml'}: web's idle slot green runs 1.4.2, which was never "
        "switched to (activeSlot: blue); finish that release first with `python -m preflight rollout "
        "promote --stack staging --service web`, or set green's version back to the active one by hand, "
        "then promote 1.5.0-rc.1\n"
    )
    assert stacks.read("Pulumi.staging.yaml") == STAGING
    switched = STAGING.replace("activeSlot: blue", "activeSlot: green")
    stacks.write("Pulumi.staging.yaml", switched)
    stacks.commit("rollout(staging/web): promote")
    assert run(stacks, "promote", "--to", "staging", "--service", "web", capsys=capsys)[0] == 0
    assert changed(switched, stacks.read("Pulumi.staging.yaml")) == [
        "-      version: 1.4.2 # promoted from dev\n",
        "+      version: 1.5.0-rc.1 # promoted from dev\n",
        "-          blue: {version: 1.4.1}\n",
        "+          blue: {version: 1.5.0-rc.1}\n",
    ]


def test_promote_starts_a_canary_at_the_first_step(stacks: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    staging = STAGING.replace("version: 1.4.2 # promoted from dev", "version: 1.5.0-rc.1")
    stacks.write(
        "Pulumi.staging.yaml", staging.replace("green: {version: 1.4.2}", "green: {version: 1.5.0-rc.1}")
    )
    stacks.commit("release(staging/web): 1.5.0-rc.1")
    code, _, err = run(stacks, "promote", "--to", "prod", "--service", "web", capsys=capsys)
    assert code == 2 and err == (
        f"error: {stacks.path / 'Pulumi.prod.yaml'}: web's canary 1.4.2 is still in "
        "pouw-cicd:services[0].rollout.slots; finish it with `python -m preflight rollout promote --stack "
        "prod --service web` or remove the canary slot, then promote 1.5.0-rc.1\n"
    )
    finished = PROD.replace(
        "version: 1.4.1\n          canary: {version: 1.4.2, weight: 20}\n", "version: 1.4.2\n"
    )
    stacks.write("Pulumi.prod.yaml", finished)
    stacks.commit("rollout(prod/web): promote")
    assert run(stacks, "promote", "--to", "prod", "--service", "web", capsys=capsys)[0] == 0
    promoted = stacks.read("Pulumi.prod.yaml")
    assert changed(finished, promoted) == [
        "-      version: 1.4.2\n",
        "+      version: 1.5.0-rc.1\n",
        "+          canary: {version: 1.5.0-rc.1, weight: 20}\n",  # the weight the steps start with
    ]
    # What the program reads: the canary runs the promoted version, so the update builds for a slot.
    (item,) = yaml.safe_load(promoted)["config"]["pouw-cicd:services"]
    service = ServiceSettings.model_validate(item)
    service.rollout.check(service.version)
    assert isinstance(service.rollout, CanaryRollout) and service.rollout.weights == {
        "canary": 20,
        "stable": 80,
    }
    # An explicit stable weight moves with it.
    weighted = finished.replace(
        "version: 1.4.2\n        steps", "version: 1.4.2\n            weight: 100\n        steps"
    )
    assert weighted != finished
    stacks.write("Pulumi.prod.yaml", weighted)
    stacks.commit("chore: stable's weight spelt out")
    assert run(stacks, "promote", "--to", "prod", "--service", "web", capsys=capsys)[0] == 0
    assert changed(weighted, stacks.read("Pulumi.prod.yaml"))[-3:] == [
        "-            weight: 100\n",
        "+            weight: 80\n",
        "+          canary: {version: 1.5.0-rc.1, weight: 20}\n",
    ]


def test_the_dev_stack_prepare_writes_runs_under_the_program(
    history: tuple[Repo, dict[str, str]], tmp_path: Path
) -> None:
    repo, _ = history
    release.prepare(repo.path, dry_run=False, today=TODAY)
    project = tmp_path / "project"
    project.mkdir()
    for entry in PROJECT_ENTRIES:
        (project / entry).symlink_to(ROOT / entry)
    shutil.copy2(repo.path / "Pulumi.dev.yaml", project / "Pulumi.dev.yaml")
    ran = run_program(project, load_stack_config(project, "dev"))
    assert ran.error is None, ran.error_text
    labels = {r.name: r.inputs["labels"] for r in ran.by_type("docker-build:index:Image")}
    assert {name: label["org.opencontainers.image.version"] for name, label in labels.items()} == {
        "web": "2.0.0",
        "worker": "2.1.0",
    }


def test_only_a_released_version_is_promoted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = Repo(tmp_path / "repo")  # no tag: dev's 1.5.0-rc.1 was never built by a release
    code, _, err = run(repo, "promote", "--to", "staging", "--service", "web", capsys=capsys)
    assert code == 2 and err == (
        "error: web 1.5.0-rc.1 (Pulumi.dev.yaml) was never released: no tag web/v1.5.0-rc.1; release it "
        "first (`python -m delivery.release prepare`, merge, push the tag): every environment runs that "
        "build\n"
    )
    code, _, err = run(repo, "promote", "--to", "staging", "--service", "api", capsys=capsys)
    assert code == 2 and "no service 'api' to promote from" in err


# --- the changelog file and the release workflow -----------------------------------------------------


def test_the_repository_changelog_is_the_generated_one() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith(release.CHANGELOG_HEADER)
    headings = re.findall(r"^## (\S+) (\S+) \(\d{4}-\d{2}-\d{2}\)$", text, re.MULTILINE)
    assert len(headings) == text.count("\n## ")  # every section is one prepare wrote


def release_jobs() -> dict[str, Any]:
    jobs: dict[str, Any] = workflow("release.yml")["jobs"]
    return jobs


def test_release_runs_on_a_pushed_tag_and_builds_once_from_it() -> None:
    flow = workflow("release.yml")
    assert flow["on"] == {"push": {"tags": ["*/v*"]}}
    assert flow["permissions"] == {} and flow["concurrency"]["cancel-in-progress"] is False
    jobs = release_jobs()
    builds = [
        (name, step)
        for name, job in jobs.items()
        for step in job["steps"]
        if action(step) == "docker/build-push-action"
    ]
    assert [name for name, _ in builds] == ["build"]  # one build, in one job
    (_, build), checkout = builds[0], jobs["build"]["steps"][0]
    assert action(checkout) == "actions/checkout" and "ref" not in checkout.get(
        "with", {}
    )  # the tag's commit
    assert build["with"]["push"] is True and build["with"]["tags"].endswith(
        ":${{ needs.tag.outputs.version }}"
    )
    assert jobs["build"]["outputs"]["digest"] == "${{ steps.build.outputs.digest }}"
    assert jobs["build"]["if"] == "needs.tag.outputs.kind == 'service'"


def test_signing_and_attestation_come_before_the_release() -> None:
    jobs = release_jobs()
    sign = jobs["sign"]
    assert sign["needs"] == ["tag", "build"]
    steps = [action(s) or s.get("run", "") for s in sign["steps"]]
    installer = steps.index("sigstore/cosign-installer")
    signing = next(i for i, s in enumerate(steps) if s.startswith("cosign sign --yes "))
    sbom = steps.index("anchore/sbom-action")
    attests = [i for i, s in enumerate(sign["steps"]) if action(s) == "actions/attest"]
    assert installer < signing and sbom < attests[0]
    kinds = {"sbom-path" in sign["steps"][i]["with"] for i in attests}
    assert kinds == {True, False}  # an SBOM attestation and the (default) SLSA provenance one
    for i in attests:
        assert sign["steps"][i]["with"]["subject-digest"] == "${{ needs.build.outputs.digest }}"
        assert sign["steps"][i]["with"]["push-to-registry"] is True
    verify = next(i for i, s in enumerate(steps) if "cosign verify" in s)
    assert verify > max(attests) and "--certificate-oidc-issuer" in steps[verify]
    assert sign["env"]["DIGEST"] == "${{ needs.build.outputs.digest }}"

    publish = jobs["release"]
    assert set(publish["needs"]) >= {"sign", "record", "publish-pack"}
    # An image's release waits for its record (the digest is up for review), not only for the signing.
    assert "needs.sign.result == 'success' && needs.record.result == 'success'" in publish["if"]
    assert "needs.publish-pack.result == 'success'" in publish["if"]
    assert any("gh release create" in s.get("run", "") for s in publish["steps"])
    notes = next(s for s in publish["steps"] if s.get("name") == "Release notes")
    assert notes["env"]["DIGEST"] == "${{ needs.build.outputs.digest }}"  # the build step's output


def test_id_token_write_only_where_signing_or_pulumi_login_happens() -> None:
    jobs = release_jobs()
    with_id_token = {
        name for name, job in jobs.items() if job.get("permissions", {}).get("id-token") == "write"
    }
    assert with_id_token == {"sign", "publish-pack"}
    signers = {
        name
        for name, job in jobs.items()
        for s in job["steps"]
        if action(s) in {"sigstore/cosign-installer", "actions/attest"}
    }
    assert signers == {"sign"}
    # The pack job's token is for Pulumi Cloud's OIDC exchange, and it signs nothing.
    assert [action(s) for s in jobs["publish-pack"]["steps"]].count("pulumi/auth-actions") == 1
    assert jobs["release"]["permissions"] == {"contents": "write"}
    assert jobs["build"]["permissions"] == {"contents": "read", "packages": "write"}
    assert jobs["tag"]["permissions"] == {}


def test_a_policies_tag_publishes_the_pack_at_the_tagged_version() -> None:
    job = release_jobs()["publish-pack"]
    assert job["if"] == "needs.tag.outputs.kind == 'pack'"
    steps = job["steps"]
    names = [s.get("name", action(s)) for s in steps]
    publish = steps[names.index("Publish to the organisation")]
    assert publish["run"] == 'pulumi policy publish "$ORG"' and publish["working-directory"] == "policies"
    assert names.index("The tag is the pack's version") < names.index("Publish to the organisation")
    assert names.index("Policy pack environment") < names.index("Publish to the organisation")
    assert "policy-venv" in steps[names.index("Policy pack environment")]["run"]


def step_script(job: str, name: str) -> str:
    (step,) = [s for s in release_jobs()[job]["steps"] if s.get("name") == name]
    script: str = step["run"]
    return script


@pytest.mark.parametrize(
    ("tag", "outputs"),
    [
        ("web/v1.6.0", "component=web\nversion=1.6.0\nkind=service\n"),
        ("worker/v2.0.0-rc.1", "component=worker\nversion=2.0.0-rc.1\nkind=service\n"),
        ("policies/v0.2.0", "component=policies\nversion=0.2.0\nkind=pack\n"),
        ("v1.0.0", None),
        ("web/v1.6", None),
    ],
)
def test_the_tag_names_the_component_and_version(tmp_path: Path, tag: str, outputs: str | None) -> None:
    out = tmp_path / "github_output"
    out.touch()
    done = subprocess.run(
        ["bash", "-c", step_script("tag", "Component and version from the tag")],
        env={**os.environ, "TAG": tag, "GITHUB_OUTPUT": str(out)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode == 0) == (outputs is not None), done.stdout
    assert out.read_text() == (outputs or "")


def test_release_notes_list_the_version_and_the_digest_per_registry(
    history: tuple[Repo, dict[str, str]], tmp_path: Path
) -> None:
    repo, sha = history
    release.prepare(repo.path, dry_run=False, today=TODAY)
    digest = "sha256:" + "ab" * 32
    env = {
        **os.environ,
        "COMPONENT": "web",
        "VERSION": "2.0.0",
        "KIND": "service",
        "IMAGE": "ghcr.io/pouw/web",
        "DIGEST": digest,
        "GITHUB_SHA": "f" * 40,
        "IDENTITY": "https://github.com/pouw/pouw-cicd/.github/workflows/release.yml@refs/tags/web/v2.0.0",
    }
    script = step_script("release", "Release notes")
    subprocess.run(["bash", "-c", script], cwd=repo.path, env=env, check=True)
    notes = (repo.path / "notes.md").read_text()
    assert f"| web | 2.0.0 | ghcr.io | `ghcr.io/pouw/web@{digest}` |" in notes
    # the environments' copies: their tag (components/image.py RELEASE_TAG_PREFIX) and the same digest
    copies = f"`<registry>/web:{RELEASE_TAG_PREFIX}2.0.0`, the same `{digest}`"
    assert f"| web | 2.0.0 | each environment's ECR, Artifact Registry, ACR | {copies}" in notes
    assert f"- **web**: serve the API under /v2 only ({sha['breaking']})" in notes
    assert "## worker" not in notes and "retry the queue" not in notes  # only this release's section
    subprocess.run(
        ["bash", "-c", script],
        cwd=repo.path,
        env={**env, "COMPONENT": "policies", "VERSION": "0.2.0", "KIND": "pack", "IMAGE": "", "DIGEST": ""},
        check=True,
    )
    notes = (repo.path / "notes.md").read_text()
    assert "pulumi policy enable <org>/pouw-cicd 0.2.0 --config policies/config/<stack>.json" in notes
    assert f"- **policies**: refuse unsigned images ({sha['pack']})" in notes
