// Models and drift: inference runs per model (from the newest runs), agreement with the
// radiologists' final reports per model version and finding (optionally per group), and
// drift of the score and the inputs against a baseline window, overall and per scanner,
// plotted as inline SVG. Everything here is aggregates or ids: no patient data.

import { query } from "../api.js";
import { bars, binLabels, histogram } from "../charts.js";
import { clear, count, field, h, percent, problem, ratio, select, table, time } from "../dom.js";

const RUN_SAMPLE = 1000;
const WINDOWS = [["", "all time"], ["30d", "last 30 days"], ["90d", "last 90 days"],
  ["365d", "last 365 days"]];
const GROUPS = [["", "overall"], ["manufacturer", "scanner maker"], ["model", "scanner model"],
  ["station", "station"], ["site", "site"], ["sex", "sex"], ["age_band", "age band"]];
const PSI_THRESHOLDS = [{ value: 0.1, label: "warn 0.1" }, { value: 0.25, label: "alert 0.25" }];

/** Runs grouped per model and version, in first-seen (newest) order. */
export function runsPerModel(runs) {
  const groups = new Map();
  for (const run of runs) {
    const key = `${run.model_name}:${run.model_version}`;
    if (!groups.has(key)) {
      groups.set(key, {
        key, model: run.model_name, version: run.model_version, runs: 0, done: 0, skipped: 0,
        failed: 0, positive: 0, emergent: 0, times: [], last: run.created_at,
      });
    }
    const group = groups.get(key);
    group.runs += 1;
    if (run.status === "done") group.done += 1;
    else if (run.status === "skipped") group.skipped += 1;
    else group.failed += 1;
    if (run.positive) group.positive += 1;
    if (run.emergent) group.emergent += 1;
    if (typeof run.inference_ms === "number") group.times.push(run.inference_ms);
  }
  return [...groups.values()].map((group) => ({ ...group, medianMs: median(group.times) }));
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function withInterval(rate) {
  if (!rate || rate.value === null) return "—";
  return `${percent(rate.value)} (${percent(rate.low)}–${percent(rate.high)})`;
}

function verdict(judgement) {
  if (!judgement) return h("span", { class: "muted" }, "not judged");
  return h("span", { class: `verdict verdict-${judgement.verdict}`, title: judgement.reason },
    judgement.verdict);
}

const RUN_COLUMNS = [
  { title: "Run", value: (r) => String(r.id), numeric: true },
  { title: "Study UID", value: (r) => h("code", null, r.study_uid) },
  { title: "Version", value: (r) => r.model_version },
  { title: "Status", value: (r) => h("span", { class: `status status-${r.status}` }, r.status) },
  { title: "Positive", value: (r) => (r.positive === null ? "—" : r.positive ? "yes" : "no") },
  { title: "Emergent", value: (r) => (r.emergent ? "yes" : "no") },
  { title: "Backend", value: (r) => r.backend ?? "" },
  { title: "Inference (ms)", value: (r) => ratio(r.inference_ms, 1), numeric: true },
  { title: "At", value: (r) => time(r.created_at) },
];

const AGREEMENT_COLUMNS = [
  { title: "Model", value: (r) => `${r.model} ${r.version}` },
  { title: "Finding", value: (r) => `${r.finding.system} ${r.finding.code}` },
  { title: "Group", value: (r) => r.group ?? "all" },
  { title: "Studies", value: (r) => count(r.n), numeric: true },
  { title: "With a final report", value: (r) => count(r.paired), numeric: true },
  { title: "Agreement", value: (r) => withInterval(r.agreement.agreement) },
  { title: "Sensitivity", value: (r) => withInterval(r.agreement.sensitivity) },
  { title: "Specificity", value: (r) => withInterval(r.agreement.specificity) },
  { title: "PPV", value: (r) => withInterval(r.agreement.ppv) },
  { title: "NPV", value: (r) => withInterval(r.agreement.npv) },
  { title: "Kappa", value: (r) => ratio(r.agreement.kappa), numeric: true },
  { title: "AI positive rate", value: (r) => withInterval(r.positive_rate) },
  { title: "Small group", value: (r) => (r.small ? "yes" : "") },
];

const INPUT_COLUMNS = [
  { title: "Input", value: (d) => d.name },
  { title: "n baseline", value: (d) => count(d.baseline.n ?? sum(d.baseline)), numeric: true },
  { title: "n current", value: (d) => count(d.current.n ?? sum(d.current)), numeric: true },
  {
    title: "Mean baseline → current",
    value: (d) => (d.baseline.mean === undefined ? "(categories)"
      : `${ratio(d.baseline.mean, 3)} → ${ratio(d.current.mean, 3)}`),
  },
  { title: "PSI", value: (d) => ratio(d.psi, 3), numeric: true },
  { title: "KS p", value: (d) => (d.ks ? Number(d.ks.p_value).toPrecision(2) : "—"), numeric: true },
  { title: "Verdict", value: (d) => verdict(d.judgement) },
];

function sum(counts) {
  return Object.values(counts).reduce((total, n) => total + n, 0);
}

function driftReport(report) {
  const name = `${report.model} ${report.version}, finding ${report.finding.system} ${report.finding.code}`;
  const score = report.score;
  const window = (w) => `${w.start}..${w.end}`;
  return h("article", { class: "drift-report", "aria-label": `Drift of ${name}` },
    h("h3", null, name),
    h("p", null, `Baseline ${window(report.baseline)} against current ${window(report.current)}. `,
      "Score: ", verdict(score.judgement), ` (PSI ${ratio(score.psi, 3)}`,
      score.ks ? `, KS D ${ratio(score.ks.statistic, 3)}, p ${Number(score.ks.p_value).toPrecision(2)})` : ")"),
    score.baseline_counts.length ? histogram({
      title: `Score distribution, ${name}`,
      labels: binLabels(score.edges, [0, 1]),
      series: [
        { label: "baseline", counts: score.baseline_counts, className: "bar-baseline" },
        { label: "current", counts: score.current_counts, className: "bar-current" },
      ],
    }) : h("p", { class: "muted" }, "No score in one of the windows: nothing to plot."),
    report.scanners?.length ? bars({
      title: `Score PSI per scanner model, ${name}`,
      items: report.scanners.map((one) => ({
        label: one.scanner_model, value: one.psi,
        className: one.judgement ? `bar-${one.judgement.verdict}` : "",
      })),
      thresholds: PSI_THRESHOLDS,
    }) : null,
    table({
      caption: `Inputs and categories, ${name}`, columns: INPUT_COLUMNS,
      rows: [...report.inputs, ...report.categories],
    }));
}

export function mount(root, { api, progress, signal }) {
  const runsBox = h("div");
  const modelRuns = h("div");
  const agreementBox = h("div");
  const driftBox = h("div");
  const windowSelect = select("window", WINDOWS, "");
  const groupSelect = select("by", GROUPS, "");
  const modelSelect = select("model", [], "");
  const baseline = h("input", { name: "baseline", placeholder: "2026-01-01..2026-03-31", autocomplete: "off" });
  const current = h("input", { name: "current", placeholder: "2026-04-01..2026-04-30", autocomplete: "off" });
  const agreementForm = h("form", { class: "filters", "aria-label": "Agreement view" },
    field("Window", windowSelect), field("Per", groupSelect),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Show agreement")));
  const driftForm = h("form", { class: "filters", "aria-label": "Drift view" },
    field("Model", modelSelect),
    field("Baseline window", baseline, "FROM..TO; empty: the 90 days before the current window"),
    field("Current window", current, "FROM..TO; empty: the last 30 days"),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Show drift")));
  const sections = {
    runs: h("section", { "aria-labelledby": "runs-title" },
      h("h2", { id: "runs-title" }, "Inference runs per model"), runsBox, modelRuns),
    agreement: h("section", { "aria-labelledby": "agreement-title" },
      h("h2", { id: "agreement-title" }, "Agreement with the radiologists"), agreementForm, agreementBox),
    drift: h("section", { "aria-labelledby": "drift-title", id: "drift" },
      h("h2", { id: "drift-title" }, "Drift"), driftForm, driftBox),
  };
  root.append(h("h1", { id: "models-title", tabindex: "-1" }, "Models and drift"),
    sections.runs, sections.agreement, sections.drift);
  const models = new Set();
  const observed = new Set(); // models with QA observations: the drift view's first choice

  function addModels(names, withObservations = false) {
    for (const name of names) {
      models.add(name);
      if (withObservations) observed.add(name);
    }
    const chosen = modelSelect.value && observed.has(modelSelect.value)
      ? modelSelect.value : [...observed].sort()[0] ?? modelSelect.value;
    modelSelect.replaceChildren(...[...models].sort().map((name) =>
      h("option", { value: name, selected: name === chosen }, name)));
  }

  async function loadRuns() {
    try {
      const answer = await progress.run(sections.runs, "Loading inference runs…", () =>
        api.json(`/api/inference${query({ limit: RUN_SAMPLE })}`, { what: "see inference runs", signal }));
      const groups = runsPerModel(answer.runs);
      addModels(groups.map((g) => g.model));
      clear(runsBox).append(table({
        caption: `Per model, from the newest ${count(answer.runs.length)} runs`,
        rows: groups, empty: "No inference run yet.",
        columns: [
          { title: "Model", value: (g) => g.model },
          { title: "Version", value: (g) => g.version },
          { title: "Runs", value: (g) => count(g.runs), numeric: true },
          { title: "Done", value: (g) => count(g.done), numeric: true },
          { title: "Skipped", value: (g) => count(g.skipped), numeric: true },
          { title: "Failed", value: (g) => count(g.failed), numeric: true },
          { title: "Positive", value: (g) => count(g.positive), numeric: true },
          { title: "Emergent", value: (g) => count(g.emergent), numeric: true },
          { title: "Median inference (ms)", value: (g) => ratio(g.medianMs, 1), numeric: true },
          { title: "Last run", value: (g) => time(g.last) },
          {
            title: "Runs",
            value: (g) => h("button", {
              type: "button", "aria-label": `Show the runs of ${g.key}`, onClick: () => showRuns(g.key),
            }, "Show runs"),
          },
        ],
      }));
    } catch (error) {
      if (!signal.aborted) clear(runsBox).append(problem(error));
    }
  }

  async function showRuns(key) {
    try {
      const answer = await progress.run(sections.runs, `Loading the runs of ${key}…`, () =>
        api.json(`/api/inference${query({ model: key, limit: 50 })}`, { what: "see inference runs", signal }));
      const heading = h("h3", { tabindex: "-1" }, `Newest runs of ${key}`);
      clear(modelRuns).append(heading, table({
        caption: `Newest runs of ${key}`, columns: RUN_COLUMNS, rows: answer.runs,
      }));
      heading.focus();
    } catch (error) {
      if (!signal.aborted) clear(modelRuns).append(problem(error));
    }
  }

  async function loadAgreement() {
    try {
      const path = `/api/qa/agreement${query({ window: windowSelect.value, by: groupSelect.value })}`;
      const report = await progress.run(sections.agreement, "Counting agreement…", () =>
        api.json(path, { what: "see QA agreement", signal }));
      addModels(report.rows.map((row) => row.model), true);
      clear(agreementBox).append(table({
        caption: `Agreement per model version and finding${report.window ? `, ${report.window.start} to ${report.window.end}` : ""} (95% intervals)`,
        columns: AGREEMENT_COLUMNS, rows: report.rows,
        empty: "No AI result in this window yet.",
      }));
    } catch (error) {
      if (!signal.aborted) clear(agreementBox).append(problem(error));
    }
  }

  async function loadDrift() {
    const model = modelSelect.value;
    if (!model) {
      clear(driftBox).append(h("p", { class: "muted" }, "No model has results yet."));
      return;
    }
    try {
      const path = `/api/qa/drift${query({
        model, by_scanner: "true", baseline: baseline.value.trim(), current: current.value.trim(),
      })}`;
      const answer = await progress.run(sections.drift, `Computing drift for ${model}…`, () =>
        api.json(path, { what: "see QA drift", signal }));
      clear(driftBox).append(...(answer.reports.length ? answer.reports.map(driftReport)
        : [h("p", { class: "muted" }, `No observation of ${model} in these windows.`)]));
    } catch (error) {
      if (!signal.aborted) clear(driftBox).append(problem(error));
    }
  }

  agreementForm.addEventListener("submit", (event) => { event.preventDefault(); loadAgreement(); });
  driftForm.addEventListener("submit", (event) => { event.preventDefault(); loadDrift(); });
  Promise.all([loadRuns(), loadAgreement()]).then(() => { if (!signal.aborted) loadDrift(); });
}
