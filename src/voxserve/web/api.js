// Talking to voxserve: the API key (kept in this tab's sessionStorage), authorised requests,
// and turning any failure into a message a person can read.

const KEY_STORE = "voxserve.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

export function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

/** The server's own words for a failed response: OpenAI's `{"error": {"message"}}` envelope,
 * or the body text, or the status line when there is no body. */
export function errorText(status, statusText, body) {
  let message = "";
  try {
    const parsed = JSON.parse(body);
    message = parsed?.error?.message || parsed?.detail || "";
    if (typeof message !== "string") message = JSON.stringify(message);
  } catch {
    message = (body || "").trim();
  }
  return `${status} ${statusText || ""}`.trim() + (message ? `: ${message}` : "");
}

export class ApiError extends Error {}

/** fetch() with the key; a non-2xx answer throws ApiError carrying the server's message. */
export async function apiFetch(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
  } catch (err) {
    throw new ApiError(`Could not reach the server (${err.message}).`);
  }
  if (!response.ok) {
    const body = await response.text();
    throw new ApiError(errorText(response.status, response.statusText, body));
  }
  return response;
}

export async function apiJson(path, options = {}) {
  return (await apiFetch(path, options)).json();
}

/** Show a message in an error box (role=alert), or hide the box when message is empty. */
export function showError(box, message) {
  box.textContent = message || "";
  box.hidden = !message;
}

export function describe(err) {
  return err instanceof ApiError ? err.message : `Something went wrong in the page: ${err?.message || err}`;
}

/** A download of `data` named `name`, without leaving an object URL behind. */
export function download(name, data, type) {
  const url = URL.createObjectURL(data instanceof Blob ? data : new Blob([data], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function fillSelect(select, values, keep = true) {
  const previous = select.value;
  select.replaceChildren(...values.map((v) => {
    const option = document.createElement("option");
    const [value, label] = Array.isArray(v) ? v : [v, v];
    option.value = value;
    option.textContent = label;
    return option;
  }));
  if (keep && values.some((v) => (Array.isArray(v) ? v[0] : v) === previous)) select.value = previous;
}
