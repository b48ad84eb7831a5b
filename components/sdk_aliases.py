"""A resource's alias URNs are computed when the SDK reads them, not when the resource is constructed.

Why: `pulumi.Resource.__init__` turns each of a resource's aliases into an `Output` of its URN
(`collapse_alias_to_urn`: an `Output.from_input` and two `Output.all(...).apply` chains, each with its
asyncio tasks) and keeps them in `_aliases`. Since the engine takes alias specs (pulumi/pulumi#11983,
"Delegate alias computation to the engine"), the SDK registers the aliases from the resource options
instead, and reads `_aliases` only on its fallback for an engine without alias specs
(`pulumi.runtime.resource.all_aliases`, a child inheriting its parent's). Every current engine, and the
SDK's mock monitor, has alias specs, so those URNs are computed and never read. The generated providers
give many resources type aliases (each azure-native `ManagedCluster` has 113, one per API version),
so for the prod stack that was 796 URN computations and a quarter of registering its 340 resources;
the same in a real `pulumi preview` or `pulumi up` as under preflight's mocks.

What: `install()` puts a function in `pulumi.resource`'s namespace that records what `__init__` would
have collapsed (the alias, name, type and parent) as a `DeferredAlias`, and wraps the fallback's
`all_aliases` in `pulumi.runtime.resource` so that, before it reads a parent's `_aliases`, each
deferred entry there is collapsed in place, with the same arguments the constructor would have used.
Nothing else in the SDK reads `_aliases` (tests/test_sdk_aliases.py reads the installed SDK's sources
to hold that, and proves the plans the same either way, on both paths); nor do the locked providers'
generated packages (`grep -rlw --include=*.py _aliases pulumi_*` in site-packages finds nothing; they
are too large to read in a test). An SDK whose constructor or fallback do not have the shape this was
written for is left alone, as is everything with `POUW_SDK_ALIASES=eager`.

`components/context.py` installs it (imported before the program creates any resource, and after
`pulumi`, which `components/__init__.py` must not import: the delivery tools import components' plain
modules without the SDK).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from types import CodeType
from typing import Any, NamedTuple

import pulumi.resource as sdk_resource
import pulumi.runtime.resource as sdk_runtime

OFF_ENV = "POUW_SDK_ALIASES"  # "eager": every alias collapsed when its resource is constructed
_MARKER = "pouw_sdk_aliases"  # on the installed functions, so that a second copy of this module sees them
_NAME = "collapse_alias_to_urn"  # what the constructor calls, in pulumi.resource's namespace


class DeferredAlias(NamedTuple):
    """What `Resource.__init__` passes `collapse_alias_to_urn`, kept until the URN is needed."""

    alias: Any
    name: str
    type_: str
    parent: Any


def _deferred(alias: Any, name: str, type_: str, parent: Any) -> DeferredAlias:
    return DeferredAlias(alias, name, type_, parent)


def collapse_deferred(resource: Any) -> list[Any]:
    """`resource._aliases` with each deferred alias collapsed (in place) to its URN's Output."""
    aliases: list[Any] = resource._aliases
    for i, alias in enumerate(aliases):
        if type(alias) is DeferredAlias:
            aliases[i] = sdk_runtime.collapse_alias_to_urn(*alias)
    return aliases


def _code(function: Any) -> CodeType | None:
    code = getattr(function, "__code__", None)
    return code if isinstance(code, CodeType) else None


def _shape_known() -> bool:
    """The SDK this was written for: the constructor collapses with the runtime's function (by its
    module-level name) into `_aliases`, and the fallback reads a parent's `_aliases` through
    `all_aliases`, which `prepare_aliases` calls by its module-level name."""
    init = _code(getattr(getattr(sdk_resource, "Resource", None), "__init__", None))
    fallback = _code(getattr(sdk_runtime, "all_aliases", None))
    prepare = _code(getattr(sdk_runtime, "prepare_aliases", None))
    if init is None or fallback is None or prepare is None:
        return False
    return (
        getattr(sdk_resource, _NAME, None) is getattr(sdk_runtime, _NAME, False)
        and {_NAME, "_aliases"} <= set(init.co_names)
        and "_aliases" in fallback.co_names
        and "all_aliases" in prepare.co_names
    )


def install() -> bool:
    """Defer alias collapsing (once per process); False where it is off or the SDK is another shape."""
    if installed():
        return True
    if os.environ.get(OFF_ENV) == "eager" or not _shape_known():
        return False
    real_all_aliases = sdk_runtime.all_aliases

    @functools.wraps(real_all_aliases)  # `__wrapped__`: the SDK's own
    def all_aliases(
        child_aliases: Sequence[Any] | None, child_name: str, child_type: str, parent: Any
    ) -> list[Any]:
        if parent is not None:
            collapse_deferred(parent)
        return real_all_aliases(child_aliases, child_name, child_type, parent)

    setattr(all_aliases, _MARKER, True)
    setattr(_deferred, _MARKER, True)
    sdk_runtime.all_aliases = all_aliases
    setattr(sdk_resource, _NAME, _deferred)
    return True


def installed() -> bool:
    return bool(getattr(getattr(sdk_resource, _NAME, None), _MARKER, False))
