"""The gateway's config file: one route's entry replaced, the whole file validated as the
gateway would, written atomically (temporary file + ``os.replace``) for its reload to pick
up.

The rest of the file is kept as the operator wrote it: ``ruamel.yaml``'s round-trip mode
rewrites only the route's entry (its comments and the file's key order, quoting, flow style
and indentation stay), and within the entry a value that stays keeps its comments.

The rollout needs to write this file and to create files beside it (the temporary file of
the atomic write, and by default the rollout's state file), so it refuses to start when it
cannot, before anything is changed. A gateway started from a read-only config (a Kubernetes
ConfigMap mount, always read-only; a read-only bind mount or file) cannot be rolled out
against in place: copy the config to a writable path, start the gateway with that copy
(``lmforge-gateway serve --config /writable/gateway.yaml``) and name the copy in the plan's
``gateway.config``; in Kubernetes, e.g. an init container copying the ConfigMap into a
writable volume (``emptyDir``) the gateway reads its config from, with the rollout run where
it can write that volume. Or mount the config writable.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError as RoundTripYAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from lmforge_core.strict import load_yaml_mapping
from rollout.errors import RolloutError

READ_ONLY_HINT = (
    "copy it to a writable path, start the gateway with that copy "
    "(lmforge-gateway serve --config <copy>) and name the copy in the plan's gateway.config "
    "(in Kubernetes, where a ConfigMap mount is always read-only: an init container copying "
    "the ConfigMap into an emptyDir the gateway reads), or mount it writable"
)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: a temporary file in the same folder, fsync, rename."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def writable_problem(path: Path) -> str | None:
    """Why ``path`` cannot be replaced atomically (None: it can): the file itself may not be
    written, or no file may be created in its folder. A file without any write permission
    bit counts as read-only even for root, who could write it anyway."""
    folder = path.parent
    if not path.is_file():
        return "it is not a file"
    if not path.stat().st_mode & 0o222 or not os.access(path, os.W_OK):
        return "the file is read-only"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"its folder {folder} is read-only"
    return None


def _commented(value: Any) -> Any:
    """Plain mappings and lists as round-trip containers (which can carry comments)."""
    if isinstance(value, Mapping):
        return CommentedMap((k, _commented(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return CommentedSeq(_commented(v) for v in value)
    return value


def _merged(old: Any, new: Any) -> Any:
    """``new``, reusing ``old``'s round-trip containers (and the comments attached to them)
    where both are mappings or both are lists."""
    if isinstance(old, CommentedMap) and isinstance(new, Mapping):
        for key in [k for k in old if k not in new]:
            del old[key]
        for key, value in new.items():
            old[key] = _merged(old[key], value) if key in old else _commented(value)
        return old
    if isinstance(old, CommentedSeq) and isinstance(new, list | tuple):
        items = [_merged(o, n) for o, n in zip(old, new, strict=False)]
        items += [_commented(n) for n in new[len(old) :]]
        del old[len(items) :]
        for i, item in enumerate(items):
            if i < len(old):
                old[i] = item
            else:
                old.append(item)
        return old
    return _commented(new)


def _last_slots(node: Any) -> list[tuple[Any, Any, int]]:
    """Where ruamel may keep the comment that follows ``node`` (the end-of-line comment of its
    last line, then the comment lines up to the next item), outermost first: per nesting
    level of its last value, (container, key, index into ``container.ca.items[key]``). A
    flow-style value (``{a: 1}``) is one line: its comment is kept by its parent."""
    slots: list[tuple[Any, Any, int]] = []
    while True:
        if isinstance(node, CommentedMap) and node:
            key: Any = next(reversed(node))
            slots.append((node, key, 2))
        elif isinstance(node, CommentedSeq) and node:
            slots.append((node, len(node) - 1, 0))
        else:
            return slots
        node = node[slots[-1][1]]
        if isinstance(node, CommentedMap | CommentedSeq) and node.fa.flow_style():
            return slots


def _token(slot: tuple[Any, Any, int]) -> Any:
    container, key, index = slot
    held = container.ca.items.get(key)
    return held[index] if held is not None and len(held) > index else None


def _replace_keeping_trailing_comments(old: Any, new: Mapping[str, Any]) -> Any:
    """:func:`_merged`, with the comment lines that followed ``old`` (they introduce the
    next entry, or end the file) moved after the merged entry's new last line."""
    holders = [slot for slot in _last_slots(old) if _token(slot) is not None]
    token = None
    following = ""
    if holders:
        container, key, index = holders[-1]
        token = container.ca.items[key][index]
        eol, _, following = str(token.value).partition("\n")
        if eol.strip():  # the end-of-line comment stays with its own line
            token = copy.copy(token)
            container.ca.items[key][index].value = eol + "\n"
        else:
            container.ca.items[key][index] = None
    merged = _merged(old, new)
    slots = _last_slots(merged)
    if token is not None and following and slots:
        container, key, index = slots[-1]
        held = container.ca.items.setdefault(key, [None, None, None, None])
        mine = held[index]
        if mine is None:
            token.value = "\n" + following
            held[index] = token
        else:
            mine.value = str(mine.value).partition("\n")[0] + "\n" + following
    return merged


class GatewayConfigFile:
    """The gateway's YAML config; only the rolled-out route's entry is ever changed, and the
    whole file is validated as the gateway would before it is replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def check_writable(self) -> None:
        """:class:`RolloutError` saying how to run a rollout when the file cannot be
        replaced (a read-only mount, a read-only file)."""
        problem = writable_problem(self.path)
        if problem is not None:
            raise RolloutError(
                f"the gateway config {self.path} cannot be rewritten ({problem}); a rollout "
                f"changes the route in the file the gateway reloads: {READ_ONLY_HINT}"
            )

    def read(self) -> dict[str, Any]:
        data = load_yaml_mapping(self.path, what="gateway config", error=RolloutError)
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            raise RolloutError(f"{self.path}: no models list")
        return data

    def route(self, name: str) -> dict[str, Any]:
        for entry in self.read()["models"]:
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry
        raise RolloutError(f"{self.path}: no route named {name!r}")

    def write_route(self, route: Mapping[str, Any]) -> bool:
        """Replace the entry named like ``route``; False when it was already so. Nothing is
        written when the file is read-only or the result would be invalid."""
        from gateway.config import ConfigError, GatewayConfig

        self.check_writable()
        data = self.read()
        index = _route_index(data["models"], route["name"])
        if index is None:
            raise RolloutError(f"{self.path}: no route named {route['name']!r}")
        if data["models"][index] == dict(route):
            return False
        data["models"][index] = dict(route)
        try:
            GatewayConfig.from_mapping(data, source=str(self.path))
        except ConfigError as exc:
            raise RolloutError(f"the rollout would write an invalid gateway config: {exc}") from exc
        text = self._with_route(route)
        if yaml.safe_load(text) != data:  # what the gateway will read is what was validated
            raise RolloutError(f"{self.path}: rewriting the route changed other parts of it")
        write_atomically(self.path, text)
        return True

    def _with_route(self, route: Mapping[str, Any]) -> str:
        """The file's text with the entry named like ``route`` replaced, the rest as it was."""
        parser = YAML(typ="rt")
        parser.preserve_quotes = True
        parser.width = 4096  # never fold a long line the operator wrote on one
        try:
            document, indent, offset = load_yaml_guess_indent(
                self.path.read_text(encoding="utf-8"), yaml=parser
            )
        except (OSError, RoundTripYAMLError) as exc:
            raise RolloutError(f"cannot read gateway config {self.path}: {exc}") from exc
        if indent is not None:
            offset = offset or 0
            parser.indent(mapping=max(2, indent - offset), sequence=indent, offset=offset)
        models = document["models"]
        index = _route_index(models, route["name"])
        if index is None:  # changed since it was read
            raise RolloutError(f"{self.path}: no route named {route['name']!r}")
        models[index] = _replace_keeping_trailing_comments(models[index], route)
        out = io.StringIO()
        parser.dump(document, out)
        return out.getvalue()


def _route_index(models: Sequence[Any], name: str) -> int | None:
    return next(
        (i for i, e in enumerate(models) if isinstance(e, Mapping) and e.get("name") == name),
        None,
    )
