import { config, t } from "./common.js";

const form = document.getElementById("login");
const error = document.getElementById("login-error");

function next() {
  const wanted = new URLSearchParams(location.search).get("next") || "/board";
  // Only a page of this site: never a way to send someone elsewhere after logging in (the
  // browser's own parsing decides: "/\\evil.example" and "/\t/evil.example" lead away).
  let target;
  try {
    target = new URL(wanted, location.origin);
  } catch {
    return "/board";
  }
  return target.origin === location.origin ? target.pathname + target.search + target.hash
    : "/board";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const data = new FormData(form);
  const answer = await fetch("/api/v1/session", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    credentials: "same-origin",
    body: JSON.stringify({ username: data.get("username"), password: data.get("password") }),
  });
  if (answer.ok) {
    location.assign(next());
    return;
  }
  let reason = `HTTP ${answer.status}`;
  try { reason = (await answer.json()).detail; } catch { /* not JSON */ }
  error.textContent = answer.status === 401 ? t("login.failed")
    : answer.status === 429 ? t("login.locked") : t("login.error", { reason });
  error.hidden = false;
});
document.documentElement.lang = config.language;
