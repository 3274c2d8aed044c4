// Audit search: every filter GET /api/audit takes, results newest first in keyset pages,
// export as CSV or JSON (the server's /api/audit/export when it has one, else every page
// fetched and the file built here), and a study's whole cycle (/api/audit/studies/UID)
// when the server offers it.

import { query } from "../api.js";
import {
  appendRows, clear, facts, field, h, problem, select, table, time,
} from "../dom.js";
import {
  AUDIT_COLUMNS, dispositionName, exportName, save, toCsv, toJsonArray,
} from "../export.js";

const TEXT_FILTERS = [
  ["patient_id", "Patient id"], ["accession", "Accession"], ["study_uid", "Study UID"],
  ["channel", "Channel"], ["actor", "Actor"], ["action", "Action"], ["outcome", "Outcome"],
];
const EXPORT_PAGE = 1000;
const EXPORT_CAP = 100000;

function detailCell(event) {
  const text = JSON.stringify(event.detail ?? {});
  if (text.length <= 60) return h("code", null, text);
  return h("details", null, h("summary", null, `${text.slice(0, 50)}…`),
    h("pre", null, JSON.stringify(event.detail, null, 2)));
}

const COLUMNS = [
  { title: "Seq", value: (e) => String(e.seq), numeric: true },
  { title: "Time", value: (e) => time(e.at) },
  { title: "Actor", value: (e) => e.actor },
  { title: "Action", value: (e) => e.action },
  { title: "Outcome", value: (e) => e.outcome },
  { title: "Channel", value: (e) => e.channel ?? "" },
  {
    title: "Message",
    value: (e) => (e.message_id ? h("a", { href: `#/messages/${e.message_id}` }, String(e.message_id)) : ""),
  },
  { title: "Patient id", value: (e) => e.patient_id ?? "" },
  { title: "Accession", value: (e) => e.accession ?? "" },
  { title: "Study UID", value: (e) => e.study_uid ?? "" },
  { title: "Detail", value: detailCell },
];

/** A JSON value of unknown shape as tables and lists (the study cycle's sections). */
function renderValue(value) {
  if (Array.isArray(value)) {
    if (!value.length) return h("p", { class: "muted" }, "none");
    if (value.every((item) => item && typeof item === "object" && !Array.isArray(item))) {
      const keys = [...new Set(value.flatMap(Object.keys))].slice(0, 12);
      return table({
        caption: `${value.length} entries`,
        columns: keys.map((key) => ({ title: key, value: (row) => scalar(row[key]) })),
        rows: value,
      });
    }
    return h("ul", null, value.map((item) => h("li", null, renderValue(item))));
  }
  if (value && typeof value === "object") {
    return h("div", { class: "nested" }, Object.entries(value).map(([key, item]) =>
      (item && typeof item === "object"
        ? h("section", null, h("h3", null, key), renderValue(item))
        : facts([[key, scalar(item)]], key))));
  }
  return scalar(value);
}

function scalar(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

export function mount(root, { api, progress, announce, signal }) {
  const inputs = Object.fromEntries(TEXT_FILTERS.map(([name]) =>
    [name, h("input", { name, autocomplete: "off" })]));
  inputs.outcome.setAttribute("list", "audit-outcomes");
  inputs.message_id = h("input", { name: "message_id", inputmode: "numeric", autocomplete: "off" });
  inputs.since = h("input", { name: "since", type: "datetime-local", step: "1" });
  inputs.until = h("input", { name: "until", type: "datetime-local", step: "1" });
  const pageSize = select("limit", [["100", "100"], ["500", "500"], ["1000", "1000"]], "100");
  const errorBox = h("div");
  const results = h("div");
  const cycle = h("div");
  const exportStatus = h("p", { class: "muted", "aria-live": "polite", dataset: { field: "export-status" } });
  const exportCsv = h("button", { type: "button", onClick: () => exportEvents("csv") }, "Export CSV");
  const exportJson = h("button", { type: "button", onClick: () => exportEvents("json") }, "Export JSON");
  const cycleButton = h("button", { type: "button", onClick: showCycle }, "Study cycle");
  const region = h("section", { "aria-labelledby": "audit-results-title" },
    h("h2", { id: "audit-results-title" }, "Events"),
    h("div", { class: "toolbar", role: "group", "aria-label": "Export" },
      exportCsv, exportJson, cycleButton), exportStatus, errorBox, results, cycle);
  const form = h("form", { role: "search", "aria-label": "Search the audit trail", class: "filters" },
    TEXT_FILTERS.map(([name, label]) => field(label, inputs[name],
      name === "action" ? "Exact, or a prefix such as message.*" : undefined)),
    h("datalist", { id: "audit-outcomes" }, ["success", "failure"].map((v) => h("option", { value: v }))),
    field("Message id", inputs.message_id),
    field("Since", inputs.since), field("Until", inputs.until),
    field("Page size", pageSize),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Search")));
  root.append(h("h1", { id: "audit-title", tabindex: "-1" }, "Audit trail"), form, region);

  let filters = {};
  let nextBeforeSeq = null;

  function readFilters() {
    const chosen = {};
    for (const [name] of TEXT_FILTERS) chosen[name] = inputs[name].value.trim();
    const messageId = inputs.message_id.value.trim();
    if (messageId && !/^\d+$/.test(messageId)) throw new Error("A message id is a number.");
    chosen.message_id = messageId;
    for (const name of ["since", "until"]) {
      const value = inputs[name].value;
      chosen[name] = value ? new Date(value).toISOString() : "";
    }
    return chosen;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.replaceChildren();
    try {
      filters = readFilters();
    } catch (error) {
      errorBox.replaceChildren(problem(error));
      return;
    }
    await search();
  });

  async function page(beforeSeq, limit = Number(pageSize.value)) {
    return api.json(`/api/audit${query({ ...filters, before_seq: beforeSeq, limit })}`,
      { what: "search the audit trail", signal });
  }

  async function search() {
    try {
      const answer = await progress.run(region, "Searching the audit trail…", () => page(null));
      nextBeforeSeq = answer.next_before_seq;
      const view = table({
        caption: `Audit events, newest first: ${answer.events.length}${nextBeforeSeq ? "+" : ""}`,
        columns: COLUMNS, rows: answer.events, rowAttrs: (e) => ({ dataset: { seq: e.seq } }),
        empty: "No event matches.",
      });
      view.id = "audit-table";
      const more = h("button", { type: "button" }, "Load more");
      more.addEventListener("click", async () => {
        try {
          const next = await progress.run(region, "Loading more events…", () => page(nextBeforeSeq));
          const before = view.tBodies[0].rows.length;
          appendRows(view.tBodies[0], COLUMNS, next.events, (e) => ({ dataset: { seq: e.seq } }));
          nextBeforeSeq = next.next_before_seq;
          view.caption.textContent = `Audit events, newest first: ${view.tBodies[0].rows.length}`
            + `${nextBeforeSeq ? "+" : ""}`;
          if (!nextBeforeSeq) more.remove();
          view.tBodies[0].rows[before]?.querySelector("a, summary")?.focus();
        } catch (error) {
          if (!signal.aborted) errorBox.replaceChildren(problem(error));
        }
      });
      clear(results).append(view);
      if (nextBeforeSeq) results.append(more);
      announce(`${answer.events.length} audit events found.`);
    } catch (error) {
      if (!signal.aborted) errorBox.replaceChildren(problem(error));
    }
  }

  /** The server's export when it has the route; null when it does not (404/405). */
  async function serverExport(format, task) {
    let response;
    try {
      response = await api.raw(`/api/audit/export${query({ ...filters, format })}`,
        { what: "export the audit trail", signal });
    } catch (error) {
      if (error.status === 404 || error.status === 405) return null;
      throw error;
    }
    const reader = response.body.getReader();
    const chunks = [];
    let received = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      received += value.length;
      task.update(`Exporting: ${(received / 1024).toFixed(0)} KiB received…`);
    }
    const type = response.headers.get("content-type") || "application/octet-stream";
    const name = dispositionName(response.headers.get("content-disposition"))
      || exportName("audit", format);
    return { blob: new Blob(chunks, { type }), name };
  }

  /** Every page of /api/audit under the filters, up to EXPORT_CAP events. */
  async function browserExport(format, task) {
    const events = [];
    let beforeSeq = null;
    do {
      const answer = await page(beforeSeq, EXPORT_PAGE);
      events.push(...answer.events);
      beforeSeq = answer.next_before_seq;
      task.update(`Exporting: ${events.length} events…`);
    } while (beforeSeq && events.length < EXPORT_CAP);
    const capped = Boolean(beforeSeq);
    const blob = format === "csv"
      ? new Blob([toCsv(events, AUDIT_COLUMNS)], { type: "text/csv" })
      : new Blob([toJsonArray(events)], { type: "application/json" });
    return { blob, name: exportName("audit", format), count: events.length, capped };
  }

  async function exportEvents(format) {
    exportStatus.textContent = "";
    errorBox.replaceChildren();
    for (const button of [exportCsv, exportJson]) button.disabled = true;
    try {
      const file = await progress.run(region, `Exporting audit events as ${format.toUpperCase()}…`,
        async (task) => (await serverExport(format, task)) || browserExport(format, task));
      save(file.blob, file.name);
      const words = `Saved ${file.name}`
        + (file.count !== undefined ? ` (${file.count} events${file.capped ? `, the first ${EXPORT_CAP}: narrow the filters for the rest` : ""})` : "")
        + ".";
      exportStatus.textContent = words;
      announce(words);
    } catch (error) {
      if (!signal.aborted) errorBox.replaceChildren(problem(error));
    } finally {
      for (const button of [exportCsv, exportJson]) button.disabled = false;
    }
  }

  async function showCycle() {
    const studyUid = inputs.study_uid.value.trim();
    clear(cycle);
    if (!studyUid) {
      cycle.append(problem("Type a Study UID in the filters to see its cycle."));
      inputs.study_uid.focus();
      return;
    }
    try {
      const answer = await progress.run(region, "Reconstructing the study's cycle…", () =>
        api.json(`/api/audit/studies/${encodeURIComponent(studyUid)}`,
          { what: "see a study's cycle", signal }));
      cycle.append(h("section", { "aria-labelledby": "cycle-title" },
        h("h2", { id: "cycle-title", tabindex: "-1" }, `Study ${studyUid}: its cycle`),
        renderValue(answer)));
      cycle.querySelector("h2").focus();
    } catch (error) {
      if (!signal.aborted) cycle.append(problem(error.status === 404 ? `${error.message}. `
        + "This server may not offer the study cycle view yet." : error));
    }
  }
}
