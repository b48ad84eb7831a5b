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
standard one under its own tag (`__pycache__/<module>.cpython-311.opt-postponedlazy.pyc`,
`importlib.util.cache_from_source`'s `optimization`), validated by the source's mtime and size as the
standard cache is, and written where Python writes bytecode. Where it cannot be written (a read-only
image, `PYTHONDONTWRITEBYTECODE`) but the standard bytecode is there (pip compiles it at install), a
module loads from that instead: compiling every SDK module on every run would cost more than its
annotations. `POUW_SDK_ANNOTATIONS=eager` turns it off (the lazy service packages below
too). tests/test_sdk_annotations.py proves the plans identical either way.

Lazy service packages. A service package's `__init__.py` (`pulumi_gcp/compute`, `pulumi_aws/ec2`, ...)
is generated as `from .<module> import *` for each of its hundreds of resource and function modules,
then `from ._inputs import *` and `from . import outputs`: `import pulumi_gcp.compute` runs all 280
modules of the package for a program that uses five of its resources. Where an `__init__.py` is exactly
that shape (nothing but those lines, the generator's `_builtins`/`_utilities`/`typing` imports and
comments, and every starred module declaring a literal `__all__`), it is compiled instead as a module
that binds the same header names and a PEP 562 `__getattr__`: the first use of a name imports the one
module that exported it (the last one in the original order, as the star imports would have left it) and
binds it; a submodule name imports that submodule; `dir()` lists every name; `__all__` (what `from
<package> import *` reads) and any name the map does not know (or that its module no longer has: a
sibling edited since) load everything in the original order first, as the eager package would have. The
names each module exports are read from its `__all__` when the `__init__.py` is compiled; the root
packages (which register the provider's resource modules) and any other shape are compiled as written.
Prod's program then loads 306 of the providers' modules instead of 1,803.

ForwardRef compilation, once per text. A string annotation becomes a `typing.ForwardRef`, whose
constructor compiles the text (`compile(text, '<string>', 'eval')`): every annotation of every
`TypedDict` class of the SDKs' input types as it is created (the prod program creates 4,794), and every
annotation `typing.get_type_hints` resolves when the SDK reads an output type's properties (it makes a
new ForwardRef each time). The prod run compiles 22,979 such texts, 6,963 of them distinct. `install()`
puts a `compile` in the `typing` module's namespace (shadowing the builtin for typing's code only) that
compiles each distinct text once, exactly as typing's own call does (no flags inherited), and hands out
the same immutable code object after that; any other call goes to the builtin unchanged.

`components/__init__.py` installs it, so every process that imports the program's code (`pulumi up`,
`pulumi preview`, preflight, the tests) loads the SDKs this way, provided nothing imported one before.
"""

from __future__ import annotations
import __future__

import ast
import importlib.machinery
import importlib.util
import marshal
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

OFF_ENV = "POUW_SDK_ANNOTATIONS"  # "eager": the SDKs load as Python loads them by default
CACHE_TAG = "postponedlazy"  # the bytecode cache's optimization tag (alphanumeric)
_FLAG = __future__.annotations.compiler_flag
_MARKER = "pouw_sdk_annotations"  # on the finder, so that a second copy of this module sees the first


class _PostponedAnnotationsLoader(importlib.machinery.SourceFileLoader):
    def source_to_code(  # type: ignore[override]
        self, data: bytes, path: str, *, _optimize: int = -1
    ) -> CodeType:
        code: CodeType = compile(data, path, "exec", flags=_FLAG, dont_inherit=True, optimize=_optimize)
        return code

    def _compile(self, fullname: str, source_path: str) -> CodeType:
        data = self.get_data(source_path)
        if "." in fullname and self.is_package(fullname):  # a service package, not the provider's root
            lazy = lazy_package_source(data, source_path)
            if lazy is not None:
                return self.source_to_code(lazy, f"<lazy exports of {source_path}>")
        return self.source_to_code(data, source_path)

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
        code = self._compile(fullname, source_path)
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


# The lines a generated service package's __init__.py holds (stripped; blank lines and comments aside).
_HEADER_LINE = re.compile(rb"import builtins as _builtins|from \.+ import _utilities|import typing")
_STAR_LINE = re.compile(rb"from \.([A-Za-z_][A-Za-z0-9_]*) import \*")
_PLAIN_LINE = re.compile(rb"from \. import (outputs)")
_ALL = re.compile(rb"^__all__ = \[", re.MULTILINE)

# The lazy package's body after its header lines and its maps (_pouw_exports: name -> module,
# _pouw_star / _pouw_plain: the modules `from .m import *` / `from . import m` named, in order).
_LAZY_BODY = """
_pouw_submodules = frozenset(_pouw_star + _pouw_plain)


def __getattr__(name):
    import importlib

    namespace = globals()
    module_name = _pouw_exports.get(name)
    if module_name is not None:
        module = importlib.import_module(__name__ + "." + module_name)
        if hasattr(module, name):
            namespace[name] = value = getattr(module, name)
            return value
    elif name in _pouw_submodules:
        return importlib.import_module(__name__ + "." + name)
    elif name.startswith("__") and name != "__all__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _pouw_load_all()
    if name == "__all__":
        return [n for n in namespace if not n.startswith("_")]
    try:
        return namespace[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__():
    return sorted(set(globals()) | set(_pouw_exports) | _pouw_submodules)


def _pouw_load_all():
    # What the generated __init__.py does, in its order.
    import importlib

    namespace = globals()
    if namespace.get("_pouw_loaded"):
        return
    for module_name in _pouw_star:
        module = importlib.import_module(__name__ + "." + module_name)
        for n in module.__all__:
            namespace[n] = getattr(module, n)
    for module_name in _pouw_plain:
        importlib.import_module(__name__ + "." + module_name)
    namespace["_pouw_loaded"] = True
"""


def lazy_package_source(data: bytes, path: str) -> bytes | None:
    """The lazy form of a generated service package's `__init__.py` (`data`, read from `path`), or None
    where it is not exactly that shape or a starred module has no literal `__all__`."""
    header: list[str] = []
    star: list[str] = []
    plain: list[str] = []
    for raw in data.splitlines():
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        if _HEADER_LINE.fullmatch(line):
            header.append(line.decode())
        elif match := _STAR_LINE.fullmatch(line):
            star.append(match.group(1).decode())
        elif match := _PLAIN_LINE.fullmatch(line):
            plain.append(match.group(1).decode())
        else:
            return None
    if not star:
        return None
    exports: dict[str, str] = {}
    for module_name in star:
        names = _declared_all(os.path.join(os.path.dirname(path), module_name + ".py"))
        if names is None:
            return None
        exports.update(dict.fromkeys(names, module_name))  # a later module's name wins, as with `*`
    maps = f"_pouw_exports = {exports!r}\n_pouw_star = {tuple(star)!r}\n_pouw_plain = {tuple(plain)!r}\n"
    return ("\n".join(header) + "\n" + maps + _LAZY_BODY).encode()


def _declared_all(path: str) -> list[str] | None:
    """A generated module's `__all__`: a literal list of names at the top level."""
    try:
        with open(path, "rb") as file:
            text = file.read()
    except OSError:
        return None  # a subpackage, or missing: the package is compiled as written
    match = _ALL.search(text)
    if match is None:
        return None
    end = text.find(b"]", match.end())
    try:
        names = ast.literal_eval(text[match.end() - 1 : end + 1].decode())
    except (ValueError, SyntaxError, UnicodeDecodeError):
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) and n.isidentifier() for n in names):
        return None
    return names


def _forward_ref_compile() -> Callable[..., CodeType]:
    import builtins

    compiled: dict[tuple[str, str, str], CodeType] = {}

    def compile(source: Any, filename: Any, mode: Any, *args: Any, **kwargs: Any) -> CodeType:
        if args or kwargs or type(source) is not str or type(filename) is not str or type(mode) is not str:
            code: CodeType = builtins.compile(source, filename, mode, *args, **kwargs)
            return code
        key = (source, filename, mode)
        found = compiled.get(key)
        if found is None:
            # flags 0, dont_inherit: what typing's own call compiles (typing.py has no future imports).
            found = compiled[key] = builtins.compile(source, filename, mode, 0, True)
        return found

    setattr(compile, _MARKER, True)
    return compile


def install() -> bool:
    """Put the finder first on `sys.meta_path` and the ForwardRef compile cache in `typing` (once per
    process). False when turned off; modules already imported stay as they loaded."""
    if os.environ.get(OFF_ENV, "").strip().lower() == "eager":
        return False
    if not any(getattr(finder, _MARKER, False) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ProviderSdkFinder())
    import typing

    if not getattr(vars(typing).get("compile"), _MARKER, False):
        typing.compile = _forward_ref_compile()  # type: ignore[attr-defined]
    return True
