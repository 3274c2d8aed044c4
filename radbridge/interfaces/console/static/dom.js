// Building the page: elements from data with textContent only (never innerHTML), so that
// message content, notes and identifiers can never become markup; tables, dialogs and
// the formats every view shares.

const SVG_NS = "http://www.w3.org/2000/svg";

function setAttributes(element, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (name === "class" && element instanceof HTMLElement) {
      element.className = value;
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

export function append(parent, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : String(child));
  }
  return parent;
}

/** An HTML element: h("button", {type: "button", onClick}, "Reprocess"). */
export function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  setAttributes(element, attrs);
  return append(element, ...children);
}

/** An SVG element, for the charts drawn in charts.js. */
export function s(tag, attrs, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  setAttributes(element, attrs);
  return append(element, ...children);
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

let uniqueCounter = 0;
/** An id unique in this page, for label/aria-labelledby pairs. */
export function uid(prefix) {
  uniqueCounter += 1;
  return `${prefix}-${uniqueCounter}`;
}

// --- formats -----------------------------------------------------------------------

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });

export function count(value) {
  return value === null || value === undefined ? "—" : integer.format(value);
}

/** Messages per second, one decimal (the column header says the unit). */
export function rate(value) {
  return value === null || value === undefined ? "—" : decimal.format(value);
}

export function ratio(value, digits = 2) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
}

export function percent(value) {
  return value === null || value === undefined ? "—" : `${(value * 100).toFixed(1)}%`;
}

/** Seconds as "45 s", "12 min 5 s", "3 h 10 min". */
export function age(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

/** An ISO 8601 time in the browser's time zone, to the second. */
export function time(iso) {
  if (!iso) return "—";
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return iso;
  const pad = (n) => String(n).padStart(2, "0");
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} `
    + `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`;
}

export function bytes(size) {
  if (size === null || size === undefined) return "—";
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

// --- tables --------------------------------------------------------------------------

/**
 * A table with a visible caption (its accessible name) and column headers.
 * columns: [{title, value(row) -> Node|string, numeric}]; rowAttrs(row) -> attributes.
 */
export function table({ caption, columns, rows, rowAttrs, empty = "Nothing to show." }) {
  const head = h("thead", null, h("tr", null, columns.map((column) =>
    h("th", { scope: "col", class: column.numeric ? "numeric" : null }, column.title))));
  const body = h("tbody");
  appendRows(body, columns, rows, rowAttrs);
  const element = h("table", null, h("caption", null, caption), head, body);
  if (!rows.length) {
    body.append(h("tr", null, h("td", { colspan: columns.length, class: "empty" }, empty)));
  }
  return element;
}

export function appendRows(body, columns, rows, rowAttrs) {
  for (const row of rows) {
    body.append(h("tr", rowAttrs ? rowAttrs(row) : null, columns.map((column) =>
      h("td", { class: column.numeric ? "numeric" : null }, column.value(row)))));
  }
}

/** A definition list of [term, value] pairs, skipping values that are undefined. */
export function facts(pairs, label) {
  return h("dl", { class: "facts", "aria-label": label }, pairs
    .filter(([, value]) => value !== undefined)
    .map(([term, value]) => [h("dt", null, term), h("dd", null, value ?? "—")]));
}

/** A message shown in place (role=alert): an error, or "your role cannot ...". */
export function problem(error) {
  const text = error instanceof Error ? error.message : String(error);
  return h("p", { class: "problem", role: "alert" }, text);
}

// --- dialogs -------------------------------------------------------------------------

/**
 * A modal <dialog> with a form: Escape and Cancel close it; focus goes back to the
 * element that opened it (or to `fallbackFocus()` when that element is gone).
 * onSubmit(form) runs while the dialog is busy; its error is shown in the dialog.
 */
export function openDialog({ title, fields, submitLabel, onSubmit, fallbackFocus }) {
  const opener = document.activeElement;
  const titleId = uid("dialog-title");
  const errorBox = h("div", { class: "dialog-problem" });
  const submit = h("button", { type: "submit", class: "primary" }, submitLabel);
  const cancel = h("button", { type: "button", onClick: () => dialog.close() }, "Cancel");
  const form = h("form", { novalidate: true }, h("h2", { id: titleId }, title), fields,
    errorBox, h("div", { class: "actions" }, submit, cancel));
  const dialog = h("dialog", { "aria-labelledby": titleId }, form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(errorBox);
    dialog.setAttribute("aria-busy", "true");
    submit.disabled = true;
    try {
      await onSubmit(form);
      dialog.close();
    } catch (error) {
      errorBox.append(problem(error));
    } finally {
      dialog.removeAttribute("aria-busy");
      submit.disabled = false;
    }
  });
  dialog.addEventListener("close", () => {
    dialog.remove();
    const target = opener && opener.isConnected ? opener : fallbackFocus?.();
    target?.focus?.();
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/** A labelled form field: label, control and an optional hint tied by aria-describedby. */
export function field(label, control, hint) {
  control.id ||= uid("field");
  const parts = [h("label", { for: control.id }, label), control];
  if (hint) {
    const hintId = uid("hint");
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("span", { class: "hint", id: hintId }, hint));
  }
  return h("div", { class: "field" }, parts);
}

export function select(name, options, selected) {
  return h("select", { name }, options.map(([value, label]) =>
    h("option", { value, selected: value === selected }, label)));
}
