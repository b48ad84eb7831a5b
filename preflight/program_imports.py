"""The provider SDKs a project's program imports, loaded once ahead of the runs that need them.

`preflight diff` runs the program twice (the base revision and the working tree), each in a process
of its own so that each imports `components` from its own copy. Most of such a run is importing the
provider SDKs: their generated class bodies evaluate every type annotation. So the runs are forked
from a server (`multiprocessing`'s forkserver) that imported these modules, and only these, once: SDK
code shared by both revisions, never project code (`components` stays each copy's own).

What the preload leaves alone: the provider service modules that `pulumi_aws`, `pulumi_gcp` and
`pulumi_azure_native` register lazily (an `import pulumi_gcp.compute` binds a placeholder that
loads on first use). Each run still loads the ones its stack uses: loading them all up front (every
target's, `pulumi_gcp.compute` alone about half a second) cost dev's diff more than it saved and
prod's about as much (`bench/diff.py`).

Which modules: what the tool's project imports (`import pulumi_aws.ec2 as ec2`, `from pulumi_kubernetes.core
import v1`), read from its sources with `ast` (nothing of the project is executed). A base revision
that imports something else imports it itself, as a fresh interpreter would.

`preflight._preload` is the forkserver's preload: importing it loads them.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import importlib
import multiprocessing
import multiprocessing.context
import sys
from collections.abc import Iterator
from pathlib import Path

# The directory that holds the `preflight` package: the project whose imports are preloaded.
TOOL_ROOT = Path(__file__).resolve().parent.parent
PROGRAM_SOURCES = ("__main__.py", "components")


def _sources(project_dir: Path) -> Iterator[Path]:
    for entry in PROGRAM_SOURCES:
        path = project_dir / entry
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from sorted(path.rglob("*.py"))


def provider_modules(project_dir: Path) -> list[str]:
    """The `pulumi` and provider modules (`pulumi_*`) the project's program sources import."""
    found: set[str] = set()
    for source in _sources(project_dir):
        try:
            tree = ast.parse(source.read_text(), str(source))
        except (OSError, SyntaxError, ValueError):
            continue  # the run reports it; a preload is only an optimisation
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # The module only: a name imported from it may be a class that shares its name with a
                # submodule (`from pulumi_kubernetes.apiextensions import CustomResource`).
                found.add(node.module)
    return sorted(m for m in found if m.split(".")[0] == "pulumi" or m.startswith("pulumi_"))


def load(modules: list[str]) -> list[str]:
    """Import each module (a lazily registered provider module stays a placeholder); returns the ones
    that imported. `from x import name` entries that are not modules are skipped."""
    loaded = []
    for name in modules:
        if _under_placeholder(name):
            continue
        # Any failure: the run imports it itself and reports what goes wrong (a preload only saves time).
        with contextlib.suppress(Exception):
            importlib.import_module(name)
            loaded.append(name)
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
    gc.disable()
    try:
        load(provider_modules(TOOL_ROOT))
    finally:
        gc.freeze()
        gc.enable()


def forkserver() -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    """The context the program runs are started from: a forkserver that preloaded the provider
    modules (`preflight._preload`), started on first use and shared by every run of this process.
    Where there is no forkserver (Windows), a fresh interpreter per run, as without the preload."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.context.SpawnContext()
    context = multiprocessing.context.ForkServerContext()
    context.set_forkserver_preload(["preflight._preload"])
    return context
