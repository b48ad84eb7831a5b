"""The diff's program runs: forked from a server that preloaded the provider SDKs, each run still
imports the project's own code from its own copy, reports its failure in one line and is stopped at
its deadline."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.forkserver
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from preflight import diff
from preflight.program_imports import TOOL_ROOT, provider_modules, provider_names, stack_providers

PROJECT = "name: tiny\nruntime:\n  name: python\n"


def tiny_project(path: Path, main: str, marker: str = "") -> Path:
    (path / "components").mkdir(parents=True)
    (path / "Pulumi.yaml").write_text(PROJECT)
    (path / "Pulumi.dev.yaml").write_text("config: {}\n")
    (path / "components" / "__init__.py").write_text("")
    (path / "components" / "marker.py").write_text(f"WHO = {marker!r}\n")
    (path / "__main__.py").write_text(textwrap.dedent(main))
    return path


EXPORT_MARKER = """
import os
import sys
import pulumi
from components.marker import WHO

print("a program that prints")  # to the run's log, not the diff's output
pulumi.export("who", WHO)
pulumi.export("components", sys.modules["components"].__file__)
pulumi.export("probe", os.environ.get("POUW_PROBE"))
import pulumi_aws.ecs  # a provider SDK: loaded as the tool's program loads it (annotations postponed)
pulumi.export("sdk_loader", type(sys.modules["pulumi_aws.ecs"].__spec__.loader).__name__)
"""


def test_provider_modules_are_read_from_the_sources_and_name_no_project_code(tmp_path: Path) -> None:
    tiny_project(
        tmp_path,
        """
        import json
        import pulumi
        import pulumi_aws.ec2 as ec2
        from pulumi_kubernetes.core import v1
        from components.marker import WHO
        from . import sibling
        """,
    )
    (tmp_path / "components" / "uses.py").write_text("from pulumi_gcp.compute import Firewall\n")
    assert provider_modules(tmp_path) == [
        "pulumi",
        "pulumi_aws.ec2",
        "pulumi_gcp.compute",  # not pulumi_gcp.compute.Firewall: a name from a module is not one
        "pulumi_kubernetes.core",
    ]
    real = provider_modules(TOOL_ROOT)
    assert "pulumi_gcp.compute" in real and "pulumi_aws.ec2" in real
    assert not [m for m in real if m.split(".")[0] in ("components", "preflight", "delivery")]


def test_the_names_the_sources_take_from_provider_modules_are_read_with_them(tmp_path: Path) -> None:
    tiny_project(
        tmp_path,
        """
        import pulumi_aws.ec2 as ec2
        from pulumi_kubernetes.core import v1
        from components.marker import WHO
        ec2.SecurityGroup("sg")
        v1.Namespace(WHO)
        def rule(args: ec2.SecurityGroupIngressArgs) -> None: ...
        """,
    )
    (tmp_path / "components" / "uses.py").write_text("from pulumi_gcp.compute import Firewall\n")
    assert provider_names(tmp_path) == [
        ("pulumi_aws.ec2", "SecurityGroup"),
        ("pulumi_aws.ec2", "SecurityGroupIngressArgs"),  # annotations count: the types load with it
        ("pulumi_gcp.compute", "Firewall"),
        ("pulumi_kubernetes.core", "v1"),
        ("pulumi_kubernetes.core.v1", "Namespace"),  # through the name `from ... import v1` bound
    ]


_PRELOAD_ECR = """
import json, sys
sys.path.insert(0, sys.argv[1])
from preflight import program_imports
program_imports._load_sdks_as_the_program_does()
program_imports.load(["pulumi_aws.ecr"], {"pulumi_aws"}, [("pulumi_aws.ecr", "Repository")])
print(json.dumps(sorted(m for m in sys.modules if m.startswith("pulumi_aws.ecr."))))
"""


def test_the_preload_runs_the_modules_of_the_names_used_not_whole_packages() -> None:
    """pulumi_aws.ecr's package is lazy (components/sdk_annotations.py): preloading the one name a
    program uses runs that resource's module and its types, not the package's twenty others."""
    done = subprocess.run(
        [sys.executable, "-c", _PRELOAD_ECR, str(TOOL_ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout)
    assert "pulumi_aws.ecr.repository" in loaded and "pulumi_aws.ecr.repository_policy" not in loaded


def test_each_run_imports_its_own_copy_of_the_project(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POUW_PROBE", str(tmp_path))  # after the server may have started: still seen
    base = tiny_project(tmp_path / "base", EXPORT_MARKER, marker="base")
    head = tiny_project(tmp_path / "head", EXPORT_MARKER, marker="head")
    work = tmp_path / "work"
    work.mkdir()
    runs = diff.run_programs({"base": base, "head": head}, "dev", work, timeout=120)
    assert runs["base"].outputs["who"] == "base" and runs["head"].outputs["who"] == "head"
    assert runs["base"].outputs["components"] == str(base / "components" / "__init__.py")
    assert runs["head"].outputs["components"] == str(head / "components" / "__init__.py")
    assert runs["base"].outputs["probe"] == runs["head"].outputs["probe"] == str(tmp_path)
    # The server installed components/sdk_annotations.py's finder (these copies' own package does not).
    assert (
        runs["base"].outputs["sdk_loader"]
        == runs["head"].outputs["sdk_loader"]
        == "_PostponedAnnotationsLoader"
    )
    assert "a program that prints" not in capfd.readouterr().out
    assert "a program that prints" in (work / "run-head.log").read_text()


def test_a_run_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    head = tiny_project(tmp_path / "head", EXPORT_MARKER)
    (head / "Pulumi.dev.yaml").write_text("config: [not, a, mapping]\n")
    with pytest.raises(diff.DiffError, match=r"^the head program could not be run: \S"):
        diff.run_programs({"head": head}, "dev", tmp_path, timeout=120)


def test_a_run_past_its_deadline_is_stopped(tmp_path: Path) -> None:
    head = tiny_project(tmp_path / "head", "import time\ntime.sleep(120)\n")
    with pytest.raises(diff.DiffError, match="the head program did not finish within 2 s"):
        diff.run_programs({"head": head}, "dev", tmp_path, timeout=2)
    assert not multiprocessing.active_children()  # killed and reaped


def test_the_preload_never_binds_a_submodule_over_a_lazy_package_name() -> None:
    """In a fresh interpreter, as the forkserver starts: preloading a class's module under a provider
    package not loaded yet must leave `from package import Class` the class."""
    check = (
        "import sys; from preflight.program_imports import load; "
        "load(['pulumi_kubernetes.apiextensions', 'pulumi_kubernetes.apiextensions.CustomResource']); "
        "from pulumi_kubernetes.apiextensions import CustomResource; print(isinstance(CustomResource, type))"
    )
    command = [sys.executable, "-c", check]
    done = subprocess.run(command, cwd=TOOL_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


def test_the_preload_loads_only_the_providers_of_the_stacks_targets(tmp_path: Path) -> None:
    assert stack_providers(TOOL_ROOT, "dev") == {"pulumi_aws", "pulumi_kubernetes"}  # EKS and ECS
    assert {"pulumi_gcp", "pulumi_azure_native"} <= (stack_providers(TOOL_ROOT, "prod") or set())
    tiny_project(tmp_path, EXPORT_MARKER)
    assert stack_providers(tmp_path, "dev") is None  # the file names no services: every provider counts
    assert stack_providers(tmp_path, "nope") is None  # no such file: the same
    (tmp_path / "Pulumi.dev.yaml").write_text("config:\n  tiny:services: [{name: a, targets: []}]\n")
    assert stack_providers(tmp_path, "dev") == set()  # no targets: nothing to load up front


def test_a_server_that_cannot_start_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(multiprocessing.forkserver, "ensure_running", refuse)
    head = tiny_project(tmp_path / "head", EXPORT_MARKER)
    with pytest.raises(diff.DiffError, match=r"^cannot start the program runs: .*No space left on device$"):
        diff.run_programs({"head": head}, "dev", tmp_path, timeout=120)
