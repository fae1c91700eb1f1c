// Calls to the daemon, with the key kept in this browser. The page and the API share an
// origin (the assets may come from a CDN): every URL here is relative to the page.

const KEY = "christmas.key";

/** The saved API key: "" when the daemon needs none, null when none was ever entered. */
export function apiKey() {
  return localStorage.getItem(KEY);
}

/**
 * Saves the key, and puts it in the cookie `EventSource` sends to /api/stream (it cannot
 * set an Authorization header). The cookie goes to that path only, same-site only.
 */
export function saveKey(key) {
  localStorage.setItem(KEY, key);
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `christmas_key=${key}; Path=/api/stream; SameSite=Strict${secure}`;
}

/** The JSON answer of `method path` and its status; never throws for an HTTP error. */
export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    return { status: 0, json: { error: `network: ${e.message}` } };
  }
  let json = null;
  try {
    json = await response.json();
  } catch {
    json = { error: `HTTP ${response.status}` };
  }
  return { status: response.status, json };
}
