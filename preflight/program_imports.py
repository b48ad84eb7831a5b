"""The provider SDKs a project's program imports, loaded once ahead of the runs that need them.

`preflight diff` runs the program twice (the base revision and the working tree), each in a process
of its own so that each imports `components` from its own copy. Most of such a run is importing the
provider SDKs: their generated class bodies evaluate every type annotation. So the runs are forked
from a server (`multiprocessing`'s forkserver) that imported these modules, and only these, once: SDK
code shared by both revisions, never project code (`components` stays each copy's own).

Which service modules load up front: `pulumi_aws`, `pulumi_gcp` and `pulumi_azure_native` register
theirs lazily (`import pulumi_gcp.compute` binds a placeholder that loads on first use, `pulumi_gcp.compute`
alone about half a second). The preload loads those of the providers the stack's targets use (read
from the stack file's `services[].targets` and the imports of `components/targets/<target>.py` and the
target modules it imports) and leaves the others to a run that needs them: loading every target's up
front cost dev's diff, which deploys to AWS only, more than it saved (`bench/diff.py`).

Which modules: what the tool's project imports (`import pulumi_aws.ec2 as ec2`, `from pulumi_kubernetes.core
import v1`), read from its sources with `ast` (nothing of the project is executed). A base revision
that imports something else imports it itself, as a fresh interpreter would. The service packages
themselves load lazily (components/sdk_annotations.py: a resource's module runs on the first use of
its name), so for the stack's providers the preload also looks up the names the sources use on each
import (`ec2.SecurityGroup`, `v1.Namespace`, `Firewall`), which runs those modules and their types
once in the server, rather than the providers' whole packages: for prod the server loads 319 provider
modules instead of 1,698 (2.47 s instead of 2.87 s), and a run forked from it imports one more.

They load as the program loads them, annotations postponed (components/sdk_annotations.py, the one
project file the server executes, under a private name; see `_load_sdks_as_the_program_does`).

`preflight._preload` is the forkserver's preload: importing it loads them.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import gc
import importlib
import importlib.util
import json
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

# The directory that holds the `preflight` package: the project whose imports are preloaded.
TOOL_ROOT = Path(__file__).resolve().parent.parent
PROGRAM_SOURCES = ("__main__.py", "components")
# The stack whose targets say which providers' service modules the forkserver loads (see forkserver).
PRELOAD_STACK_ENV = "PREFLIGHT_PRELOAD_STACK"


def _sources(project_dir: Path) -> Iterator[Path]:
    for entry in PROGRAM_SOURCES:
        path = project_dir / entry
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from sorted(path.rglob("*.py"))


@functools.cache
def _parse(source: Path) -> ast.Module | None:
    """A source's tree, parsed once for the preload's three readings (modules, names, stack providers:
    0.3 s each for this project); `preload` clears the cache when it is done."""
    try:
        return ast.parse(source.read_text(), str(source))
    except (OSError, SyntaxError, ValueError):
        return None  # the run reports it; a preload is only an optimisation


def _imports(source: Path) -> set[str]:
    tree = _parse(source)
    found: set[str] = set()
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # The module only: a name imported from it may be a class that shares its name with a
            # submodule (`from pulumi_kubernetes.apiextensions import CustomResource`).
            found.add(node.module)
    return found


def _used_names(source: Path) -> set[tuple[str, str]]:
    """(module, name) for each name the source takes from a provider module it imports: `Firewall` of
    `from pulumi_gcp.compute import Firewall`, `SecurityGroup` of `ec2.SecurityGroup` after `import
    pulumi_aws.ec2 as ec2`, `Namespace` of `v1.Namespace` after `from pulumi_kubernetes.core import v1`
    (module `pulumi_kubernetes.core.v1`). A name bound twice in one file counts for both bindings."""
    tree = _parse(source)
    if tree is None:
        return set()
    bound: dict[str, set[str]] = {}  # a local name -> the dotted paths it was imported as
    used: set[tuple[str, str]] = set()
    attributes: set[tuple[str, str]] = set()  # (local name, attribute) of each `name.attribute`
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            attributes.add((node.value.id, node.attr))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound.setdefault(alias.asname, set()).add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name != "*":
                    bound.setdefault(alias.asname or alias.name, set()).add(f"{node.module}.{alias.name}")
                    used.add((node.module, alias.name))
    for local, attribute in attributes:
        used.update((path, attribute) for path in bound.get(local, ()))
    return {(module, name) for module, name in used if module.startswith("pulumi_")}


def stack_providers(project_dir: Path, stack: str) -> set[str] | None:
    """The provider packages (`pulumi_aws`, ...) the stack's targets import, or None when the stack
    file does not say (then every provider counts)."""
    try:
        data = yaml.safe_load((project_dir / f"Pulumi.{stack}.yaml").read_text())
        services = data["config"][f"{_project_name(project_dir)}:services"]
        if isinstance(services, str):  # the CLI's JSON string form of structured config
            services = json.loads(services)
    except Exception:  # noqa: BLE001 - any unreadable file: no guess (the run reports it)
        return None
    if not isinstance(services, list):
        return None
    declared = [s.get("targets") for s in services if isinstance(s, dict)]
    targets = {t for listed in declared if isinstance(listed, list) for t in listed if isinstance(t, str)}
    seen: set[str] = set()
    todo = [f"components.targets.{t}" for t in targets]
    providers: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _imports(project_dir / (module.replace(".", "/") + ".py")):
            if name.startswith("components.targets."):
                todo.append(name)
            elif name.startswith("pulumi_"):
                providers.add(name.split(".")[0])
    return providers


def _project_name(project_dir: Path) -> str:
    name = yaml.safe_load((project_dir / "Pulumi.yaml").read_text())["name"]
    return str(name)


def provider_modules(project_dir: Path) -> list[str]:
    """The `pulumi` and provider modules (`pulumi_*`) the project's program sources import."""
    found: set[str] = set()
    for source in _sources(project_dir):
        found |= _imports(source)
    return sorted(m for m in found if m.split(".")[0] == "pulumi" or m.startswith("pulumi_"))


def provider_names(project_dir: Path) -> list[tuple[str, str]]:
    """What the project's program sources use of the provider modules they import (`_used_names`)."""
    used: set[tuple[str, str]] = set()
    for source in _sources(project_dir):
        used |= _used_names(source)
    return sorted(used)


def load(
    modules: list[str], providers: set[str] | None = None, names: Sequence[tuple[str, str]] = ()
) -> list[str]:
    """Import each module; a lazily registered one is loaded too when its provider package is in
    `providers` (None: every provider), else left a placeholder, and so are the `names` (module, name)
    taken from those providers' modules. Returns the modules that imported."""
    loaded = []
    for name in modules:
        if _under_placeholder(name):
            continue
        # Any failure: the run imports it itself and reports what goes wrong (a preload only saves time).
        with contextlib.suppress(Exception):
            module = importlib.import_module(name)
            if providers is None or name.split(".")[0] in providers:
                # A placeholder loads on any attribute but its introspection ones (pulumi._utils'
                # _INTROSPECTION_ATTRS); a dunder nobody defines loads nothing more of a lazy package.
                getattr(module, "__preflight_preload__", None)
            loaded.append(name)
    for module_name, name in names:
        if providers is not None and module_name.split(".")[0] not in providers:
            continue
        with contextlib.suppress(Exception):
            value: object = sys.modules[module_name.split(".")[0]]
            for part in [*module_name.split(".")[1:], name]:
                value = getattr(value, part)  # a lazy package runs the module that defines the name
    return loaded


def _under_placeholder(name: str) -> bool:
    """Whether a package above `name` is a lazy provider module not loaded yet. Importing a submodule
    there would bind it as an attribute that the package's own body, once it loads, does not rebind:
    `pulumi_kubernetes.apiextensions.CustomResource` would then be the module, not the class."""
    parts = name.split(".")
    return any(
        type(sys.modules.get(".".join(parts[:i]))).__name__ == "_LazyModule" for i in range(1, len(parts))
    )


def preload() -> None:
    """The forkserver's start-up: the tool's project's provider modules, imported with the cyclic
    collector paused (as the engine runs a program: the SDKs' millions of new objects would
    otherwise trigger a full collection again and again), then frozen so that the forked runs'
    collections never scan, and so copy, their pages."""
    stack = os.environ.get(PRELOAD_STACK_ENV)
    gc.disable()
    try:
        _load_sdks_as_the_program_does()
        providers = stack_providers(TOOL_ROOT, stack) if stack else None
        load(provider_modules(TOOL_ROOT), providers, provider_names(TOOL_ROOT))
    finally:
        _parse.cache_clear()  # the trees are not needed by the runs forked from here
        gc.freeze()
        gc.enable()


def _load_sdks_as_the_program_does() -> None:
    """What the program's `components/__init__.py` does first (components/sdk_annotations.py: the
    provider SDKs load with postponed annotations), done here from the tool's copy of that file, under
    a private name: the runs' `components` stays each copy's own, and their `install()` finds this
    finder in place. A project without the file loads the SDKs as Python does."""
    path = TOOL_ROOT / "components" / "sdk_annotations.py"
    spec = importlib.util.spec_from_file_location("_preflight_sdk_annotations", path)
    if spec is None or spec.loader is None or not path.is_file():
        return
    module = importlib.util.module_from_spec(spec)
    with contextlib.suppress(Exception):  # a preload only saves time; the run reports what fails
        spec.loader.exec_module(module)
        module.install()


def forkserver(
    stack: str,
) -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    """The context the program runs are started from: a forkserver that preloaded the provider
    modules (`preflight._preload`) for `stack`, started on first use and shared by every later run of
    this process (whatever its stack: a run of another stack loads what it lacks itself).
    Where there is no forkserver (Windows), a fresh interpreter per run, as without the preload."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.context.SpawnContext()
    context = multiprocessing.context.ForkServerContext()
    context.set_forkserver_preload(["preflight._preload"])
    # Started here, with the stack in its environment only (the runs' environment stays this process's).
    previous = os.environ.get(PRELOAD_STACK_ENV)
    os.environ[PRELOAD_STACK_ENV] = stack
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        if previous is None:
            del os.environ[PRELOAD_STACK_ENV]
        else:
            os.environ[PRELOAD_STACK_ENV] = previous
    return context
