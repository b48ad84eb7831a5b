"""AWS network and data: what the internet can reach, and how keys, buckets and logs protect data.

The stack policies here join resources through their dependencies (a WAF association depends on its
load balancer, a flow log on its log group), indexed in one pass: linear in the stack's size.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity, StackValidationArgs

import resource_types as t
from pack_support import AWS_NETWORK_DATA, FSBP, PROJECT, num, present, setting

OPEN_V4, OPEN_V6 = "0.0.0.0/0", "::/0"


def _open_rules(r: Any) -> Iterable[tuple[Any, Any, str]]:
    """(from port, to port, protocol) of every ingress rule of `r` open to the whole internet."""
    props = r.props
    if r.resource_type == t.SECURITY_GROUP:
        rules = [
            (x.get("fromPort"), x.get("toPort"), str(x.get("protocol")))
            for x in props.get("ingress") or []
            if OPEN_V4 in list(x.get("cidrBlocks") or []) or OPEN_V6 in list(x.get("ipv6CidrBlocks") or [])
        ]
    elif r.resource_type == t.SECURITY_GROUP_RULE:
        open_ = OPEN_V4 in list(props.get("cidrBlocks") or []) or OPEN_V6 in list(
            props.get("ipv6CidrBlocks") or []
        )
        rules = (
            [(props.get("fromPort"), props.get("toPort"), str(props.get("protocol")))]
            if (props.get("type") == "ingress" and open_)
            else []
        )
    else:  # vpc.SecurityGroupIngressRule
        open_ = props.get("cidrIpv4") == OPEN_V4 or props.get("cidrIpv6") == OPEN_V6
        rules = [(props.get("fromPort"), props.get("toPort"), str(props.get("ipProtocol")))] if open_ else []
    yield from rules


def _ports(low: Any, high: Any, protocol: str) -> tuple[int, int]:
    if protocol in ("-1", "all") or low is None:
        return 0, 65535
    return int(low), int(high if high is not None else low)


@AWS_NETWORK_DATA.stack(
    "ec2-security-group-public-ingress",
    "Security groups admit 0.0.0.0/0 or ::/0 only on 443, and on 80 only in front of listeners that "
    "redirect to HTTPS.",
    severity=Severity.HIGH,
    controls=[FSBP("EC2.18"), FSBP("EC2.19")],
    checkov=["CKV_AWS_24", "CKV_AWS_25", "CKV_AWS_260", "CKV_AWS_277"],
    remediation="Admit the internet on 443 only (80 for a redirect-only listener); anything else from "
    "the VPC, a VPN range or another security group.",
)
def _public_ingress(args: StackValidationArgs) -> Iterable[tuple[str, str | None]]:
    # One pass: which load balancers serve plain HTTP on 80, and which groups each one uses.
    serves_http: set[str] = set()
    redirect_only: set[str] = set()
    groups_of: dict[str, list[str]] = {}
    checked: list[Any] = []
    for r in args.resources:
        kind = r.resource_type
        if kind in (t.SECURITY_GROUP, t.SECURITY_GROUP_RULE, t.SECURITY_GROUP_INGRESS):
            checked.append(r)
        elif kind in t.LOAD_BALANCERS:
            groups_of[r.urn] = [d.urn for d in r.dependencies if d.resource_type == t.SECURITY_GROUP]
        elif kind == t.LISTENER and r.props.get("protocol") == "HTTP" and num(r.props.get("port")) == 80:
            actions = list(r.props.get("defaultActions") or [])
            redirects = bool(actions) and all(
                a.get("type") == "redirect" and (a.get("redirect") or {}).get("protocol") == "HTTPS"
                for a in actions
            )
            for d in r.dependencies:
                if d.resource_type in t.LOAD_BALANCERS:
                    (redirect_only if redirects else serves_http).add(d.urn)
    # A group may take 80 from everywhere when every load balancer using it only redirects there.
    port80_ok: set[str] = set()
    port80_bad: set[str] = set()
    for lb, groups in groups_of.items():
        target = port80_bad if lb in serves_http or lb not in redirect_only else port80_ok
        target.update(groups)
    for r in checked:
        group = r.urn
        if r.resource_type != t.SECURITY_GROUP:
            group = next((d.urn for d in r.dependencies if d.resource_type == t.SECURITY_GROUP), r.urn)
        for low, high, protocol in _open_rules(r):
            start, end = _ports(low, high, protocol)
            if (start, end) == (443, 443):
                continue
            if (start, end) == (80, 80) and group in port80_ok and group not in port80_bad:
                continue
            where = f"port {start}" if start == end else f"ports {start}-{end}"
            yield f"security group admits the internet on {where}", r.urn


@AWS_NETWORK_DATA.resource(
    "s3-public-access-block",
    "S3 public access blocks (bucket and account) turn on all four settings.",
    types=[t.S3_PUBLIC_ACCESS_BLOCK, t.S3_ACCOUNT_PUBLIC_ACCESS_BLOCK],
    severity=Severity.HIGH,
    controls=[FSBP("S3.8"), FSBP("S3.1")],
    checkov=["CKV_AWS_53", "CKV_AWS_54", "CKV_AWS_55", "CKV_AWS_56"],
    remediation="Set block_public_acls, block_public_policy, ignore_public_acls and "
    "restrict_public_buckets to True.",
)
def _public_access_block(args: ResourceValidationArgs) -> Iterable[str]:
    off = [
        key
        for key in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        if args.props.get(key) is not True
    ]
    if off:
        yield f"public access block leaves {', '.join(off)} off"


@AWS_NETWORK_DATA.resource(
    "kms-key-rotation",
    "Symmetric customer managed KMS keys rotate their key material.",
    types=[t.KMS_KEY],
    severity=Severity.MEDIUM,
    controls=[FSBP("KMS.4")],
    checkov=["CKV_AWS_7"],
    remediation="Set enable_key_rotation=True.",
)
def _key_rotation(args: ResourceValidationArgs) -> Iterable[str]:
    spec = args.props.get("customerMasterKeySpec") or args.props.get("keySpec") or "SYMMETRIC_DEFAULT"
    if spec == "SYMMETRIC_DEFAULT" and args.props.get("enableKeyRotation") is not True:
        yield "KMS key does not rotate (enableKeyRotation)"


@AWS_NETWORK_DATA.stack(
    "kms-explicit-key-policy",
    "KMS keys have an explicit key policy (on the key or as a KeyPolicy), not the account default.",
    severity=Severity.MEDIUM,
    controls=[PROJECT("least-privilege")],
    checkov=["CKV2_AWS_64"],
    remediation="Pass policy= to the key: the account administers it, and only the services and "
    "roles that use the key may encrypt and decrypt.",
)
def _explicit_key_policy(args: StackValidationArgs) -> Iterable[tuple[str, str | None]]:
    with_policy: set[str] = set()
    keys: list[Any] = []
    for r in args.resources:
        if r.resource_type == t.KMS_KEY:
            keys.append(r)
        elif r.resource_type == t.KMS_KEY_POLICY:
            with_policy.update(d.urn for d in r.dependencies if d.resource_type == t.KMS_KEY)
    for key in keys:
        if key.urn not in with_policy and not present(key.props, "policy"):
            yield "KMS key relies on the default key policy (every IAM principal the account allows)", key.urn


KMS_LOGS_SCHEMA: dict[str, dict[str, Any]] = {
    "required": {"type": "boolean", "default": False, "description": "Require KMS on log groups (prod)."}
}


@AWS_NETWORK_DATA.resource(
    "log-group-kms-encryption",
    "CloudWatch log groups are encrypted with a customer managed KMS key where required (prod).",
    types=[t.LOG_GROUP],
    severity=Severity.MEDIUM,
    controls=[PROJECT("encryption-at-rest")],
    checkov=["CKV_AWS_158"],
    remediation="Set kms_key_id to a key whose policy lets logs.<region>.amazonaws.com use it.",
    config=KMS_LOGS_SCHEMA,
)
def _log_group_kms(args: ResourceValidationArgs) -> Iterable[str]:
    if setting(args, KMS_LOGS_SCHEMA, "required") and not present(args.props, "kmsKeyId"):
        yield "log group is not encrypted with a KMS key; this environment requires it"


AUDIT_SCHEMA: dict[str, dict[str, Any]] = {
    "minimumDays": {
        "type": "integer",
        "default": 0,
        "description": "Shortest retention of audit and flow logs, in days (prod: 365); 0: off.",
    }
}


def _audit_log_group(r: Any) -> bool:
    name = str(r.props.get("name") or "")
    return name.startswith("/aws/eks/") and name.endswith("/cluster")


@AWS_NETWORK_DATA.stack(
    "audit-log-retention",
    "Audit logs (EKS control plane) and VPC flow logs are kept at least the environment's minimum "
    "(a year in prod).",
    severity=Severity.MEDIUM,
    controls=[PROJECT("audit-trail")],
    checkov=["CKV_AWS_338"],
    remediation="Set the log groups' retention_in_days to at least the minimum (365 in prod).",
    config=AUDIT_SCHEMA,
)
def _audit_retention(args: StackValidationArgs) -> Iterable[tuple[str, str | None]]:
    minimum = setting(args, AUDIT_SCHEMA, "minimumDays")
    if not minimum:
        return
    groups: dict[str, Any] = {}
    audit: set[str] = set()
    for r in args.resources:
        if r.resource_type == t.LOG_GROUP:
            groups[r.urn] = r
            if _audit_log_group(r):
                audit.add(r.urn)
        elif r.resource_type == t.FLOW_LOG:
            audit.update(d.urn for d in r.dependencies if d.resource_type == t.LOG_GROUP)
    for urn in sorted(audit):
        group = groups.get(urn)
        if group is None:
            continue
        days = group.props.get("retentionInDays")
        if days and days < minimum:
            yield (
                f"log group {group.props.get('name') or group.name} holds audit or flow logs for "
                f"{num(days)} days; this environment requires {num(minimum)}",
                urn,
            )


WAF_SCHEMA: dict[str, dict[str, Any]] = {
    "required": {
        "type": "boolean",
        "default": False,
        "description": "Require a WAF web ACL on internet-facing Application Load Balancers (prod).",
    }
}


@AWS_NETWORK_DATA.stack(
    "alb-waf-required",
    "Internet-facing Application Load Balancers have a WAF web ACL where required (prod).",
    severity=Severity.HIGH,
    controls=[FSBP("ELB.16")],
    checkov=["CKV2_AWS_28"],
    remediation="Associate a WAFv2 web ACL with AWS managed rule groups (wafv2.WebAclAssociation).",
    config=WAF_SCHEMA,
)
def _alb_waf(args: StackValidationArgs) -> Iterable[tuple[str, str | None]]:
    if not setting(args, WAF_SCHEMA, "required"):
        return
    protected: set[str] = set()
    public: list[Any] = []
    for r in args.resources:
        if r.resource_type in t.LOAD_BALANCERS:
            if (
                r.props.get("loadBalancerType", "application") == "application"
                and r.props.get("internal") is not True
            ):
                public.append(r)
        elif r.resource_type == t.WAF_ASSOCIATION:
            protected.update(d.urn for d in r.dependencies if d.resource_type in t.LOAD_BALANCERS)
    for lb in public:
        if lb.urn not in protected:
            yield "internet-facing ALB has no WAF web ACL; this environment requires one", lb.urn
