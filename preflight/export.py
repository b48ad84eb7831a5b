"""A preflight run as a `pulumi stack export` document, for `pulumi policy analyze --file`.

Since Pulumi 3.249.0 (pulumi/pulumi#23664), `pulumi policy analyze --file <state.json> --policy-pack
<dir>` runs packs on an exported state document with no backend login: the real engine starts the pack
from its PulumiPolicy.yaml and sends each resource's `inputs` to `Analyze` and every resource's `outputs`
to `AnalyzeStack` (pkg/resource/deploy/analyze_snapshot.go). `export_deployment` writes the plan in that
shape: an `apitype.UntypedDeployment`, `{"version": 3, "deployment": {manifest, secrets_providers,
resources}}`, restricted to what the published deployment schema (sdk/go/common/apitype/deployments.json,
resources.json, property-values.json) allows, so `tests/test_export.py` validates it against that schema.

What each resource carries: the root `pulumi:pulumi:Stack` (the program's stack outputs as its outputs),
then every registration in registration order (dependencies first, as in a real export; also the order
preflight sent to `AnalyzeStack`, which a stack policy may depend on), with `urn`, `custom`, `id` (custom
resources: the mocks' placeholder id), `type`, `inputs` (as the program sent them), `outputs` (what the
mocks answered: the inputs plus placeholder ids, ARNs, digests), `parent`, `protect`, `dependencies` and
`propertyDependencies` (sorted), `provider` (explicit providers, as `<provider urn>::<provider id>`; the
engine's default providers are not registered under mocks, so those resources name none, which `--file`
accepts), `aliases` (those given as URNs) and `additionalSecretOutputs`. The schema has no
`ignoreChanges`, `retainOnDelete` or `deleteBeforeReplace` (the Go `apitype.ResourceV3` has the first
two), so they are not written; the pack reads none of them.

Secrets stay secrets, and their plaintext is never written. A state file's secret is
`{"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "ciphertext": ...}` or, from
`pulumi stack export --show-secrets`, the same with `"plaintext"`. The plaintext form is out of the
question, and real ciphertext would need the stack's secrets provider (which preflight never has: its
secure config values are placeholders). So every secret is written with an opaque, non-decryptable
`ciphertext` (`REDACTED_CIPHERTEXT`, the same for all) under a secrets provider type the CLI does not
know (`SECRETS_PROVIDER`). `pulumi policy analyze --file` then fails to build that provider, prints
"warning: could not decrypt secrets in <file>; analyzing with secret values redacted", and analyses with
every secret as the string `[secret]`, still marked secret (its `BlindingProvider` fallback, added with
--file itself). A secret's type is not kept: a secret list or object is `[secret]` there too.

Where the CLI's analysis of this file can differ from preflight's own (what `python -m preflight agree`
is there to catch): the pack sees `[secret]` instead of a secret's placeholder, `AnalyzeStack` gets the
mocks' outputs instead of the inputs, the root stack resource is analysed too, resources on default
providers come with no provider, and a remediation is reported, not applied, before `Analyze`.

As a last guard, any other input or output string that contains a secure config value or the value of
a secret that is one string (8 characters or more; a shorter one cannot be told from ordinary text) is
written as a secret too, and reported (`Export.redacted`): a program that lets a secret out in clear.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from preflight.engine import SECRET_SIG, SIG_KEY, UNKNOWN_OUTPUT, ProgramRun, Registration
from preflight.report import UNKNOWN_SENTINELS, Preflight
from preflight.stackconfig import SECRET_PLACEHOLDER

DEPLOYMENT_VERSION = 3  # apitype.DeploymentSchemaVersionCurrent: needs no `features`
# pkg/resource/stack/deployment.go `computedValuePlaceholder`: an unknown value in a state file.
COMPUTED = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
SECRETS_PROVIDER = "preflight-redacted"
REDACTED_CIPHERTEXT = "preflight-redacted:no-plaintext-was-written"
STACK_TYPE = "pulumi:pulumi:Stack"
MIN_LEAK_LENGTH = 8


def stack_urn(run: ProgramRun) -> str:
    return f"urn:pulumi:{run.stack}::{run.project}::{STACK_TYPE}::{run.project}-{run.stack}"


def _secret() -> dict[str, str]:
    return {SIG_KEY: SECRET_SIG, "ciphertext": REDACTED_CIPHERTEXT}


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


@dataclass
class _Writer:
    """Turns wire-format values into state-file values, remembering every secret's plaintext."""

    secrets: set[str] = field(default_factory=set)
    redacted: list[str] = field(default_factory=list)

    def value(self, value: Any) -> Any:
        if _is_secret(value):
            self._remember(value.get("value"))
            return _secret()
        if isinstance(value, dict):  # plain objects, assets, archives, resource references
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str) and value in UNKNOWN_SENTINELS:
            return COMPUTED
        return value

    def _remember(self, plaintext: Any) -> None:
        # Only a secret that is one string: the strings inside a secret object (a registry login's
        # address, say) are also in plain fields, as they should be.
        # A secret not known yet has no plaintext, just the unknown sentinel.
        if (
            isinstance(plaintext, str)
            and len(plaintext) >= MIN_LEAK_LENGTH
            and plaintext not in UNKNOWN_SENTINELS
        ):
            self.secrets.add(plaintext)

    def guard(self, value: Any, where: str) -> Any:
        """`value` with every string that contains a secret's plaintext turned into a secret."""
        if _is_secret(value):
            return value
        if isinstance(value, dict):
            return {k: self.guard(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.guard(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str) and any(secret in value for secret in self.secrets):
            self.redacted.append(where)
            return _secret()
        return value


def _stack_outputs(value: Any, path: str, secret_paths: set[str]) -> Any:
    """`ProgramRun.outputs` (secrets already `[secret]`, listed by path) in state-file form."""
    if path in secret_paths:
        return _secret()
    if isinstance(value, dict):
        return {k: _stack_outputs(v, f"{path}.{k}", secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_stack_outputs(v, f"{path}[{i}]", secret_paths) for i, v in enumerate(value)]
    return COMPUTED if value == UNKNOWN_OUTPUT else value


def _resource(r: Registration, writer: _Writer) -> dict[str, Any]:
    outputs = {k: writer.value(v) for k, v in r.outputs.items()}
    for key in r.additional_secret_outputs:  # what the engine makes secret after the provider answers
        if key in outputs and not _is_secret(outputs[key]):
            outputs[key] = _secret()
    resource: dict[str, Any] = {"urn": r.urn, "custom": r.custom, "type": r.type}
    if r.custom and r.id:
        resource["id"] = r.id
    optional: dict[str, Any] = {
        "inputs": {k: writer.value(v) for k, v in r.inputs.items()},
        "outputs": outputs,
        "parent": r.parent,
        "protect": r.protect,
        # Sets to the engine; the SDK sends them in no fixed order, so sorted for a stable file.
        "dependencies": sorted(set(r.dependencies)),
        "provider": r.provider,
        "propertyDependencies": {k: sorted(set(v)) for k, v in r.property_dependencies.items() if v},
        "additionalSecretOutputs": r.additional_secret_outputs,
        "aliases": [a for a in r.aliases if a.startswith("urn:")],  # alias specs have no URN here
    }
    # Go's `omitempty`: empty and false fields are left out, as `pulumi stack export` leaves them.
    resource.update({k: v for k, v in optional.items() if v})
    return resource


@dataclass(frozen=True)
class Export:
    document: dict[str, Any]
    # Where a string held a secret's plaintext outside a secret, so was written as a secret.
    redacted: list[str]

    def json(self) -> str:
        return json.dumps(self.document, indent=2) + "\n"


def export_deployment(
    run: ProgramRun, secret_values: Iterable[str] = (), time: datetime | None = None
) -> Export:
    """The run's registrations as a `pulumi stack export` document (`apitype.UntypedDeployment`).

    `secret_values`: what the stack's secure config values became (their placeholders), for the guard.
    """
    writer = _Writer({v for v in secret_values if len(v) >= MIN_LEAK_LENGTH})
    root = {"urn": stack_urn(run), "custom": False, "type": STACK_TYPE}
    # Paths in `secret_outputs` start at an output's name (`web.images.ecr`).
    outputs = {k: _stack_outputs(v, k, set(run.secret_outputs)) for k, v in run.outputs.items()}
    if outputs:
        root["outputs"] = outputs
    resources = [root, *(_resource(r, writer) for r in run.resources)]
    for resource in resources:  # once every secret is known
        for key in ("inputs", "outputs"):
            if key in resource:
                resource[key] = writer.guard(resource[key], f"{resource['urn']} {key}")
    version = f"preflight+pulumi-python-{importlib.metadata.version('pulumi')}"
    manifest = {
        "time": (time or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        # apitype.ManifestV1.NewMagic: the hex SHA-256 of the version.
        "magic": hashlib.sha256(version.encode()).hexdigest(),
        "version": version,
    }
    deployment = {
        "manifest": manifest,
        "secrets_providers": {
            "type": SECRETS_PROVIDER,
            "state": {"note": "secrets are redacted: preflight never holds their values"},
        },
        "resources": resources,
        "metadata": {},
    }
    return Export({"version": DEPLOYMENT_VERSION, "deployment": deployment}, writer.redacted)


def export_preflight(result: Preflight, time: datetime | None = None) -> Export:
    """`export_deployment` of a preflight whose program ran, guarding its secure config values."""
    secure = [SECRET_PLACEHOLDER, *(result.config.values[k] for k in result.config.secret_keys)]
    return export_deployment(result.run, secure, time)
