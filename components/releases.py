"""The release record: which digest the release built for each service version (`releases.yaml`).

`release.yml` builds a service version once, pushes it to its source repository (GHCR), signs it,
and records the digest here with `python -m delivery.release record` (a reviewed pull request). The
program deploys a recorded version by copying `source@digest` into the registries a stack's targets
pull from (`ReleaseImage`), never by building it, so the bytes that passed staging run in prod.

    services:
      web:
        "1.4.2": {repository: ghcr.io/pouw/web, digest: "sha256:<64 hex>"}

The file is plain data read with PyYAML here (the program never writes it); the writer in
delivery/release.py edits it round-trip, keeping its comments.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

RECORD_FILE = "releases.yaml"
DIGEST_RE = r"^sha256:[0-9a-f]{64}$"
# host/path, lower case, no tag and no digest: where the release pushed the version.
REPOSITORY_RE = r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+$"


class RecordedImage(BaseModel):
    """One released version: the digest the release built, and the repository it pushed it to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repository: Annotated[str, StringConstraints(pattern=REPOSITORY_RE)]
    digest: Annotated[str, StringConstraints(pattern=DIGEST_RE)]

    @property
    def ref(self) -> str:
        """`ghcr.io/pouw/web@sha256:...`: the release's own image, the source of every copy."""
        return f"{self.repository}@{self.digest}"


class ReleaseRecord(BaseModel):
    """service -> version -> the recorded image."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    services: dict[str, dict[str, RecordedImage]] = Field(default_factory=dict)

    def image(self, service: str, version: str) -> RecordedImage | None:
        return self.services.get(service, {}).get(version)


class RecordError(Exception):
    """The record file cannot be read; the message names the file, the entry and the fix."""


def parse_record(text: str, source: str) -> ReleaseRecord:
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecordError(f"{source}: not valid YAML ({err}); restore it from git") from None
    if data is None:
        return ReleaseRecord()
    if isinstance(data, dict):
        for versions in (
            (data.get("services") or {}).values() if isinstance(data.get("services"), dict) else ()
        ):
            for version in versions or {} if isinstance(versions, dict) else ():
                if not isinstance(version, str):
                    raise RecordError(
                        f'{source}: version {version!r} is not a string; quote it ("{version}")'
                    )
    try:
        return ReleaseRecord.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RecordError(
            f"{source}: {where}: {first['msg']}; entries are written by `python -m delivery.release "
            "record` (repository host/path, digest sha256:<64 hex>)"
        ) from None


def load_record(path: Path) -> ReleaseRecord:
    """The record, or an empty one when the file does not exist (nothing was released yet)."""
    if not path.is_file():
        return ReleaseRecord()
    return parse_record(path.read_text(encoding="utf-8"), str(path.name))


# Who signs a release: release.yml, keylessly, with the job's GitHub Actions OIDC identity. The one
# definition of that identity, for the deploy's `cosign verify` (delivery/release.py) and the clusters'
# admission (components/admission.py): they must check the same certificate.
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
RELEASE_WORKFLOW = ".github/workflows/release.yml"


def github_repository(source_repository: str) -> str | None:
    """`<owner>/<repo>` of `https://github.com/<owner>/<repo>` (`.git` and a trailing `/` allowed)."""
    found = re.fullmatch(r"https://github\.com/([A-Za-z0-9-]+/[A-Za-z0-9._-]+?)(\.git)?/?", source_repository)
    return found.group(1) if found else None


def signer_identity(signer: str, service: str, version: str | None = None) -> str:
    """The certificate identity of a release signature, as an anchored regular expression (cosign's
    `--certificate-identity-regexp`, Kyverno's `subjectRegExp`): release.yml of `signer`
    (`<owner>/<repo>`) at the tag `<service>/v<version>`, or at any of the service's tags."""
    prefix = f"https://github.com/{signer}/{RELEASE_WORKFLOW}@refs/tags/{service}/v"
    return f"^{re.escape(prefix)}{re.escape(version) if version else '.+'}$"


def release_repository(owner: str, service: str) -> str:
    """A service's GHCR repository, where release.yml pushes it and its signature:
    `ghcr.io/<owner, lowercased>/<service>` (the workflow's `${OWNER,,}`; GHCR names are lower case).
    `owner` may be `<owner>/<repo>` (a signer)."""
    return f"ghcr.io/{owner.split('/')[0].lower()}/{service}"


def digest_of(ref: str) -> str | None:
    found = re.search(r"@(sha256:[0-9a-f]{64})$", ref)
    return found.group(1) if found else None
