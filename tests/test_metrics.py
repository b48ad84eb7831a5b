"""Typed metric queries: each platform's request built from the stack's real resources, each response
parsed from a recording in its API's documented shape (tests/fixtures/metrics/README.md)."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from components.rollout import MetricSettings
from delivery.metrics import (
    AgcBackend,
    AlbTargetGroup,
    CloudMetricReader,
    CloudRunRevision,
    EksIngressTargetGroup,
    FrontDoorOrigin,
    GkeGatewayBackend,
    MetricError,
    Request,
    Slot,
    Window,
    deployed_resources,
    fetch_from_cloud,
    parse_prometheus,
    plan_resources,
    prometheus_request,
    sources,
)
from preflight.engine import ProgramRun
from tests.conftest import stack_file_run

FIXTURES = Path(__file__).parent / "fixtures" / "metrics"
WINDOW = Window(datetime(2024, 5, 1, 12, 0, tzinfo=UTC), datetime(2024, 5, 1, 12, 1, tzinfo=UTC))


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def metric(**kind: Any) -> MetricSettings:
    return MetricSettings.model_validate({"name": "m", **kind})


ERRORS = metric(errorRate={"max": 0.01})
SUCCESS = metric(successRate={"min": 0.99})
LATENCY = metric(latencyP99={"maxMs": 500})


@pytest.fixture(scope="module")
def runs() -> dict[str, ProgramRun]:
    """Prod (web: a canary on EKS, Cloud Run, GKE) and staging (worker: a canary on ECS, ACI, AKS)."""
    found = {stack: stack_file_run(stack) for stack in ("prod", "staging")}
    assert all(run.error is None for run in found.values())
    return found


def as_deployed(run: ProgramRun) -> dict[str, Any]:
    """The run as `pulumi stack export` would show it after an up: the outputs the mocks cannot know
    (an ALB's and a target group's `arnSuffix`) are what AWS returns."""
    resources = []
    for r in plan_resources(run):
        outputs = dict(r.outputs)
        if r.type == "aws:lb/targetGroup:TargetGroup":
            outputs["arnSuffix"] = f"targetgroup/{r.name[:32]}/73e2d6bc24d8a067"
        if r.type == "aws:lb/loadBalancer:LoadBalancer":
            outputs["arnSuffix"] = f"app/{r.name[:32]}/50dc6c495c0c9188"
        resources.append({"urn": r.urn, "type": r.type, "inputs": dict(r.inputs), "outputs": outputs})
    return {"manifest": {}, "resources": resources}


def test_each_target_is_located_in_the_real_stacks(runs: dict[str, ProgramRun]) -> None:
    web = sources(
        plan_resources(runs["prod"]), Slot("web", "canary", "canary"), ("eks", "cloudrun", "gke"), "eu-west-1"
    )
    eks = web["eks"]
    assert isinstance(eks, EksIngressTargetGroup)
    assert (eks.cluster, eks.namespace, eks.ingress, eks.backend) == ("pouw-prod", "web", "web", "web-canary")
    run = web["cloudrun"]
    assert isinstance(run, CloudRunRevision) and (run.project, run.service) == ("pouw-prod", "web")
    assert run.revision.startswith("web-1-4-2--")  # the canary's revision: Cloud Run splits by revision
    gke = web["gke"]
    assert isinstance(gke, GkeGatewayBackend)
    assert (gke.project, gke.region, gke.namespace, gke.backend) == (
        "pouw-prod",
        "europe-west1",
        "web",
        "web-canary",
    )

    worker = sources(
        deployed_resources(as_deployed(runs["staging"])),
        Slot("worker", "canary", "canary"),
        ("ecs", "aci", "aks"),
        "eu-west-1",
    )
    ecs = worker["ecs"]
    assert isinstance(ecs, AlbTargetGroup)
    assert (ecs.target_group, ecs.load_balancer) == (
        "targetgroup/worker-ecs-canary/73e2d6bc24d8a067",
        "app/worker-ecs-alb/50dc6c495c0c9188",
    )
    aci = worker["aci"]
    profile = next(r for r in plan_resources(runs["staging"]) if r.type == "azure-native:cdn:Profile")
    assert isinstance(aci, FrontDoorOrigin) and aci.resource_id == profile.value("id")
    assert aci.origin == "worker-canary-staging.westeurope.azurecontainer.io"  # the origin's host
    aks = worker["aks"]
    assert isinstance(aks, AgcBackend) and (aks.namespace, aks.backend) == ("worker", "worker-canary")


def test_a_target_the_stack_does_not_run_is_named(runs: dict[str, ProgramRun]) -> None:
    with pytest.raises(
        MetricError, match="the stack has no aws:lb/targetGroup:TargetGroup named 'web-ecs-canary'"
    ):
        sources(plan_resources(runs["prod"]), Slot("web", "canary", "canary"), ("ecs",), "eu-west-1")
    with pytest.raises(MetricError, match="no metrics are known for target 'lambda'"):
        sources(plan_resources(runs["prod"]), Slot("web", "canary", "canary"), ("lambda",), "eu-west-1")


# --- CloudWatch (ECS, EKS) --------------------------------------------------------------------------

ALB = AlbTargetGroup("ecs", "eu-west-1", "targetgroup/worker-ecs-canary/73e2", "app/worker-ecs-alb/50dc")


def test_cloudwatch_queries_the_slots_target_group() -> None:
    request = ALB.counts_request(WINDOW)
    assert request.api == "cloudwatch.GetMetricData"
    params = request.params
    assert (params["region"], params["StartTime"], params["EndTime"]) == (
        "eu-west-1",
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:01:00Z",
    )
    queries = {q["Id"]: q["MetricStat"] for q in params["MetricDataQueries"]}
    assert {k: v["Metric"]["MetricName"] for k, v in queries.items()} == {
        "c2xx": "HTTPCode_Target_2XX_Count",
        "c3xx": "HTTPCode_Target_3XX_Count",
        "c4xx": "HTTPCode_Target_4XX_Count",
        "c5xx": "HTTPCode_Target_5XX_Count",
        "total": "RequestCount",
    }
    stat = queries["c5xx"]
    assert stat["Metric"]["Namespace"] == "AWS/ApplicationELB"
    assert stat["Metric"]["Dimensions"] == [
        {"Name": "TargetGroup", "Value": "targetgroup/worker-ecs-canary/73e2"},
        {"Name": "LoadBalancer", "Value": "app/worker-ecs-alb/50dc"},
    ]
    assert (stat["Period"], stat["Stat"]) == (60, "Sum")
    [p99] = ALB.latency_request(Window(WINDOW.start, WINDOW.end.replace(minute=1, second=30))).params[
        "MetricDataQueries"
    ]
    assert (p99["MetricStat"]["Metric"]["MetricName"], p99["MetricStat"]["Stat"]) == (
        "TargetResponseTime",
        "p99",
    )
    assert p99["MetricStat"]["Period"] == 120  # 90 s rounded up to CloudWatch's minute


def test_cloudwatch_responses_are_parsed() -> None:
    counts = ALB.parse_counts(recorded("cloudwatch-get-metric-data-counts"))
    assert counts.total == 1200 and counts.error_rate == pytest.approx(0.01)
    assert counts.success_rate == pytest.approx(1170 / 1200)  # 4xx count against success, not errors
    assert ALB.parse_latency(recorded("cloudwatch-get-metric-data-latency")) == pytest.approx(412.5)
    idle = ALB.parse_counts(recorded("cloudwatch-get-metric-data-no-traffic"))
    assert (idle.error_rate, idle.success_rate) == (None, None)  # no requests: nothing to judge
    with pytest.raises(MetricError, match="CloudWatch answered total with status PartialData"):
        ALB.parse_counts(recorded("cloudwatch-get-metric-data-partial"))


def test_the_eks_target_group_is_found_by_the_controllers_tags() -> None:
    source = EksIngressTargetGroup("eks", "eu-west-1", "pouw-prod", "web", "web", "web-canary")
    assert source.lookup.api == "tagging.GetResources"
    assert source.lookup.params["TagFilters"] == [
        {"Key": "elbv2.k8s.aws/cluster", "Values": ["pouw-prod"]},
        {"Key": "ingress.k8s.aws/stack", "Values": ["web/web"]},
    ]
    resolved = source.resolved(recorded("tagging-get-resources"))
    assert isinstance(resolved, AlbTargetGroup)
    assert resolved.target_group == "targetgroup/k8s-web-webcanar-6f7e8d9c0b/73e2d6bc24d8a067"
    assert resolved.load_balancer == "app/k8s-web-web-3f1c2b7a9d/50dc6c495c0c9188"
    with pytest.raises(MetricError, match="no target group for web-preview:80 tagged"):
        EksIngressTargetGroup("eks", "eu-west-1", "pouw-prod", "web", "web", "web-preview").resolved(
            recorded("tagging-get-resources")
        )


# --- Cloud Monitoring (Cloud Run, GKE) -----------------------------------------------------------------

REVISION = CloudRunRevision("cloudrun", "pouw-prod", service="web", revision="web-1-4-2--3f9a0c1e")


def test_cloud_monitoring_queries_the_slots_revision() -> None:
    params = REVISION.counts_request(WINDOW).params
    assert params["name"] == "projects/pouw-prod"
    assert params["filter"] == (
        'metric.type = "run.googleapis.com/request_count" AND resource.type = "cloud_run_revision" AND '
        'resource.labels.service_name = "web" AND resource.labels.revision_name = "web-1-4-2--3f9a0c1e"'
    )
    assert params["aggregation.alignmentPeriod"] == "60s"
    assert (params["aggregation.perSeriesAligner"], params["aggregation.crossSeriesReducer"]) == (
        "ALIGN_DELTA",
        "REDUCE_SUM",
    )
    assert params["aggregation.groupByFields"] == "metric.labels.response_code_class"
    latency = REVISION.latency_request(WINDOW).params
    assert 'metric.type = "run.googleapis.com/request_latencies"' in latency["filter"]
    assert latency["aggregation.crossSeriesReducer"] == "REDUCE_PERCENTILE_99"


def test_cloud_monitoring_responses_are_parsed() -> None:
    counts = REVISION.parse_counts(recorded("monitoring-cloudrun-request-count"))
    assert counts.total == 1200 and counts.error_rate == pytest.approx(20 / 1200)
    assert REVISION.parse_latency(recorded("monitoring-cloudrun-request-latencies")) == 412.5
    assert REVISION.parse_counts(recorded("monitoring-empty")).error_rate is None
    assert REVISION.parse_latency(recorded("monitoring-empty")) is None
    gke = GkeGatewayBackend("gke", "pouw-prod", region="europe-west1", namespace="web", backend="web-canary")
    assert (
        'backend_target_name = monitoring.regex.full_match("gkegw1-.*-web-web-canary-80-.*")'
        in (gke.counts_request(WINDOW).params["filter"])
    )
    lb = gke.parse_counts(recorded("monitoring-gke-request-count"))  # classes as numbers: 200, 500
    assert (lb.error_rate, lb.success_rate) == (pytest.approx(0.01), pytest.approx(0.97))


# --- Azure Monitor (ACI, AKS) ----------------------------------------------------------------------

PROFILE = "/subscriptions/0/resourceGroups/rg-pouw-staging/providers/Microsoft.Cdn/profiles/pouw-staging"
ORIGIN = FrontDoorOrigin("aci", PROFILE, origin="worker-canary.westeurope.azurecontainer.io")


def test_azure_monitor_queries_the_slots_origin_and_backend() -> None:
    params = ORIGIN.counts_request(WINDOW).params
    assert params == {
        "resourceUri": PROFILE,
        "metricnames": "OriginRequestCount",
        "timespan": "2024-05-01T12:00:00Z/2024-05-01T12:01:00Z",
        "interval": "PT1M",
        "aggregation": "Total",
        "$filter": "Origin eq 'worker-canary.westeurope.azurecontainer.io' and HttpStatusGroup eq '*'",
        "api-version": "2023-10-01",
    }
    latency = ORIGIN.latency_request(WINDOW).params
    assert (latency["metricnames"], latency["aggregation"]) == ("OriginLatency", "Average")
    agc = AgcBackend("aks", "/subscriptions/0/agc", namespace="worker", backend="worker-canary")
    assert agc.counts_request(WINDOW).params["$filter"] == (
        "BackendService eq 'worker/worker-canary' and HttpResponseCode eq '*'"
    )


def test_azure_monitor_responses_are_parsed() -> None:
    counts = ORIGIN.parse_counts(recorded("azure-frontdoor-origin-request-count"))
    assert counts.total == 500 and counts.error_rate == pytest.approx(0.04)
    assert ORIGIN.parse_latency(recorded("azure-frontdoor-origin-latency")) == 240.5  # the worst minute
    agc = AgcBackend("aks", "/subscriptions/0/agc", namespace="worker", backend="worker-canary")
    by_code = agc.parse_counts(recorded("azure-agc-backend-http-response-status"))
    assert by_code.by_class == {"2xx": 190, "3xx": 0, "4xx": 6, "5xx": 4} and by_code.total == 200
    with pytest.raises(MetricError, match="Azure Monitor: BadRequest: Metric: OriginRequestCount does not"):
        ORIGIN.parse_counts(recorded("azure-error"))


# --- Prometheus ----------------------------------------------------------------------------------------

PROMQL = metric(
    prometheus={
        "address": "http://prometheus.monitoring:9090",
        "query": 'sum(rate(http_errors{app="{{service}}",version="{{version}}"}[{{interval}}]))',
        "max": 0.05,
    }
)


def test_prometheus_queries_fill_in_the_release_and_the_window() -> None:
    request = prometheus_request(PROMQL, {"service": "worker", "version": "2.0.1", "interval": "1m"}, WINDOW)
    assert request == Request(
        "prometheus.query",
        {
            "address": "http://prometheus.monitoring:9090",
            "query": 'sum(rate(http_errors{app="worker",version="2.0.1"}[1m]))',
            "time": "1714564860.000",
        },
    )


def test_prometheus_responses_are_parsed() -> None:
    assert parse_prometheus(recorded("prometheus-vector")) == 0.0042
    assert parse_prometheus(recorded("prometheus-scalar")) == 0.97
    assert parse_prometheus(recorded("prometheus-empty")) is None
    with pytest.raises(MetricError, match="returns 2 series; aggregate it to one number"):
        parse_prometheus(recorded("prometheus-two-series"))
    with pytest.raises(MetricError, match="Prometheus: bad_data: invalid parameter"):
        parse_prometheus(recorded("prometheus-error"))


# --- the reader the driver uses ------------------------------------------------------------------------


def test_the_reader_builds_fetches_and_parses_each_metric() -> None:
    answers = {
        "tagging.GetResources": recorded("tagging-get-resources"),
        "cloudwatch.GetMetricData": recorded("cloudwatch-get-metric-data-counts"),
        "prometheus.query": recorded("prometheus-vector"),
    }
    sent: list[Request] = []

    def fetch(request: Request) -> dict[str, Any]:
        sent.append(request)
        return answers[request.api]

    eks = EksIngressTargetGroup("eks", "eu-west-1", "pouw-prod", "web", "web", "web-canary")
    aks = AgcBackend("aks", "/subscriptions/0/agc", namespace="web", backend="web-canary")
    reader = CloudMetricReader({"eks": eks, "aks": aks}, {"service": "web", "version": "1.4.2"}, fetch)
    assert reader.targets == ("eks", "aks")
    assert reader.read(ERRORS, "eks", WINDOW) == pytest.approx(0.01)
    assert reader.read(SUCCESS, "eks", WINDOW) == pytest.approx(0.975)
    assert [r.api for r in sent] == [
        "tagging.GetResources",
        "cloudwatch.GetMetricData",
        "cloudwatch.GetMetricData",
    ]
    # The window is moved back by the platform's publication delay (ALB metrics: 2 minutes).
    assert sent[1].params["EndTime"] == "2024-05-01T11:59:00Z"
    assert reader.read(PROMQL, "prometheus", WINDOW) == 0.0042
    assert 'version="1.4.2"}[1m]' in sent[-1].params["query"]
    assert reader.problem(LATENCY, "aks") == (
        "aks: Application Gateway for Containers publishes no backend latency metric; measure latency with a "
        "prometheus metric, or leave latency out for AKS"
    )
    assert reader.problem(LATENCY, "eks") is None and reader.problem(PROMQL, "aks") is None


@pytest.mark.skipif(importlib.util.find_spec("boto3") is not None, reason="boto3 is installed here")
def test_a_missing_cloud_client_is_one_line_naming_the_requirements_file() -> None:
    with pytest.raises(MetricError) as err:
        fetch_from_cloud(ALB.counts_request(WINDOW))
    assert str(err.value) == (
        "cloudwatch.GetMetricData: boto3 is not installed; pip install -r requirements-delivery.txt"
    )
