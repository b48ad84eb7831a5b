"""The provider SDKs load with postponed annotations and lazy service packages
(components/sdk_annotations.py): the plans are the same as with Python's default loading, a lazy package
offers the same names bound to the same objects, and the loader caches, refreshes and stays out of the
way as the standard one does."""

from __future__ import annotations

import importlib.machinery
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pulumi_aws.ecs
import pulumi_kubernetes.apps.v1
import pytest

from components import sdk_annotations
from preflight.report import Preflight
from tests.conftest import comparable_plan, ordered_plan

ROOT = Path(__file__).resolve().parent.parent

_EAGER_PLAN = """
import dataclasses, inspect, json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from preflight.engine import run_program
from preflight.stackconfig import load_stack_config
run = run_program(Path(sys.argv[1]), load_stack_config(Path(sys.argv[1]), sys.argv[2]))
import pulumi_aws.ecs
# Loaded by Python's own loader: the annotations were evaluated.
assert not isinstance(inspect.get_annotations(pulumi_aws.ecs.ClusterArgs.__init__)["name"], str)
print(json.dumps({"resources": [dataclasses.asdict(r) for r in run.resources], "outputs": run.outputs,
                  "secret_outputs": run.secret_outputs, "error": run.error_text}, default=str))
"""


def test_this_process_loaded_the_sdks_postponed() -> None:
    if sys.dont_write_bytecode:  # `make test` unexports PYTHONDONTWRITEBYTECODE
        pytest.skip("PYTHONDONTWRITEBYTECODE: the SDKs may load from their standard bytecode")
    for module in (pulumi_aws.ecs, pulumi_kubernetes.apps.v1):
        assert type(module.__spec__.loader).__name__ == "_PostponedAnnotationsLoader", module.__name__
    # Kept as their source text (PEP 563), not evaluated.
    name = inspect.get_annotations(pulumi_aws.ecs.ClusterArgs.__init__)["name"]
    assert isinstance(name, str) and name.startswith("pulumi.Input["), name


def test_the_prod_plan_is_the_same_as_with_eager_annotations(stack_runs: dict[str, Preflight]) -> None:
    """prod deploys to every target, so its program loads every provider SDK: each registration (type,
    name, parent, inputs on the wire, options), the outputs and the error text are the same."""
    env = {**os.environ, sdk_annotations.OFF_ENV: "eager"}
    done = subprocess.run(
        [sys.executable, "-c", _EAGER_PLAN, str(ROOT), "prod"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    eager = ordered_plan(json.loads(done.stdout.strip().splitlines()[-1]))
    postponed = comparable_plan(stack_runs["prod"].run)
    assert postponed["error"] == "" and len(postponed["resources"]) > 300
    assert postponed == eager


# A stand-in provider SDK: a `pulumi_*` package that ships pulumi-plugin.json, as generated SDKs do.
_SDK_MODULE = """
from typing import Optional
def f(x: Optional["Missing"] = None) -> "int": ...
ANNOTATIONS = f.__annotations__
"""

_IMPORT = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from components import sdk_annotations
import {package}.mod as mod
print(type(mod.__spec__.loader).__name__, repr(mod.ANNOTATIONS["x"]))
"""


def _sdk(tmp_path: Path, package: str = "pulumi_fakecloud", plugin: bool = True) -> Path:
    site = tmp_path / "site"
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text("")
    (site / package / "mod.py").write_text(textwrap.dedent(_SDK_MODULE))
    if plugin:
        (site / package / "pulumi-plugin.json").write_text('{"resource": true, "name": "fakecloud"}')
    return site


def _import(site: Path, package: str = "pulumi_fakecloud", **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    return subprocess.run(
        [sys.executable, "-c", _IMPORT.format(package=package), str(ROOT), str(site)],
        capture_output=True,
        text=True,
        env={**environment, **env},
        check=False,
        timeout=60,
    )


def _caches(site: Path, package: str = "pulumi_fakecloud") -> list[str]:
    return sorted(p.name for p in (site / package / "__pycache__").glob("mod.*"))


def test_a_provider_module_loads_postponed_and_its_bytecode_is_cached_apart(tmp_path: Path) -> None:
    site = _sdk(tmp_path)
    first = _import(site)
    # An annotation naming what does not exist still imports: it is only text until resolved.
    assert first.stdout.split() == ["_PostponedAnnotationsLoader", "\"Optional['Missing']\""], first.stderr
    tag = sys.implementation.cache_tag
    name = f"mod.{tag}.opt-{sdk_annotations.CACHE_TAG}.pyc"
    assert _caches(site) == [name]
    cache = site / "pulumi_fakecloud" / "__pycache__" / name
    written = cache.stat().st_mtime_ns
    again = _import(site)
    assert again.stdout == first.stdout and cache.stat().st_mtime_ns == written  # read, not rewritten

    # A changed source (its size changes) is compiled again, never served from the old cache.
    source = site / "pulumi_fakecloud" / "mod.py"
    source.write_text(source.read_text().replace('"Missing"', '"Other"'))
    changed = _import(site)
    assert changed.stdout.split()[1] == "\"Optional['Other']\"", changed.stderr


def test_a_corrupt_cache_is_compiled_again(tmp_path: Path) -> None:
    site = _sdk(tmp_path)
    _import(site)
    cache = next(
        (site / "pulumi_fakecloud" / "__pycache__").glob(f"mod.*.opt-{sdk_annotations.CACHE_TAG}.pyc")
    )
    cache.write_bytes(cache.read_bytes()[:20])  # header intact, code truncated
    done = _import(site)
    assert done.returncode == 0 and done.stdout.split()[0] == "_PostponedAnnotationsLoader", done.stderr


def test_no_bytecode_is_written_where_python_writes_none(tmp_path: Path) -> None:
    site = _sdk(tmp_path)
    done = _import(site, PYTHONDONTWRITEBYTECODE="1")
    assert done.stdout.split() == ["_PostponedAnnotationsLoader", "\"Optional['Missing']\""], done.stderr
    assert not (site / "pulumi_fakecloud" / "__pycache__").exists()


def test_where_it_cannot_cache_the_standard_bytecode_is_used(tmp_path: Path) -> None:
    """A read-only environment (here: PYTHONDONTWRITEBYTECODE) whose standard bytecode pip compiled at
    install: loading that beats compiling the module on every run."""
    site = _sdk(tmp_path)
    eager = _import(site, POUW_SDK_ANNOTATIONS="eager")  # writes the standard bytecode, as pip would
    assert _caches(site) == [f"mod.{sys.implementation.cache_tag}.pyc"], eager.stderr
    done = _import(site, PYTHONDONTWRITEBYTECODE="1")
    assert "ForwardRef('Missing')" in done.stdout, done.stderr  # evaluated: the standard code
    assert _caches(site) == [f"mod.{sys.implementation.cache_tag}.pyc"]  # and nothing written
    # Where it can write, its own cache takes over.
    assert _import(site).stdout.split()[1] == "\"Optional['Missing']\""
    assert len(_caches(site)) == 2


def test_eager_turns_it_off(tmp_path: Path) -> None:
    site = _sdk(tmp_path)
    done = _import(site, POUW_SDK_ANNOTATIONS="eager")
    # Python's own loader: the annotation was evaluated (a string literal inside Optional: a ForwardRef).
    assert done.stdout.split()[0] == "SourceFileLoader", done.stderr
    assert "ForwardRef('Missing')" in done.stdout


def test_packages_that_are_not_provider_sdks_load_as_python_loads_them(tmp_path: Path) -> None:
    # A pulumi_* package without pulumi-plugin.json (pulumi_policy is one), and any other package.
    for package, plugin in (("pulumi_notaprovider", False), ("someother", True)):
        site = _sdk(tmp_path / package, package, plugin=plugin)
        done = _import(site, package)
        assert done.stdout.split()[0] == "SourceFileLoader", (package, done.stderr)


def test_the_policy_sdk_loads_as_python_loads_it() -> None:
    """pulumi_policy ships a pulumi-plugin.json too, but it is hand-written: left alone."""
    import pulumi_policy.policy

    assert type(pulumi_policy.policy.__spec__.loader).__name__ == "SourceFileLoader"


def test_installing_twice_adds_one_finder() -> None:
    before = list(sys.meta_path)
    assert sdk_annotations.install()
    assert sys.meta_path == before
    ours = [f for f in sys.meta_path if getattr(f, "pouw_sdk_annotations", False)]
    standard = next(i for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder)
    assert len(ours) == 1 and sys.meta_path.index(ours[0]) < standard


# A stand-in service package in the shape the code generator writes: star imports of each module, in
# order, then the input types and the outputs module. `Shared` is exported by two modules: the later wins.
_SERVICE_INIT = """\
# coding=utf-8
# *** WARNING: this file was generated by pulumi-language-python. ***

import builtins as _builtins
from .. import _utilities
import typing
# Export this package's modules as members:
from .alpha import *
from .beta import *
from ._inputs import *
from . import outputs
"""
_SERVICE_MODULES = {
    "alpha.py": "__all__ = ['AlphaArgs', 'Alpha', 'Shared']\nclass AlphaArgs: ...\nclass Alpha: ...\n"
    "Shared = 'alpha'\nNOT_EXPORTED = 1\n",
    # A multi-line __all__, as the generator writes long ones; and a module importing a sibling.
    "beta.py": "from . import outputs\n__all__ = [\n    'Beta',\n    'Shared',\n]\n"
    "class Beta: ...\nShared = 'beta'\n",
    "_inputs.py": "__all__ = ['GammaArgs']\nclass GammaArgs: ...\n",
    "outputs.py": "__all__ = ['Gamma']\nclass Gamma: ...\n",
}

_INSPECT_SERVICE = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from components import sdk_annotations
import pulumi_fakecloud.svc as svc
def loaded():
    return sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("pulumi_fakecloud.svc."))
report = {"loader": type(svc.__spec__.loader).__name__, "on_import": loaded()}
report["beta"] = svc.Beta.__module__
report["after_beta"] = loaded()
report["shared"] = svc.Shared
report["alpha_module"] = svc.alpha.__name__
report["dir"] = [n for n in dir(svc) if not n.startswith("_")]
report["dunder"] = hasattr(svc, "__wrapped__")
report["after_probes"] = loaded()
try:
    svc.Missing
except AttributeError as err:
    report["missing"] = str(err)
star = {}
exec("from pulumi_fakecloud.svc import *", star)
report["star"] = sorted(n for n in star if n != "__builtins__")
report["identical"] = all(getattr(svc, n) is getattr(sys.modules[getattr(svc, n).__module__], n)
                          for n in ("Alpha", "AlphaArgs", "Beta", "GammaArgs", "Gamma") if hasattr(svc, n))
report["public"] = sorted(n for n in vars(svc) if not n.startswith("_"))
print(json.dumps(report))
"""


def _service(tmp_path: Path, init: str = _SERVICE_INIT) -> Path:
    site = _sdk(tmp_path)
    service = site / "pulumi_fakecloud" / "svc"
    service.mkdir()
    (service / "__init__.py").write_text(init)
    for name, text in _SERVICE_MODULES.items():
        (service / name).write_text(text)
    (site / "pulumi_fakecloud" / "_utilities.py").write_text("")
    return site


def _inspect(site: Path, **env: str) -> dict[str, Any]:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    done = subprocess.run(
        [sys.executable, "-c", _INSPECT_SERVICE, str(ROOT), str(site)],
        capture_output=True,
        text=True,
        env={**environment, **env},
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_a_service_package_imports_a_module_when_one_of_its_names_is_first_used(tmp_path: Path) -> None:
    lazy = _inspect(_service(tmp_path))
    assert lazy["loader"] == "_PostponedAnnotationsLoader"
    assert lazy["on_import"] == []  # nothing of the package's modules yet
    assert lazy["beta"] == "pulumi_fakecloud.svc.beta"
    assert lazy["after_beta"] == ["beta", "outputs"]  # beta and what beta itself imports, not alpha
    assert lazy["shared"] == "beta"  # exported by alpha and beta: the later star import wins
    assert lazy["alpha_module"] == "pulumi_fakecloud.svc.alpha"  # a submodule by its name
    # dir() names everything the eager package would hold; a dunder probe loads nothing.
    assert {"Alpha", "AlphaArgs", "Beta", "GammaArgs", "Shared", "outputs"} <= set(lazy["dir"])
    assert lazy["dunder"] is False and lazy["after_probes"] == ["alpha", "beta", "outputs"]
    assert lazy["missing"] == "module 'pulumi_fakecloud.svc' has no attribute 'Missing'"
    assert lazy["identical"] is True


def test_a_lazy_service_package_ends_up_as_the_eager_one(tmp_path: Path) -> None:
    """`from <package> import *` and a name nobody exports load everything in the generated order: the
    same public names, bound to the same values, as Python's own loading gives."""
    lazy = _inspect(_service(tmp_path / "lazy"))
    eager = _inspect(_service(tmp_path / "eager"), POUW_SDK_ANNOTATIONS="eager")
    assert eager["loader"] == "SourceFileLoader"
    assert eager["on_import"] == ["_inputs", "alpha", "beta", "outputs"]
    assert lazy["star"] == eager["star"]
    assert "NOT_EXPORTED" not in lazy["star"] and "Shared" in lazy["star"]
    assert lazy["public"] == eager["public"] and lazy["shared"] == eager["shared"] == "beta"
    assert lazy["dir"] == eager["dir"]


def test_a_name_moved_to_another_module_since_the_package_was_compiled_is_still_found(tmp_path: Path) -> None:
    site = _service(tmp_path)
    assert _inspect(site)["beta"] == "pulumi_fakecloud.svc.beta"  # compiled (and cached) with the map
    service = site / "pulumi_fakecloud" / "svc"
    # Beta moves from beta.py to alpha.py; __init__.py is untouched, so its cached map is stale.
    (service / "beta.py").write_text("__all__ = ['Shared']\nShared = 'beta'\n")
    (service / "alpha.py").write_text(
        _SERVICE_MODULES["alpha.py"].replace("'Shared']", "'Shared', 'Beta']") + "class Beta: ...\n"
    )
    assert _inspect(site)["beta"] == "pulumi_fakecloud.svc.alpha"


@pytest.mark.parametrize(
    "init",
    [
        _SERVICE_INIT + "_utilities.register(resource_modules='[]')\n",  # a root package's registration
        _SERVICE_INIT.replace("from .beta import *", "from .missing import *"),  # no such module
    ],
    ids=["other-statements", "unreadable-module"],
)
def test_any_other_shape_is_compiled_as_written(tmp_path: Path, init: str) -> None:
    site = _service(tmp_path, init)
    source = (site / "pulumi_fakecloud" / "svc" / "__init__.py").read_bytes()
    assert (
        sdk_annotations.lazy_package_source(source, str(site / "pulumi_fakecloud" / "svc" / "__init__.py"))
        is None
    )


def _probe(code: str, mode: str) -> str:
    """What `code` prints in a fresh interpreter (sys.argv[1]: this checkout), POUW_SDK_ANNOTATIONS=mode."""
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT)],
        capture_output=True,
        text=True,
        env={**os.environ, sdk_annotations.OFF_ENV: mode},
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_real_service_packages_are_lazy_and_offer_what_the_eager_ones_do() -> None:
    """pulumi_aws.ecr (the generated shape): using one resource runs that resource's module, not the
    package's other twenty; its public names are the eager package's (a fresh process each way)."""
    probe = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import components, pulumi_aws.ecr as ecr;"
        "repository = ecr.Repository.__module__;"
        "loaded = sorted(m for m in sys.modules if m.startswith('pulumi_aws.ecr.'));"
        "print(json.dumps({'repository': repository, 'loaded': loaded,"
        "'dir': [n for n in dir(ecr) if not n.startswith('_')]}))"
    )
    lazy, eager = json.loads(_probe(probe, "")), json.loads(_probe(probe, "eager"))
    assert lazy["repository"] == eager["repository"] == "pulumi_aws.ecr.repository"
    # Eager: every module of the package ran; lazy: the repository's module and the types it imports.
    assert lazy["loaded"] == [f"pulumi_aws.ecr.{m}" for m in ("_enums", "_inputs", "outputs", "repository")]
    assert len(eager["loaded"]) > 20 and "pulumi_aws.ecr.repository_policy" in eager["loaded"]
    assert lazy["dir"] == eager["dir"] and "Repository" in lazy["dir"]


def test_a_forward_reference_compiles_its_text_once_to_what_typing_would_compile() -> None:
    import typing

    assert sdk_annotations.install()
    first, second = (
        typing.ForwardRef("Optional[Sequence['Missing']]"),
        typing.ForwardRef("Optional[Sequence['Missing']]"),
    )
    assert first.__forward_code__ is second.__forward_code__  # one compilation for the text
    fresh = compile("Optional[Sequence['Missing']]", "<string>", "eval", 0, True)
    assert (
        first.__forward_code__.co_code == fresh.co_code and first.__forward_code__.co_names == fresh.co_names
    )
    assert first.__forward_code__.co_flags == fresh.co_flags  # nothing inherited from the cache's module
    # Still evaluates as typing evaluates it, in the caller's namespaces.
    assert typing.ForwardRef("Optional[int]")._evaluate(vars(typing), {}, frozenset()) == (int | None)
    with pytest.raises(SyntaxError):
        typing.ForwardRef("not a type (")
    # Any other call is the builtin's, uncached: with flags, or bytes.
    cache = vars(typing)["compile"]
    flagged = cache("x: y", "<s>", "exec", __import__("__future__").annotations.compiler_flag)
    assert flagged is not cache("x: y", "<s>", "exec", __import__("__future__").annotations.compiler_flag)
    assert cache(b"1", "<s>", "eval") is not cache(b"1", "<s>", "eval")
    assert sdk_annotations.install()  # a second install keeps the one cache
    assert vars(typing)["compile"] is cache


def test_eager_leaves_typing_alone() -> None:
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import typing, components;"
        "print('compile' in vars(typing))"
    )
    assert _probe(probe, "eager").strip() == "False"
    assert _probe(probe, "").strip() == "True"
