// Files built in the browser (the audit export when the server has no export route, in
// the server's own CSV and JSON layouts) and saving any Blob as a download without
// putting data in a URL the server ever sees.

/** The columns, in order, of the server's CSV export (engine/audit_export/events.py). */
export const AUDIT_COLUMNS = ["seq", "chain", "at", "actor", "action", "outcome", "channel",
  "message_id", "patient_id", "accession", "study_uid", "detail", "hash"];

const FORMULA_START = /^[=+\-@\t\r]/;

/** JSON with object keys sorted at every level, as the server writes `detail`. */
export function sortedJson(value) {
  if (Array.isArray(value)) return `[${value.map(sortedJson).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort()
      .map((key) => `${JSON.stringify(key)}:${sortedJson(value[key])}`).join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

/**
 * One CSV field (RFC 4180): quoted when it holds a comma, quote or line break. A cell a
 * spreadsheet would run as a formula (= + - @ tab or CR first) gets a leading apostrophe,
 * as the server's export does.
 */
export function csvField(value) {
  if (value === null || value === undefined) return "";
  let text = typeof value === "object" ? sortedJson(value) : String(value);
  if (FORMULA_START.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** Rows of objects as CSV text with a header line, CRLF line ends. */
export function toCsv(rows, columns) {
  const lines = [columns.join(",")];
  for (const row of rows) lines.push(columns.map((column) => csvField(row[column])).join(","));
  return `${lines.join("\r\n")}\r\n`;
}

/** Events as one JSON array, one event per line (the server's `json` format). */
export function toJsonArray(rows) {
  return rows.length ? `[\n${rows.map((row) => JSON.stringify(row)).join(",\n")}\n]\n` : "[]\n";
}

/** A file name such as audit-20261125-140312.csv (local time). */
export function exportName(prefix, extension, at = new Date()) {
  const pad = (n) => String(n).padStart(2, "0");
  const stamp = `${at.getFullYear()}${pad(at.getMonth() + 1)}${pad(at.getDate())}-`
    + `${pad(at.getHours())}${pad(at.getMinutes())}${pad(at.getSeconds())}`;
  return `${prefix}-${stamp}.${extension}`;
}

/** The file name a Content-Disposition header gives, if any. */
export function dispositionName(header) {
  const found = /filename="?([^";]+)"?/i.exec(header || "");
  return found ? found[1] : null;
}

/** Save `blob` as `name` (an object URL, revoked once the download has started). */
export function save(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
