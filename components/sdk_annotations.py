"""The provider SDKs load with their annotations postponed (PEP 563), as if each of their modules began
with `from __future__ import annotations`.

Why: the generated SDKs (pulumi_aws, pulumi_gcp, ...) are tens of thousands of classes and functions
whose every parameter is annotated (`Optional[pulumi.Input[Sequence[pulumi.Input['XArgs']]]]`), and
Python evaluates each of those annotations when the module loads, building `typing` objects nothing
reads: nearly half of the prod program's import floor (bench/floors.py). Postponed, an annotation is
kept as its source text, and the SDK's runtime resolves the few it needs with
`typing.get_type_hints` (pulumi's `_types`, cached per class: the output types it deserialises into),
as it does for a user's own `@pulumi.input_type` classes written with postponed annotations. Nothing
else in those packages reads annotations at runtime (no dataclasses, NamedTuples or singledispatch).

What: a meta-path finder, ahead of the standard one, for the modules of Pulumi provider SDKs (a
top-level `pulumi_*` package that ships the code generator's `pulumi-plugin.json`; not `pulumi` itself
nor `pulumi_policy`, which ships one too but is hand-written). Their loader is the standard
`SourceFileLoader` compiling with the `annotations` future flag; the bytecode is cached beside the
standard one under its own tag (`__pycache__/<module>.cpython-311.opt-postponed.pyc`,
`importlib.util.cache_from_source`'s `optimization`), validated by the source's mtime and size as the
standard cache is, and written where Python writes bytecode. Where it cannot be written (a read-only
image, `PYTHONDONTWRITEBYTECODE`) but the standard bytecode is there (pip compiles it at install), a
module loads from that instead: compiling every SDK module on every run would cost more than its
annotations. `POUW_SDK_ANNOTATIONS=eager` turns it off. tests/test_sdk_annotations.py proves the plans
identical either way.

`components/__init__.py` installs it, so every process that imports the program's code (`pulumi up`,
`pulumi preview`, preflight, the tests) loads the SDKs this way, provided nothing imported one before.
"""

from __future__ import annotations
import __future__

import importlib.machinery
import importlib.util
import marshal
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import CodeType, ModuleType

OFF_ENV = "POUW_SDK_ANNOTATIONS"  # "eager": the SDKs load as Python loads them by default
CACHE_TAG = "postponed"  # the bytecode cache's optimization tag (alphanumeric)
_FLAG = __future__.annotations.compiler_flag
_MARKER = "pouw_sdk_annotations"  # on the finder, so that a second copy of this module sees the first


class _PostponedAnnotationsLoader(importlib.machinery.SourceFileLoader):
    def source_to_code(  # type: ignore[override]
        self, data: bytes, path: str, *, _optimize: int = -1
    ) -> CodeType:
        code: CodeType = compile(data, path, "exec", flags=_FLAG, dont_inherit=True, optimize=_optimize)
        return code

    def get_code(self, fullname: str) -> CodeType:
        source_path = self.get_filename(fullname)
        cache_path = importlib.util.cache_from_source(source_path, optimization=CACHE_TAG)
        header = _pyc_header(self.path_stats(source_path))
        cached = _valid_code(self, cache_path, header)
        if cached is not None:
            return cached
        writable = _writable(cache_path)
        if not writable:
            # Nowhere to cache ours (a read-only environment, or PYTHONDONTWRITEBYTECODE), but where
            # the standard bytecode is there (pip compiles it at install), loading it beats compiling
            # this module on every run. Either loading gives the same program.
            standard = _valid_code(self, importlib.util.cache_from_source(source_path), header)
            if standard is not None:
                return standard
        code = self.source_to_code(self.get_data(source_path), source_path)
        if writable:
            # The standard loader's writer: atomic, and silent should the write fail after all.
            self.set_data(cache_path, header + marshal.dumps(code))
        return code


def _pyc_header(stats: Mapping[str, float]) -> bytes:
    """PEP 552's timestamp-based header: magic, flags 0, the source's mtime and size (mod 2**32)."""
    return (
        importlib.util.MAGIC_NUMBER
        + (0).to_bytes(4, "little")
        + (int(stats["mtime"]) & 0xFFFFFFFF).to_bytes(4, "little")
        + (int(stats["size"]) & 0xFFFFFFFF).to_bytes(4, "little")
    )


def _valid_code(loader: importlib.machinery.SourceFileLoader, path: str, header: bytes) -> CodeType | None:
    """The code cached at `path` when it was compiled from the source `header` describes."""
    try:
        data = loader.get_data(path)
    except OSError:
        return None
    if data[:16] != header:
        return None
    try:
        code = marshal.loads(memoryview(data)[16:])
    except (EOFError, ValueError, TypeError):
        return None  # truncated or corrupt: compiled again
    return code if isinstance(code, CodeType) else None


def _writable(cache_path: str) -> bool:
    """Whether Python would write bytecode there: not under PYTHONDONTWRITEBYTECODE, and a writable
    `__pycache__` (or, before it exists, a writable package directory)."""
    if sys.dont_write_bytecode:
        return False
    directory = os.path.dirname(cache_path)
    while directory and not os.path.isdir(directory):
        directory = os.path.dirname(directory)
    return bool(directory) and os.access(directory, os.W_OK)


class _ProviderSdkFinder:
    pouw_sdk_annotations = True

    def __init__(self) -> None:
        self._providers: dict[str, bool] = {}

    def _is_provider(self, top: str) -> bool:
        if top not in self._providers:
            spec = importlib.machinery.PathFinder.find_spec(top)
            locations = (spec.submodule_search_locations or []) if spec else []
            self._providers[top] = any((Path(p) / "pulumi-plugin.json").is_file() for p in locations)
        return self._providers[top]

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        top = fullname.partition(".")[0]
        if not top.startswith("pulumi_") or top == "pulumi_policy" or not self._is_provider(top):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader:
            return spec
        loader = _PostponedAnnotationsLoader(spec.loader.name, spec.loader.path)
        spec.loader = loader
        return spec


def install() -> bool:
    """Put the finder first on `sys.meta_path` (once per process). False when turned off; modules
    already imported stay as they loaded."""
    if os.environ.get(OFF_ENV, "").strip().lower() == "eager":
        return False
    if not any(getattr(finder, _MARKER, False) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ProviderSdkFinder())
    return True
