"""Read `Pulumi.yaml` and `Pulumi.<stack>.yaml` the way the CLI hands config to a program.

Values become strings (objects and lists as JSON, booleans as `true`/`false`), keys are
namespaced, and encrypted (`secure:`) values, which only the stack's secrets provider can
decrypt, become placeholders that stay marked secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SECRET_PLACEHOLDER = "preflight-secret-placeholder"


class StackConfigError(Exception):
    """The project or stack file cannot be read; the message names the file and the fix."""


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    path: Path
    values: dict[str, str]
    # Every `secure:` key; its value here is SECRET_PLACEHOLDER, never the ciphertext.
    secret_keys: list[str] = field(default_factory=list)


def project_name(project_dir: Path) -> str:
    path = project_dir / "Pulumi.yaml"
    data = _read_yaml(path)
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise StackConfigError(f"{path}: `name` is missing; set the project name")
    return name


def load_stack_config(project_dir: Path, stack: str, text: str | None = None) -> StackConfig:
    """The stack's config as the CLI hands it to a program; `text` stands in for the file's content."""
    project = project_name(project_dir)
    path = project_dir / f"Pulumi.{stack}.yaml"
    if text is None and not path.exists():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))
        raise StackConfigError(f"{path}: no such stack file; known stacks: {', '.join(known) or 'none'}")
    data = (_read_yaml(path) if text is None else _parse_yaml(path, text)) or {}
    if not isinstance(data, dict):
        raise StackConfigError(f"{path}: must be a mapping with a `config:` key")
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise StackConfigError(f"{path}: `config` must be a mapping of key: value")
    values: dict[str, str] = {}
    secrets: list[str] = []
    for key, raw in config.items():
        full = str(key) if ":" in str(key) else f"{project}:{key}"
        value, secret = _encode(raw)
        values[full] = value
        if secret:
            secrets.append(full)
    return StackConfig(project=project, stack=stack, path=path, values=values, secret_keys=secrets)


def _read_yaml(path: Path) -> Any:
    try:
        return _parse_yaml(path, path.read_text())
    except FileNotFoundError as err:
        raise StackConfigError(f"{path}: not found") from err


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise StackConfigError(f"{path}: not valid YAML: {err}") from err


def _encode(raw: Any) -> tuple[str, bool]:
    """A config value as the CLI passes it to the program, and whether it is secret."""
    value, secret = _replace_secure(raw)
    if isinstance(value, str):
        return value, secret
    if isinstance(value, bool):
        return ("true" if value else "false"), secret
    if isinstance(value, (int, float)):
        return str(value), secret
    return json.dumps(value), secret


def _replace_secure(raw: Any) -> tuple[Any, bool]:
    if isinstance(raw, dict):
        if set(raw) == {"secure"}:
            return SECRET_PLACEHOLDER, True
        pairs = {k: _replace_secure(v) for k, v in raw.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(s for _, s in pairs.values())
    if isinstance(raw, list):
        items = [_replace_secure(v) for v in raw]
        return [v for v, _ in items], any(s for _, s in items)
    return raw, False
