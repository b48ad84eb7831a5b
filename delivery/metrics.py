"""Typed metric queries per platform: what the rollout driver asks each cloud about a release under test.

Each target the service runs on is measured where its traffic is split (components/targets/*):

- ecs: CloudWatch `AWS/ApplicationELB` on the slot's target group: `HTTPCode_Target_{2,3,4,5}XX_Count`
  and `RequestCount` (Sum), `TargetResponseTime` (p99).
- eks: the same, on the target group the AWS Load Balancer Controller made for the slot's Service
  (found by the controller's tags).
- cloudrun: Cloud Monitoring on the slot's revision (`cloud_run_revision`):
  `run.googleapis.com/request_count` by `response_code_class`, `request_latencies` (p99).
- gke: Cloud Monitoring on the Gateway's regional load balancer, the slot's backend
  (`http_external_regional_lb_rule`): `loadbalancing.googleapis.com/https/external/regional/
  request_count` by `response_code_class`, `backend_latencies` (p99).
- aci: Azure Monitor on the Front Door profile, the slot's origin: `OriginRequestCount` by
  `HttpStatusGroup`; `OriginLatency` is a per-minute average (no percentile is published), so
  latency is the window's highest minute.
- aks: Azure Monitor on the Application Gateway for Containers, the slot's backend Service:
  `BackendHTTPResponseStatus` by `HttpResponseCode`; no latency is published (use `prometheus`).

A `prometheus` metric is the user's PromQL, sent to `/api/v1/query`.

Each reader is a query builder (`Source.counts_request`, `latency_request`: the API call exactly as
the API takes it, a `Request`) and a response parser (`parse_counts`, `parse_latency`), tested against
responses recorded in the shape each API documents (tests/fixtures/metrics/). `fetch` sends a
Request with the cloud's own client, imported only when called (boto3, google-auth, azure-identity:
requirements-delivery.txt, installed by the rollout workflow only). The Google and Azure calls are
their documented REST endpoints, made with the official credential libraries, so the production path
hands the parsers exactly the shape the fixtures record (the Python client libraries return their own
objects; azure-monitor-query 2 no longer reads metrics at all).

Where a source is found: in the stack's resources, as the preflight engine captures them
(`plan_resources(ProgramRun)`, offline) or as Pulumi's state holds them (`deployed_resources`,
`Stack.export_stack()`, in production): the same types and names either way, so the offline tests
locate the same resources the driver does.

Not provable offline, and said so: the dimension values a platform chooses itself. The EKS target group
is found by the controller's documented tags; GKE's backend service name (`gkegw1-<hash>-<namespace>-
<service>-<port>-<hash>`, the GKE Gateway controller's naming), Front Door's `Origin` value (the
origin's host name) and AGC's `BackendService` value (`<namespace>/<service>`) are matched as those
services are observed to name them, not as a document promises.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from components.rollout import MetricSettings
from preflight.engine import SIG_KEY, ProgramRun

CLASSES = ("2xx", "3xx", "4xx", "5xx")
HTTP_TIMEOUT = 30.0  # seconds per API call


class MetricError(Exception):
    """A metric that cannot be read (the API failed, or answered what cannot be judged): one line."""


# -- the stack's resources -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanResource:
    """One resource of the stack: its inputs and, where known, its outputs (state, or the mocks')."""

    urn: str
    type: str
    name: str
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any] = field(default_factory=dict)

    def value(self, key: str) -> Any:
        """An output, else the input of that name (unwrapped from a secret marker)."""
        found = self.outputs.get(key, self.inputs.get(key))
        if isinstance(found, Mapping) and SIG_KEY in found:
            return found.get("value")
        return found


def plan_resources(run: ProgramRun) -> list[PlanResource]:
    """The resources a program run under the preflight engine's mocks registered."""
    return [PlanResource(r.urn, r.type, r.name, r.inputs, r.outputs) for r in run.resources]


def deployed_resources(deployment: Mapping[str, Any]) -> list[PlanResource]:
    """The resources of `Stack.export_stack().deployment` (Pulumi's checkpoint: `resources[]`, each
    with `urn`, `type`, `inputs`, `outputs`); a URN's last `::` part is the resource's name."""
    return [
        PlanResource(
            r["urn"], r["type"], r["urn"].rsplit("::", 1)[-1], r.get("inputs", {}), r.get("outputs", {})
        )
        for r in deployment.get("resources", [])
    ]


def _one(resources: Sequence[PlanResource], type_: str, name: str) -> PlanResource:
    for r in resources:
        if r.type == type_ and r.name == name:
            return r
    raise MetricError(f"the stack has no {type_} named {name!r}; deploy the service first")


def _of_type(resources: Sequence[PlanResource], type_: str) -> PlanResource:
    found = [r for r in resources if r.type == type_]
    if not found:
        raise MetricError(f"the stack has no {type_}; deploy the service first")
    return found[0]


# -- what a reader asks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The time a measurement covers."""

    start: datetime
    end: datetime

    @property
    def seconds(self) -> int:
        return max(1, round((self.end - self.start).total_seconds()))

    def shifted(self, lag: timedelta) -> Window:
        return Window(self.start - lag, self.end - lag)


@dataclass(frozen=True)
class Request:
    """One API call, with its parameters as the API names them: `api` picks the client (`fetch`)."""

    # cloudwatch.GetMetricData, tagging.GetResources, monitoring.timeSeries.list, insights.metrics,
    # prometheus.query
    api: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Counts:
    """Requests in a window by status class; `total` counts every request (also 1xx and none)."""

    by_class: Mapping[str, float]
    total: float

    @property
    def error_rate(self) -> float | None:
        return self.by_class.get("5xx", 0.0) / self.total if self.total > 0 else None

    @property
    def success_rate(self) -> float | None:
        good = self.by_class.get("2xx", 0.0) + self.by_class.get("3xx", 0.0)
        return good / self.total if self.total > 0 else None


def status_class(code: Any) -> str | None:
    """`5xx`, `500`, `503`, 500 -> `5xx` (each platform spells the class its own way)."""
    text = str(code).strip().lower()
    return f"{text[0]}xx" if text[:1] in "12345" and text[:1] else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Source(ABC):
    """Where one target's traffic to one slot is measured. `lag`: how late the platform publishes
    (a window is moved back by it, so it is complete when read)."""

    target: str
    lag: timedelta
    # Why the platform cannot measure latency (None: it can).
    no_latency: str | None = None
    # A lookup to make before the first query (the EKS target group is found by its tags).
    lookup: Request | None = None

    @abstractmethod
    def counts_request(self, window: Window) -> Request: ...

    @abstractmethod
    def parse_counts(self, response: Mapping[str, Any]) -> Counts: ...

    @abstractmethod
    def latency_request(self, window: Window) -> Request: ...

    @abstractmethod
    def parse_latency(self, response: Mapping[str, Any]) -> float | None:
        """The window's latency in milliseconds, None without data."""

    def resolved(self, response: Mapping[str, Any]) -> Source:
        """The source once its `lookup` is answered."""
        return self


# -- AWS: CloudWatch on the slot's ALB target group (ECS, EKS) -----------------------------------------
# GetMetricData: https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html
# ALB metrics and dimensions: https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-cloudwatch-metrics.html
# (TargetGroup and LoadBalancer are the ARN suffixes: targetgroup/<name>/<id>, app/<name>/<id>.)

ALB_NAMESPACE = "AWS/ApplicationELB"
_ALB_COUNTS = {f"c{c}": f"HTTPCode_Target_{c[0]}XX_Count" for c in CLASSES} | {"total": "RequestCount"}


@dataclass(frozen=True)
class AlbTargetGroup(Source):
    target: str
    region: str
    target_group: str  # targetgroup/<name>/<id>
    load_balancer: str  # app/<name>/<id>
    lag: timedelta = timedelta(minutes=2)  # ALB metrics are published every 60 s

    def _query(self, id_: str, metric: str, stat: str, window: Window) -> dict[str, Any]:
        dimensions = [
            {"Name": "TargetGroup", "Value": self.target_group},
            {"Name": "LoadBalancer", "Value": self.load_balancer},
        ]
        return {
            "Id": id_,
            "MetricStat": {
                "Metric": {"Namespace": ALB_NAMESPACE, "MetricName": metric, "Dimensions": dimensions},
                # One datapoint for the whole window: a period is a multiple of 60 s.
                "Period": 60 * math.ceil(window.seconds / 60),
                "Stat": stat,
            },
            "ReturnData": True,
        }

    def _request(self, queries: list[dict[str, Any]], window: Window) -> Request:
        return Request(
            "cloudwatch.GetMetricData",
            {
                "region": self.region,
                "MetricDataQueries": queries,
                "StartTime": _iso(window.start),
                "EndTime": _iso(window.end),
                "ScanBy": "TimestampAscending",
            },
        )

    def counts_request(self, window: Window) -> Request:
        queries = [self._query(id_, metric, "Sum", window) for id_, metric in _ALB_COUNTS.items()]
        return self._request(queries, window)

    def parse_counts(self, response: Mapping[str, Any]) -> Counts:
        sums = _cloudwatch_values(response)
        by_class = {c: sum(sums.get(f"c{c}", [])) for c in CLASSES}
        return Counts(by_class, sum(sums.get("total", [])))

    def latency_request(self, window: Window) -> Request:
        return self._request([self._query("p99", "TargetResponseTime", "p99", window)], window)

    def parse_latency(self, response: Mapping[str, Any]) -> float | None:
        values = _cloudwatch_values(response).get("p99", [])
        return max(values) * 1000 if values else None  # TargetResponseTime is in seconds


def _cloudwatch_values(response: Mapping[str, Any]) -> dict[str, list[float]]:
    """`MetricDataResults[].Values` by `Id`; a result that is not `Complete` or reports an error is
    not judged on (boto3 follows `NextToken` for us; a partial answer would undercount)."""
    for message in response.get("Messages", []):
        if message.get("Code") not in (None, "", "PartialData"):
            raise MetricError(f"CloudWatch: {message.get('Code')}: {message.get('Value')}")
    values: dict[str, list[float]] = {}
    for result in response.get("MetricDataResults", []):
        status = result.get("StatusCode", "Complete")
        if status != "Complete":
            raise MetricError(f"CloudWatch answered {result.get('Id')} with status {status}")
        values[result["Id"]] = [float(v) for v in result.get("Values", [])]
    return values


# The AWS Load Balancer Controller tags what it creates for an Ingress (its docs, "Ingress annotations",
# and pkg/deploy/tracking): `elbv2.k8s.aws/cluster: <cluster>`, `ingress.k8s.aws/stack:
# <namespace>/<ingress>`, and on a target group `ingress.k8s.aws/resource: <namespace>/<ingress>-
# <service>:<port>` (the load balancer's is `LoadBalancer`).
# GetResources: https://docs.aws.amazon.com/resourcegroupstagging/latest/APIReference/API_GetResources.html


@dataclass(frozen=True)
class EksIngressTargetGroup(Source):
    """The EKS slot's target group: made by the AWS Load Balancer Controller, so found by its tags."""

    target: str
    region: str
    cluster: str
    namespace: str
    ingress: str
    backend: str  # the slot's Service
    port: int = 80
    lag: timedelta = timedelta(minutes=2)

    @property
    def lookup(self) -> Request:  # type: ignore[override]
        return Request(
            "tagging.GetResources",
            {
                "region": self.region,
                "TagFilters": [
                    {"Key": "elbv2.k8s.aws/cluster", "Values": [self.cluster]},
                    {"Key": "ingress.k8s.aws/stack", "Values": [f"{self.namespace}/{self.ingress}"]},
                ],
                "ResourceTypeFilters": [
                    "elasticloadbalancing:loadbalancer",
                    "elasticloadbalancing:targetgroup",
                ],
            },
        )

    def resolved(self, response: Mapping[str, Any]) -> Source:
        wanted = {"LoadBalancer": "", f"{self.namespace}/{self.ingress}-{self.backend}:{self.port}": ""}
        for mapping in response.get("ResourceTagMappingList", []):
            tags = {t["Key"]: t["Value"] for t in mapping.get("Tags", [])}
            role = tags.get("ingress.k8s.aws/resource")
            if role in wanted:
                wanted[role] = mapping["ResourceARN"]
        balancer, group = wanted.values()
        if not balancer or not group:
            missing = "load balancer" if not balancer else f"target group for {self.backend}:{self.port}"
            raise MetricError(
                f"eks: no {missing} tagged ingress.k8s.aws/stack={self.namespace}/{self.ingress} in "
                f"cluster {self.cluster}; is the Ingress reconciled? "
                f"(kubectl describe ingress -n {self.namespace})"
            )
        return AlbTargetGroup(self.target, self.region, arn_suffix(group), arn_suffix(balancer))

    def counts_request(self, window: Window) -> Request:
        raise MetricError("eks: the target group is looked up first")

    def parse_counts(self, response: Mapping[str, Any]) -> Counts:
        raise MetricError("eks: the target group is looked up first")

    def latency_request(self, window: Window) -> Request:
        raise MetricError("eks: the target group is looked up first")

    def parse_latency(self, response: Mapping[str, Any]) -> float | None:
        raise MetricError("eks: the target group is looked up first")


def arn_suffix(arn: str) -> str:
    """An ALB's or target group's ARN -> the form CloudWatch's LoadBalancer and TargetGroup dimensions
    take (what the resources' `arnSuffix` output holds): `...:loadbalancer/app/web/50dc...` ->
    `app/web/50dc...`, `...:targetgroup/web/73e2...` -> `targetgroup/web/73e2...`."""
    resource = arn.split(":", 5)[-1]
    if resource.startswith("targetgroup/"):
        return resource
    if resource.startswith("loadbalancer/app/"):
        return resource.removeprefix("loadbalancer/")
    raise MetricError(f"{arn!r} is not an ALB or target group ARN")


# -- Google: Cloud Monitoring timeSeries.list (Cloud Run revisions, the GKE Gateway's load balancer) --------
# https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.timeSeries/list
# Metrics: https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-run (run.googleapis.com) and
# https://cloud.google.com/monitoring/api/metrics_gcp_i_o#gcp-loadbalancing (loadbalancing.googleapis.com).


@dataclass(frozen=True)
class _CloudMonitoring(Source):
    target: str
    project: str
    lag: timedelta = timedelta(minutes=4)  # "After sampling, data is not visible for up to 210 seconds"

    count_metric = ""
    latency_metric = ""

    @abstractmethod
    def _selector(self) -> str:
        """The filter's resource part: which time series are the slot's."""

    def _request(self, metric: str, window: Window, reducer: str, group_by: str | None) -> Request:
        params: dict[str, Any] = {
            "name": f"projects/{self.project}",
            "filter": f'metric.type = "{metric}" AND {self._selector()}',
            "interval.startTime": _iso(window.start),
            "interval.endTime": _iso(window.end),
            "aggregation.alignmentPeriod": f"{window.seconds}s",
            "aggregation.perSeriesAligner": "ALIGN_DELTA",
            "aggregation.crossSeriesReducer": reducer,
        }
        if group_by:
            params["aggregation.groupByFields"] = group_by
        return Request("monitoring.timeSeries.list", params)

    def counts_request(self, window: Window) -> Request:
        return self._request(self.count_metric, window, "REDUCE_SUM", "metric.labels.response_code_class")

    def parse_counts(self, response: Mapping[str, Any]) -> Counts:
        by_class = dict.fromkeys(CLASSES, 0.0)
        total = 0.0
        for series in response.get("timeSeries", []):
            label = series.get("metric", {}).get("labels", {}).get("response_code_class")
            value = sum(_point_value(p) for p in series.get("points", []))
            total += value
            found = status_class(label)
            if found in by_class:
                by_class[found] += value
        return Counts(by_class, total)

    def latency_request(self, window: Window) -> Request:
        return self._request(self.latency_metric, window, "REDUCE_PERCENTILE_99", None)

    def parse_latency(self, response: Mapping[str, Any]) -> float | None:
        values = [_point_value(p) for s in response.get("timeSeries", []) for p in s.get("points", [])]
        return max(values) if values else None  # both metrics are in milliseconds


def _point_value(point: Mapping[str, Any]) -> float:
    """A point's TypedValue: `int64Value` arrives as a JSON string, `doubleValue` as a number."""
    value = point.get("value", {})
    for key in ("int64Value", "doubleValue"):
        if key in value:
            return float(value[key])
    raise MetricError(f"Cloud Monitoring: a point without a number ({', '.join(value) or 'empty'})")


@dataclass(frozen=True)
class CloudRunRevision(_CloudMonitoring):
    """The slot's revision: Cloud Run splits traffic between revisions (`traffics`)."""

    service: str = ""
    revision: str = ""
    count_metric = "run.googleapis.com/request_count"
    latency_metric = "run.googleapis.com/request_latencies"

    def _selector(self) -> str:
        return (
            'resource.type = "cloud_run_revision" AND '
            f'resource.labels.service_name = "{self.service}" AND '
            f'resource.labels.revision_name = "{self.revision}"'
        )


@dataclass(frozen=True)
class GkeGatewayBackend(_CloudMonitoring):
    """The slot's Service behind the `gke-l7-regional-external-managed` Gateway: the load balancer's
    backend service, which the GKE Gateway controller names
    gkegw1-<hash>-<namespace>-<service>-<port>-<hash>."""

    region: str = ""
    namespace: str = ""
    backend: str = ""
    port: int = 80
    count_metric = "loadbalancing.googleapis.com/https/external/regional/request_count"
    latency_metric = "loadbalancing.googleapis.com/https/external/regional/backend_latencies"

    def _selector(self) -> str:
        name = f"gkegw1-.*-{self.namespace}-{self.backend}-{self.port}-.*"
        return (
            'resource.type = "http_external_regional_lb_rule" AND '
            f'resource.labels.region = "{self.region}" AND '
            f'resource.labels.backend_target_name = monitoring.regex.full_match("{name}")'
        )


# -- Azure: Azure Monitor metrics (Front Door origins for ACI, AGC backends for AKS) -----------------------
# Metrics - List: https://learn.microsoft.com/en-us/rest/api/monitor/metrics/list (api-version 2023-10-01)
# Front Door: https://learn.microsoft.com/en-us/azure/frontdoor/monitor-front-door-reference
#   (Microsoft.Cdn/profiles: OriginRequestCount, Total, dimensions HttpStatus, HttpStatusGroup, Origin,
#   Endpoint; OriginLatency, Average, dimensions Origin, Endpoint)
# AGC: https://learn.microsoft.com/en-us/azure/azure-monitor/reference/supported-metrics/microsoft-servicenetworking-trafficcontrollers-metrics
#   (BackendHTTPResponseStatus, Total, dimensions Microsoft.regionName, BackendService, HttpResponseCode)

AZURE_METRICS_API = "2023-10-01"


@dataclass(frozen=True)
class _AzureMonitor(Source):
    target: str
    resource_id: str
    lag: timedelta = timedelta(minutes=4)  # "can take up to 3 minutes to get processed by Azure Monitor"

    def _request(self, metric: str, aggregation: str, filter_: str, window: Window) -> Request:
        return Request(
            "insights.metrics",
            {
                "resourceUri": self.resource_id,
                "metricnames": metric,
                "timespan": f"{_iso(window.start)}/{_iso(window.end)}",
                "interval": "PT1M",  # both services publish per minute (PT1M is their finest grain)
                "aggregation": aggregation,
                "$filter": filter_,
                "api-version": AZURE_METRICS_API,
            },
        )

    def _counts(self, response: Mapping[str, Any], dimension: str) -> Counts:
        by_class = dict.fromkeys(CLASSES, 0.0)
        total = 0.0
        for metric in _azure_metrics(response):
            for series in metric.get("timeseries", []):
                labels = {m["name"]["value"].lower(): m["value"] for m in series.get("metadatavalues", [])}
                value = sum(float(d.get("total") or 0) for d in series.get("data", []))
                total += value
                found = status_class(labels.get(dimension.lower(), ""))
                if found in by_class:
                    by_class[found] += value
        return Counts(by_class, total)


def _azure_metrics(response: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if "error" in response:
        error = response["error"]
        raise MetricError(f"Azure Monitor: {error.get('code')}: {error.get('message')}")
    metrics: list[Mapping[str, Any]] = response.get("value", [])
    for metric in metrics:
        if metric.get("errorCode") not in (None, "", "Success"):
            raise MetricError(f"Azure Monitor: {metric.get('errorCode')}: {metric.get('errorMessage')}")
    return metrics


@dataclass(frozen=True)
class FrontDoorOrigin(_AzureMonitor):
    """The slot's container group, a Front Door origin: split by the `Origin` dimension (its host)."""

    origin: str = ""

    def counts_request(self, window: Window) -> Request:
        return self._request(
            "OriginRequestCount", "Total", f"Origin eq '{self.origin}' and HttpStatusGroup eq '*'", window
        )

    def parse_counts(self, response: Mapping[str, Any]) -> Counts:
        return self._counts(response, "HttpStatusGroup")

    def latency_request(self, window: Window) -> Request:
        return self._request("OriginLatency", "Average", f"Origin eq '{self.origin}'", window)

    def parse_latency(self, response: Mapping[str, Any]) -> float | None:
        """Front Door publishes no percentile: the highest per-minute average of the window (ms)."""
        values = [
            float(d["average"])
            for metric in _azure_metrics(response)
            for series in metric.get("timeseries", [])
            for d in series.get("data", [])
            if d.get("average") is not None
        ]
        return max(values) if values else None


@dataclass(frozen=True)
class AgcBackend(_AzureMonitor):
    """The slot's Service behind Application Gateway for Containers (the HTTPRoute's backendRefs)."""

    namespace: str = ""
    backend: str = ""
    no_latency: str | None = (
        "Application Gateway for Containers publishes no backend latency metric; measure latency with a "
        "prometheus metric, or leave latency out for AKS"
    )

    def counts_request(self, window: Window) -> Request:
        selector = f"BackendService eq '{self.namespace}/{self.backend}' and HttpResponseCode eq '*'"
        return self._request("BackendHTTPResponseStatus", "Total", selector, window)

    def parse_counts(self, response: Mapping[str, Any]) -> Counts:
        return self._counts(response, "HttpResponseCode")

    def latency_request(self, window: Window) -> Request:
        raise MetricError(f"aks: {self.no_latency}")

    def parse_latency(self, response: Mapping[str, Any]) -> float | None:
        raise MetricError(f"aks: {self.no_latency}")


# -- Prometheus: the user's query ------------------------------------------------------------------------
# https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries


def prometheus_request(metric: MetricSettings, values: Mapping[str, str], window: Window) -> Request:
    """`GET <address>/api/v1/query?query=...&time=<end>`, the placeholders filled in."""
    assert metric.prometheus is not None
    query = metric.prometheus.query
    for key, value in values.items():
        query = query.replace("{{" + key + "}}", value)
    params = {"query": query, "time": f"{window.end.timestamp():.3f}"}
    return Request("prometheus.query", {"address": metric.prometheus.address, **params})


def parse_prometheus(response: Mapping[str, Any]) -> float | None:
    """The one number an instant query returns: a scalar, or a vector of one sample (none: no data)."""
    if response.get("status") != "success":
        raise MetricError(f"Prometheus: {response.get('errorType', 'error')}: {response.get('error', '')}")
    data = response.get("data", {})
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        sample = result
    elif kind == "vector":
        if not result:
            return None
        if len(result) > 1:
            raise MetricError(
                f"Prometheus: the query returns {len(result)} series; aggregate it to one number "
                "(sum(...), max(...))"
            )
        sample = result[0]["value"]
    else:
        raise MetricError(f"Prometheus: the query returns a {kind}; write one that returns one number")
    value = float(sample[1])
    return None if math.isnan(value) else value


# -- locating each target's source in the stack ------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """The slot under test: its role name (canary, or the new blue-green colour) and its workload."""

    service: str
    name: str
    workload: str


def ecs_source(resources: Sequence[PlanResource], slot: Slot, region: str) -> Source:
    """components/targets/ecs.py: a target group per workload (`<service>-ecs-<workload>`) on the
    service's ALB (`<service>-ecs-alb`)."""
    group = _one(resources, "aws:lb/targetGroup:TargetGroup", f"{slot.service}-ecs-{slot.workload}")
    balancer = _one(resources, "aws:lb/loadBalancer:LoadBalancer", f"{slot.service}-ecs-alb")

    def suffix(resource: PlanResource) -> str:
        known = resource.value("arnSuffix")
        return str(known) if known else arn_suffix(str(resource.value("arn")))

    return AlbTargetGroup("ecs", region, suffix(group), suffix(balancer))


def eks_source(resources: Sequence[PlanResource], slot: Slot, region: str) -> Source:
    """components/targets/eks.py: namespace and Ingress named after the service, a Service per slot
    (`<service>-<slot>`, port 80) that the Ingress's weighted action forwards to."""
    cluster = _of_type(resources, "aws:eks/cluster:Cluster")
    return EksIngressTargetGroup(
        "eks", region, str(cluster.value("name")), slot.service, slot.service, f"{slot.service}-{slot.name}"
    )


def cloudrun_source(resources: Sequence[PlanResource], slot: Slot, region: str) -> Source:
    """components/targets/cloudrun.py: one service `<service>-cloudrun`, `traffics[].tag` is the slot."""
    service = _one(resources, "gcp:cloudrunv2/service:Service", f"{slot.service}-cloudrun")
    revision = next(
        (t.get("revision") for t in service.value("traffics") or [] if t.get("tag") == slot.name), None
    )
    if not revision:
        raise MetricError(f"cloudrun: {slot.service} routes no traffic to a revision tagged {slot.name}")
    return CloudRunRevision(
        "cloudrun", str(service.value("project")), service=str(service.value("name")), revision=str(revision)
    )


def gke_source(resources: Sequence[PlanResource], slot: Slot, region: str) -> Source:
    """components/targets/gke.py: the regional cluster's project and region; a Service per slot."""
    cluster = _of_type(resources, "gcp:container/cluster:Cluster")
    return GkeGatewayBackend(
        "gke",
        str(cluster.value("project")),
        region=str(cluster.value("location")),
        namespace=slot.service,
        backend=f"{slot.service}-{slot.name}",
    )


def aci_source(resources: Sequence[PlanResource], slot: Slot, region: str) -> Source:
    """components/targets/aci.py: an origin per workload, `<service>-aci-<workload>`, on the profile."""
    origin = _one(resources, "azure-native:cdn:AFDOrigin", f"{slot.service}-aci-{slot.workload}")
    profile = _of_type(resources, "azure-native:cdn:Profile")
    return FrontDoorOrigin("aci", str(profile.value("id")), origin=str(origin.value("hostName")))


def aks_source(resources: Sequence[PlanResource], slot: Slot, region: str) -> Source:
    """components/targets/aks.py: the stack's AGC resource; a Service per slot in the service's namespace."""
    controller = _of_type(resources, "azure-native:servicenetworking:TrafficControllerInterface")
    return AgcBackend(
        "aks", str(controller.value("id")), namespace=slot.service, backend=f"{slot.service}-{slot.name}"
    )


LOCATORS: Mapping[str, Callable[[Sequence[PlanResource], Slot, str], Source]] = {
    "ecs": ecs_source,
    "eks": eks_source,
    "cloudrun": cloudrun_source,
    "gke": gke_source,
    "aci": aci_source,
    "aks": aks_source,
}


def sources(
    resources: Sequence[PlanResource], slot: Slot, targets: Iterable[str], region: str
) -> dict[str, Source]:
    """Each target's source for the slot (a target this module does not know is a MetricError)."""
    found: dict[str, Source] = {}
    for target in targets:
        if target not in LOCATORS:
            raise MetricError(f"no metrics are known for target {target!r}; known: {', '.join(LOCATORS)}")
        found[target] = LOCATORS[target](resources, slot, region)
    return found


# -- the reader the driver uses --------------------------------------------------------------------------


class CloudMetricReader:
    """The rollout driver's MetricReader over the platforms' own metrics: builds each request,
    `fetch`es it (the cloud clients; tests pass recorded responses), parses the answer."""

    def __init__(
        self,
        sources: Mapping[str, Source],
        values: Mapping[str, str],
        fetch: Callable[[Request], Mapping[str, Any]] | None = None,
    ) -> None:
        self.sources = dict(sources)
        self.values = dict(values)  # what Prometheus queries' placeholders become
        self.fetch = fetch or fetch_from_cloud

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.sources)

    def problem(self, metric: MetricSettings, target: str) -> str | None:
        """Why this metric cannot be measured on this target (None: it can)."""
        if metric.prometheus is not None:
            return None
        source = self.sources.get(target)
        if source is None:
            return f"no metric source for target {target}"
        if metric.latency_p99 is not None and source.no_latency:
            return f"{target}: {source.no_latency}"
        return None

    def read(self, metric: MetricSettings, target: str, window: Window) -> float | None:
        """The metric's value over the window (None: no data to judge by); MetricError when unreadable."""
        if metric.prometheus is not None:
            return parse_prometheus(self.fetch(prometheus_request(metric, self._values(window), window)))
        source = self._source(target)
        shifted = window.shifted(source.lag)
        if metric.latency_p99 is not None:
            return source.parse_latency(self.fetch(source.latency_request(shifted)))
        counts = source.parse_counts(self.fetch(source.counts_request(shifted)))
        return counts.error_rate if metric.error_rate is not None else counts.success_rate

    def _source(self, target: str) -> Source:
        source = self.sources[target]
        if source.lookup is not None:
            source = source.resolved(self.fetch(source.lookup))
            self.sources[target] = source
        return source

    def _values(self, window: Window) -> dict[str, str]:
        minutes, rest = divmod(window.seconds, 60)
        return {**self.values, "interval": f"{minutes}m" if not rest else f"{window.seconds}s"}


# -- production: each API through its cloud's client (imported only here, only when used) -----------------


def fetch_from_cloud(request: Request) -> Mapping[str, Any]:
    """Send a Request with the cloud's own client; any failure is a MetricError (one line)."""
    try:
        return _FETCHERS[request.api](dict(request.params))
    except MetricError:
        raise
    except ImportError as err:
        raise MetricError(
            f"{request.api}: {err.name} is not installed; pip install -r requirements-delivery.txt"
        ) from None
    except Exception as err:  # noqa: BLE001 - a cloud error is a failed read, counted by the driver
        raise MetricError(
            f"{request.api}: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
        ) from None


def _cloudwatch(params: dict[str, Any]) -> Mapping[str, Any]:
    import boto3  # type: ignore[import-not-found]

    region = params.pop("region")
    client = boto3.client("cloudwatch", region_name=region)
    results: dict[str, dict[str, Any]] = {}
    messages: list[Any] = []
    for page in client.get_paginator("get_metric_data").paginate(**params):
        messages += page.get("Messages", [])
        for result in page.get("MetricDataResults", []):
            merged = results.setdefault(result["Id"], {**result, "Values": []})
            merged["Values"] += result.get("Values", [])
            merged["StatusCode"] = result.get("StatusCode", "Complete")
    return {"MetricDataResults": list(results.values()), "Messages": messages}


def _tagging(params: dict[str, Any]) -> Mapping[str, Any]:
    import boto3

    client = boto3.client("resourcegroupstaggingapi", region_name=params.pop("region"))
    mappings: list[Any] = []
    for page in client.get_paginator("get_resources").paginate(**params):
        mappings += page.get("ResourceTagMappingList", [])
    return {"ResourceTagMappingList": mappings}


def _monitoring(params: dict[str, Any]) -> Mapping[str, Any]:
    import google.auth  # type: ignore[import-untyped]
    from google.auth.transport.requests import AuthorizedSession  # type: ignore[import-untyped]

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/monitoring.read"])
    session = AuthorizedSession(credentials)
    url = f"https://monitoring.googleapis.com/v3/{params.pop('name')}/timeSeries"
    series: list[Any] = []
    while True:
        response = session.get(url, params=params, timeout=HTTP_TIMEOUT)
        body = response.json()
        if response.status_code != 200:
            raise MetricError(
                f"Cloud Monitoring: HTTP {response.status_code}: {body.get('error', {}).get('message')}"
            )
        series += body.get("timeSeries", [])
        if not body.get("nextPageToken"):
            return {"timeSeries": series}
        params["pageToken"] = body["nextPageToken"]


def _insights(params: dict[str, Any]) -> Mapping[str, Any]:
    from azure.identity import DefaultAzureCredential  # type: ignore[import-not-found]

    token = DefaultAzureCredential().get_token("https://management.azure.com/.default").token
    resource = params.pop("resourceUri")
    url = f"https://management.azure.com{resource}/providers/Microsoft.Insights/metrics?{urllib.parse.urlencode(params)}"
    return _get_json(url, {"Authorization": f"Bearer {token}"})


def _prometheus(params: dict[str, Any]) -> Mapping[str, Any]:
    address = params.pop("address")
    return _get_json(f"{address}/api/v1/query?{urllib.parse.urlencode(params)}", {})


def _get_json(url: str, headers: Mapping[str, str]) -> Mapping[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            body: Mapping[str, Any] = json.load(response)
    except urllib.error.HTTPError as err:
        body = json.loads(err.read() or b"{}")  # Azure and Prometheus explain a 4xx in the body
    return body


_FETCHERS: Mapping[str, Callable[[dict[str, Any]], Mapping[str, Any]]] = {
    "cloudwatch.GetMetricData": _cloudwatch,
    "tagging.GetResources": _tagging,
    "monitoring.timeSeries.list": _monitoring,
    "insights.metrics": _insights,
    "prometheus.query": _prometheus,
}
