// The channels dashboard: every channel's counts, queue depth and oldest pending age,
// polled every 2 s; rates are the change between two polls over the time between them.
// A channel is "stuck" when its oldest pending delivery is older than the threshold, or
// when its errored (or dead-letter) count rose within the last 30 s. Cells are updated
// in place, so focus and reading position survive each poll.

import { query } from "../api.js";
import { age, count, field, h, problem, rate, time } from "../dom.js";

const POLL_MS = 2000;
const DEFAULT_STUCK_SECONDS = 60;
/** Errors that rose within this long count as "rising" (one poll alone would flicker). */
const RISING_WINDOW_MS = 30000;

const COLUMNS = [
  { key: "name", title: "Channel" },
  { key: "received", title: "Received", numeric: true },
  { key: "filtered", title: "Filtered", numeric: true },
  { key: "sent", title: "Sent", numeric: true },
  { key: "errored", title: "Errored or refused", numeric: true },
  { key: "dead", title: "Dead letters", numeric: true },
  { key: "queue", title: "Queue depth", numeric: true },
  { key: "oldest", title: "Oldest pending", numeric: true },
  { key: "inRate", title: "In (msg/s)", numeric: true },
  { key: "sentRate", title: "Sent (msg/s)", numeric: true },
  { key: "state", title: "State" },
];

/** The figures the dashboard shows for one channel, from GET /api/channels. */
export function summarize(channel) {
  const stats = channel.statistics;
  const destinations = Object.values(stats.destinations || {});
  const sum = (key) => destinations.reduce((total, d) => total + (d[key] || 0), 0);
  return {
    received: stats.received || 0,
    filtered: stats.filtered || 0,
    errored: (stats.errored || 0) + (stats.rejected || 0),
    sent: sum("sent"),
    dead: sum("dead"),
    queue: sum("pending") + sum("in_flight") + (stats.waiting || 0),
    oldest: destinations.reduce((m, d) => Math.max(m, d.oldest_pending_seconds || 0), 0),
  };
}

/** Messages/s between two samples {at (ms), figures}; null without an earlier sample. */
export function rates(previous, latest) {
  if (!previous) return { inRate: null, sentRate: null };
  const seconds = (latest.at - previous.at) / 1000;
  if (seconds <= 0) return { inRate: null, sentRate: null };
  const per = (key) => Math.max(0, latest.figures[key] - previous.figures[key]) / seconds;
  return { inRate: per("received"), sentRate: per("sent") };
}

/**
 * Why a channel is stuck, or null when it is not. `earliest` is the oldest sample kept
 * (RISING_WINDOW_MS ago at most): errors that rose since then count as rising.
 */
export function stuckReason(earliest, latest, thresholdSeconds) {
  const reasons = [];
  if (latest.figures.oldest > thresholdSeconds) {
    reasons.push(`oldest pending ${age(latest.figures.oldest)}`);
  }
  const rise = (key) => (earliest ? latest.figures[key] - earliest.figures[key] : 0);
  if (rise("errored") > 0) reasons.push(`errors rising (+${rise("errored")})`);
  if (rise("dead") > 0) reasons.push(`dead letters rising (+${rise("dead")})`);
  return reasons.length ? reasons.join(", ") : null;
}

function channelRow(channel, cells) {
  const link = h("a", { href: `#/messages${query({ channel: channel.name })}` }, channel.name);
  const row = h("tr", { dataset: { channel: channel.name } });
  for (const column of COLUMNS) {
    const cell = h("td", { class: column.numeric ? "numeric" : null, dataset: { field: column.key } });
    cells[column.key] = cell;
    row.append(cell);
  }
  cells.name.append(link, h("span", { class: "muted block" },
    `${channel.source} → ${channel.destinations.map((d) => d.name).join(", ") || "nothing"}`
    + (channel.enabled ? "" : " (disabled)")));
  return row;
}

export function mount(root, { api, progress, announce, signal }) {
  const threshold = h("input", {
    type: "number", min: "1", step: "1", value: String(DEFAULT_STUCK_SECONDS), name: "stuck",
  });
  const summary = h("p", { class: "summary", "aria-live": "polite" });
  const updated = h("p", { class: "muted" });
  const errorBox = h("div");
  const body = h("tbody");
  const region = h("section", { "aria-labelledby": "channels-title" },
    h("table", { id: "channels-table" },
      h("caption", null, "Channels with live statistics (updated every 2 s)"),
      h("thead", null, h("tr", null, COLUMNS.map((column) =>
        h("th", { scope: "col", class: column.numeric ? "numeric" : null }, column.title)))),
      body));
  root.append(
    h("h1", { id: "channels-title", tabindex: "-1" }, "Channels"),
    h("div", { class: "toolbar" },
      field("Stuck when the oldest pending delivery is older than (seconds)", threshold)),
    summary, errorBox, region, updated);

  const rows = new Map(); // name -> {row, cells, history (samples), stuck (reason)}
  let timer = null;
  let first = true;

  function render(channels, at) {
    const limit = Number(threshold.value) || DEFAULT_STUCK_SECONDS;
    const seen = new Set();
    const newlyStuck = [];
    let stuckCount = 0;
    for (const channel of channels) {
      seen.add(channel.name);
      let entry = rows.get(channel.name);
      if (!entry) {
        entry = { cells: {}, history: [], stuck: null };
        entry.row = channelRow(channel, entry.cells);
        rows.set(channel.name, entry);
      }
      body.append(entry.row); // keeps the API's (sorted) order
      const latest = { at, figures: summarize(channel) };
      const previous = entry.history[entry.history.length - 1];
      const figures = { ...latest.figures, ...rates(previous, latest) };
      entry.history = entry.history.filter((sample) => at - sample.at <= RISING_WINDOW_MS);
      const reason = stuckReason(entry.history[0], latest, limit);
      entry.history.push(latest);
      for (const key of ["received", "filtered", "sent", "errored", "dead", "queue"]) {
        entry.cells[key].textContent = count(figures[key]);
      }
      entry.cells.oldest.textContent = figures.oldest ? age(figures.oldest) : "—";
      entry.cells.inRate.textContent = rate(figures.inRate);
      entry.cells.sentRate.textContent = rate(figures.sentRate);
      entry.cells.state.textContent = reason ? `Stuck: ${reason}` : "OK";
      entry.row.classList.toggle("stuck", Boolean(reason));
      if (reason) stuckCount += 1;
      if (reason && !entry.stuck) newlyStuck.push(channel.name);
      entry.stuck = reason;
    }
    for (const [name, entry] of rows) {
      if (!seen.has(name)) {
        entry.row.remove();
        rows.delete(name);
      }
    }
    summary.textContent = stuckCount
      ? `${stuckCount} of ${channels.length} channels need attention.`
      : `${channels.length} channels, none stuck.`;
    if (newlyStuck.length && !first) announce(`Stuck: ${newlyStuck.join(", ")}`);
    updated.textContent = `Updated ${time(new Date().toISOString())}`;
  }

  async function poll() {
    try {
      const load = api.json("/api/channels", { what: "see the channels", signal });
      const answer = first
        ? await progress.run(region, "Loading channels…", () => load)
        : await load;
      errorBox.replaceChildren();
      render(answer.channels, performance.now());
      if (first) performance.mark("console:channels-rendered");
      first = false;
    } catch (error) {
      if (signal.aborted || error.status === 401) return;
      errorBox.replaceChildren(problem(error));
    }
    if (!signal.aborted) timer = setTimeout(poll, POLL_MS);
  }

  poll();
  return () => clearTimeout(timer);
}
