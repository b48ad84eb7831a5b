"""Alias URNs are collapsed only when the SDK reads them (components/sdk_aliases.py): installed with the
locked SDK, nothing else in it reads what is deferred, and the plans are the same as the SDK's own
eager collapsing, with alias specs (every current engine, the mocks) and on the SDK's fallback for an
engine without them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pulumi
import pulumi.resource as sdk_resource
import pulumi.runtime.resource as sdk_runtime
import pytest
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.proto import resource_pb2

import components.context  # noqa: F401 - installs it, as the program's import of it does
from components import sdk_aliases
from preflight.engine import ProgramRun, run_function, run_program
from preflight.report import Preflight
from preflight.stackconfig import load_stack_config
from tests.conftest import ROOT, comparable_plan


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The SDK's own collapsing for the test's duration; yields the types it collapsed aliases for."""
    collapsed: list[str] = []

    def collapse(alias: Any, name: str, type_: str, parent: Any) -> Any:
        collapsed.append(type_)
        return sdk_runtime.collapse_alias_to_urn(alias, name, type_, parent)

    monkeypatch.setattr(sdk_resource, "collapse_alias_to_urn", collapse)
    monkeypatch.setattr(sdk_runtime, "all_aliases", sdk_runtime.all_aliases.__wrapped__)
    yield collapsed


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Deferred, as installed; yields `<parent>: <type>` for each deferred alias collapsed when read."""
    collapsed: list[str] = []
    real = sdk_aliases.collapse_deferred

    def collapse_deferred(resource: Any) -> list[Any]:
        for alias in resource._aliases:
            if isinstance(alias, sdk_aliases.DeferredAlias):
                collapsed.append(f"{resource._name}: {alias.type_}")
        return real(resource)

    monkeypatch.setattr(sdk_aliases, "collapse_deferred", collapse_deferred)
    yield collapsed


def test_installed_with_the_locked_sdk() -> None:
    """A bump of the SDK that changes the constructor or the fallback leaves it uninstalled (the
    eager path, correct and slower): this says so in CI instead of silently."""
    assert sdk_aliases.installed()
    assert sdk_resource.collapse_alias_to_urn is not sdk_runtime.collapse_alias_to_urn
    assert sdk_aliases.install()  # a second install (another copy of the project) changes nothing
    assert sdk_runtime.all_aliases.__wrapped__.__module__ == "pulumi.runtime.resource"


def test_nothing_else_in_the_sdk_reads_the_aliases() -> None:
    """What is deferred is only ever read through `all_aliases`: the installed SDK's sources name a
    resource's `_aliases` in the constructor, which fills it, and in the fallback, which reads it."""
    package = Path(pulumi.__file__).parent
    found = sorted(
        f"{path.relative_to(package)}: {line.strip()}"
        for path in package.rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.search(r"\._aliases\b", line)
    )
    assert found == [
        "resource.py: self._aliases = []",
        "resource.py: self._aliases.append(collapse_alias_to_urn(alias, name, t, opts.parent))",
        "runtime/resource.py: for parent_alias in parent._aliases:",
    ]


def test_the_prod_plan_is_the_same_as_with_eager_aliases(
    stack_runs: dict[str, Preflight], eager: list[str]
) -> None:
    """prod's providers give its resources 796 type aliases (azure-native's most): registered as the
    same alias specs either way, with every other input and option."""
    deferred = stack_runs["prod"].run
    assert sum(len(r.aliases) for r in deferred.resources) > 500
    run = run_program(ROOT, load_stack_config(ROOT, "prod"))
    assert len(eager) > 500  # the SDK's own path did collapse them
    assert comparable_plan(run) == comparable_plan(deferred)


def _aliased_program() -> None:
    """A renamed component, its renamed and retyped child, and a renamed grandchild: the fallback
    combines each one's aliases with its parent's."""
    parent = pulumi.ComponentResource(
        "test:index:Group", "group", opts=pulumi.ResourceOptions(aliases=[pulumi.Alias(name="old-group")])
    )
    child = pulumi.ComponentResource(
        "test:index:Part",
        "part",
        opts=pulumi.ResourceOptions(
            parent=parent, aliases=[pulumi.Alias(name="old-part"), pulumi.Alias(type_="test:index:OldPart")]
        ),
    )
    pulumi.CustomResource(
        "test:index:Leaf",
        "leaf",
        {"size": 1},
        opts=pulumi.ResourceOptions(parent=child, aliases=[pulumi.Alias(name="old-leaf")]),
    )


def _aliases_by_name(run: ProgramRun) -> dict[str, list[str]]:
    assert run.error_text == ""
    return {r.name: sorted(r.aliases) for r in run.resources}


def _without_alias_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that does not take alias specs: the SDK then sends every alias, inherited ones
    included, as a URN it computes itself."""
    real: Callable[[Any, Any], Any] = MockMonitor.GetDeploymentInfo

    def deployment_info(self: Any, request: Any) -> Any:
        info = real(self, request)
        info.supportedFeatures.remove(resource_pb2.RESOURCE_MONITOR_FEATURE_ALIAS_SPECS)
        return info

    monkeypatch.setattr(MockMonitor, "GetDeploymentInfo", deployment_info)


def test_with_alias_specs_nothing_is_collapsed(counted: list[str]) -> None:
    run = run_function(_aliased_program, ROOT, load_stack_config(ROOT, "dev"))
    aliases = _aliases_by_name(run)
    assert counted == []
    assert len(aliases["part"]) == 2 and all('"spec"' in a for a in aliases["part"])


def test_the_fallback_collapses_what_it_reads_to_the_eager_urns(
    monkeypatch: pytest.MonkeyPatch, counted: list[str]
) -> None:
    _without_alias_specs(monkeypatch)
    config = load_stack_config(ROOT, "dev")
    deferred = _aliases_by_name(run_function(_aliased_program, ROOT, config))
    # Read, so collapsed: the group's alias (for part's URNs) and part's two (for leaf's).
    assert sorted(counted) == ["group: test:index:Group", "part: test:index:Part", "part: test:index:Part"]
    # Inherited: the leaf under its parent's old type (one of part's aliases) is one of its own.
    stack = "urn:pulumi:dev::pouw-cicd::pulumi:pulumi:Stack$"
    assert f"{stack}test:index:Group$test:index:OldPart$test:index:Leaf::leaf" in deferred["leaf"]
    assert f"{stack}test:index:Group$test:index:Part$test:index:Leaf::old-leaf" in deferred["leaf"]
    assert all(a.startswith("urn:pulumi:dev::") for names in deferred.values() for a in names)

    monkeypatch.setattr(sdk_resource, "collapse_alias_to_urn", sdk_runtime.collapse_alias_to_urn)
    monkeypatch.setattr(sdk_runtime, "all_aliases", sdk_runtime.all_aliases.__wrapped__)
    assert _aliases_by_name(run_function(_aliased_program, ROOT, config)) == deferred
