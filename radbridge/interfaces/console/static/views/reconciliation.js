// The reconciliation queue: studies the correlation rules could not place. An analyst
// links one to order ids (the item's candidates are offered, and an order can be looked
// up by accession in the audit trail, where every order the registry created is an
// event naming its id) or rejects it; both need a note, and both are audit events.

import { query } from "../api.js";
import { clear, field, h, openDialog, problem, select, table, time } from "../dom.js";

const STATES = ["open", "linked", "rejected", "superseded", "all"];

/** Order ids typed as "12, 13" or "12 13"; an Error naming what is wrong otherwise. */
export function parseOrderIds(text) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (!parts.length) throw new Error("Name at least one order id.");
  const bad = parts.find((part) => !/^\d+$/.test(part) || Number(part) < 1);
  if (bad !== undefined) throw new Error(`"${bad}" is not an order id (a whole number).`);
  return [...new Set(parts.map(Number))];
}

function requiredNote(textarea) {
  const note = textarea.value.trim();
  if (!note) {
    textarea.focus();
    throw new Error("Say why: a note is required.");
  }
  return note;
}

function candidatesText(item) {
  if (!item.candidates?.length) return "none";
  return item.candidates
    .map((c) => `order ${c.order_id} (${c.rule}, ${Number(c.confidence).toFixed(2)})`).join("; ");
}

export function mount(root, { api, progress, announce, signal }) {
  let chosenState = "open";
  const title = h("h1", { id: "reconciliation-title", tabindex: "-1" }, "Reconciliation queue");
  const stateSelect = select("state", STATES.map((s) => [s, s]), chosenState);
  const form = h("form", { class: "filters", "aria-label": "Which items" },
    field("State", stateSelect),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Show")));
  const errorBox = h("div");
  const list = h("div");
  const region = h("section", { "aria-label": "Items" }, errorBox, list);
  root.append(title, h("p", { class: "muted" },
    "Studies the correlation rules could not link to an order: nothing found (unmatched) ",
    "or more than one answer (conflict)."), form, region);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    chosenState = stateSelect.value;
    reload();
  });

  const columns = [
    { title: "Item", value: (i) => String(i.id), numeric: true },
    { title: "Study UID", value: (i) => h("code", null, i.study_uid) },
    { title: "Kind", value: (i) => i.kind },
    { title: "Reason", value: (i) => i.reason },
    { title: "Candidates", value: candidatesText },
    { title: "Queued", value: (i) => time(i.created_at) },
    { title: "State", value: (i) => h("span", { class: `status status-${i.state}` }, i.state) },
    { title: "Decided by", value: (i) => (i.resolved_by ? `${i.resolved_by}: ${i.note ?? ""}` : "") },
    {
      title: "Actions",
      value: (i) => (i.state !== "open" ? "" : h("div", { class: "row-actions" },
        h("button", {
          type: "button", "aria-label": `Link item ${i.id} to an order`, onClick: () => link(i),
        }, "Link…"),
        h("button", {
          type: "button", "aria-label": `Reject item ${i.id}`, onClick: () => reject(i),
        }, "Reject…"))),
    },
  ];

  async function reload() {
    errorBox.replaceChildren();
    try {
      const path = `/api/reconciliation${query({ state: chosenState, limit: 200 })}`;
      const answer = await progress.run(region, "Loading the reconciliation queue…", () =>
        api.json(path, { what: "see the reconciliation queue", signal }));
      const view = table({
        caption: `Reconciliation items (${chosenState}): ${answer.items.length}`,
        columns, rows: answer.items, rowAttrs: (i) => ({ dataset: { itemId: i.id } }),
        empty: chosenState === "open" ? "Nothing waits for a decision." : "No item.",
      });
      view.id = "reconciliation-table";
      clear(list).append(view);
    } catch (error) {
      if (!signal.aborted) errorBox.replaceChildren(problem(error));
    }
  }

  function lookupBox(orderInput) {
    const accession = h("input", { name: "lookup_accession", autocomplete: "off" });
    const found = h("div", { class: "lookup-results", "aria-live": "polite" });
    const find = h("button", { type: "button" }, "Find orders");
    find.addEventListener("click", async () => {
      const value = accession.value.trim();
      if (!value) {
        found.replaceChildren(problem("Type an accession number to look up."));
        return;
      }
      found.replaceChildren(h("p", { class: "muted" }, "Looking up…"));
      try {
        const answer = await api.json(`/api/audit${query({
          accession: value, action: "registry.order.created", limit: 20,
        })}`, { what: "look up orders in the audit trail", signal });
        const ids = [...new Set(answer.events.map((e) => e.detail?.order).filter(Boolean))];
        found.replaceChildren(ids.length
          ? h("ul", null, ids.map((orderId) => h("li", null, h("button", {
            type: "button", onClick: () => { orderInput.value = String(orderId); orderInput.focus(); },
          }, `Use order ${orderId}`))))
          : h("p", null, `No order was created with accession ${value}.`));
      } catch (error) {
        found.replaceChildren(problem(error));
      }
    });
    // Enter in the lookup field looks up instead of submitting the dialog.
    accession.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        find.click();
      }
    });
    return h("fieldset", null, h("legend", null, "Find an order by accession"),
      field("Accession", accession), find, found);
  }

  function link(item) {
    const candidateIds = (item.candidates || []).map((c) => c.order_id);
    const orders = h("input", {
      name: "order_ids", autocomplete: "off", autofocus: true, inputmode: "numeric",
      value: candidateIds.length === 1 ? String(candidateIds[0]) : "",
    });
    const note = h("textarea", { name: "note", rows: "3", required: true });
    const candidateButtons = (item.candidates || []).map((c) => h("button", {
      type: "button", onClick: () => { orders.value = String(c.order_id); orders.focus(); },
    }, `Use order ${c.order_id} (${c.rule})`));
    openDialog({
      title: `Link item ${item.id} to orders`,
      fields: [
        h("p", null, "Study ", h("code", null, item.study_uid), `: ${item.reason}`),
        candidateButtons.length ? h("div", { class: "row-actions", role: "group",
          "aria-label": "Candidates" }, candidateButtons) : null,
        field("Order ids", orders, "One or more, separated by commas"),
        lookupBox(orders),
        field("Note (why)", note),
      ],
      submitLabel: "Link",
      fallbackFocus: () => title,
      onSubmit: async () => {
        const orderIds = parseOrderIds(orders.value);
        const why = requiredNote(note);
        await api.json(`/api/reconciliation/${item.id}/link`, {
          method: "POST", body: { order_ids: orderIds, note: why },
          what: "link studies to orders", signal,
        });
        announce(`Item ${item.id} linked to order ${orderIds.join(", ")}.`);
        await reload();
      },
    });
  }

  function reject(item) {
    const note = h("textarea", { name: "note", rows: "3", required: true, autofocus: true });
    openDialog({
      title: `Reject item ${item.id}`,
      fields: [h("p", null, "The study ", h("code", null, item.study_uid),
        " has no order here (a test, another site's study)."), field("Note (why)", note)],
      submitLabel: "Reject",
      fallbackFocus: () => title,
      onSubmit: async () => {
        const why = requiredNote(note);
        await api.json(`/api/reconciliation/${item.id}/reject`, {
          method: "POST", body: { note: why }, what: "reject reconciliation items", signal,
        });
        announce(`Item ${item.id} rejected.`);
        await reload();
      },
    });
  }

  reload();
}
