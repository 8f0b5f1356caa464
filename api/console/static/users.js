// People's accounts, for admins: the list, a new account, a password reset, a revocation.
// The API refuses anyone else (403), and this page says so.
import { api, el, label, t, whoAmI } from "./common.js";

const $ = (id) => document.getElementById(id);
const form = $("add-user");
const institutions = new Map();

function notice(text) {
  $("notice").textContent = text ?? "";
  $("notice").hidden = !text;
}

function scopeOf(account) {
  if (account.towns.length) return account.towns.join("、");
  return account.institutions.map((i) => institutions.get(i)?.name ?? i).join("、");
}

async function reset(name) {
  const password = prompt(t("users.reset.prompt", { name }));
  if (!password) return;
  try {
    const done = await api("POST", `/api/v1/users/${encodeURIComponent(name)}/password`, { password });
    notice(t("users.reset.done", { name, count: done.sessions_ended }));
  } catch (error) {
    notice(t("ticket.failed", { reason: error.message }));
  }
}

async function revoke(name) {
  if (!confirm(t("users.revoke.confirm", { name }))) return;
  try {
    await api("DELETE", `/api/v1/users/${encodeURIComponent(name)}`);
    await load();
  } catch (error) {
    notice(t("ticket.failed", { reason: error.message }));
  }
}

async function load() {
  const accounts = await api("GET", "/api/v1/users");
  $("users").querySelector("tbody").replaceChildren(...accounts.map((a) => el("tr",
    { dataset: { name: a.name }, class: a.disabled ? "disabled" : "" },
    el("td", {}, a.name), el("td", {}, a.display_name), el("td", {}, label("role", a.role)),
    el("td", {}, scopeOf(a)),
    el("td", {}, a.disabled ? t("users.revoked") : t("users.active")),
    el("td", { class: "buttons" }, a.disabled ? null : [
      el("button", { type: "button", dataset: { act: "reset" } }, t("users.reset")),
      el("button", { type: "button", dataset: { act: "revoke" } }, t("users.revoke"))]))));
}

$("users").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-act]");
  if (!button) return;
  const name = button.closest("tr").dataset.name;
  if (button.dataset.act === "reset") reset(name);
  else revoke(name);
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  const body = {
    name: data.get("name"), display_name: data.get("display_name"), role: data.get("role"),
    institutions: data.getAll("institutions"),
    towns: String(data.get("towns") ?? "").split(/[,，、]/).map((s) => s.trim()).filter(Boolean),
    password: data.get("password"),
  };
  try {
    await api("POST", "/api/v1/users", body);
    form.reset();
    $("add-error").hidden = true;
    await load();
  } catch (error) {
    $("add-error").textContent = t("ticket.failed", { reason: error.message });
    $("add-error").hidden = false;
  }
});

(async () => {
  let me;
  try {
    me = await whoAmI();
  } catch {
    return;
  }
  if (me.user.role !== "admin") {
    notice(t("users.forbidden"));
    form.hidden = true;
    return;
  }
  for (const i of await api("GET", "/api/v1/institutions")) institutions.set(i.id, i);
  form.elements.institutions.replaceChildren(...[...institutions.values()].map((i) =>
    el("option", { value: i.id }, i.name)));
  await load().catch((error) => notice(t("ticket.failed", { reason: error.message })));
})();
