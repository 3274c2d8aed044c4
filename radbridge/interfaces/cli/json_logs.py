"""`radbridge run --log-format json`: one JSON object per line, for log collectors.

Each line has `time` (UTC, ISO 8601), `level`, `logger`, `message`, `node`, and the
ids a call passed with `extra=` (message_id, channel, ...). What the engine logs is
already free of PHI (ids, UIDs and channel names only). An exception adds its type
and stack frames but never its text, which can quote a message's content (a
transformer's ValueError that prints a field, a peer's error body).
"""

from __future__ import annotations

import json
import logging
import traceback
from datetime import UTC, datetime
from typing import Any

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}
"""LogRecord attributes every record has: anything else came in through `extra=`."""


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring)."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "node": self.node,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info and record.exc_info[0] is not None:
            kind, _, trace = record.exc_info
            entry["exception"] = kind.__name__
            entry["stack"] = "".join(traceback.format_tb(trace)).rstrip()
        return json.dumps(entry, ensure_ascii=False)


def use_json_logs(node: str) -> None:
    """Make every handler of the root logger write JSON lines naming `node`."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter(node))
