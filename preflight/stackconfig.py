"""Read `Pulumi.yaml` and `Pulumi.<stack>.yaml` the way the CLI hands config to a program.

Values become strings (a top-level scalar as written, objects and lists as JSON), keys are
namespaced, and encrypted (`secure:`) values, which only the stack's secrets provider can
decrypt, become placeholders that stay marked secret. A `secure:` nested in an object marks the
whole top-level key secret, as the CLI does (what `pulumi config set --secret --path` writes).
What the CLI refuses is refused here, one line per problem with file and line: a key defined
twice in one mapping, and (stricter than the CLI, which ignores it) an unknown top-level key.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
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
    try:
        text = path.read_text()
    except FileNotFoundError as err:
        raise StackConfigError(f"{path}: not found") from err
    data, _ = _load_yaml(path, text)
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise StackConfigError(f"{path}: `name` is missing; set the project name")
    return name


def load_stack_config(project_dir: Path, stack: str, text: str | None = None) -> StackConfig:
    """The stack's config as the CLI hands it to a program; `text` stands in for the file's content."""
    project = project_name(project_dir)
    path = project_dir / f"Pulumi.{stack}.yaml"
    if text is None:
        if not path.exists():
            known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))
            raise StackConfigError(f"{path}: no such stack file; known stacks: {', '.join(known) or 'none'}")
        text = path.read_text()
    data, root = _load_yaml(path, text, top_level_keys=STACK_FILE_KEYS)
    data = data or {}
    if not isinstance(data, dict):
        raise StackConfigError(f"{path}: must be a mapping with a `config:` key")
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise StackConfigError(f"{path}: `config` must be a mapping of key: value")
    scalars = _top_level_scalars(root)
    values: dict[str, str] = {}
    secrets: list[str] = []
    for key, raw in config.items():
        full = str(key) if ":" in str(key) else f"{project}:{key}"
        if str(key) in scalars:
            value, secret = scalars[str(key)], False
        else:
            value, secret = _encode(raw)
        values[full] = value
        if secret:
            secrets.append(full)
    return StackConfig(project=project, stack=stack, path=path, values=values, secret_keys=secrets)


# The top-level keys of a stack file: the CLI's `ProjectStack` (sdk/go/common/workspace/project.go).
# The CLI ignores any other key, so `confg:` would silently drop the whole config; here it is an error.
STACK_FILE_KEYS = (
    "config",
    "environment",  # Pulumi ESC environments to import
    "secretsprovider",
    "encryptedkey",
    "encryptionsalt",
    "mainEnvironment",  # newer CLIs: the one ESC environment `pulumi config set` writes to
)
_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~8x faster


class _CliLoader(_BaseLoader):  # type: ignore[misc]
    """PyYAML's safe loader, resolving plain scalars as the CLI's yaml.v3 decodes them into config
    values: only true/false are booleans (`on`, `yes` stay text) and dates stay text. (Still YAML 1.1
    here, and rare in config: `0o17`, `1:30` and `012` read differently.)"""


_CliLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_CliLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _load_yaml(
    path: Path, text: str, top_level_keys: tuple[str, ...] | None = None
) -> tuple[Any, yaml.Node | None]:
    """The document and its node tree. Duplicate keys are errors, as in the CLI (yaml.v3: "mapping key
    already defined") and the rollout helper (ruamel); so are top-level keys outside `top_level_keys`."""
    loader = _CliLoader(text)
    try:
        root = loader.get_single_node()
        problems = list(_duplicate_keys(path.name, root))
        if top_level_keys is not None and isinstance(root, yaml.MappingNode):
            problems += _unknown_keys(path.name, root, top_level_keys)
        if problems:
            raise StackConfigError("\n".join(problems))
        return (loader.construct_document(root) if root is not None else None), root
    except yaml.YAMLError as err:
        raise StackConfigError(f"{path}: not valid YAML: {err}") from err
    finally:
        loader.dispose()


def _duplicate_keys(file: str, root: yaml.Node | None) -> Iterator[str]:
    """`<file> line N: duplicate key ...` for every key defined twice in one mapping, anywhere.

    Keys compare by their scalar text, as yaml.v3 compares them. Paths read as config keys do:
    `pouw-cicd:services[0].replicas` (the `config:` level is left out)."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(root, ())] if root is not None else []
    while stack:
        node, at = stack.pop()
        if id(node) in seen:  # an alias: already walked
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*at, i)) for i, item in reversed(list(enumerate(node.value))))
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[str, int] = {}
        children = []
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                if key.value in first:
                    where = f"under {_key_path(at)}" if at else "at the top level"
                    before = first[key.value]
                    earlier = "twice on this line" if before == line else f"first at line {before}"
                    yield f"{file} line {line}: duplicate key `{key.value}` {where} ({earlier}); keep one"
                else:
                    first[key.value] = line
                children.append((value, (*at, key.value)))
        stack.extend(reversed(children))


def _key_path(at: tuple[str | int, ...]) -> str:
    """`("config", "pouw-cicd:services", 0, "replicas")` -> `pouw-cicd:services[0].replicas`."""
    parts = at[1:] if at[:1] == ("config",) and len(at) > 1 else at
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unknown_keys(file: str, root: yaml.MappingNode, known: tuple[str, ...]) -> list[str]:
    problems = []
    for key, _ in root.value:
        name = str(key.value)
        if isinstance(key, yaml.ScalarNode) and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6) or difflib.get_close_matches(
                name.lower(), known, n=1, cutoff=0.6
            )
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            problems.append(
                f"{file} line {key.start_mark.line + 1}: unknown top-level key `{name}`{hint}; a stack file "
                f"holds {', '.join(known)}; the CLI ignores anything else"
            )
    return problems


def _top_level_scalars(root: yaml.Node | None) -> dict[str, str]:
    """Each top-level config key whose value is a scalar, with the scalar's text: the CLI decodes those
    into a string as written (`1.10` stays "1.10", `yes` stays "yes"; null is "")."""
    if not isinstance(root, yaml.MappingNode):
        return {}
    config = next((v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "config"), None)
    if not isinstance(config, yaml.MappingNode):
        return {}
    return {
        str(key.value): ("" if value.tag == "tag:yaml.org,2002:null" else str(value.value))
        for key, value in config.value
        if isinstance(key, yaml.ScalarNode) and isinstance(value, yaml.ScalarNode)
    }


def _encode(raw: Any) -> tuple[str, bool]:
    """An object or list value as the CLI passes it to the program (JSON), and whether it is secret."""
    value, secret = _replace_secure(raw)
    return (value if isinstance(value, str) else json.dumps(value)), secret


def _replace_secure(raw: Any) -> tuple[Any, bool]:
    """`{secure: ...}` anywhere -> the placeholder; a secret anywhere inside makes the whole value
    secret, as the CLI lists the whole top-level key in PULUMI_CONFIG_SECRET_KEYS (the program
    refuses structured settings that hold one: see components/settings.py)."""
    if isinstance(raw, dict):
        if set(raw) == {"secure"}:
            return SECRET_PLACEHOLDER, True
        pairs = {k: _replace_secure(v) for k, v in raw.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(s for _, s in pairs.values())
    if isinstance(raw, list):
        items = [_replace_secure(v) for v in raw]
        return [v for v, _ in items], any(s for _, s in items)
    return raw, False
