"""Loading channel files: YAML -> ${ENV} substitution -> pydantic models -> cross-file checks.

Config is data (ARCHITECTURE principle 6): an analyst who breaks a channel file must see
every problem at once, each with the file, the line, the field and what was expected,
not a traceback or the first error only. So this loader never stops at the first issue;
it gathers `ConfigIssue`s from every file and raises one `ConfigError` at the end.

Lines come from the YAML node tree: each document is composed once, and both the values
that pydantic validates and the line numbers come from those same nodes. Pydantic's
error locations are walked alongside the model types, which tells the loader which
segments are tags of a discriminated union (dropped from the path), which model an
unknown key belongs to (to list the allowed keys) and which tags a union accepts.

Environment substitution: `${VAR}` and `${VAR:-default}` (default also when VAR is
empty) in string values, `$${` for a literal `${`. A substituted value is never printed
in an issue, since it may be a secret.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from radbridge.engine.config import (
    DOTTED_PATH_PATTERN,
    NAME_PATTERN,
    ChannelConfig,
    FilterConfig,
    TransformerConfig,
)
from radbridge.engine.config_locations import Loc, Resolved, resolve_loc
from radbridge.engine.filters import NotACallable, import_callable
from radbridge.errors import ConfigError, ConfigIssue
from radbridge.inference.cards import find_card, load_cards, shipped_folder
from radbridge.mappings.registry import get_mapping, mapping_names

__all__ = ["LoadedChannel", "channel_files", "load_channel_files", "load_channel_text",
           "load_channels"]

YAML_SUFFIXES = (".yaml", ".yml")
ARGUMENTS = "<arguments>"
"""The `file` of issues about the paths given rather than about one file."""

_ENV = re.compile(
    r"(?P<escape>\$\$\{)"
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\$\{)"
)
_STR_TAG = "tag:yaml.org,2002:str"
_PATTERN_HINTS = {
    NAME_PATTERN: "expected lower-case letters, digits, '-' and '_', starting with a letter "
    "or digit, at most 63 characters",
    DOTTED_PATH_PATTERN: "expected a Python callable as 'package.module:function'",
    r"^https?://\S+$": "expected an http:// or https:// URL",
}
_MAPPING_ERRORS = ("model_type", "model_attributes_type", "dict_type")

_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(frozen=True)
class LoadedChannel:
    """A validated channel and where it was defined (for messages at run time)."""

    config: ChannelConfig
    file: str
    line: int


@dataclass
class _Document:
    """One YAML document of one file, with what substitution did to its nodes."""

    file: str
    node: yaml.Node
    secrets: dict[int, _Expansion] = field(default_factory=dict)
    """id(node) -> the variables substituted into that node's value: never to be shown."""
    unresolved: set[int] = field(default_factory=set)
    """ids of nodes with an unset variable: their validation errors would only repeat it."""
    data: Any = None
    channel: ChannelConfig | None = None


# --- public API ----------------------------------------------------------------------


def load_channels(
    paths: Sequence[Path | str], env: Mapping[str, str] | None = None
) -> list[ChannelConfig]:
    """Every channel in `paths` (files or directories), or ConfigError listing every issue."""
    return [loaded.config for loaded in load_channel_files(paths, env)]


def load_channel_files(
    paths: Sequence[Path | str], env: Mapping[str, str] | None = None
) -> list[LoadedChannel]:
    """Like `load_channels`, keeping each channel's file and line for later messages."""
    files, issues = channel_files(paths)
    documents: list[_Document] = []
    complete = True
    for file in files:
        found = _read_file(file, os.environ if env is None else env, issues)
        complete = complete and found is not None
        documents.extend(found or [])
    return _finish(documents, issues, complete, [str(file) for file in files])


def load_channel_text(
    text: str, file: str = "<text>", env: Mapping[str, str] | None = None
) -> list[ChannelConfig]:
    """The channels in one YAML text, checked like a file of its own (handy in tests)."""
    issues: list[ConfigIssue] = []
    documents = _parse(text, file, os.environ if env is None else env, issues)
    loaded = _finish(documents or [], issues, documents is not None, [file])
    return [channel.config for channel in loaded]


def channel_files(paths: Sequence[Path | str]) -> tuple[list[Path], list[ConfigIssue]]:
    """The files named by `paths` (directories: their *.yaml/*.yml), each once, and issues."""
    issues: list[ConfigIssue] = []
    if not paths:
        issues.append(ConfigIssue(ARGUMENTS, "", "no channel files or directories given"))
    files: dict[Path, Path] = {}
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
            if not found:
                issues.append(ConfigIssue(str(path), "", "no *.yaml or *.yml files in directory"))
            files.update((p.resolve(), p) for p in found)
        elif path.is_file():
            files.setdefault(path.resolve(), path)
        else:
            issues.append(ConfigIssue(str(path), "", "no such file or directory"))
    return list(files.values()), issues


# --- per file ------------------------------------------------------------------------


def _read_file(
    path: Path, env: Mapping[str, str], issues: list[ConfigIssue]
) -> list[_Document] | None:
    """The file's documents, or None when it could not be read or parsed at all."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        issues.append(ConfigIssue(str(path), "", f"cannot read file: {exc}"))
        return None
    return _parse(text, str(path), env, issues)


def _parse(
    text: str, file: str, env: Mapping[str, str], issues: list[ConfigIssue]
) -> list[_Document] | None:
    """Compose, substitute, construct and validate every document of one file."""
    loader = yaml.SafeLoader(text)
    try:
        nodes: list[yaml.Node] = []
        while loader.check_node():
            if (node := loader.get_node()) is not None:
                nodes.append(node)
        documents = [_Document(file, node) for node in nodes if not _is_null(node)]
        if not documents:
            issues.append(ConfigIssue(file, "", "empty file; expected a channel mapping", 1))
        for document in documents:
            _prepare(document, env, loader, issues)
    except yaml.YAMLError as exc:
        issues.append(_yaml_issue(file, exc))
        return None
    finally:
        loader.dispose()
    return documents


def _prepare(
    document: _Document, env: Mapping[str, str], loader: yaml.SafeLoader,
    issues: list[ConfigIssue],
) -> None:
    """Check keys, substitute variables, build the Python data and validate it."""
    issues.extend(_duplicate_keys(document))
    issues.extend(_substitute(document, env))
    document.data = loader.construct_document(document.node)
    if not isinstance(document.data, dict):
        kind = type(document.data).__name__
        issues.append(ConfigIssue(document.file, "", f"expected a channel mapping (name, "
                                  f"source, destinations), got a {kind}", _line(document.node)))
        return
    try:
        document.channel = ChannelConfig.model_validate(document.data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            if (issue := _error_issue(document, error)) is not None:
                issues.append(issue)


def _yaml_issue(file: str, exc: yaml.YAMLError) -> ConfigIssue:
    """A YAML syntax (or tag) error at the line its mark names."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        context = f" ({exc.context})" if exc.context else ""
        line = mark.line + 1 if mark is not None else None
        return ConfigIssue(file, "", f"invalid YAML: {exc.problem}{context}", line)
    return ConfigIssue(file, "", f"invalid YAML: {exc}")


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _walk(node: yaml.Node, seen: set[int] | None = None) -> Iterator[yaml.Node]:
    """Every node under `node` once (aliases are shared nodes and may even be cyclic)."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    yield node
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _walk(item, seen)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _walk(key, seen)
            yield from _walk(value, seen)


def _duplicate_keys(document: _Document) -> Iterator[ConfigIssue]:
    """YAML keeps the last of two equal keys silently; a config file must not."""
    for node in _walk(document.node):
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[str, yaml.Node] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
                continue
            if key.value in first:
                yield ConfigIssue(document.file, "", f"key {key.value!r} appears twice in "
                                  f"one mapping (first on line {_line(first[key.value])})",
                                  _line(key))
            first.setdefault(key.value, key)


def _substitute(document: _Document, env: Mapping[str, str]) -> Iterator[ConfigIssue]:
    """Replace ${VAR} in string values in place, remembering which nodes hold secrets."""
    keys = {id(key) for node in _walk(document.node) if isinstance(node, yaml.MappingNode)
            for key, _ in node.value}
    for node in _walk(document.node):
        if (not isinstance(node, yaml.ScalarNode) or node.tag != _STR_TAG
                or id(node) in keys or "${" not in node.value):
            continue
        expansion = _Expansion(env)
        node.value = _ENV.sub(expansion.replace, node.value)
        if expansion.names:
            document.secrets[id(node)] = expansion
        if expansion.problems:
            document.unresolved.add(id(node))
        for problem in expansion.problems:
            yield ConfigIssue(document.file, "", problem, _line(node))


@dataclass
class _Expansion:
    """The variables one string value used, and the ones it could not resolve."""

    env: Mapping[str, str]
    names: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def replace(self, match: re.Match[str]) -> str:
        """re.sub callback: `${NAME}`, `${NAME:-default}` (also when empty), `$${`."""
        if match["escape"]:
            return "${"
        if match["bad"]:
            self.problems.append("malformed '${'; expected ${NAME} or ${NAME:-default}, "
                                 "or $${ for a literal '${'")
            return "${"
        name, default = match["name"], match["default"]
        value = self.env.get(name)
        if default is not None and not value:
            return default
        if value is None:
            self.problems.append(f"environment variable {name} is not set "
                                 f"(use ${{{name}:-default}} to give a default)")
            return ""
        self.names.append(name)
        self.values.append(value)
        return value


# --- mapping pydantic errors to lines and words -------------------------------------


def _find(root: yaml.Node, loc: Loc) -> tuple[yaml.Node, int, bool]:
    """The deepest node along `loc`, the line to report, and whether all of loc exists.

    A key that exists is reported at its key's line; a missing key at its parent
    mapping's line; a list item at the item's line.
    """
    node, line = root, _line(root)
    for segment in loc:
        child: tuple[yaml.Node, yaml.Node] | None = None
        if isinstance(node, yaml.MappingNode):
            matches = [pair for pair in node.value if str(pair[0].value) == str(segment)]
            child = matches[-1] if matches else None  # YAML keeps the last of equal keys
        elif (isinstance(node, yaml.SequenceNode) and isinstance(segment, int)
              and 0 <= segment < len(node.value)):
            child = (node.value[segment], node.value[segment])
        if child is None:
            return node, line, False
        line, node = _line(child[0]), child[1]
    return node, line, True


def _error_issue(document: _Document, error: ErrorDetails) -> ConfigIssue | None:
    """One pydantic error as a ConfigIssue: path without tags, line, what was expected."""
    resolved = resolve_loc(error["loc"])
    loc, kind = resolved.loc, error["type"]
    node, _, complete = _find(document.node, loc)
    if complete and id(node) in document.unresolved:
        return None  # the unset variable is already reported
    if kind == "extra_forbidden" and resolved.parent is not None:
        keys = sorted(info.alias or name for name, info in resolved.parent.model_fields.items())
        message = _unknown("key", str(loc[-1]), keys)
    elif kind == "missing":
        message = "required"
    elif kind in ("union_tag_invalid", "union_tag_not_found") and resolved.discriminator:
        loc = [*loc, resolved.discriminator]
        message = _tag_message(error, resolved, _find(document.node, loc)[0])
    else:
        message = _plain_message(error, document, node if complete else None)
    return _issue(document, loc, message)


def _tag_message(error: ErrorDetails, resolved: Resolved, node: yaml.Node) -> str:
    """A missing or unknown tag of a discriminated union, listing the tags it takes."""
    tags = list(resolved.tags)
    if error["type"] == "union_tag_not_found":
        return f"required; expected one of: {', '.join(tags)}"
    if _is_null(node):
        return (f"empty (a bare null means no value in YAML); expected one of: "
                f"{', '.join(tags)}" + ('; write "null" in quotes' if "null" in tags else ""))
    return _unknown(str(resolved.discriminator), str(error.get("ctx", {}).get("tag")), tags)


def _unknown(what: str, given: str, allowed: Sequence[str]) -> str:
    """Name the bad word, the words allowed and, when one is close, the likely fix."""
    message = f"unknown {what} {given!r}; expected one of: {', '.join(allowed)}"
    if close := difflib.get_close_matches(given, allowed, n=1):
        message += f" (did you mean {close[0]!r}?)"
    return message


def _plain_message(error: ErrorDetails, document: _Document, node: yaml.Node | None) -> str:
    """Pydantic's message in config words, plus the offending value shortened."""
    kind, message = error["type"], error["msg"].removeprefix("Value error, ")
    if kind in _MAPPING_ERRORS:
        message = "expected a mapping"
    elif kind == "list_type":
        message = "expected a list"
    elif kind == "string_pattern_mismatch":
        pattern = str(error.get("ctx", {}).get("pattern", ""))
        message = _PATTERN_HINTS.get(pattern, message)
    value = error.get("input")
    if node is not None and id(node) in document.secrets:
        names = ", ".join(f"${{{name}}}" for name in document.secrets[id(node)].names)
        return f"{message}; got the value of {names} (not shown)"
    quoted = isinstance(value, str) and repr(value) in message
    if (isinstance(value, str | int | float | bool) or value is None) and not quoted:
        message = f"{message}; got {_show(value)}"
    return message


def _show(value: object, limit: int = 40) -> str:
    """A scalar as YAML users write it, cut to `limit` characters."""
    if value is None:
        return "null"
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _issue(document: _Document, loc: Loc, message: str) -> ConfigIssue:
    """An issue at `loc` in `document`, with any substituted value under it blanked out."""
    node, line, _ = _find(document.node, loc)
    for inner in _walk(node):
        if (expansion := document.secrets.get(id(inner))) is not None:
            for secret in filter(None, expansion.values):
                message = message.replace(secret, "***")
    return ConfigIssue(document.file, _format_path(loc), message, line)


def _format_path(loc: Loc) -> str:
    """('destinations', 0, 'queue') -> 'destinations[0].queue'."""
    text = ""
    for segment in loc:
        text += f"[{segment}]" if isinstance(segment, int) else f".{segment}"
    return text.lstrip(".")


# --- checks across files -------------------------------------------------------------


def _finish(
    documents: list[_Document], issues: list[ConfigIssue], complete: bool, files: list[str]
) -> list[LoadedChannel]:
    """Run the cross-file checks, then raise every issue sorted by file and line.

    The checks read the raw data, so a channel that failed validation still gets its
    references checked: the analyst sees every problem in one run.
    """
    issues.extend(_duplicate_channels(documents))
    sources = _source_types(documents)
    for document in documents:
        issues.extend(_channel_targets(document, sources, complete))
        issues.extend(_references(document))
        issues.extend(_model_cards(document))
    if issues:
        order = {file: index for index, file in enumerate(files)}
        issues.sort(key=lambda issue: (order.get(issue.file, -1), issue.line or 0))
        raise ConfigError(issues)
    return [LoadedChannel(doc.channel, doc.file, _line(doc.node))
            for doc in documents if doc.channel is not None]


def _raw(document: _Document) -> dict[str, Any]:
    return document.data if isinstance(document.data, dict) else {}


def _items(data: dict[str, Any], key: str) -> list[tuple[int, Any]]:
    value = data.get(key)
    return list(enumerate(value)) if isinstance(value, list) else []


def _parsed(model: type[_Model], value: Any) -> _Model | None:
    """`value` as `model`, or None when absent or invalid (then it is reported already)."""
    if value is None:
        return None
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _duplicate_channels(documents: list[_Document]) -> Iterator[ConfigIssue]:
    """A channel name must be unique across every file loaded together."""
    first: dict[str, _Document] = {}
    for document in documents:
        name = _raw(document).get("name")
        if not isinstance(name, str):
            continue
        if name in first:
            earlier = first[name]
            where = f"{earlier.file}:{_find(earlier.node, ['name'])[1]}"
            yield _issue(document, ["name"], f"channel {name!r} is defined twice; "
                         f"first in {where}")
        first.setdefault(name, document)


def _source_types(documents: list[_Document]) -> dict[str, str | None]:
    """Channel name -> its source type as written (None when it has none)."""
    kinds: dict[str, str | None] = {}
    for document in documents:
        data = _raw(document)
        source = data.get("source")
        kind = source.get("type") if isinstance(source, dict) else None
        if isinstance(data.get("name"), str):
            kinds.setdefault(data["name"], kind if isinstance(kind, str) else None)
    return kinds


def _channel_targets(
    document: _Document, sources: dict[str, str | None], complete: bool
) -> Iterator[ConfigIssue]:
    """A 'channel' destination must hand over to a loaded channel with a 'channel' source.

    When some file could not be parsed (`complete` false) a missing target is not
    reported: it may be defined in that file.
    """
    receivers = sorted(name for name, kind in sources.items() if kind == "channel")
    for loc, target in _handover_targets(_raw(document)):
        kind = sources.get(target)
        if kind is not None and kind != "channel":
            yield _issue(document, loc, f"channel {target!r} has source type {kind!r}; "
                         "expected a channel whose source type is 'channel'")
        elif target not in sources and complete:
            yield _issue(document, loc, f"no channel named {target!r}; expected one of the "
                         f"channels with source type 'channel': {', '.join(receivers) or 'none'}")


def _handover_targets(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    """Every place a channel names another channel it feeds: 'channel' destinations,
    a retrieval's `into_channel`, inference's and results' `results_channel`, results'
    `pacs_channel`, study assembly's `ready_channel`."""
    for index, raw in _items(data, "destinations"):
        if not isinstance(raw, dict):
            continue
        keys = {"channel": ("channel",), "dicom-retrieve": ("into_channel",),
                "inference": ("results_channel",),
                "results": ("results_channel", "pacs_channel")}.get(str(raw.get("type")), ())
        for key in keys:
            if isinstance(raw.get(key), str):
                yield ["destinations", index, key], raw[key]
    assembly = data.get("assembly")
    if isinstance(assembly, dict) and isinstance(assembly.get("ready_channel"), str):
        yield ["assembly", "ready_channel"], assembly["ready_channel"]


def _transformer_loc(document: _Document, index: int, key: str) -> Loc:
    """Point at `key` of a transformer, or at the item itself for the string shorthand."""
    loc: Loc = ["transformers", index]
    node, _, _ = _find(document.node, loc)
    return loc if isinstance(node, yaml.ScalarNode) else [*loc, key]


def _model_cards(document: _Document) -> Iterator[ConfigIssue]:
    """The model cards an inference destination names must load, and its `models` be
    among them. Relative card folders depend on the data directory: the node checks those
    when it starts."""
    for index, raw in _items(_raw(document), "destinations"):
        if not isinstance(raw, dict) or raw.get("type") != "inference":
            continue
        given = raw.get("cards") or []
        if not isinstance(given, list):
            continue
        folders = [Path(p).expanduser() for p in given if isinstance(p, str)]
        if any(not folder.is_absolute() for folder in folders):
            continue
        try:
            cards = load_cards(folders or [shipped_folder()])
        except ConfigError as exc:
            for problem in exc.issues:
                yield _issue(document, ["destinations", index, "cards"],
                             f"model card {problem.file}: {problem.path or 'file'}: "
                             f"{problem.message}")
            continue
        wanted = raw.get("models") or []
        for position, name in enumerate(wanted if isinstance(wanted, list) else []):
            if isinstance(name, str) and find_card(cards, name) is None:
                known = ", ".join(card.key for _, card in cards) or "none"
                yield _issue(document, ["destinations", index, "models", position],
                             f"no model card {name!r}; expected one of: {known}")


def _references(document: _Document) -> Iterator[ConfigIssue]:
    """Transformer names must be registered; every 'pkg.mod:attr' must import and be callable."""
    data = _raw(document)
    functions: list[tuple[Loc, FilterConfig | TransformerConfig | None]] = [
        (["filter", "function"], _parsed(FilterConfig, data.get("filter")))
    ]
    for index, raw in _items(data, "transformers"):
        transformer = _parsed(TransformerConfig, raw)
        functions.append((_transformer_loc(document, index, "function"), transformer))
        if transformer is not None and transformer.name is not None:
            try:
                get_mapping(transformer.name)
            except KeyError:
                message = _unknown("mapping", transformer.name, mapping_names())
                yield _issue(document, _transformer_loc(document, index, "name"), message)
    for index, raw in _items(data, "destinations"):
        step = _parsed(FilterConfig, raw.get("filter")) if isinstance(raw, dict) else None
        functions.append((["destinations", index, "filter", "function"], step))
    for loc, holder in functions:
        dotted = holder.function if holder is not None else None
        if dotted is not None and (problem := _import_problem(dotted)) is not None:
            yield _issue(document, loc, problem)


def _import_problem(dotted: str) -> str | None:
    """Why 'pkg.mod:attr' cannot be used as a function, in one line; None when it can."""
    module_name = dotted.partition(":")[0]
    try:
        import_callable(dotted)
    except NotACallable as exc:
        return str(exc)
    except ImportError as exc:
        return f"cannot import {module_name!r}: {_one_line(exc)}"
    except Exception as exc:  # user code failing at import: report it, do not crash
        return f"importing {module_name!r} raised {type(exc).__name__}: {_one_line(exc)}"
    return None


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
