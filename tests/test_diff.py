"""`preflight diff`: the program at a git revision against the working tree, through real program runs.

Each scenario is a clone of a throwaway repository holding the project, edited in its working tree
and compared with `origin/main`. The scenarios run once per module, side by side (each diff runs
its two programs in their own interpreters), and the tests read their results.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from components.releases import RECORD_FILE
from delivery.release import with_record
from preflight import diff
from preflight.engine import PlanDiff, ProgramRun, Registration
from preflight.program_imports import forkserver
from tests.conftest import ROOT, sample_digest

GIT = [
    "git",
    "-c",
    "user.name=preflight",
    "-c",
    "user.email=preflight@example.com",
    "-c",
    "commit.gpgsign=false",
]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run([*GIT, *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with the project's tracked files (as they are in the working tree), one commit."""
    repo = tmp_path_factory.mktemp("origin")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    return repo


# The edits. Each one is what a pull request would change.


def record(repo: Path, service: str, *versions: str) -> None:
    """What the release of each version merged into releases.yaml (staging and prod deploy only those)."""
    path = repo / RECORD_FILE
    for version in versions:
        digest = sample_digest(service, version)
        path.write_text(with_record(path.read_text(), service, version, f"ghcr.io/pouw/{service}", digest))


def rename_service(repo: Path) -> None:
    """prod: the ECS/ACI service `worker` becomes `jobs` (config only)."""
    replace_in(repo / "Pulumi.prod.yaml", "- name: worker", "- name: jobs")
    record(repo, "jobs", "2.0.0", "2.0.1")


def shift_canary(repo: Path) -> None:
    """prod: web's canary goes from 10% to 50% (a pure traffic step)."""
    replace_in(
        repo / "Pulumi.prod.yaml",
        "canary: {version: 1.4.2, weight: 10}",
        "canary: {version: 1.4.2, weight: 50}",
    )


def bump_version(repo: Path) -> None:
    """dev: web (rolling on EKS, all traffic on its one slot) gets a new version."""
    replace_in(repo / "Pulumi.dev.yaml", "version: 1.5.0-rc.1", "version: 1.5.0-rc.2")


def rename_key_and_bump_idle_slot(repo: Path) -> None:
    """prod: the ECR key's logical name changes in components/ (no alias), and worker's idle
    green slot gets a new version (blue keeps all traffic)."""
    replace_in(repo / "components" / "registry.py", 'f"{name}-key",', 'f"{name}-cmk",')
    prod = repo / "Pulumi.prod.yaml"
    replace_in(prod, "version: 2.0.1\n", "version: 2.0.2\n")
    replace_in(prod, "green: {version: 2.0.1}", "green: {version: 2.0.2}")
    record(repo, "worker", "2.0.2")


def rename_component_with_alias(repo: Path) -> None:
    """prod: each service's EcrRepository component is renamed `<svc>-images`, aliased to `<svc>-ecr`."""
    replace_in(
        repo / "components" / "registry.py",
        'f"{service}-ecr",\n                EcrRepositoryArgs(',
        'f"{service}-images",\n'
        '                opts=pulumi.ResourceOptions(aliases=[pulumi.Alias(name=f"{service}-ecr")]),\n'
        "                args=EcrRepositoryArgs(",
    )


def shift_canary_and_rename_component(repo: Path) -> None:
    """Both at once: neither deletes, creates or restarts anything."""
    shift_canary(repo)
    rename_component_with_alias(repo)


def next_release(repo: Path) -> None:
    """prod: worker's green (2.0.1, this base's build) goes live, and 2.0.2 is built into blue."""
    prod = repo / "Pulumi.prod.yaml"
    replace_in(prod, "version: 2.0.1\n", "version: 2.0.2\n")
    replace_in(prod, "activeSlot: blue", "activeSlot: green")
    replace_in(prod, "blue: {version: 2.0.0}", "blue: {version: 2.0.2}")
    record(repo, "worker", "2.0.2")


def add_stack(repo: Path) -> None:
    """A new stack file that the base revision does not have."""
    shutil.copy(repo / "Pulumi.dev.yaml", repo / "Pulumi.qa.yaml")


@dataclass
class Outcome:
    repo: Path
    result: diff.DiffResult | None = None  # through diff_against
    code: int | None = None  # through main
    json: dict[str, Any] | None = None
    markdown: str = ""


# name: (stack, edit, through main rather than diff_against)
SCENARIOS: dict[str, tuple[str, Callable[[Path], None], bool]] = {
    "rename": ("prod", rename_service, False),
    "weight-alias": ("prod", shift_canary_and_rename_component, False),
    "bump": ("dev", bump_version, False),
    "key": ("prod", rename_key_and_bump_idle_slot, False),
    "new-stack": ("qa", add_stack, True),
    "next-release": ("prod", next_release, False),
}


@pytest.fixture(scope="module")
def outcomes(origin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    cache: diff.PlanCache = {}  # the base plans, by commit: each is computed once

    def run(label: str) -> Outcome:
        stack, edit, through_main = SCENARIOS[label]
        repo = tmp_path_factory.mktemp(label)
        git(repo, "clone", "-q", str(origin), ".")
        edit(repo)
        outcome = Outcome(repo)
        if through_main:
            out, md = repo / "diff.json", repo / "diff.md"
            argv = ["--stack", stack, "--base", "origin/main", "--json", str(out), "--markdown", str(md)]
            outcome.code = diff.main([*argv, "--fail-on-flags"], repo)
            outcome.json, outcome.markdown = json.loads(out.read_text()), md.read_text()
        else:
            outcome.result = diff.diff_against(repo, stack, "origin/main", cache=cache)
        return outcome

    # One scenario per base first (seven program runs in all, not ten), then the rest against the
    # cached base plans.
    waves = [["weight-alias", "bump", "new-stack"], ["rename", "key", "next-release"]]
    # One forkserver serves every diff of this process, preloaded for the stack that starts it: prod,
    # whose targets span every provider, rather than whichever scenario's thread comes first.
    forkserver("prod")
    results: dict[str, Outcome] = {}
    with ThreadPoolExecutor(max_workers=3) as pool:
        for wave in waves:
            results.update(zip(wave, pool.map(run, wave), strict=True))
    assert len(cache) == 2  # prod and dev at origin/main; qa does not exist there
    return results


def changes(result: diff.DiffResult, action: str) -> dict[tuple[str, str], diff.Change]:
    return {(c.type, c.name): c for c in result.plan.of(action)}


def by_key(data: dict[str, Any], action: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["type"], c["name"]): c for c in data["changes"] if c["action"] == action}


# (a) a renamed service


def test_renaming_a_service_deletes_its_registry_key_alb_and_endpoint(outcomes: dict[str, Outcome]) -> None:
    result = outcomes["rename"].result
    assert result is not None
    data = diff.as_json(result)
    deleted, created = by_key(data, "delete"), by_key(data, "create")
    for type_, name in [
        ("aws:ecr/repository:Repository", "worker-ecr"),
        ("aws:kms/key:Key", "worker-ecr-key"),  # prod: customer-managed key
        ("aws:lb/loadBalancer:LoadBalancer", "worker-ecs-alb"),
        ("azure-native:cdn:AFDEndpoint", "worker-aci-endpoint"),
    ]:
        assert "stateful" in deleted[(type_, name)]["flags"], name
        assert (type_, name.replace("worker", "jobs", 1)) in created
    assert "protected" in deleted[("aws:ecr/repository:Repository", "worker-ecr")]["flags"]
    assert "protected" in deleted[("aws:kms/key:Key", "worker-ecr-key")]["flags"]
    # The serving blue slot's workloads go (flagged); the idle green slot's are not a restart.
    assert "restart" in deleted[("aws:ecs/service:Service", "worker-ecs-blue")]["flags"]
    assert "restart" in deleted[("azure-native:containerinstance:ContainerGroup", "worker-aci-blue")]["flags"]
    assert "restart" not in deleted[("aws:ecs/service:Service", "worker-ecs-green")]["flags"]
    assert data["counts"]["flagged"] == len({(f["type"], f["name"]) for f in data["flags"]}) > 0
    assert not [c for c in data["changes"] if "web" in c["name"]]  # the other service is untouched
    assert diff.exit_status(result, fail_on_flags=True) == 1
    assert diff.exit_status(result, fail_on_flags=False) == 0  # informational by default


def test_markdown_puts_the_flags_first(outcomes: dict[str, Outcome]) -> None:
    result = outcomes["rename"].result
    assert result is not None
    md = diff.markdown(result)
    assert md.startswith("### Plan diff `prod`: `origin/main`")
    assert ":warning:" in md.splitlines()[2]
    flagged, deletes, creates = (
        md.index("#### :warning: Flagged"),
        md.index("#### Delete ("),
        md.index("#### Create ("),
    )
    assert flagged < deletes < creates
    assert "| :warning: | delete | `worker-ecr` (`aws:ecr/repository:Repository`) | **protected**" in md
    assert "pulumi preview" in md.splitlines()[-1]


# (b) a traffic shift


def test_canary_weight_change_only_updates_routing(outcomes: dict[str, Outcome]) -> None:
    result = outcomes["weight-alias"].result
    assert result is not None
    plan = result.plan
    assert [c.action for c in plan.changes] == ["update"] * len(plan.changes) and plan.changes
    assert not plan.flagged
    updated = changes(result, "update")
    assert {t for t, _ in updated} <= {
        "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",  # capacity follows weight
        "kubernetes:networking.k8s.io/v1:Ingress",
        "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute",  # GKE's weighted route
        "gcp:cloudrunv2/service:Service",
    }
    assert all(
        p.startswith("traffics") for p in updated[("gcp:cloudrunv2/service:Service", "web-cloudrun")].paths
    )


# (c) a new version


def test_version_bump_flags_a_serving_workload_restart(outcomes: dict[str, Outcome]) -> None:
    result = outcomes["bump"].result
    assert result is not None
    updated = changes(result, "update")
    deployment = updated[("kubernetes:apps/v1:Deployment", "web-eks-main")]
    assert [f.kind for f in deployment.flags] == ["restart"]
    assert "spec.template" in deployment.flags[0].reason and "weight 100" in deployment.flags[0].reason
    image = updated[("docker-build:index:Image", "web")]
    assert not image.flags and "rebuilt" in " ".join(image.notes)
    assert [c.name for c in result.plan.flagged] == ["web-eks-main"]


def test_a_slot_keeping_its_version_keeps_the_digest_the_base_pushed(outcomes: dict[str, Outcome]) -> None:
    """green ran the base's build of 2.0.1; at head it resolves 2.0.1 by tag, to what the base pushed
    (the registry persists between the two runs), so it now takes traffic without a restart."""
    result = outcomes["next-release"].result
    assert result is not None
    updated = changes(result, "update")
    for type_, name in [
        ("aws:ecs/taskDefinition:TaskDefinition", "worker-ecs-green"),
        ("aws:ecs/service:Service", "worker-ecs-green"),
        ("azure-native:containerinstance:ContainerGroup", "worker-aci-green"),
    ]:
        assert (type_, name) not in updated, name
    assert ("aws:ecs/taskDefinition:TaskDefinition", "worker-ecs-blue") in {
        (c.type, c.name) for c in result.plan.changes
    }  # the idle slot gets the new build
    assert not [c for c in result.plan.flagged if "green" in c.name]


# (d) a components change that deletes a protected resource


def test_components_change_at_head_is_seen_and_protected_deletes_flagged(
    outcomes: dict[str, Outcome],
) -> None:
    """Only components/registry.py differs for the keys: the base ran its own components, the head
    its own (not a module cached from the other copy)."""
    result = outcomes["key"].result
    assert result is not None
    deleted, created, replaced = (
        changes(result, "delete"),
        changes(result, "create"),
        changes(result, "replace"),
    )
    for service in ("web", "worker"):
        key = deleted[("aws:kms/key:Key", f"{service}-ecr-key")]
        assert {f.kind for f in key.flags} == {"protected", "stateful"}
        assert ("aws:kms/key:Key", f"{service}-ecr-cmk") in created
        # A new key means a new encryption configuration, which ECR cannot change in place.
        repository = replaced[("aws:ecr/repository:Repository", f"{service}-ecr")]
        assert repository.replace_paths == ["encryptionConfigurations[0].kmsKey"]
        assert {f.kind for f in repository.flags} == {"protected", "stateful"}


def test_restarting_the_idle_blue_green_slot_is_not_flagged(outcomes: dict[str, Outcome]) -> None:
    result = outcomes["key"].result
    assert result is not None
    replaced, updated = changes(result, "replace"), changes(result, "update")
    task = replaced[("aws:ecs/taskDefinition:TaskDefinition", "worker-ecs-green")]  # a new revision
    group = updated[("azure-native:containerinstance:ContainerGroup", "worker-aci-green")]
    assert not task.flags and not group.flags  # green takes no traffic (blue is active)
    assert "Azure restarts every container" in " ".join(group.notes)
    assert ("aws:ecs/taskDefinition:TaskDefinition", "worker-ecs-blue") not in replaced


# (e) a component renamed with aliases


def test_component_rename_with_aliases_creates_and_deletes_nothing(outcomes: dict[str, Outcome]) -> None:
    """Same run as the canary shift: the rename adds nothing to its routing updates."""
    result = outcomes["weight-alias"].result
    assert result is not None
    plan = result.plan
    assert not plan.of("create") and not plan.of("delete") and not plan.of("replace")
    moved = {new.rsplit("::", 1)[1]: old.rsplit("::", 1)[1] for new, old in plan.moved.items()}
    assert moved["web-images"] == "web-ecr"  # the component, by its alias spec
    assert moved["web-images-key"] == "web-ecr-key"  # its children, by the inherited alias
    assert moved["worker-images-lifecycle"] == "worker-ecr-lifecycle"
    assert all(old == new.replace("-images", "-ecr", 1) for new, old in moved.items())
    # Not even an update: the ids and ARNs the mocks derive from names are the aliased resources' own.
    assert not [c for c in plan.changes if "-images" in c.name or "-ecr" in c.name]


# A stack the base revision does not have, and bad invocations


def test_a_stack_missing_at_the_base_is_all_created(outcomes: dict[str, Outcome]) -> None:
    """Through main(), as CI runs it: the JSON and Markdown files, exit 0 (nothing is flagged)."""
    outcome = outcomes["new-stack"]
    assert outcome.code == 0 and outcome.json is not None
    assert outcome.json["base"]["stackFile"] is False
    counts = outcome.json["counts"]
    assert (
        counts["create"] == len(outcome.json["changes"]) > 50
        and counts["unchanged"] == counts["flagged"] == 0
    )
    assert "Pulumi.qa.yaml does not exist at origin/main: everything is created" in outcome.markdown


def test_bad_ref_and_no_repository_exit_2(
    origin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    md = tmp_path / "diff.md"
    assert diff.main(["--stack", "prod", "--base", "no-such-branch", "--markdown", str(md)], origin) == 2
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and out.startswith("error: --base no-such-branch: not a commit")
    assert md.read_text().startswith("### Plan diff `prod`: failed")
    assert diff.main(["--stack", "prod", "--base=--output=x"], origin) == 2  # never an option to git
    assert (
        diff.main(["--stack", "prod", "--base", "HEAD", "--json", str(tmp_path / "no" / "d.json")], origin)
        == 2
    )
    capsys.readouterr()
    plain = tmp_path / "plain"
    for entry in ("Pulumi.yaml", "Pulumi.prod.yaml"):
        plain.mkdir(exist_ok=True)
        shutil.copy(origin / entry, plain / entry)
    assert diff.main(["--stack", "prod", "--base", "HEAD"], plain) == 2
    assert "is not in a git repository" in capsys.readouterr().out


def test_console_shows_flags_in_red(outcomes: dict[str, Outcome]) -> None:
    result = outcomes["key"].result
    assert result is not None
    console = Console(record=True, force_terminal=True, highlight=False, width=200)
    diff.print_diff(result, console)
    text = console.export_text(clear=False)
    assert "3 to replace" in text and "flagged:" in text and "protected:" in text
    assert "\x1b[31m" in console.export_text(styles=True)  # red
    data = diff.as_json(result)
    assert {f["kind"] for f in data["flags"]} == {"protected", "stateful"}
    assert json.dumps(data)  # serialisable, secrets masked by the report's masking


# The pieces, without program runs


def registration(urn: str, parent: str = "", aliases: list[str] | None = None) -> Registration:
    _, _, types, name = urn.split("::")
    return Registration(
        urn=urn, type=types.split("$")[-1], name=name, inputs={}, parent=parent, aliases=aliases or []
    )


def test_alias_specs_resolve_like_the_engine() -> None:
    stack = "urn:pulumi:s::p::pulumi:pulumi:Stack::p-s"
    old_parent = "urn:pulumi:s::p::pulumi:pulumi:Stack$pouw:index:Box::old"
    new_parent = "urn:pulumi:s::p::pulumi:pulumi:Stack$pouw:index:Box::new"
    resolver = diff.AliasResolver("p", "s")
    spec = json.dumps({"spec": {"name": "old", "parentUrn": ""}})
    assert resolver.candidates(registration(new_parent, stack, [spec])) == [old_parent]
    resolver.aliased[new_parent] = old_parent
    # A child named after its parent inherits the rename; an explicit URN alias is taken as is.
    child = registration("urn:pulumi:s::p::pouw:index:Box$aws:s3/bucket:Bucket::new-logs", new_parent)
    assert resolver.candidates(child) == ["urn:pulumi:s::p::pouw:index:Box$aws:s3/bucket:Bucket::old-logs"]
    by_urn = json.dumps({"urn": "urn:pulumi:s::p::pulumi:pulumi:Stack$aws:s3/bucket:Bucket::x"})
    assert resolver.candidates(registration(child.urn, new_parent, [by_urn]))[0].endswith("Bucket::x")
    # noParent: it used to be top-level; parentUrn: under that parent (through its own alias).
    moved = registration("urn:pulumi:s::p::pouw:index:Box$aws:s3/bucket:Bucket::b", new_parent)
    moved.aliases = [
        json.dumps({"spec": {"noParent": True}}),
        json.dumps({"spec": {"parentUrn": new_parent}}),
    ]
    assert resolver.candidates(moved)[:2] == [
        "urn:pulumi:s::p::pulumi:pulumi:Stack$aws:s3/bucket:Bucket::b",
        "urn:pulumi:s::p::pouw:index:Box$aws:s3/bucket:Bucket::b",
    ]
    assert diff.make_urn(stack, "pouw:index:Box", "new", "p", "s") == new_parent


def test_replacement_prediction_and_restart_rules() -> None:
    def plan(type_: str, old: dict[str, Any], new: dict[str, Any]) -> list[diff.Change]:
        urn = f"urn:pulumi:s::p::pulumi:pulumi:Stack${type_}::r"
        before = ProgramRun("s", "p", [Registration(urn, type_, "r", old)], {}, [])
        after = ProgramRun("s", "p", [Registration(urn, type_, "r", new)], {}, [])
        return diff.compare(before, after).changes

    task = "aws:ecs/taskDefinition:TaskDefinition"
    assert (
        plan(task, {"cpu": "256", "tags": {"a": "1"}}, {"cpu": "512", "tags": {"a": "1"}})[0].action
        == "replace"
    )
    assert (
        plan(task, {"cpu": "256", "tags": {"a": "1"}}, {"cpu": "256", "tags": {"a": "2"}})[0].action
        == "update"
    )
    deployment = "kubernetes:apps/v1:Deployment"
    renamed = plan(deployment, {"metadata": {"name": "a"}}, {"metadata": {"name": "b"}})[0]
    assert renamed.action == "replace" and renamed.replace_paths == ["metadata.name"]
    labels = plan(deployment, {"metadata": {"labels": {"x": "1"}}}, {"metadata": {"labels": {"x": "2"}}})[0]
    assert labels.action == "update" and not labels.flags  # metadata only: no pod restarts
    assert diff.restarts(deployment, ["spec.template.spec.containers[0].image"])
    assert not diff.restarts(deployment, ["spec.replicas"])
    assert not diff.restarts("aws:ecs/service:Service", ["desiredCount"])  # capacity, not a restart
    assert diff.restarts("azure-native:containerinstance:ContainerGroup", ["tags.version"])
    assert diff.replace_rules("azure-native:cdn:AFDEndpoint") == (
        "endpointName",
        "profileName",
        "resourceGroupName",
        "location",
    )
    # JSON documents inside strings diff by path; ignoreChanges hides what the engine would keep.
    leaves = diff.changed_leaves({"p": json.dumps({"a": [1, 2]})}, {"p": json.dumps({"a": [1, 3]})})
    assert [leaf.path for leaf in leaves] == ["p.a[1]"]
    assert diff._ignored(
        'labels["org.opencontainers.image.version"]', ['labels["org.opencontainers.image.version"]']
    )


def test_classify_keeps_the_rollout_helpers_contract() -> None:
    """What `preflight rollout` prints, from the same classification (engine PlanDiff, top-level fields)."""
    deployment = ("kubernetes:apps/v1:Deployment", "web-eks-stable")
    hpa = ("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "web-eks-stable")
    run = ("gcp:cloudrunv2/service:Service", "web-cloudrun")
    canary = ("kubernetes:apps/v1:Deployment", "web-eks-canary")
    change = PlanDiff(
        added=frozenset(),
        removed=frozenset({canary}),
        changed=frozenset({deployment, hpa, run}),
        fields={
            deployment: frozenset({"metadata", "spec"}),
            hpa: frozenset({"spec"}),
            run: frozenset({"traffics"}),
        },
    )
    routing, workloads = diff.classify(change)
    assert routing == [
        "gcp:cloudrunv2/service:Service web-cloudrun (traffics)",
        "kubernetes:autoscaling/v2:HorizontalPodAutoscaler web-eks-stable (spec)",
    ]
    assert workloads == [
        "kubernetes:apps/v1:Deployment web-eks-canary ((removed))",
        "kubernetes:apps/v1:Deployment web-eks-stable (metadata, spec)",
    ]


def test_the_pull_request_workflow_runs_the_diff_next_to_the_gate() -> None:
    import yaml

    text = (ROOT / ".github" / "workflows" / "pull-request.yml").read_text()
    jobs = yaml.safe_load(text)["jobs"]
    steps = jobs["preflight"]["steps"]
    assert steps[0]["with"]["fetch-depth"] == 0
    step = next(s for s in steps if "preflight diff" in str(s.get("run", "")))
    assert step["if"] == "always()" and step["env"]["BASE_REF"] == "${{ github.base_ref }}"
    assert '--base "origin/$BASE_REF"' in step["run"] and "${{" not in step["run"]
    comment = next(s for s in steps if "gh pr comment" in str(s.get("run", "")))
    assert "comment.md" in comment["run"]
