"""Channel YAML as audit sees it: one text per channel, and diffs with secrets masked.

The audit of a runtime change keeps the unified diff of the YAML as it was written
(`${EHR_TOKEN}` stays a reference, never its value). Channel files carry no PHI, but a
header may hold a literal token or password, so the value of every key named like one
(token, password, secret, authorization, api key, credential) is replaced by ***, in
block and flow style, as are the password of a URL (`https://user:pass@host`) and
secret-looking query parameters (`?access_token=...`).
"""

from __future__ import annotations

import difflib
import re

import yaml

MASK = "***"
DIFF_LIMIT = 64 * 1024
"""Characters of a diff kept in an audit event; a longer one is cut and says so."""

_SECRET_WORDS = r"token|passw(?:or)?d|secret|authori[sz]ation|api[-_]?key|credential"
_SECRET_KEY = rf"[\w.-]*(?:{_SECRET_WORDS})[\w.-]*"
_SECRET_PAIR = re.compile(
    rf"""(?P<key>(?P<quote>["']?){_SECRET_KEY}(?P=quote))(?P<sep>\s*:[ \t]*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^,}\]#\n]*[^,}\]#\s])""",
    re.IGNORECASE,
)
_QUERY_SECRET = re.compile(rf"(?P<head>[?&]{_SECRET_KEY}=)[^&#\s\"']+", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@/\s]+(?P<at>@)",
                           re.IGNORECASE)


def mask_secrets(line: str) -> str:
    """`line` with the values of secret-looking keys and URL passwords replaced by ***."""
    masked = _SECRET_PAIR.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", line)
    masked = _QUERY_SECRET.sub(lambda m: f"{m['head']}{MASK}", masked)
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", masked)


def channel_diff(name: str, old: str, new: str) -> str:
    """The unified diff from `old` to `new` YAML of channel `name`, secrets masked."""
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(),
                                 fromfile=f"a/{name}.yaml", tofile=f"b/{name}.yaml",
                                 lineterm="")
    text = "\n".join(mask_secrets(line) for line in lines)
    if len(text) > DIFF_LIMIT:
        return text[:DIFF_LIMIT] + f"\n... (cut at {DIFF_LIMIT} characters)"
    return text


def channel_texts(text: str) -> dict[str, str]:
    """Channel name -> the YAML text that defines it (the whole text for one document,
    else each document's own lines). Documents without a `name` are left out: they
    cannot validate, and the loader reports them."""
    try:
        nodes = [node for node in yaml.compose_all(text, Loader=yaml.SafeLoader)
                 if isinstance(node, yaml.MappingNode)]
    except yaml.YAMLError:
        return {}
    found: dict[str, str] = {}
    for node in nodes:
        name = next((value.value for key, value in node.value
                     if isinstance(key, yaml.ScalarNode) and key.value == "name"
                     and isinstance(value, yaml.ScalarNode)), None)
        if name is None:
            continue
        own = text if len(nodes) == 1 else text[node.start_mark.index:node.end_mark.index]
        found.setdefault(str(name), own if own.endswith("\n") else own + "\n")
    return found
