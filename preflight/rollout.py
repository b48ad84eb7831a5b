"""`python -m preflight rollout promote|rollback|set-weight`: a rollout step as a reviewed one-line edit.

The helper edits the service's `rollout` block in `Pulumi.<stack>.yaml`, prints the text diff, then
runs the program under mocks with the old and the new config and prints what the step changes: routing
(listener rules, selectors, Ingress weights, `traffics`, origins, scaling bounds) versus workloads (pod
templates, task definitions, container groups, Cloud Run templates). A pure traffic step changes no
workload.

    python -m preflight rollout set-weight --stack prod --service web --weight 50
    python -m preflight rollout promote --stack prod --service web
    python -m preflight rollout rollback --stack staging --service web

The stack file is the user's: the helper never loses or corrupts it.
- Only the step's own lines change. The step is decided by the typed rollout model
  (components/rollout.py): the service's block, parsed (ruamel.yaml round-trip), is validated into
  it, the model's `promote`, `rollback` or `set_weight` holds the rules and returns the next model,
  and the difference between the two (the values changed, the keys removed, spelt as the file spells
  them) is applied to the original text at the nodes' exact character spans (a value token replaced,
  the canary entry's lines deleted), so indentation, sequence style, CRLF, a BOM, `---`, comments and
  quoting stay byte for byte. The result is parsed again and must equal the intended data.
- A file it cannot edit (invalid YAML, duplicate keys, empty, a rollout block missing what the step
  needs or one the rollout model refuses, read-only, not UTF-8) is an exit 2 with one line naming the
  file, the key and the fix.
- The whole read-edit-write holds an advisory lock (see `stack_lock`); the file is replaced atomically
  (see `write_stack_file`) and only if its content is still what was read.

Promote after rollback. `rollback` on a canary sets its weight to 0 and keeps its pods for
inspection; `promote` from there would send that version from 0% straight to 100%, skipping the steps
and replacing the stable workload, so it is refused: set a weight to re-enter the steps, or delete the
canary slot to abandon it. Blue-green has no steps and keeps both slots at full capacity: `rollback`
points activeSlot at the slot not running the service's version, and `promote` points it back at the
slot that does. The file keeps no history (rolled back reads the same as not yet promoted), promoting
again is the same one-line switch as the first time, and rollback stays one switch away.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import fcntl
import hashlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic.alias_generators import to_snake
from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

from components.rollout import BlueGreenRollout, RolloutError, RolloutSettings, parse_rollout
from preflight.diff import classify  # the one routing-vs-workload classification
from preflight.engine import ProgramRun, plan_diff, run_program
from preflight.stackconfig import StackConfigError, load_stack_config

NAMESPACE = "pouw-cicd"

# A second helper waits this long for the first one's lock (its two program runs take seconds).
LOCK_WAIT_SECONDS = 10.0
_LOCK_POLL_SECONDS = 0.05
_STACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class RolloutEditError(Exception):
    """The step does not apply to this service's rollout; the message says why and what would."""


class StackFileError(Exception):
    """The stack file cannot be found, read, locked or replaced safely; the message names it and the fix."""


class _EditError(Exception):
    """A problem inside the file, at a line when there is one; `edit` adds the file's name."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def _yaml() -> YAML:
    """A round-trip parser. It reads the file and checks edits; it never writes the file."""
    yaml = YAML()
    yaml.preserve_quotes = True
    return yaml


# -- the edit -----------------------------------------------------------------------------------------


def edit(
    text: str, service: str, action: str, weight: int | None = None, *, source: str = "the stack file"
) -> str:
    """The stack file's text with one rollout step applied, and nothing else changed.

    Raises RolloutEditError, naming `source` (and the line, where there is one), when the file is
    not valid YAML, has duplicate keys, lacks what the step needs, or the step does not apply.
    """
    try:
        root = _parse(text)
        svc = _find_service(root, service)
        rollout = _rollout_block(svc)
        before = _typed(rollout)
        after = _stepped(before, svc, action, weight)
        assert rollout is not None  # only a canary or blue-green rollout (a block in the file) steps
        change = _Edit(text, root.data)
        _difference(
            change, rollout, rollout, before.model_dump(**_AS_WRITTEN), after.model_dump(**_AS_WRITTEN)
        )
        return change.apply()
    except _EditError as problem:
        where = f"{source} line {problem.line}" if problem.line else source
        raise RolloutEditError(f"{where}: {problem}") from None


# A model as the stack file holds it: its keys spelt as in the file (camelCase), only those it sets.
_AS_WRITTEN: dict[str, Any] = {"by_alias": True, "exclude_unset": True}


@dataclass(frozen=True)
class _At:
    """A value in the file: its data (round-trip), its node (exact span in the text) and where it is."""

    data: Any
    node: Node
    keys: tuple[str | int, ...]  # from the document root, for the intended data
    path: str  # as settings errors spell it: pouw-cicd:services[0].rollout.slots.canary

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1

    def get(self, key: str) -> _At | None:
        if not isinstance(self.data, dict) or key not in self.data:
            return None
        path = f"{self.path}.{key}" if self.path else key
        for key_node, value_node in self.node.value if isinstance(self.node, MappingNode) else ():
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                return _At(self.data[key], value_node, (*self.keys, key), path)
        raise _EditError(f"{path} comes from a merge key or an alias; edit it by hand", self.line)


def _parse(text: str) -> _At:
    try:
        root = _yaml().compose(text)
        duplicate = _duplicate_key(root, set()) if root is not None else None
        if duplicate is not None:
            raise _EditError(f"duplicate key {duplicate.value}; remove one", duplicate.start_mark.line + 1)
        data = _yaml().load(text)
    except DuplicateKeyError as err:  # one the node walk cannot see (a merge key's, say)
        found = re.search(r'duplicate (?:merge )?key "(.*?)"', str(err.problem))
        key = found.group(1) if found else "?"
        raise _EditError(f"duplicate key {key}; remove one", _mark_line(err)) from None
    except MarkedYAMLError as err:
        problem = " ".join(str(err.problem or err.context or "invalid YAML").split())
        context = ""
        if err.problem and err.context and err.context_mark is not None:
            context = (
                f" ({' '.join(str(err.context).split())} that starts at line {err.context_mark.line + 1})"
            )
        raise _EditError(
            f"not valid YAML: {problem}{context}; fix the syntax there", _mark_line(err)
        ) from None
    except YAMLError as err:
        raise _EditError(f"not valid YAML: {' '.join(str(err).split())}; fix the syntax there") from None
    if root is None or data is None:
        raise _EditError("the file is empty; restore it from git or write its `config:` block")
    return _At(data, root, (), "")


def _mark_line(err: MarkedYAMLError) -> int | None:
    mark = err.problem_mark or err.context_mark
    return int(mark.line) + 1 if mark is not None else None


def _duplicate_key(node: Node, seen: set[int]) -> ScalarNode | None:
    """The first key that repeats in its mapping (the file's own nodes: aliases are visited once)."""
    if id(node) in seen:
        return None
    seen.add(id(node))
    children: list[Node] = []
    if isinstance(node, MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in keys:
                    return key_node
                keys.add(key_node.value)
            children.append(value_node)
    elif isinstance(node, SequenceNode):
        children = list(node.value)
    for child in children:
        found = _duplicate_key(child, seen)
        if found is not None:
            return found
    return None


def _find_service(root: _At, name: str) -> _At:
    if not isinstance(root.data, dict):
        raise _EditError("must be a mapping with a `config:` key", root.line)
    config = root.get("config")
    if config is None or not isinstance(config.data, dict):
        raise _EditError("has no `config:` mapping; the stack's settings go under `config:`")
    config = dataclasses.replace(config, path="")  # config keys are named as such: pouw-cicd:services
    services = config.get(f"{NAMESPACE}:services")
    if services is None or not isinstance(services.data, list) or not isinstance(services.node, SequenceNode):
        raise _EditError(f"{NAMESPACE}:services is missing or not a list; list the services there")
    for i, (item, node) in enumerate(zip(services.data, services.node.value, strict=True)):
        if isinstance(item, dict) and item.get("name") == name:
            return _At(item, node, (*services.keys, i), f"{services.path}[{i}]")
    names = ", ".join(str(s.get("name")) for s in services.data if isinstance(s, dict))
    raise _EditError(f"no service {name!r} in {NAMESPACE}:services; services are {names}")


def _rollout_block(svc: _At) -> _At | None:
    """The service's rollout block (None: the default, rolling), checked to have what a canary or
    blue-green step needs, each problem at its line: a version, slots that are mappings with a
    version, integer weights (a canary's stable slot first), an activeSlot naming a slot."""
    rollout = svc.get("rollout")
    if rollout is None:
        return None
    if not isinstance(rollout.data, dict):
        raise _EditError(
            f"{rollout.path} must be a mapping with a strategy (canary or blue-green)", rollout.line
        )
    strategy = rollout.data.get("strategy", "rolling")
    if strategy not in ("canary", "blue-green"):
        return rollout  # the model says what (nothing) the step does
    version = svc.get("version")
    if version is None or not _is_scalar(version.data):
        raise _EditError(f"{svc.path}.version is missing; set the version this update builds", svc.line)
    names = "stable and canary" if strategy == "canary" else "blue and green"
    slots = rollout.get("slots")
    if slots is None or not isinstance(slots.data, dict):
        raise _EditError(
            f"{rollout.path}.slots is missing or not a mapping; define the {names} slots", rollout.line
        )
    by_name: dict[str, _At] = {}
    for name in slots.data:
        slot = slots.get(str(name))
        assert slot is not None
        if not isinstance(slot.data, dict):
            raise _EditError(f"{slot.path} must be a mapping like {{version: 1.2.3}}", slot.line)
        slot_version = slot.get("version")
        if slot_version is None or not _is_scalar(slot_version.data):
            raise _EditError(f"{slot.path}.version is missing; set the version this slot runs", slot.line)
        by_name[str(name)] = slot
    if strategy == "canary":
        _check_canary_slots(rollout, by_name)
    else:
        _check_active_slot(rollout, by_name)
    return rollout


def _is_scalar(value: Any) -> bool:
    return value is not None and not isinstance(value, (dict, list))


def _check_canary_slots(rollout: _At, slots: dict[str, _At]) -> None:
    stable = slots.get("stable")
    if stable is None:
        raise _EditError(
            f"{rollout.path}.slots.stable is missing; a canary needs the stable slot (the version serving "
            "today): add `stable: {version: ...}`",
            rollout.line,
        )
    canary = slots.get("canary")
    if canary is not None:
        _check_weight(canary, required=True)
    _check_weight(stable, required=False)


def _check_weight(slot: _At, required: bool) -> None:
    """The slot's weight: an integer 0..100 (required for the canary, optional for stable)."""
    weight = slot.get("weight")
    if weight is None:
        if required:
            raise _EditError(f"{slot.path}.weight is missing; set an integer 0..100", slot.line)
        return
    value = weight.data
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        shown = repr(str(value)) if isinstance(value, str) else str(value)
        raise _EditError(f"{weight.path} is {shown}; set an integer 0..100", weight.line)


def _check_active_slot(rollout: _At, slots: dict[str, _At]) -> None:
    names = " or ".join(slots)
    active = rollout.get(_spelt(rollout, "activeSlot"))
    if active is None:
        raise _EditError(
            f"{rollout.path}.activeSlot is missing; set it to the slot serving traffic now ({names})",
            rollout.line,
        )
    if not isinstance(active.data, str) or active.data not in slots:
        raise _EditError(f"{active.path} is {active.data!r}, not a slot; set it to {names}", active.line)


def _typed(rollout: _At | None) -> RolloutSettings:
    """The block as the typed rollout model, or its first problem in the settings' words, at its line."""
    try:
        return parse_rollout(_plain(rollout.data) if rollout is not None else {})
    except ValidationError as err:
        assert rollout is not None  # the default (no block) is valid
        error = err.errors()[0]
        below = error.get("ctx", {}).get("error")
        if error["type"] == "tag_invalid":  # the strategy names no model
            keys: list[str | int] = [error["ctx"]["key"]]
        else:  # the first location part is the union's tag (the strategy), not a key of the file
            keys = [*error["loc"][1:], *(_path_keys(below.path) if isinstance(below, RolloutError) else [])]
        message = str(error["msg"]).removeprefix("Value error, ")
        at = _deepest(rollout, keys)
        path = rollout.path + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys)
        raise _EditError(f"{path}: {message}", at.line) from None


def _path_keys(path: str) -> list[str | int]:
    """`steps[2].setWeight` -> ["steps", 2, "setWeight"]."""
    return [int(index) if index else key for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)]


def _deepest(at: _At, keys: list[str | int]) -> _At:
    """The innermost value of the file along `keys` (for the line of a problem)."""
    for key in keys:
        child: _At | None = None
        with contextlib.suppress(_EditError):  # a merge key or an alias: stop at the parent
            if isinstance(key, int) and isinstance(at.data, list) and isinstance(at.node, SequenceNode):
                if key < len(at.node.value):
                    child = _At(at.data[key], at.node.value[key], (*at.keys, key), f"{at.path}[{key}]")
            elif isinstance(key, str):
                child = at.get(_spelt(at, key))
        if child is None:
            return at
        at = child
    return at


def _spelt(at: _At, key: str) -> str:
    """How the file spells a model key: camelCase (`activeSlot`), or the snake_case a model accepts too."""
    if isinstance(at.data, dict) and key not in at.data and to_snake(key) in at.data:
        return to_snake(key)
    return key


def _stepped(model: RolloutSettings, svc: _At, action: str, weight: int | None) -> RolloutSettings:
    """The model after the step: the rules are the model's (components/rollout.py)."""
    try:
        if action == "set-weight":
            if weight is None:
                raise _EditError("set-weight needs --weight, an integer 0..100")
            return model.set_weight(weight)
        if isinstance(model, BlueGreenRollout):
            version = str(svc.data["version"])
            return model.promote(version) if action == "promote" else model.rollback(version)
        return model.promote() if action == "promote" else model.rollback()
    except RolloutError as refused:
        raise _EditError(f"{svc.data['name']}: {refused}") from None


def _difference(change: _Edit, block: _At, at: _At, old: dict[str, Any], new: dict[str, Any]) -> None:
    """The step as edits of the file under `at`: each value the step changes replaced, each key it
    removes deleted, each scalar key it adds (a rollback's `aborted: true`) inserted as the mapping's
    first entry. Anything else it adds has no place in the file's text: refused."""
    added = sorted(set(new) - set(old))
    for key in added:
        if isinstance(new[key], (dict, list)):
            raise _EditError(f"cannot make this edit in place: the step adds {key}; make it by hand")
        change.insert(at, key, new[key], _token(change, block, at, new[key]))
    for key, value in old.items():
        spelt = _spelt(at, key)
        if key not in new:
            change.delete(at, spelt)
            continue
        here = at.get(spelt)
        assert here is not None
        if isinstance(value, dict) and isinstance(new[key], dict):
            _difference(change, block, here, value, new[key])
        elif value != new[key]:
            if isinstance(new[key], (dict, list)):
                raise _EditError(f"cannot make this edit in place: {here.path} changes as a whole", here.line)
            change.replace(here, new[key], _token(change, block, here, new[key]))


def _token(change: _Edit, block: _At, at: _At, value: Any) -> str:
    """How the new value is written. An integer (a weight) plainly. Text the rollout block already
    holds is copied as written there (a promoted version keeps the canary's quotes, so it parses to
    the same text); other text keeps the replaced value's quotes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str):
        return str(value)
    for scalar in _scalars(block):
        token = change.token(scalar)
        if scalar.data == value and isinstance(scalar.data, str) and token[:1] not in ("&", "!", "*"):
            return token
    style = at.node.style if isinstance(at.node, ScalarNode) else None
    quote = style if style in ("'", '"') else ""
    return f"{quote}{value}{quote}"


def _scalars(at: _At) -> Iterator[_At]:
    """The block's scalar values (not its keys), in the order the file has them."""
    if not isinstance(at.node, MappingNode) or not isinstance(at.data, dict):
        return
    for key_node, value_node in at.node.value:
        if not isinstance(key_node, ScalarNode) or key_node.value not in at.data:
            continue  # a merge key (`<<`) or a key that is not text
        child = _At(
            at.data[key_node.value], value_node, (*at.keys, key_node.value), f"{at.path}.{key_node.value}"
        )
        if isinstance(value_node, ScalarNode):
            yield child
        else:
            yield from _scalars(child)


# -- minimal textual edits ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Splice:
    start: int
    end: int
    new: str


_DELETED = object()


class _Edit:
    """Splices to the original text, and the data they must produce (checked by parsing the result)."""

    def __init__(self, text: str, data: Any) -> None:
        self.text = text
        self.intended = _plain(data)  # a copy: aliases unshared, so an edit through one shows
        self.splices: list[_Splice] = []

    def token(self, at: _At) -> str:
        return self.text[at.node.start_mark.index : at.node.end_mark.index]

    def replace(self, at: _At, value: Any, token: str) -> None:
        """The scalar's token (and only it) becomes `token`, which must parse to `value`."""
        start, end = at.node.start_mark.index, at.node.end_mark.index
        if not isinstance(at.node, ScalarNode) or self.text[start : start + 1] in ("&", "!", "*"):
            raise _EditError(
                f"cannot make this edit in place: {at.path} has an anchor, alias or tag", at.line
            )
        self.splices.append(_Splice(start, end, token))
        self._set(at.keys, value)

    def delete(self, parent: _At, key: str) -> None:
        """The `key: value` entry goes: its whole lines in a block mapping, its text in a flow one."""
        at = parent.get(key)
        assert at is not None and isinstance(parent.node, MappingNode)
        pairs = parent.node.value
        index = next(i for i, (k, _) in enumerate(pairs) if isinstance(k, ScalarNode) and k.value == key)
        key_node, value_node = pairs[index]
        text = self.text
        if parent.node.flow_style:
            if index > 0:  # from the end of the previous value: `, canary: {...}`
                start, end = _end(pairs[index - 1][1]), _end(value_node)
            elif len(pairs) > 1:  # up to the next key: `canary: {...}, `
                start, end = key_node.start_mark.index, pairs[1][0].start_mark.index
            else:
                start, end = key_node.start_mark.index, _end(value_node)
        else:
            start = _line_start(text, key_node.start_mark.index)
            end = _line_end(text, _end(value_node))
            before = text[start : key_node.start_mark.index]
            after = text[_end(value_node) : end].rstrip("\r\n")
            if before.strip(" \t") or not re.fullmatch(r"[ \t]*(#.*)?", after):
                raise _EditError(f"cannot make this edit in place: {at.path} shares its lines", at.line)
        self.splices.append(_Splice(start, end, ""))
        self._set(at.keys, _DELETED)

    def insert(self, parent: _At, key: str, value: Any, token: str) -> None:
        """`key: token` becomes the mapping's first entry: its own line at the first key's indentation
        in a block mapping (the file's line break), `key: token, ` after the brace in a flow one."""
        node = parent.node
        if not isinstance(node, MappingNode) or not node.value:
            raise _EditError(f"cannot make this edit in place: {parent.path} is not a mapping", parent.line)
        first = node.value[0][0].start_mark.index
        if node.flow_style:
            self.splices.append(_Splice(first, first, f"{key}: {token}, "))
        else:
            start = _line_start(self.text, first)
            indent = self.text[start:first]
            if indent.strip(" \t"):
                raise _EditError(
                    f"cannot make this edit in place: {parent.path} shares its lines", parent.line
                )
            found = _LINE_BREAK.search(self.text)
            self.splices.append(
                _Splice(start, start, f"{indent}{key}: {token}{found.group() if found else chr(10)}")
            )
        self._set((*parent.keys, key), value)

    def apply(self) -> str:
        """The edited text, if it parses to exactly the intended data (else refused: edit by hand)."""
        out, last = [], 0
        # An insertion (empty span) goes before a deletion that starts where it does.
        for splice in sorted(self.splices, key=lambda s: (s.start, s.end)):
            if splice.start < last:
                raise _EditError("cannot make this edit in place: the edits overlap; edit the file by hand")
            out += [self.text[last : splice.start], splice.new]
            last = splice.end
        new_text = "".join([*out, self.text[last:]])
        try:
            got = _plain(_yaml().load(new_text))
        except YAMLError:
            got = _DELETED
        if got != self.intended:
            raise _EditError(
                "cannot make this edit in place (an anchor, alias or merge key shares the rollout "
                "block?); make the step by hand"
            )
        return new_text

    def _set(self, keys: tuple[str | int, ...], value: Any) -> None:
        target = self.intended
        for key in keys[:-1]:
            target = target[key]
        if value is _DELETED:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value


def _plain(value: Any) -> Any:
    """Plain dicts, lists and scalars: what the text means, whatever its style."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _end(node: Node) -> int:
    """Where a node's own text ends (a block collection's end mark is at the next token)."""
    if not isinstance(node, CollectionNode) or node.flow_style or not node.value:
        return int(node.end_mark.index)
    last = node.value[-1]
    return _end(last[1] if isinstance(node, MappingNode) else last)


def _line_start(text: str, index: int) -> int:
    return max(text.rfind("\n", 0, index), text.rfind("\r", 0, index)) + 1


def _line_end(text: str, index: int) -> int:
    """The index after the line break that ends the line holding `index` (CRLF, LF or CR)."""
    found = _LINE_BREAK.search(text, index)
    return found.end() if found else len(text)


# -- the stack file on disk ---------------------------------------------------------------------------


def stack_path(project_dir: Path, stack: str) -> Path:
    """`Pulumi.<stack>.yaml` in the project, which must exist (the helper edits, never creates)."""
    if not _STACK_NAME.fullmatch(stack):
        raise StackFileError(
            f"--stack {stack!r} is not a stack name; "
            f"pass the <stack> of a Pulumi.<stack>.yaml in {project_dir}"
        )
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))
        raise StackFileError(
            f"{path}: no such stack file; known stacks: {', '.join(known) or 'none'}; pass one with --stack"
        )
    return path


def check_writable(path: Path) -> None:
    """Refuse a read-only file up front, before seconds of program runs.

    The mode is checked as well as `os.access`: root may write a 0o444 file, but whoever made it
    read-only meant it. The directory must be writable too: the file is replaced, not rewritten.
    """
    target = _real(path)
    mode = target.stat().st_mode
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(target, os.W_OK):
        raise StackFileError(f"{path} is read-only; make it writable (chmod u+w {path}) or pass --dry-run")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise StackFileError(
            f"{target.parent} is not writable, and {path.name} is replaced through a temporary file next "
            "to it; make the directory writable or pass --dry-run"
        )


@contextlib.contextmanager
def stack_lock(path: Path, wait: float | None = None) -> Iterator[Path]:
    """Hold an exclusive advisory lock on `.Pulumi.<stack>.yaml.lock` next to the (real) stack file.

    Why a sidecar rather than the stack file itself: the edit replaces the stack file (a new inode),
    so a lock on it would guard the old inode only, and a helper that opened the file after the
    replace would lock the new one and run alongside. The sidecar is never replaced. It is removed on
    release, so no stray file stays in the repository; a waiter that locked an inode the holder had
    just removed notices (the path no longer names its inode) and tries again. flock(2) locks die
    with their process, so a crashed helper never leaves the stack locked. Symlinks are resolved: two
    helpers editing one file through different links share one lock. Editors do not take this lock;
    `write_stack_file` catches their saves by content instead.

    Waits up to `wait` seconds (LOCK_WAIT_SECONDS) for another helper, then gives up naming the lock.
    """
    target = _real(path)
    lock = target.with_name(f".{target.name}.lock")
    deadline = time.monotonic() + (LOCK_WAIT_SECONDS if wait is None else wait)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StackFileError(
                f"{lock}: cannot create the lock file ({err.strerror}); make {lock.parent} writable"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise StackFileError(
                    f"{lock} is held: another rollout helper is editing {path.name}; "
                    "wait for it to finish, then run again"
                ) from None
            time.sleep(_LOCK_POLL_SECONDS)
            continue
        except OSError as err:
            os.close(fd)
            raise StackFileError(f"{lock}: cannot lock ({err.strerror}); run again") from None
        held = os.fstat(fd)
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)  # the previous holder removed this inode as we locked it: lock the new one
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # while still held, so nobody else can have locked the path's inode
        os.close(fd)


def read_stack_file(path: Path) -> tuple[str, str]:
    """(text, sha256 of the bytes). Read as bytes: CRLF and a BOM stay in the text, as they are."""
    try:
        raw = _real(path).read_bytes()
    except OSError as err:
        raise StackFileError(f"{path}: cannot read ({err.strerror}); check its permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise StackFileError(f"{path} byte {err.start}: not UTF-8 ({err.reason}); save it as UTF-8") from None
    return text, hashlib.sha256(raw).hexdigest()


def write_stack_file(path: Path, text: str, read_digest: str) -> None:
    """Replace the stack file with `text` atomically, or leave it exactly as it was.

    The text goes to a temporary file in the same directory (same file system, so the rename is
    atomic), which gets the original's mode (and owner, where allowed), is flushed to disk (fsync),
    and then renamed over the original (os.replace); readers see the old file or the new one, never
    half of one. Right before the rename the original is hashed again: if it no longer matches what
    was read (an editor saved meanwhile), nothing is replaced. On any failure, the temporary file is
    removed. The lock (`stack_lock`) excludes other helpers; this check is what protects an editor's
    save, up to the microseconds between the check and the rename.
    """
    target = _real(path)
    changed = StackFileError(f"{path}: the file changed since it was read; run again")
    try:
        original = target.stat()
    except FileNotFoundError:
        raise changed from None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise StackFileError(f"{path}: cannot write ({err.strerror}); it is unchanged, run again") from None
    replaced = False
    try:
        try:
            mine = os.fstat(fd)
            if (mine.st_uid, mine.st_gid) != (original.st_uid, original.st_gid):
                with contextlib.suppress(PermissionError):  # keep the owner when run with sudo
                    os.fchown(fd, original.st_uid, original.st_gid)
            os.fchmod(fd, stat.S_IMODE(original.st_mode))
            _write_all(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if _digest(target) != read_digest:
            raise changed
        os.replace(tmp, target)
        replaced = True
    except OSError as err:
        raise StackFileError(
            f"{path}: cannot write ({err.strerror or err}); it is unchanged, run again"
        ) from None
    finally:
        if not replaced:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_directory(target.parent)


def _real(path: Path) -> Path:
    """The file a symlinked stack file points to: edited in place of the link, which stays a link."""
    return Path(os.path.realpath(path))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(5, "short write")
        view = view[written:]


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None  # deleted meanwhile: changed too


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; some file systems cannot, and the file is replaced anyway."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- the command --------------------------------------------------------------------------------------


def main(argv: list[str], project_dir: Path) -> int:
    parser = argparse.ArgumentParser(prog="python -m preflight rollout", description=__doc__)
    parser.add_argument("action", choices=["promote", "rollback", "set-weight"])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--weight", type=int, help="the canary's new weight (set-weight)")
    parser.add_argument("--dry-run", action="store_true", help="print, do not write the stack file")
    args = parser.parse_args(argv)
    try:
        path = stack_path(project_dir, args.stack)
        if args.dry_run:
            return _step(args, project_dir, path)
        check_writable(path)
        with stack_lock(path):
            return _step(args, project_dir, path)
    except (RolloutEditError, StackFileError, StackConfigError) as err:
        print(f"error: {err}")
        return 2
    except OSError as err:  # one the checks above did not foresee: still one line, still nothing written
        print(f"error: {err.filename or project_dir}: {err.strerror or err}; nothing was written")
        return 2


class ProgramRunError(Exception):
    """One of the two configs a step compares does not run; `label` says which (current, edited)."""

    def __init__(self, label: str, error_text: str) -> None:
        super().__init__(f"the {label} config does not run:\n{error_text}")
        self.label = label


@dataclass(frozen=True)
class StepChanges:
    """What a step changes, from two program runs under mocks: routing lines, workload lines (the
    plan diff's classification, preflight/diff.py), and the URNs of the routing resources, which is
    exactly what a `pulumi up --target` of the step must update. `after` is the edited run."""

    routing: tuple[str, ...]
    workloads: tuple[str, ...]
    routing_urns: tuple[str, ...]
    after: ProgramRun

    @property
    def restarts(self) -> bool:
        """Whether the step starts new pods, tasks, revisions or containers (or removes or adds one)."""
        return bool(self.workloads)


def compare(project_dir: Path, stack: str, old_text: str, new_text: str) -> StepChanges:
    """The plan comparison of a step: the program run with the old and the new stack file text.

    The one comparison the helper prints and the rollout driver (delivery/driver.py) checks before
    it applies anything. Raises ProgramRunError when either config does not run, and
    StackConfigError when either text is not a stack file."""
    before = run_program(project_dir, load_stack_config(project_dir, stack, text=old_text))
    after = run_program(project_dir, load_stack_config(project_dir, stack, text=new_text))
    for run, label in ((before, "current"), (after, "edited")):
        if run.error is not None:
            raise ProgramRunError(label, run.error_text)
    change = plan_diff(before, after)
    routing, workloads = classify(change)
    routed = {(type_, name) for type_, name in change.changed if _listed(routing, type_, name)}
    urns = tuple(sorted(r.urn for r in after.resources if (r.type, r.name) in routed))
    return StepChanges(tuple(routing), tuple(workloads), urns, after)


def _listed(lines: list[str], type_: str, name: str) -> bool:
    """Whether `classify` put the resource among these lines (`type name (fields)`)."""
    return any(line.startswith(f"{type_} {name} (") for line in lines)


def _step(args: argparse.Namespace, project_dir: Path, path: Path) -> int:
    """Read, edit, show, and (unless --dry-run) write: under the caller's lock."""
    old_text, digest = read_stack_file(path)
    new_text = edit(old_text, args.service, args.action, args.weight, source=str(path))
    try:
        changes = compare(project_dir, args.stack, old_text, new_text)
    except ProgramRunError as err:
        print(f"error: {err}")
        return 2
    diff = difflib.unified_diff(
        old_text.splitlines(), new_text.splitlines(), str(path), str(path), lineterm=""
    )
    print("\n".join(diff))
    routing, workloads = changes.routing, changes.workloads
    print(f"routing changes ({len(routing)}):")
    print("".join(f"  ~ {line}\n" for line in routing) or "  none\n", end="")
    print(f"workload changes ({len(workloads)}):")
    print(
        "".join(f"  ~ {line}\n" for line in workloads) or "  none: no pod, task or revision restarts\n",
        end="",
    )
    if not args.dry_run:
        write_stack_file(path, new_text, digest)
        print(f"wrote {path}; review it, commit it, and `pulumi up` applies the step")
    print(f"commit message: {commit_subject(args.stack, args.service, args.action, args.weight)}")
    return 0


def commit_subject(stack: str, service: str, action: str, weight: int | None = None) -> str:
    """The commit (or squash-merged pull request) title for a step. The deploy pipelines read it: a
    deploy of `rollout(<stack>/<service>): rollback` is announced as a rollback (delivery.notify)."""
    detail = f" to {weight}%" if action == "set-weight" and weight is not None else ""
    return f"rollout({stack}/{service}): {action}{detail}"
