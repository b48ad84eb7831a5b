"""The shared AWS network: flow logs kept a year and encrypted with their own key in prod."""

from __future__ import annotations

import json

import pytest

from preflight.report import Preflight

LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
KMS_KEY = "aws:kms/key:Key"


def test_prod_flow_logs_are_kept_a_year_with_their_own_key(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["prod"].run
    group = run.get(LOG_GROUP, "network-flow-logs")
    key = run.get(KMS_KEY, "network-logs")
    assert group.inputs["retentionInDays"] == 365
    assert group.inputs["kmsKeyId"] == key.outputs["arn"]
    assert key.protect and key.inputs["enableKeyRotation"]
    admin, logs = json.loads(key.inputs["policy"])["Statement"]
    assert admin["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    assert logs["Principal"] == {"Service": "logs.eu-west-1.amazonaws.com"}
    assert logs["Condition"]["ArnLike"] == {
        "kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:eu-west-1:123456789012:log-group:"
        "/pouw/network/flow-logs"
    }


@pytest.mark.parametrize("stack", ["dev", "staging"])
def test_flow_logs_outside_prod_keep_30_days_without_a_cmk(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    group = stack_runs[stack].run.get(LOG_GROUP, "network-flow-logs")
    assert group.inputs["retentionInDays"] == 30
    assert "kmsKeyId" not in group.inputs


def test_ecs_log_key_policy_is_unchanged_by_the_shared_helper(stack_runs: dict[str, Preflight]) -> None:
    _, logs = json.loads(stack_runs["prod"].run.get(KMS_KEY, "ecs-logs").inputs["policy"])["Statement"]
    assert logs["Condition"]["ArnLike"] == {
        "kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:eu-west-1:123456789012:*"
    }
