"""The traffic model: a discriminated union of strategies, slots, weights, steps. Pure Python, no cloud calls.

One rollout block per service drives every platform. A service runs in named slots (`blue`/`green`
or `stable`/`canary`, or one `main` slot for rolling and recreate), each with its own release
version and workload. Weights are integers 0..100 that sum to 100. Targets translate a `RolloutPlan`
into their native routing; a weight change or a blue-green switch changes routing (and, for canary,
scaling bounds), never a workload's template.

`RolloutSettings` is the union of one frozen model per strategy, picked by `strategy` (absent:
rolling). Each model carries only its own keys and checks itself, so a stack file is refused with
the key path and the fix before anything is registered. Each also holds the rules of the steps a
person takes: `promote`, `rollback` and `set_weight` return the next model (or raise `RolloutError`
saying why the step does not apply); the rollout helper (`python -m preflight rollout`) writes the
difference back to the stack file, so every step is a reviewed config edit.

Vocabulary follows Argo Rollouts: `setWeight`, `pause`, preview, stable/canary, active/preview.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NoReturn, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_snake

Strategy = Literal["rolling", "recreate", "blue-green", "canary"]
SLOT_NAMES: dict[str, tuple[str, ...]] = {
    "rolling": ("main",),
    "recreate": ("main",),
    "blue-green": ("blue", "green"),
    "canary": ("stable", "canary"),
}
# A workload name (Deployment, ECS service, container group); components/settings.py describes it.
WORKLOAD_PATTERN = r"^[a-z][a-z0-9-]{0,19}$"
# Docker tag grammar; `latest` is refused separately because it is valid but mutable.
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DURATION_RE = re.compile(r"^([0-9]+)(s|m|h)$")
# Where a rolled-back canary re-enters when its steps name no weight below 100.
_REENTRY_WEIGHT = 10
_PER_SLOT_WORKLOAD = (
    "is for rolling and recreate; {strategy} names a workload per slot (slots.<slot>.workload)"
)


class RolloutError(ValueError):
    """An impossible rollout or step. `path` is relative to the service's `rollout` key."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


class Model(BaseModel):
    """Frozen, camelCase-keyed, and strict about unknown keys (a typo is an error, not a no-op).

    The base of every settings model (components/settings.py imports it): it lives here because the
    rollout models are settings too, and this module must not import the settings loader."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=True,
    )


def release_version(value: str) -> str:
    """A release version is an image tag that never moves: valid tag grammar, never `latest`."""
    if value.lower() == "latest":
        raise ValueError("'latest' is a mutable tag; set the release version, e.g. 1.4.2")
    if not _TAG_RE.match(value):
        raise ValueError(
            "is not a valid image tag (letters, digits, '_', '.', '-', at most 128); "
            "use the release version, e.g. 1.4.2"
        )
    return value


Workload = Annotated[str, Field(pattern=WORKLOAD_PATTERN)]


# -- the stack file's rollout block -------------------------------------------------------------------


class SlotSettings(Model):
    """A slot: the release version it runs, in which workload. Blue-green slots take no weight."""

    version: str
    # The workload this slot runs in, when it carries on one that a strategy switch renamed (e.g.
    # `stable: {version: 1.4.1, workload: main}` after rolling); default: the slot's name.
    workload: Workload | None = None

    @field_validator("version")
    @classmethod
    def _release_version(cls, value: str) -> str:
        return release_version(value)


class CanarySlotSettings(SlotSettings):
    """A canary slot: its share of traffic. The canary's is required (its setWeight); stable's may be
    left out and is then the remainder."""

    weight: int | None = None


class PauseSettings(Model):
    # "30s", "10m", "1h"; absent: pause until a person promotes.
    duration: str | None = None

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not _DURATION_RE.match(value):
            raise ValueError("must be a duration like 30s, 10m or 1h")
        return value


def seconds(duration: str) -> int:
    """A checked duration ("30s", "10m", "1h") in seconds: what a driver waits and measures by."""
    found = _DURATION_RE.match(duration)
    if found is None:
        raise ValueError(f"{duration!r} is not a duration like 30s, 10m or 1h")
    return int(found.group(1)) * {"s": 1, "m": 60, "h": 3600}[found.group(2)]


class StepSettings(Model):
    """An Argo-style canary step for a driver (a person or a pipeline) to walk: `{setWeight: 20}`, or
    `{pause: {duration: 10m}}` / `{pause: {}}` (until promoted)."""

    set_weight: int | None = None
    pause: PauseSettings | None = None

    @model_validator(mode="after")
    def _one_action(self) -> StepSettings:
        if (self.set_weight is None) == (self.pause is None):
            raise ValueError("a step is either {setWeight: N} or {pause: {...}}")
        return self


# -- analysis: what a driver measures while the canary takes traffic ---------------------------------
#
# Argo Rollouts' AnalysisTemplate vocabulary (argoproj/argo-rollouts docs/features/analysis.md and
# pkg/apis/rollouts/v1alpha1/analysis_types.go: `interval`, `count`, `failureLimit`,
# `inconclusiveLimit`, `consecutiveErrorLimit`, `metrics[].name`, `provider.prometheus.{address,
# query}`), but typed: a metric says what it measures and its threshold, not an expression string,
# so the stack file is checked before anything runs and every platform can be asked the same question.

_METRIC_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
# What a Prometheus query may name, filled in by the driver (the slot under test and the window).
PROMETHEUS_PLACEHOLDERS = ("{{service}}", "{{version}}", "{{interval}}")
_PLACEHOLDER_RE = re.compile(r"\{\{[^}]*\}\}")
_METRIC_KINDS = ("errorRate", "successRate", "latencyP99", "prometheus")


class MaxRatio(Model):
    """A share of requests that must stay at or below `max` (errorRate: 0.01 is 1%)."""

    max: float = Field(ge=0, le=1)


class MinRatio(Model):
    """A share of requests that must stay at or above `min` (successRate: 0.99 is 99%).

    errorRate counts 5xx responses; successRate counts 2xx and 3xx, so a release that breaks its
    routes (404s) or its input handling (400s) fails it too."""

    min: float = Field(ge=0, le=1)


class LatencyThreshold(Model):
    """The 99th percentile of response time, in milliseconds, that must stay at or below `maxMs`."""

    max_ms: float = Field(ge=1, le=600_000)


class PrometheusMetric(Model):
    """A PromQL query that returns one number (an instant vector of one sample, or a scalar), and the
    bound it must keep. The query may name {{service}}, {{version}} (the release under test) and
    {{interval}} (the window, e.g. 1m, for `rate(...[{{interval}}])`)."""

    address: str
    query: str
    max: float | None = None
    min: float | None = None

    @field_validator("address")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(
                "must be the Prometheus server's http(s) URL, e.g. http://prometheus.monitoring:9090"
            )
        return value.rstrip("/")

    @field_validator("query")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        unknown = [p for p in _PLACEHOLDER_RE.findall(value) if p not in PROMETHEUS_PLACEHOLDERS]
        if unknown:
            raise ValueError(
                f"names {unknown[0]}, which nothing fills in; a query may name "
                f"{', '.join(PROMETHEUS_PLACEHOLDERS)}"
            )
        if not value.strip():
            raise ValueError("is empty; write the PromQL query that returns one number")
        return value

    @model_validator(mode="after")
    def _bounded(self) -> PrometheusMetric:
        if self.max is None and self.min is None:
            raise ValueError("needs max or min (or both): the bound the query's value must keep")
        return self


class MetricSettings(Model):
    """One thing to measure on the release under test, with its threshold: exactly one of
    `errorRate: {max}`, `successRate: {min}`, `latencyP99: {maxMs}`, `prometheus: {...}`. The first
    three are read from each target's own metrics (delivery/metrics.py)."""

    name: str
    error_rate: MaxRatio | None = None
    success_rate: MinRatio | None = None
    latency_p99: LatencyThreshold | None = None
    prometheus: PrometheusMetric | None = None

    @field_validator("name")
    @classmethod
    def _metric_name(cls, value: str) -> str:
        if not _METRIC_NAME_RE.match(value):
            raise ValueError(
                "must be a metric name: a lowercase letter, then up to 31 lowercase letters, digits or '-'"
            )
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> MetricSettings:
        set_ = [kind for kind in _METRIC_KINDS if getattr(self, to_snake(kind)) is not None]
        if len(set_) != 1:
            given = f" (this one sets {' and '.join(set_)})" if set_ else ""
            raise ValueError(
                f"a metric measures one thing{given}: set one of errorRate: {{max: 0.01}}, "
                "successRate: {min: 0.99}, latencyP99: {maxMs: 500} or prometheus: {address, query, max}"
            )
        return self

    @property
    def kind(self) -> str:
        """errorRate, successRate, latencyP99 or prometheus."""
        return next(kind for kind in _METRIC_KINDS if getattr(self, to_snake(kind)) is not None)

    def verdict(self, value: float) -> bool:
        """Whether a measured value keeps the threshold."""
        if self.error_rate is not None:
            return value <= self.error_rate.max
        if self.success_rate is not None:
            return value >= self.success_rate.min
        if self.latency_p99 is not None:
            return value <= self.latency_p99.max_ms
        assert self.prometheus is not None
        low, high = self.prometheus.min, self.prometheus.max
        return (low is None or value >= low) and (high is None or value <= high)

    @property
    def threshold(self) -> str:
        """The threshold as a person reads it (`<= 1%`, `<= 500 ms`)."""
        if self.error_rate is not None:
            return f"<= {self.error_rate.max:.2%}"
        if self.success_rate is not None:
            return f">= {self.success_rate.min:.2%}"
        if self.latency_p99 is not None:
            return f"<= {self.latency_p99.max_ms:g} ms"
        assert self.prometheus is not None
        low, high = self.prometheus.min, self.prometheus.max
        return " and ".join(
            part
            for part in (f">= {low:g}" if low is not None else "", f"<= {high:g}" if high is not None else "")
            if part
        )


class AnalysisSettings(Model):
    """How the release under test is judged while it takes traffic (Argo's background analysis).

    A canary is measured every `interval` during its timed pauses (`pause: {duration}`), over the
    last `interval`; a blue-green service right after the switch, `count` times. Each metric is
    measured on each target the service runs on, and each (metric, target) keeps its own counts, as
    each of an Argo AnalysisRun's metrics does: more than `failureLimit` failed measurements, or
    more than `consecutiveErrorLimit` reads in a row that error, and the release is rolled back;
    more than `inconclusiveLimit` measurements without enough data to judge (no requests in the
    window) and the rollout stops for a person, as an inconclusive AnalysisRun pauses a Rollout.
    With `count`, at most that many measurements are made; the later pauses only wait."""

    interval: str = "1m"
    count: int | None = Field(default=None, ge=1, le=10_000)
    failure_limit: int = Field(default=0, ge=0, le=10_000)
    inconclusive_limit: int = Field(default=0, ge=0, le=10_000)
    consecutive_error_limit: int = Field(default=4, ge=0, le=10_000)
    metrics: tuple[MetricSettings, ...]

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        if not _DURATION_RE.match(value) or seconds(value) == 0:
            raise ValueError("must be a duration like 30s, 1m or 5m")
        return value

    @field_validator("metrics")
    @classmethod
    def _some(cls, value: tuple[MetricSettings, ...]) -> tuple[MetricSettings, ...]:
        # Not `min_length`: pydantic would also report it when a listed metric is invalid.
        if not value:
            raise ValueError("needs at least one metric, e.g. - {name: errors, errorRate: {max: 0.01}}")
        return value

    @property
    def interval_seconds(self) -> int:
        return seconds(self.interval)


def _check_analysis(analysis: AnalysisSettings | None) -> None:
    """What one metric cannot see: two metrics of the same name (their counts would mix)."""
    if analysis is None:
        return
    seen: dict[str, int] = {}
    for i, metric in enumerate(analysis.metrics):
        if metric.name in seen:
            raise RolloutError(
                f"analysis.metrics[{i}].name",
                f"{metric.name!r} is also metrics[{seen[metric.name]}]'s name; give each metric its own",
            )
        seen[metric.name] = i


# -- A/B routing: requests that match go to the canary whatever its weight ----------------------------
#
# Argo Rollouts' `setHeaderRoute` vocabulary (argoproj/argo-rollouts docs/features/traffic-management:
# `match: [{headerName, headerValue: {exact | prefix | regex}}]`), plus a cookie form (`cookieName`,
# `cookieValue`). Every entry must match (AND), as Argo's header matches do on every router it
# drives. Each target says which forms it can route (`Target.header_match_forms`); settings refuse a
# form a service's target cannot do.

HeaderMatchForm = Literal[
    "header-exact", "header-prefix", "header-regex", "cookie-exact", "cookie-prefix", "cookie-regex"
]
HEADER_MATCH_FORMS: tuple[HeaderMatchForm, ...] = (
    "header-exact",
    "header-prefix",
    "header-regex",
    "cookie-exact",
    "cookie-prefix",
    "cookie-regex",
)
# An HTTP field name (RFC 9110 token), and a cookie name (RFC 6265 token, the same characters).
_TOKEN_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
# Headers no header route may name: Host routes by host, Cookie has its own form (cookieName).
_RESERVED_HEADERS = {"host": "routes by host name, not by a header route", "cookie": "use cookieName"}
# At most this many entries: an ALB rule takes five condition values, one of them the path.
MAX_HEADER_MATCHES = 4
_MAX_MATCH_VALUE = 128  # an ALB http-header value's limit, and a sane one everywhere


# Constructs Python's `re` compiles and RE2 lacks (https://github.com/google/re2/wiki/Syntax: "NOT
# SUPPORTED"): a header regex is routed by GKE's load balancer, which takes RE2, so one that uses them
# would pass here and fail only when the Gateway controller programs the load balancer.
_RE2_GROUPS = (
    ("(?=", "lookahead (?=...)"),
    ("(?!", "lookahead (?!...)"),
    ("(?<=", "lookbehind (?<=...)"),
    ("(?<!", "lookbehind (?<!...)"),
    ("(?P=", "a backreference (?P=name)"),
    ("(?>", "an atomic group (?>...)"),
    ("(?(", "a conditional (?(...)...)"),
)
_PY_FLAGS = re.compile(r"\(\?([aiLmsux-]+)[:)]")


def re2_lacks(pattern: str) -> str | None:
    """What of `pattern` (a valid Python regex) RE2 does not support, or None. Escapes and character
    classes are skipped, so `\\(?=` or `[(?=]` are literals."""
    i, in_class, after_quantifier = 0, False, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            escaped = pattern[i + 1 : i + 2]
            if not in_class and escaped and escaped in "123456789":
                return f"a backreference \\{escaped}"
            if escaped == "Z":
                return "\\Z (RE2 spells the end of text \\z)"
            i, after_quantifier = i + 2, False
            continue
        if in_class:
            in_class = c != "]"
            i += 1
            continue
        if c == "[":
            in_class, after_quantifier = True, False
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            if pattern[i : i + 1] == "]":  # a leading ] is a literal
                i += 1
            continue
        if c == "(":
            what = next((w for prefix, w in _RE2_GROUPS if pattern.startswith(prefix, i)), None)
            if what:
                return what
            flags = _PY_FLAGS.match(pattern, i)
            if flags and set(flags.group(1)) & set("aLux"):
                return f"the flags (?{flags.group(1)}) (RE2 takes i, m, s and U)"
        if c == "+" and after_quantifier:
            return f"a possessive quantifier ({pattern[i - 1]}+)"
        after_quantifier = c in "*+?}" and not (c == "?" and pattern[i - 1 : i] == "(")
        i += 1
    return None


class StringMatch(Model):
    """How a header's (or cookie's) value is matched: exactly one of `exact`, `prefix`, `regex`."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self) -> StringMatch:
        given = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of exact, prefix, regex")
        value = self.value
        if not value or len(value) > _MAX_MATCH_VALUE:
            raise ValueError(f"{self.kind} must be 1..{_MAX_MATCH_VALUE} characters")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"regex {self.regex!r} is not a regular expression ({err})") from None
            lacks = re2_lacks(self.regex)
            if lacks:
                raise ValueError(
                    f"regex {self.regex!r} uses {lacks}, which RE2 (the syntax GKE's load balancer "
                    "matches with) does not support; write it without"
                )
        elif "*" in value or "?" in value:
            # ALB reads them as wildcards, and one rollout block drives every target.
            raise ValueError(f"{self.kind} {value!r} holds '*' or '?'; match it with regex instead")
        return self

    @property
    def kind(self) -> Literal["exact", "prefix", "regex"]:
        return "exact" if self.exact is not None else "prefix" if self.prefix is not None else "regex"

    @property
    def value(self) -> str:
        return next(v for v in (self.exact, self.prefix, self.regex) if v is not None)


class HeaderMatch(Model):
    """One condition a request must meet: `{headerName, headerValue}` or `{cookieName, cookieValue}`."""

    header_name: str | None = None
    header_value: StringMatch | None = None
    cookie_name: str | None = None
    cookie_value: StringMatch | None = None

    @model_validator(mode="after")
    def _one_form(self) -> HeaderMatch:
        header = self.header_name is not None or self.header_value is not None
        cookie = self.cookie_name is not None or self.cookie_value is not None
        if header == cookie:
            raise ValueError(
                "a match is either {headerName, headerValue: {exact: ...}} or "
                "{cookieName, cookieValue: {exact: ...}}"
            )
        name = self.header_name if header else self.cookie_name
        value = self.header_value if header else self.cookie_value
        prefix = "header" if header else "cookie"
        if name is None or value is None:
            raise ValueError(f"needs both {prefix}Name and {prefix}Value")
        if not _TOKEN_RE.match(name):
            raise ValueError(
                f"{prefix}Name {name!r} is not a {prefix} name (letters, digits and !#$%&'*+.^_`|~-, "
                "at most 64)"
            )
        if header and name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"headerName {name!r}: {_RESERVED_HEADERS[name.lower()]}")
        return self

    @property
    def form(self) -> HeaderMatchForm:
        value = self.header_value or self.cookie_value
        assert value is not None
        source = "header" if self.header_name is not None else "cookie"
        return next(f for f in HEADER_MATCH_FORMS if f == f"{source}-{value.kind}")

    @property
    def name(self) -> str:
        name = self.header_name if self.header_name is not None else self.cookie_name
        assert name is not None
        return name

    @property
    def match(self) -> StringMatch:
        value = self.header_value or self.cookie_value
        assert value is not None
        return value

    @property
    def shown(self) -> str:
        """As a person reads it: `header x-canary = always`, `cookie beta ^= yes`, `header a ~ ^v2`."""
        op = {"exact": "=", "prefix": "^=", "regex": "~"}[self.match.kind]
        return f"{self.form.split('-')[0]} {self.name} {op} {self.match.value}"


class HeaderRouteSettings(Model):
    """Requests meeting every `match` go to the canary slot only, ahead of the weighted split (Argo's
    setHeaderRoute). After a rollback (`aborted: true` in the rollout block) they go to stable."""

    match: tuple[HeaderMatch, ...]

    @field_validator("match")
    @classmethod
    def _some(cls, value: tuple[HeaderMatch, ...]) -> tuple[HeaderMatch, ...]:
        if not value:
            raise ValueError(
                "needs at least one match, e.g. - {headerName: x-canary, headerValue: {exact: always}}"
            )
        if len(value) > MAX_HEADER_MATCHES:
            raise ValueError(f"takes at most {MAX_HEADER_MATCHES} matches (an ALB rule's limit)")
        return value


def form_names(forms: frozenset[str] | set[str]) -> str:
    """Match forms as the stack file spells them (`headerValue.exact`, `cookieValue.prefix`)."""
    ordered = [f for f in HEADER_MATCH_FORMS if f in forms]
    return ", ".join(f"{f.split('-')[0]}Value.{f.split('-')[1]}" for f in ordered) or "none"


_NO_HEADER_ROUTE = (
    "headerRoute",
    "is for canary; a blue-green service's idle slot has its own preview endpoint (previewUrl) to "
    "test it before the switch",
)


def _refuse(data: Any, keys: Mapping[str, tuple[str, str]]) -> None:
    """Keys of another strategy: each refused with its own fix (path, message), not as a mere unknown key.
    A key counts however the file spells it (`activeSlot` or `active_slot`)."""
    if not isinstance(data, Mapping):
        return
    for key, (path, message) in keys.items():
        if key in data or to_snake(key) in data:
            raise RolloutError(path, message)


class _OneSlot(Model):
    """Rolling and recreate: one `main` slot running the built version, full capacity, no steps."""

    strategy: Literal["rolling", "recreate"]
    # The workload the service runs in (default `main`), e.g. `stable` after a canary.
    workload: Workload | None = None

    @model_validator(mode="before")
    @classmethod
    def _own_keys(cls, data: Any) -> Any:
        strategy = cls.model_fields["strategy"].default
        fix = ("strategy", f"{strategy} runs one slot; remove slots, activeSlot and steps")
        _refuse(data, {"slots": fix, "activeSlot": fix, "steps": fix, "headerRoute": _NO_HEADER_ROUTE})
        return data

    def check(self, built_version: str) -> None:
        """Nothing to check: the one slot runs whatever this update builds."""

    def plan(self, built_version: str, min_replicas: int, max_replicas: int) -> RolloutPlan:
        """One slot with the built version, all the traffic and the service's whole capacity."""
        main = SlotPlan(
            "main", built_version, 100, False, min_replicas, max_replicas, self.workload or "main"
        )
        return RolloutPlan(self.strategy, (main,), stable_slot="main", preview_slot=None)

    def promote(self) -> NoReturn:
        raise self._no_steps()

    def rollback(self) -> NoReturn:
        raise self._no_steps()

    def set_weight(self, weight: int) -> NoReturn:
        raise self._no_steps()

    def _no_steps(self) -> RolloutError:
        return RolloutError("strategy", f"rolls out with {self.strategy}: nothing to promote or shift")


class RollingRollout(_OneSlot):
    """The default: the one workload is updated in place, a few pods at a time."""

    strategy: Literal["rolling"] = "rolling"


class RecreateRollout(_OneSlot):
    """The one workload's pods all go before the new ones start (for what cannot run two versions)."""

    strategy: Literal["recreate"] = "recreate"


class _TwoSlots(Model):
    """What blue-green and canary share: named slots, each in its own workload, one running the build."""

    strategy: Literal["blue-green", "canary"]
    slots: Mapping[str, SlotSettings]

    def _check_slots(self) -> None:
        names = SLOT_NAMES[self.strategy]
        for name in self.slots:
            if name not in names:
                raise RolloutError(
                    f"slots.{name}", f"unknown slot; {self.strategy} slots are {', '.join(names)}"
                )
        workloads = [s.workload or n for n, s in self.slots.items()]
        for name, slot in self.slots.items():
            workload = slot.workload or name
            if workloads.count(workload) > 1:
                raise RolloutError(
                    f"slots.{name}.workload", f"{workload!r} runs two slots; each slot needs its own workload"
                )

    def check(self, built_version: str) -> None:
        """Some slot must run the version this update builds (else the build would deploy nowhere)."""
        if built_version not in {s.version for s in self.slots.values()}:
            raise RolloutError(
                "slots",
                f"no slot runs the version this update builds ({built_version}); "
                "set the new slot's version to it",
            )

    def _with(self, changes: Mapping[str, Any], drop: tuple[str, ...] = ()) -> Self:
        """A copy with `changes` (top-level keys, camelCase) made and `drop` removed, validated again: a
        step's result is a rollout the stack file may hold. Only the keys the original sets are
        carried over, so the difference between the two is exactly the step."""
        data = self.model_dump(by_alias=True, exclude_unset=True)
        data.update(changes)
        for key in drop:
            data.pop(key, None)
        return self.model_validate(data)


class BlueGreenRollout(_TwoSlots):
    """Two full-size slots; `activeSlot` gets all the traffic, the other one is previewed."""

    strategy: Literal["blue-green"] = "blue-green"
    active_slot: str
    slots: dict[str, SlotSettings] = Field(default_factory=dict)
    # Measured on the newly active slot right after the switch, `count` times (Argo's
    # postPromotionAnalysis): the idle slot takes no user traffic, so request metrics could say
    # nothing about it before. A failure switches back.
    analysis: AnalysisSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _own_keys(cls, data: Any) -> Any:
        _refuse(
            data,
            {
                "workload": ("workload", _PER_SLOT_WORKLOAD.format(strategy="blue-green")),
                "steps": ("steps", "steps are for canary; blue-green promotes by switching activeSlot"),
                "headerRoute": _NO_HEADER_ROUTE,
            },
        )
        slots = data.get("slots") if isinstance(data, Mapping) else None
        weightless = "blue-green slots take no weight: the active slot gets 100; set activeSlot"
        for slot in slots.values() if isinstance(slots, Mapping) else ():
            _refuse(slot, {"weight": ("slots", weightless)})
        if isinstance(data, Mapping) and "activeSlot" not in data and "active_slot" not in data:
            raise RolloutError("activeSlot", "is required for blue-green; one of blue, green")
        return data

    @model_validator(mode="after")
    def _valid(self) -> BlueGreenRollout:
        self._check_slots()
        names = SLOT_NAMES["blue-green"]
        if self.active_slot not in names:
            raise RolloutError(
                "activeSlot", f"{self.active_slot!r} is not a slot; use one of {', '.join(names)}"
            )
        if self.active_slot not in self.slots:
            raise RolloutError(
                "activeSlot",
                f"slot {self.active_slot!r} is not defined under slots; define it or switch back",
            )
        _check_analysis(self.analysis)
        if self.analysis is not None and self.analysis.count is None:
            raise RolloutError(
                "analysis.count",
                "is required for blue-green: how many intervals the new active slot is measured after "
                "the switch, e.g. count: 5",
            )
        return self

    def plan(self, built_version: str, min_replicas: int, max_replicas: int) -> RolloutPlan:
        """Both colours keep full capacity: the switch (and a switch back) must be instant."""
        self.check(built_version)
        slots = tuple(
            SlotPlan(
                name,
                slot.version,
                100 if name == self.active_slot else 0,
                name != self.active_slot,
                min_replicas,
                max_replicas,
                slot.workload or name,
            )
            for name, slot in sorted(self.slots.items())
        )
        idle = next((s.name for s in slots if s.preview), None)
        return RolloutPlan("blue-green", slots, stable_slot=self.active_slot, preview_slot=idle)

    def promote(self, service_version: str) -> BlueGreenRollout:
        """activeSlot to the slot running the service's version (the one this update built)."""
        running = [n for n, s in self.slots.items() if s.version == service_version]
        if not running:
            raise RolloutError(
                "slots",
                f"no slot to promote to: no slot runs {service_version} ({self._shown()}); "
                "set one slot's version",
            )
        return self._switch(running[0])

    def rollback(self, service_version: str) -> BlueGreenRollout:
        """activeSlot to the slot not running the service's version; both stay at full size, so
        promoting again is the same one-line switch."""
        others = [n for n, s in self.slots.items() if s.version != service_version]
        if not others:
            raise RolloutError(
                "slots", f"no slot to roll back to: every slot runs {service_version} ({self._shown()})"
            )
        return self._switch(others[0])

    def set_weight(self, weight: int) -> NoReturn:
        raise RolloutError("strategy", "blue-green has no weights: use promote (switch) or rollback")

    def _switch(self, target: str) -> BlueGreenRollout:
        if self.active_slot == target:
            raise RolloutError("activeSlot", f"activeSlot is already {target}")
        return self._with({"activeSlot": target})

    def _shown(self) -> str:
        return ", ".join(f"{name} {slot.version}" for name, slot in self.slots.items())


class CanaryRollout(_TwoSlots):
    """A stable slot and, while a release is under test, a canary slot; traffic splits by weight,
    capacity follows it, and `steps` are the plan a driver walks from 0 to 100."""

    strategy: Literal["canary"] = "canary"
    slots: dict[str, CanarySlotSettings] = Field(default_factory=dict)
    steps: tuple[StepSettings, ...] = ()
    # Measured on the canary during the timed pauses of the steps; a failure rolls it back.
    analysis: AnalysisSettings | None = None
    # A/B: requests that match go to the canary whatever its weight (Argo's setHeaderRoute).
    header_route: HeaderRouteSettings | None = None
    # Written by a rollback while a header route is set (Argo's abort): matching requests go to stable
    # too. Any set-weight (re-entering the steps) or promotion removes it.
    aborted: bool = False

    @model_validator(mode="before")
    @classmethod
    def _own_keys(cls, data: Any) -> Any:
        _refuse(
            data,
            {
                "workload": ("workload", _PER_SLOT_WORKLOAD.format(strategy="canary")),
                "activeSlot": ("activeSlot", "is for blue-green; a canary routes by slot weights"),
            },
        )
        return data

    @model_validator(mode="after")
    def _valid(self) -> CanaryRollout:
        self._check_slots()
        stable, canary = self.slots.get("stable"), self.canary
        if stable is None:
            raise RolloutError("slots.stable", "is required for canary (the version serving today)")
        for name, slot in self.slots.items():
            if slot.weight is not None and not 0 <= slot.weight <= 100:
                raise RolloutError(f"slots.{name}.weight", f"{slot.weight} is not within 0..100")
        if canary is not None and canary.weight is None:
            raise RolloutError(
                "slots.canary.weight", "is required for canary (its setWeight): an integer 0..100"
            )
        weights = self.weights
        total = sum(weights.values())
        if total != 100:
            shown = "/".join(str(weights[name]) for name in SLOT_NAMES["canary"] if name in weights)
            raise RolloutError("slots", f"weights {shown} sum to {total}; they must sum to 100")
        if canary is not None and canary.version == stable.version:
            raise RolloutError(
                "slots.canary.version",
                f"equals the stable version {canary.version}; a canary needs a different version "
                "(to promote, set slots.stable.version and remove slots.canary)",
            )
        self._check_steps()
        _check_analysis(self.analysis)
        return self

    def _check_steps(self) -> None:
        """The steps are the plan a driver walks from the stable version to the new one: each
        setWeight within 0..100, never below an earlier one, the last at 100 (full promotion).
        Pauses go anywhere. No steps at all is fine: weights are then set by hand.

        The live weight (`slots.canary.weight`) need not be one of the step weights: a person may
        hold the canary anywhere between steps (`set-weight 30`) or roll it back to 0, and that is a
        routing edit, not a change of plan. Only the plan itself is checked here."""
        weights = [(i, s.set_weight) for i, s in enumerate(self.steps) if s.set_weight is not None]
        for i, weight in weights:
            if not 0 <= weight <= 100:
                raise RolloutError(f"steps[{i}].setWeight", f"{weight} is not within 0..100")
        for (before, previous), (i, weight) in itertools.pairwise(weights):
            if weight < previous:
                raise RolloutError(
                    f"steps[{i}].setWeight",
                    f"{weight} goes down from setWeight {previous} (steps[{before}]); steps only go up "
                    "(a rollback sets slots.canary.weight, not a step)",
                )
        if self.steps and not weights:
            raise RolloutError("steps", "has no setWeight; a canary's steps end with `- setWeight: 100`")
        if weights and weights[-1][1] != 100:
            last, weight = weights[-1]
            raise RolloutError(
                f"steps[{last}].setWeight",
                f"the steps must end at setWeight: 100 (full promotion), the last is {weight}; "
                "add `- setWeight: 100`",
            )

    @property
    def canary(self) -> CanarySlotSettings | None:
        """The release under test; None once promoted (or removed)."""
        return self.slots.get("canary")

    @property
    def weights(self) -> dict[str, int]:
        """Each slot's weight; stable's, when left out, is the remainder."""
        weights = {name: s.weight for name, s in self.slots.items() if s.weight is not None}
        if "stable" in self.slots and self.slots["stable"].weight is None:
            weights["stable"] = 100 - sum(w for name, w in weights.items() if name != "stable")
        return weights

    def plan(self, built_version: str, min_replicas: int, max_replicas: int) -> RolloutPlan:
        """Capacity follows weight, with a floor of one replica per running slot."""
        self.check(built_version)
        weights = self.weights
        slots = tuple(
            SlotPlan(
                name,
                self.slots[name].version,
                weights[name],
                name == "canary",
                scaled(min_replicas, weights[name]),
                max(scaled(max_replicas, weights[name]), scaled(min_replicas, weights[name])),
                self.slots[name].workload or name,
            )
            for name in SLOT_NAMES["canary"]
            if name in self.slots
        )
        preview = "canary" if self.canary is not None else None
        header = (
            HeaderRoutePlan(self.header_route.match, "stable" if self.aborted else "canary")
            if self.header_route is not None and self.canary is not None
            else None
        )
        return RolloutPlan("canary", slots, stable_slot="stable", preview_slot=preview, header_route=header)

    def set_weight(self, weight: int) -> CanaryRollout:
        """The canary gets `weight`, stable the rest (its weight follows when the file sets one)."""
        self._under_test()
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise RolloutError("slots.canary.weight", "--weight must be an integer 0..100")
        return self._weighted(weight)

    def rollback(self) -> CanaryRollout:
        """All traffic back to stable; the canary's pods stay (weight 0) for inspection. With a header
        route, `aborted: true` sends its requests to stable too (weight 0 alone cannot say it: a
        canary at 0 taking only header traffic is how an A/B test starts)."""
        self._under_test()
        return self._weighted(0, aborted=self.header_route is not None)

    def promote(self) -> CanaryRollout:
        """The canary's version becomes stable's and the canary slot goes. Refused after a rollback
        (weight 0): that would send the version from 0% straight to 100%, skipping the steps."""
        canary = self._under_test()
        if canary.weight == 0:
            raise RolloutError(
                "slots.canary.weight",
                f"the canary {canary.version} was rolled back (weight 0); promote would send it to "
                f"100%. Set a weight first (`rollout set-weight --weight {self.reentry_weight}`) to "
                "re-enter the steps, or remove the canary slot",
            )
        slots = self.model_dump(by_alias=True, exclude_unset=True)["slots"]
        del slots["canary"]
        slots["stable"]["version"] = canary.version
        if slots["stable"].get("weight") is not None:
            slots["stable"]["weight"] = 100
        return self._with({"slots": slots}, drop=("aborted",))

    @property
    def reentry_weight(self) -> int:
        """The weight the steps start with (10 without steps): where a rolled-back canary re-enters."""
        first = (s.set_weight for s in self.steps if s.set_weight is not None and 0 < s.set_weight < 100)
        return next(first, _REENTRY_WEIGHT)

    def _under_test(self) -> CanarySlotSettings:
        if self.canary is None:
            raise RolloutError(
                "slots.canary", "there is no canary slot: the last canary was promoted or removed"
            )
        return self.canary

    def _weighted(self, weight: int, aborted: bool = False) -> CanaryRollout:
        slots = self.model_dump(by_alias=True, exclude_unset=True)["slots"]
        slots["canary"]["weight"] = weight
        if slots["stable"].get("weight") is not None:
            slots["stable"]["weight"] = 100 - weight
        if aborted:
            return self._with({"slots": slots, "aborted": True})
        return self._with({"slots": slots}, drop=("aborted",))


def _strategy_of(value: Any) -> str:
    """Which model a rollout block is: its `strategy`, and rolling when it names none (the default)."""
    strategy = (
        value.get("strategy", "rolling")
        if isinstance(value, Mapping)
        else getattr(value, "strategy", "rolling")
    )
    return strategy if isinstance(strategy, str) else repr(strategy)


# A `strategy` that names no model is the `strategy` key's error (`tag_invalid` carries the key and the
# choices, so the settings formatter words it like any other choice of values).
RolloutSettings = Annotated[
    Annotated[RollingRollout, Tag("rolling")]
    | Annotated[RecreateRollout, Tag("recreate")]
    | Annotated[BlueGreenRollout, Tag("blue-green")]
    | Annotated[CanaryRollout, Tag("canary")],
    Discriminator(
        _strategy_of,
        custom_error_type="tag_invalid",
        custom_error_message="must be one of {expected}",
        custom_error_context={
            "key": "strategy",
            "expected": "'rolling', 'recreate', 'blue-green' or 'canary'",
        },
    ),
]
_ROLLOUT: TypeAdapter[RolloutSettings] = TypeAdapter(RolloutSettings)


def parse_rollout(block: Any) -> RolloutSettings:
    """A service's `rollout` block as the stack file spells it (camelCase keys), validated.

    Raises pydantic's `ValidationError`; its first location part is the strategy (the union's tag)."""
    return _ROLLOUT.validate_python(block)


# -- what the targets deploy --------------------------------------------------------------------------


def scaled(replicas: int, weight: int) -> int:
    """A slot's share of the service's replicas, never below one."""
    return max(1, math.ceil(replicas * weight / 100))


@dataclass(frozen=True)
class SlotPlan:
    name: str
    version: str
    weight: int
    preview: bool  # the idle blue-green slot, or the canary: reachable on its own preview endpoint
    min_replicas: int
    max_replicas: int
    # What every target names the slot's physical workload by (Deployment, ECS service and target
    # group, container group and origin): the slot's name unless the stack file says otherwise, so a
    # strategy switch that keeps the live workload changes only routing.
    workload: str = ""

    def __post_init__(self) -> None:
        if not self.workload:
            object.__setattr__(self, "workload", self.name)


@dataclass(frozen=True)
class HeaderRoutePlan:
    """Requests meeting every match go to `slot` only (the canary; stable after a rollback)."""

    matches: tuple[HeaderMatch, ...]
    slot: str


@dataclass(frozen=True)
class RolloutPlan:
    strategy: Strategy
    slots: tuple[SlotPlan, ...]
    stable_slot: str  # what the stable endpoint routes to (blue-green: the active slot)
    preview_slot: str | None
    # A canary's A/B rule, ahead of the weighted split (None: no header route, or no canary slot).
    header_route: HeaderRoutePlan | None = None

    @property
    def weights(self) -> dict[str, int]:
        return {s.name: s.weight for s in self.slots}

    @property
    def versions(self) -> dict[str, str]:
        return {s.name: s.version for s in self.slots}

    @property
    def weighted(self) -> bool:
        """Whether routing must split by weight (a canary with both slots present)."""
        return self.strategy == "canary" and len(self.slots) > 1

    def slot(self, name: str) -> SlotPlan:
        return next(s for s in self.slots if s.name == name)

    def workload(self, slot: str) -> str:
        """The workload a slot (by its role name) runs in."""
        return self.slot(slot).workload
