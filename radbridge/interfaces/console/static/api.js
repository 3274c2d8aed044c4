// The JSON API as the console uses it: every request carries the pasted token as a
// bearer token; a 401 ends the session (back to sign-in, with the reason); a 403 becomes
// "Your role cannot ..." shown where the action was tried. The token is the only thing
// the console keeps, in sessionStorage (gone when the tab closes).

const TOKEN_KEY = "radbridge.console.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    sessionStorage.setItem(TOKEN_KEY, value);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** The query string of `params`, leaving out empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

async function reasonOf(response) {
  try {
    const body = await response.json();
    return typeof body.error === "string" ? body.error : response.statusText;
  } catch {
    return response.statusText || `HTTP ${response.status}`;
  }
}

/**
 * The API client. `what` names the action in words ("reprocess messages") for the
 * 403 message. `onUnauthorized(reason)` is called on every 401.
 */
export function createApi({ onUnauthorized }) {
  async function send(path, { method = "GET", body, what = "do this", signal } = {}) {
    const headers = { Accept: "application/json" };
    if (session.token) headers.Authorization = `Bearer ${session.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method, headers, signal, cache: "no-store", credentials: "omit",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "The Radbridge server does not answer (is it running?).");
    }
    if (response.ok) return response;
    const reason = await reasonOf(response);
    if (response.status === 401) {
      onUnauthorized(reason);
      throw new ApiError(401, `Not signed in: ${reason}`);
    }
    if (response.status === 403) {
      throw new ApiError(403, `Your role cannot ${what}. (${reason})`);
    }
    throw new ApiError(response.status, `${reason} (HTTP ${response.status})`);
  }

  return {
    /** The parsed JSON answer. */
    async json(path, options) {
      const response = await send(path, options);
      return response.json();
    },
    /** The raw Response, for downloads. */
    raw: send,
  };
}
