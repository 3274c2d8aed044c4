"""Reading what a FHIR server answered: OperationOutcome issues and transaction statuses.

Both produce short text for a delivery record. An OperationOutcome's diagnostics may
quote the rejected content, so that text goes to the store (the delivery's last error),
never to the logs: the dispatcher logs only the part before the first colon.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

FAILING = ("fatal", "error")
LIMIT = 1500
"""Characters of issue text kept (the store keeps 2,000 of a delivery's error)."""


def parse_json(body: bytes) -> Any:
    """The body as JSON, or None when it is not JSON (an HTML error page, nothing)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def issues_text(outcome: object, limit: int = LIMIT) -> str:
    """The OperationOutcome's issues, errors first: 'severity code at path: text; ...'."""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    issues = [issue for issue in outcome.get("issue") or [] if isinstance(issue, dict)]
    issues.sort(key=lambda issue: issue.get("severity") not in FAILING)
    text = "; ".join(_issue(issue) for issue in issues)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _issue(issue: dict[str, Any]) -> str:
    details = issue.get("details") if isinstance(issue.get("details"), dict) else {}
    message = issue.get("diagnostics") or (details or {}).get("text") or ""
    where = issue.get("expression") or issue.get("location") or []
    head = " ".join(str(part) for part in (issue.get("severity"), issue.get("code")) if part)
    if isinstance(where, list) and where:
        head += f" at {', '.join(str(path) for path in where[:3])}"
    return f"{head}: {message}" if message else head


def entry_statuses(bundle: object) -> Counter[str]:
    """How many entries of a transaction/batch-response answered each status code."""
    counts: Counter[str] = Counter()
    if not isinstance(bundle, dict):
        return counts
    for entry in bundle.get("entry") or []:
        response = entry.get("response") if isinstance(entry, dict) else None
        status = str(response.get("status", "")) if isinstance(response, dict) else ""
        counts[status.split(" ", 1)[0] or "?"] += 1
    return counts


def failed_entries(bundle: object) -> list[tuple[int, str, str]]:
    """(position, status, issues) of each batch-response entry that did not succeed."""
    failed = []
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    for position, entry in enumerate(entries or []):
        response = entry.get("response") if isinstance(entry, dict) else None
        if not isinstance(response, dict):
            continue
        status = str(response.get("status", "")).split(" ", 1)[0]
        if not status.startswith("2"):
            failed.append((position, status, issues_text(response.get("outcome"), 300)))
    return failed


def minimal_response(bundle: object) -> bytes | None:
    """The transaction-response with only each entry's status, location and etag: what
    the EHR assigned, without the resources it echoed back (PHI the store need not keep)."""
    if not isinstance(bundle, dict):
        return None
    entries = []
    for entry in bundle.get("entry") or []:
        response = entry.get("response") if isinstance(entry, dict) else None
        if isinstance(response, dict):
            entries.append({"response": {key: response[key] for key in
                                         ("status", "location", "etag", "lastModified")
                                         if key in response}})
    kept = {"resourceType": "Bundle", "type": bundle.get("type"), "entry": entries}
    return json.dumps(kept, separators=(",", ":")).encode("utf-8")
