// The console's shell: sign-in, the section navigation (hash routes, so the server only
// ever serves index.html), and the context each view gets: the API client, progress,
// announcements for screen readers, and an abort signal that ends the view's polling
// and requests when the user leaves it. Routes carry message ids and channel names,
// never patient identifiers: searches live in memory only.

import { createApi, session } from "./api.js";
import { clear, h } from "./dom.js";
import { ProgressIndicator } from "./progress.js";
import * as audit from "./views/audit.js";
import * as channels from "./views/channels.js";
import * as messages from "./views/messages.js";
import * as models from "./views/models.js";
import * as reconciliation from "./views/reconciliation.js";
import { renderSignIn } from "./views/signin.js";

const ROUTES = [
  { pattern: /^\/channels$/, nav: "channels", title: "Channels", mount: channels.mount },
  { pattern: /^\/messages$/, nav: "messages", title: "Messages", mount: messages.mountSearch },
  {
    pattern: /^\/messages\/(\d+)$/, nav: "messages", title: "Message",
    mount: messages.mountDetail,
  },
  {
    pattern: /^\/reconciliation$/, nav: "reconciliation", title: "Reconciliation",
    mount: reconciliation.mount,
  },
  { pattern: /^\/audit$/, nav: "audit", title: "Audit", mount: audit.mount },
  { pattern: /^\/models$/, nav: "models", title: "Models and drift", mount: models.mount },
];
const DEFAULT_ROUTE = "#/channels";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const sessionBox = document.getElementById("session");
const announcer = document.getElementById("announcer");
const progress = new ProgressIndicator(document.getElementById("progress"));

let current = null; // {controller, cleanup}
let signInReason = null;

const api = createApi({
  onUnauthorized(reason) {
    session.clear();
    signInReason = `The server did not accept your token (${reason}). Sign in again.`;
    show();
  },
});

function announce(text) {
  announcer.textContent = "";
  // A fresh text node after a tick, so that the same words are announced twice.
  setTimeout(() => { announcer.textContent = text; }, 50);
}

function leaveView() {
  if (!current) return;
  current.controller.abort();
  current.cleanup?.();
  current = null;
}

function parseHash() {
  const raw = location.hash.startsWith("#/") ? location.hash.slice(1) : "";
  const [path, search = ""] = raw.split("?", 2);
  return { path, params: new URLSearchParams(search) };
}

// Who the token is, shown beside "Sign out" (fetched once per sign-in).
let identityShown = null;

async function showIdentity() {
  const box = document.getElementById("identity");
  if (identityShown === session.token) return;
  identityShown = session.token;
  box.textContent = "";
  try {
    const me = await api.json("/api/me", { what: "see who you are" });
    if (me.name) box.textContent = `${me.name} (${me.roles.join(", ") || "no role"})`;
  } catch {
    identityShown = null; // shown again at the next view
  }
}

function show() {
  leaveView();
  const signedIn = Boolean(session.token);
  nav.hidden = !signedIn;
  sessionBox.hidden = !signedIn;
  if (signedIn) showIdentity();
  clear(main);
  if (!signedIn) {
    document.title = "Sign in — Radbridge console";
    renderSignIn(main, { api, reason: signInReason, onSignedIn });
    return;
  }
  const { path, params } = parseHash();
  const route = ROUTES.find((candidate) => candidate.pattern.test(path));
  if (!route) {
    location.replace(DEFAULT_ROUTE);
    return;
  }
  for (const link of nav.querySelectorAll("a[data-nav]")) {
    if (link.dataset.nav === route.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${route.title} — Radbridge console`;
  const controller = new AbortController();
  const context = {
    api, progress, announce, signal: controller.signal,
    navigate: (hash) => { location.hash = hash; },
  };
  current = { controller, cleanup: null };
  current.cleanup = route.mount(main, context, { match: path.match(route.pattern), params });
  main.querySelector("h1")?.focus();
}

function onSignedIn() {
  signInReason = null;
  if (!parseHash().path) {
    location.replace(DEFAULT_ROUTE); // its hashchange shows the view
    return;
  }
  show();
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.clear();
  signInReason = "You signed out.";
  show();
});

// The skip link moves focus without touching the hash (the hash is the route).
document.querySelector("[data-skip-link]").addEventListener("click", (event) => {
  event.preventDefault();
  (main.querySelector("h1") || main).focus();
});

window.addEventListener("hashchange", show);
show();
