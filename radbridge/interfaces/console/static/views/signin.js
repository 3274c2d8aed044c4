// Sign-in: paste an API token (`radbridge token create --role ROLE` prints one). It is
// checked with one request any role may make; a 401 keeps the user here with the reason.

import { session } from "../api.js";
import { field, h, problem } from "../dom.js";

export function renderSignIn(root, { api, reason, onSignedIn }) {
  const token = h("input", {
    type: "password", name: "token", autocomplete: "off", spellcheck: "false",
    required: true, autofocus: true,
  });
  const messages = h("div", { class: "signin-messages" });
  if (reason) messages.append(h("p", { class: "notice", role: "status" }, reason));
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "signin", "aria-labelledby": "signin-title" },
    field("API token", token, "Kept in this tab only (session storage), sent as a bearer token."),
    submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = token.value.trim();
    messages.replaceChildren();
    if (!value) {
      messages.append(problem("Paste a token first."));
      token.focus();
      return;
    }
    session.token = value;
    form.setAttribute("aria-busy", "true");
    submit.disabled = true;
    try {
      await api.json("/api/channels", { what: "see the channels" });
      onSignedIn();
    } catch (error) {
      // A 401 has already cleared the token and shown this page again, with the reason.
      if (error.status !== 401) {
        session.clear();
        messages.append(problem(error));
      }
    } finally {
      form.removeAttribute("aria-busy");
      submit.disabled = false;
    }
  });
  root.append(h("section", { class: "signin-page" },
    h("h1", { id: "signin-title", tabindex: "-1" }, "Sign in"), messages, form));
  token.focus();
}
