// The message browser: search by message id, patient id, accession, channel and status
// (newest first, keyset pages), and one message with every stage's content side by side,
// its deliveries, reprocess (confirmed, then followed until the new generation is
// delivered) and retry of dead deliveries. The last search and its results stay in
// memory (never in the URL or in storage), so that Escape or "Back" returns to them.

import { query } from "../api.js";
import {
  appendRows, bytes, clear, facts, field, h, openDialog, problem, select, table, time,
} from "../dom.js";

const PAGE = 50;
const STATUSES = ["received", "filtered", "routed", "errored", "rejected"];
const FOLLOW_LIMIT_MS = 60000;

const state = { filters: null, rows: [], nextBeforeId: null };

// --- search ------------------------------------------------------------------------

function deliverySummary(deliveries) {
  const parts = Object.entries(deliveries || {}).map(([destination, statuses]) =>
    `${destination}: ${Object.entries(statuses).map(([s, n]) => (n > 1 ? `${s} ×${n}` : s)).join(", ")}`);
  return parts.join("; ") || "—";
}

const RESULT_COLUMNS = [
  {
    title: "Id",
    value: (m) => h("a", { href: `#/messages/${m.id}`, "aria-label": `Open message ${m.id}` },
      String(m.id)),
  },
  { title: "Received", value: (m) => time(m.received_at) },
  { title: "Channel", value: (m) => m.channel },
  { title: "Status", value: (m) => h("span", { class: `status status-${m.status}` }, m.status) },
  { title: "Patient id", value: (m) => m.patient_id ?? "—" },
  { title: "Accession", value: (m) => m.accession ?? "—" },
  { title: "Deliveries", value: (m) => deliverySummary(m.deliveries) },
  { title: "Error", value: (m) => m.error ?? "" },
];

export function mountSearch(root, { api, progress, navigate, signal }, { params }) {
  const channelFromRoute = params.get("channel");
  if (channelFromRoute && state.filters?.channel !== channelFromRoute) {
    state.filters = { channel: channelFromRoute };
    state.rows = [];
  }
  const filters = state.filters || {};
  const inputs = {
    id: h("input", { name: "id", inputmode: "numeric", autocomplete: "off" }),
    patient_id: h("input", { name: "patient_id", autocomplete: "off", value: filters.patient_id }),
    accession: h("input", { name: "accession", autocomplete: "off", value: filters.accession }),
    channel: select("channel", [["", "Any channel"]], ""),
    status: select("status", [["", "Any status"], ...STATUSES.map((s) => [s, s])],
      filters.status || ""),
  };
  if (filters.channel) inputs.channel.append(h("option", { value: filters.channel, selected: true }, filters.channel));
  const errorBox = h("div");
  const results = h("div", { class: "results" });
  const region = h("section", { "aria-labelledby": "messages-results-title" },
    h("h2", { id: "messages-results-title" }, "Results"), errorBox, results);
  const form = h("form", { role: "search", "aria-label": "Search messages", class: "filters" },
    field("Message id", inputs.id, "Opens that message"),
    field("Patient id", inputs.patient_id),
    field("Accession", inputs.accession),
    field("Channel", inputs.channel),
    field("Status", inputs.status),
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Search"),
      h("button", { type: "button", onClick: onClear }, "Clear")));
  root.append(h("h1", { id: "messages-title", tabindex: "-1" }, "Messages"), form, region);

  api.json("/api/channels", { what: "see the channels", signal }).then((answer) => {
    const chosen = inputs.channel.value;
    inputs.channel.replaceChildren(h("option", { value: "" }, "Any channel"),
      answer.channels.map((c) => h("option", { value: c.name, selected: c.name === chosen }, c.name)));
  }).catch(() => {}); // the select keeps "any"; the search itself reports errors

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = inputs.id.value.trim();
    if (id) {
      if (/^\d+$/.test(id)) navigate(`#/messages/${id}`);
      else errorBox.replaceChildren(problem("A message id is a number, such as 1042."));
      return;
    }
    state.filters = {
      patient_id: inputs.patient_id.value.trim(), accession: inputs.accession.value.trim(),
      channel: inputs.channel.value, status: inputs.status.value,
    };
    search();
  });

  function onClear() {
    for (const input of [inputs.id, inputs.patient_id, inputs.accession]) input.value = "";
    inputs.channel.value = "";
    inputs.status.value = "";
    state.filters = {};
    search();
  }

  async function load(beforeId) {
    const path = `/api/messages${query({ ...state.filters, before_id: beforeId, limit: PAGE })}`;
    const label = beforeId ? `Loading ${PAGE} more messages…` : "Searching messages…";
    return progress.run(region, label, () => api.json(path, { what: "read messages", signal }));
  }

  async function search() {
    errorBox.replaceChildren();
    try {
      const answer = await load(null);
      state.rows = answer.messages;
      state.nextBeforeId = answer.next_before_id;
      renderResults();
      performance.mark("console:messages-rendered");
    } catch (error) {
      if (!signal.aborted) errorBox.replaceChildren(problem(error));
    }
  }

  function renderResults() {
    const described = Object.entries(state.filters || {}).filter(([, v]) => v)
      .map(([k, v]) => `${k.replace("_", " ")} ${v}`).join(", ");
    const caption = `Messages, newest first${described ? ` (${described})` : ""}: `
      + `${state.rows.length}${state.nextBeforeId ? "+" : ""}`;
    const resultTable = table({
      caption, columns: RESULT_COLUMNS, rows: state.rows,
      rowAttrs: (m) => ({ dataset: { messageId: m.id } }), empty: "No message matches.",
    });
    resultTable.id = "messages-table";
    const more = h("button", { type: "button", onClick: loadMore }, `Load ${PAGE} more`);
    clear(results).append(resultTable);
    if (state.nextBeforeId) results.append(more);

    async function loadMore() {
      try {
        const answer = await load(state.nextBeforeId);
        state.rows.push(...answer.messages);
        state.nextBeforeId = answer.next_before_id;
        appendRows(resultTable.tBodies[0], RESULT_COLUMNS, answer.messages,
          (m) => ({ dataset: { messageId: m.id } }));
        resultTable.caption.textContent = `Messages, newest first: ${state.rows.length}`
          + `${state.nextBeforeId ? "+" : ""}`;
        if (!state.nextBeforeId) more.remove();
        // Focus the first new row's link, so keyboard users continue where they were.
        resultTable.tBodies[0].rows[state.rows.length - answer.messages.length]
          ?.querySelector("a")?.focus();
      } catch (error) {
        if (!signal.aborted) errorBox.replaceChildren(problem(error));
      }
    }
  }

  if (state.filters && state.rows.length) renderResults();
  else {
    state.filters ||= {};
    search();
  }
}

// --- one message -------------------------------------------------------------------

function stageCard(stage) {
  const titleId = `stage-${stage.id}`;
  const notes = [];
  if (stage.encoding === "base64") notes.push("Binary content, shown as base64.");
  if (stage.truncated) notes.push("Cut at the server's content limit.");
  if (stage.content_error) notes.push(stage.content_error);
  const heading = stage.destination ? `${stage.stage} → ${stage.destination}` : stage.stage;
  return h("section", { class: "stage", role: "listitem", "aria-labelledby": titleId },
    h("h3", { id: titleId }, heading),
    facts([["At", time(stage.at)], ["Type", stage.content_type ?? "—"],
      ["Size", bytes(stage.size)], ["SHA-256", stage.sha256 ? `${stage.sha256.slice(0, 16)}…` : "—"]],
    `Stage ${heading}`),
    stage.detail ? h("p", { class: "detail" }, stage.detail) : null,
    notes.map((note) => h("p", { class: "notice" }, note)),
    h("pre", { tabindex: "0", "aria-label": `Content at stage ${heading}` },
      stage.content ?? "(no content kept)"));
}

const DELIVERY_COLUMNS = [
  { title: "Destination", value: (d) => d.destination },
  { title: "Generation", value: (d) => String(d.generation), numeric: true },
  { title: "Status", value: (d) => h("span", { class: `status status-${d.status}` }, d.status) },
  { title: "Attempts", value: (d) => String(d.attempts), numeric: true },
  { title: "Created", value: (d) => time(d.created_at) },
  { title: "Sent", value: (d) => time(d.sent_at) },
  { title: "Next attempt", value: (d) => time(d.next_attempt_at) },
  { title: "Last error", value: (d) => d.last_error ?? "" },
];

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

export function mountDetail(root, { api, progress, announce, navigate, signal }, { match }) {
  const id = Number(match[1]);
  const title = h("h1", { id: "message-title", tabindex: "-1" }, `Message ${id}`);
  const errorBox = h("div");
  const operation = h("div", { class: "operation", "aria-live": "polite", dataset: { region: "operation" } });
  const content = h("div", { dataset: { region: "detail" } });
  root.append(
    h("p", null, h("a", { href: "#/messages" }, "← Back to results"),
      h("span", { class: "muted" }, " (or press Escape)")),
    title, errorBox, operation, content);
  let generationShown = null;

  function onKey(event) {
    if (event.key !== "Escape" || document.querySelector("dialog[open]")) return;
    navigate("#/messages");
  }
  document.addEventListener("keydown", onKey);

  async function load() {
    return progress.run(content, `Loading message ${id}…`, () =>
      api.json(`/api/messages/${id}?content=true`, { what: "read message content", signal }));
  }

  async function refresh() {
    try {
      render(await load());
    } catch (error) {
      if (!signal.aborted) errorBox.replaceChildren(problem(error));
    }
  }

  function render(message) {
    generationShown = generationShown ?? message.generation;
    const generations = [...new Set(message.stages.map((s) => s.generation))].sort((a, b) => a - b);
    if (!generations.includes(generationShown)) generationShown = message.generation;
    const generationSelect = select("generation", [
      ...generations.map((g) => [String(g), g === message.generation ? `${g} (current)` : String(g)]),
      ["all", "all generations"],
    ], String(generationShown));
    const stagesBox = h("div", { class: "stages", role: "list", "aria-label": "Stages, oldest first" });
    const showStages = () => {
      const chosen = generationSelect.value;
      generationShown = chosen === "all" ? "all" : Number(chosen);
      const stages = message.stages.filter((s) => chosen === "all" || s.generation === Number(chosen));
      stagesBox.replaceChildren(...stages.map(stageCard));
      if (!stages.length) stagesBox.append(h("p", { class: "empty" }, "No stage recorded."));
    };
    generationSelect.addEventListener("change", showStages);
    showStages();

    const dead = message.deliveries.filter((d) => d.status === "dead" && d.generation === message.generation);
    const actions = h("div", { class: "toolbar", role: "group", "aria-label": "Actions" },
      h("button", {
        type: "button", class: "primary", onClick: confirmReprocess,
        "aria-label": `Reprocess message ${id}`,
      }, "Reprocess…"),
      dead.length ? h("button", {
        type: "button", onClick: retry, "aria-label": `Retry ${dead.length} dead deliveries of message ${id}`,
      }, `Retry ${dead.length} dead`) : null);

    clear(content).append(
      facts([
        ["UID", message.uid], ["Channel", message.channel],
        ["Status", h("span", { class: `status status-${message.status}`, dataset: { field: "status" } },
          message.status)],
        ["Generation", h("span", { dataset: { field: "generation" } }, String(message.generation))],
        ["Received", time(message.received_at)], ["Updated", time(message.updated_at)],
        ["Source", message.source], ["Content type", message.content_type],
        ["Patient id", message.patient_id], ["Accession", message.accession],
        ["Study UID", message.study_uid], ["Attempts", String(message.attempts)],
        ["Error", message.error ?? "—"],
      ], `Message ${id}`),
      actions,
      h("section", { "aria-labelledby": "stages-title" },
        h("h2", { id: "stages-title" }, "Stages side by side"),
        field("Generation", generationSelect), stagesBox),
      h("section", { "aria-labelledby": "deliveries-title" },
        h("h2", { id: "deliveries-title" }, "Deliveries"),
        table({ caption: `Deliveries of message ${id}`, columns: DELIVERY_COLUMNS,
          rows: message.deliveries, empty: "No delivery (filtered, or not processed yet)." })));
    content.dataset.generation = String(message.generation);
  }

  function confirmReprocess() {
    openDialog({
      title: `Reprocess message ${id}?`,
      fields: [h("p", null, "The message runs through its channel again as a new generation ",
        "and is delivered again to every destination the channel routes it to. ",
        "The decision is recorded in the audit trail under your name.")],
      submitLabel: "Reprocess",
      onSubmit: async () => { setTimeout(reprocess, 0); },
      fallbackFocus: () => title,
    });
  }

  async function reprocess() {
    const bar = h("progress", { max: "1", "aria-label": `Reprocessing message ${id}` });
    const text = h("span", { dataset: { field: "operation-text" } }, "Asking the node…");
    operation.replaceChildren(text, bar);
    const say = (task, words, fraction = null) => {
      text.textContent = words;
      if (fraction === null) bar.removeAttribute("value");
      else bar.value = fraction;
      task.update(`Message ${id}: ${words}`, fraction);
    };
    try {
      const outcome = await progress.run(operation, `Reprocessing message ${id}…`, async (task) => {
        await api.json(`/api/messages/${id}/reprocess`, { method: "POST", what: "reprocess messages", signal });
        return follow(task, say);
      });
      generationShown = null;
      await refresh();
      if (document.activeElement === document.body) title.focus();
      text.textContent = outcome;
      bar.value = 1;
      announce(outcome);
    } catch (error) {
      if (!signal.aborted) operation.replaceChildren(problem(error));
    }
  }

  /** Poll (backing off to 2 s) until the new generation is processed and delivered. */
  async function follow(task, say) {
    const started = Date.now();
    let wait = 250;
    for (;;) {
      const message = await api.json(`/api/messages/${id}`, { what: "read messages", signal });
      const owed = message.deliveries.filter((d) => d.generation === message.generation);
      const settled = owed.filter((d) => d.status === "sent" || d.status === "dead").length;
      if (message.status === "received") {
        say(task, `generation ${message.generation} queued; waiting for the channel…`);
      } else if (settled < owed.length) {
        say(task, `delivering: ${settled} of ${owed.length} deliveries done`, settled / owed.length);
      } else {
        return `Message ${id} reprocessed: generation ${message.generation}, ${message.status}`
          + (owed.length ? `, ${settled} of ${owed.length} deliveries done.` : ".");
      }
      if (Date.now() - started > FOLLOW_LIMIT_MS || signal.aborted) {
        return `Message ${id} is still being processed (generation ${message.generation}); `
          + "reload later to see the result.";
      }
      await sleep(wait, signal);
      wait = Math.min(wait * 2, 2000);
    }
  }

  async function retry() {
    try {
      const answer = await progress.run(operation, `Retrying dead deliveries of message ${id}…`, () =>
        api.json(`/api/messages/${id}/retry`, { method: "POST", what: "retry deliveries", signal }));
      const words = `${answer.retried} dead deliveries of message ${id} queued again.`;
      operation.replaceChildren(h("p", null, words));
      announce(words);
      await refresh();
    } catch (error) {
      if (!signal.aborted) operation.replaceChildren(problem(error));
    }
  }

  refresh();
  return () => document.removeEventListener("keydown", onKey);
}
