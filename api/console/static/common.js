// What every page of the console shares: its settings, the message catalogue, the API with
// the session cookie (and the CSRF token for changes), times in the centre's time zone.

export const config = JSON.parse(document.getElementById("hw-config").textContent);

/** A text of the catalogue, with {name} parts filled in. */
export function t(key, parts = {}) {
  const text = config.messages[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in parts ? String(parts[name]) : ""));
}

const timeFormat = new Intl.DateTimeFormat(config.language === "en" ? "en-GB" : "zh-CN", {
  timeZone: config.timezone,
  year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

/** A time as people read it: 2026-12-02 21:05:09 in the centre's time zone. */
export function localTime(text) {
  if (!text) return t("board.unknown");
  const parts = Object.fromEntries(
    timeFormat.formatToParts(new Date(text)).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`;
}

export class ApiError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
  }
}

let csrf = null;

/** The API, as the logged-in person; a 401 sends them to the login page. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const answer = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return answered(answer);
}

/** The JSON of an answer; a 401 sends the person to the login page, another refusal is an
 * ApiError with the API's reason. */
async function answered(answer) {
  if (answer.status === 401) {
    toLogin();
    throw new ApiError(401, t("session.expired"));
  }
  if (!answer.ok) {
    let reason = `HTTP ${answer.status}`;
    try {
      const detail = (await answer.json()).detail;
      reason = typeof detail === "string" ? detail : JSON.stringify(detail);
    } catch { /* not JSON */ }
    throw new ApiError(answer.status, reason);
  }
  return answer.status === 204 ? null : answer.json();
}

export function toLogin() {
  const here = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(here)}`);
}

/** Who is logged in (and the CSRF token of the session); to the login page if nobody. */
export async function whoAmI() {
  const who = await api("GET", "/api/v1/session");
  csrf = who.csrf_token;
  document.getElementById("who").textContent = who.user.display_name || who.user.name;
  const logout = document.getElementById("logout");
  if (logout) {
    logout.addEventListener("click", async () => {
      try { await api("DELETE", "/api/v1/session"); } finally { location.assign("/login"); }
    });
  }
  return who;
}

/** An element with text (never HTML: names and notes come from devices and people). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** The name of a value in the catalogue (`kind.smoke_alarm`), else the value itself. */
export function label(prefix, value) {
  const key = `${prefix}.${value}`;
  return key in config.messages ? config.messages[key] : String(value);
}

/** Send a form's file (evidence) with the session's CSRF token. */
export async function upload(path, form) {
  const answer = await fetch(path, {
    method: "POST", credentials: "same-origin", body: form,
    headers: csrf ? { "X-CSRF-Token": csrf, Accept: "application/json" } : { Accept: "application/json" },
  });
  return answered(answer);
}

/** A photo made smaller (longest side `most` px, JPEG) before it goes over a phone's network;
 * anything that is not a photo, or that the browser cannot draw, as it is. */
export async function shrunk(file, most = 1600) {
  if (!file.type.startsWith("image/") || file.type === "image/gif") return file;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return file;
  }
  const scale = Math.min(1, most / Math.max(bitmap.width, bitmap.height));
  if (scale === 1 && file.size < 1_500_000) return file;
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
  if (!blob) return file;
  const name = file.name.replace(/\.[^.]*$/, "") + ".jpg";
  return new File([blob], name, { type: "image/jpeg" });
}
