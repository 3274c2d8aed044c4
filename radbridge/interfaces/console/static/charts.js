// Plots drawn as inline SVG (no library): a grouped histogram (baseline against current
// window, as shares of each window so that windows of different sizes compare) and
// horizontal bars with threshold lines (PSI per scanner). Each chart is an image with a
// title and a description for screen readers, and its numbers in a table beside it.

import { h, s, table, uid } from "./dom.js";

const WIDTH = 640;
const HEIGHT = 260;
const MARGIN = { top: 16, right: 16, bottom: 48, left: 48 };

function format(value) {
  return Math.abs(value) >= 10 ? value.toFixed(0) : Number(value.toPrecision(2)).toString();
}

/** Bin labels from inner edges: "< e0", "e0–e1", ..., "≥ eN"; [0, 1] bounds for scores. */
export function binLabels(edges, bounds = null) {
  const labels = [];
  for (let i = 0; i <= edges.length; i += 1) {
    const low = i === 0 ? (bounds ? bounds[0] : null) : edges[i - 1];
    const high = i === edges.length ? (bounds ? bounds[1] : null) : edges[i];
    if (low === null) labels.push(`< ${format(high)}`);
    else if (high === null) labels.push(`≥ ${format(low)}`);
    else labels.push(`${format(low)}–${format(high)}`);
  }
  return labels;
}

/** Counts as shares of their total (all zeros when the total is zero). */
export function shares(counts) {
  const total = counts.reduce((sum, n) => sum + n, 0);
  return counts.map((n) => (total ? n / total : 0));
}

function frame(title, description) {
  const titleId = uid("chart-title");
  const descId = uid("chart-desc");
  return s("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "chart",
    "aria-labelledby": `${titleId} ${descId}`, preserveAspectRatio: "xMidYMid meet",
  }, s("title", { id: titleId }, title), s("desc", { id: descId }, description));
}

/**
 * Grouped bars: series [{label, counts, className}] over the same bins, drawn as shares.
 * Returns a <figure> with the SVG and a data table.
 */
export function histogram({ title, labels, series }) {
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const values = series.map((one) => shares(one.counts));
  const top = Math.max(0.05, ...values.flat());
  const band = plotWidth / labels.length;
  const barWidth = (band * 0.8) / series.length;
  const description = series.map((one, i) => `${one.label}: ${values[i]
    .map((v, b) => `${labels[b]} ${(v * 100).toFixed(0)}%`).join(", ")}`).join(". ");
  const svg = frame(title, description);
  const y = (v) => MARGIN.top + plotHeight - (v / top) * plotHeight;
  for (const tick of [0, top / 2, top]) {
    svg.append(s("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(tick), y2: y(tick), class: "grid" }),
      s("text", { x: MARGIN.left - 6, y: y(tick) + 4, class: "tick", "text-anchor": "end" },
        `${(tick * 100).toFixed(0)}%`));
  }
  values.forEach((shareList, i) => {
    shareList.forEach((value, b) => {
      const x = MARGIN.left + b * band + band * 0.1 + i * barWidth;
      svg.append(s("rect", {
        x, y: y(value), width: Math.max(1, barWidth - 1), height: Math.max(0, y(0) - y(value)),
        class: `bar ${series[i].className}`,
      }, s("title", null, `${series[i].label}, ${labels[b]}: ${(value * 100).toFixed(1)}%`)));
    });
  });
  labels.forEach((label, b) => {
    svg.append(s("text", {
      x: MARGIN.left + b * band + band / 2, y: HEIGHT - MARGIN.bottom + 16,
      class: "tick", "text-anchor": "middle",
    }, label));
  });
  series.forEach((one, i) => {
    const x = MARGIN.left + i * 150;
    svg.append(s("rect", { x, y: HEIGHT - 18, width: 12, height: 12, class: `bar ${one.className}` }),
      s("text", { x: x + 18, y: HEIGHT - 8, class: "legend" }, `${one.label} (n ${one.counts.reduce((a, n) => a + n, 0)})`));
  });
  return figureWith(svg, title, table({
    caption: `${title}: counts per bin`,
    columns: [{ title: "Bin", value: (row) => row.label },
      ...series.map((one, i) => ({ title: one.label, value: (row) => String(row.counts[i]), numeric: true }))],
    rows: labels.map((label, b) => ({ label, counts: series.map((one) => one.counts[b]) })),
  }));
}

/** Horizontal bars [{label, value, className}] with vertical threshold lines [{value, label}]. */
export function bars({ title, items, thresholds = [], unit = "" }) {
  const rowHeight = 26;
  const height = Math.max(80, MARGIN.top + items.length * rowHeight + 36);
  const left = 150;
  const plotWidth = WIDTH - left - MARGIN.right - 40;
  const top = Math.max(...thresholds.map((t) => t.value * 1.2), ...items.map((i) => i.value ?? 0), 0.01);
  const x = (v) => left + (Math.min(v, top) / top) * plotWidth;
  const description = items.map((i) => `${i.label}: ${i.value === null ? "not measured" : format(i.value)}${unit}`).join(", ");
  const svg = frame(title, description);
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${height}`);
  items.forEach((item, index) => {
    const yTop = MARGIN.top + index * rowHeight;
    svg.append(s("text", { x: left - 8, y: yTop + 16, class: "tick", "text-anchor": "end" }, item.label));
    if (item.value === null) {
      svg.append(s("text", { x: left + 4, y: yTop + 16, class: "tick" }, "not measured"));
      return;
    }
    svg.append(s("rect", {
      x: left, y: yTop + 4, width: Math.max(1, x(item.value) - left), height: rowHeight - 10,
      class: `bar ${item.className || ""}`,
    }, s("title", null, `${item.label}: ${format(item.value)}${unit}`)),
    s("text", { x: x(item.value) + 4, y: yTop + 16, class: "tick" }, `${format(item.value)}${unit}`));
  });
  const bottom = MARGIN.top + items.length * rowHeight;
  for (const threshold of thresholds) {
    svg.append(s("line", { x1: x(threshold.value), x2: x(threshold.value), y1: MARGIN.top - 4, y2: bottom, class: "threshold" }),
      s("text", { x: x(threshold.value), y: bottom + 16, class: "tick", "text-anchor": "middle" }, threshold.label));
  }
  return figureWith(svg, title, null);
}

function figureWith(svg, title, dataTable) {
  return h("figure", { class: "chart-figure" }, svg, h("figcaption", null, title),
    dataTable ? h("details", null, h("summary", null, "The numbers"), dataTable) : null);
}
