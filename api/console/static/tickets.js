// The ledger: tickets the person may see, newest found first, with filters; a list of cards
// that reads on a phone as well as at a desk.
import { api, ApiError, el, label, localTime, t, whoAmI } from "./common.js";

const PAGE = 50;
const $ = (id) => document.getElementById(id);
const form = $("ticket-filters");
const institutions = new Map();
let offset = 0;

function query() {
  const data = new FormData(form);
  const params = new URLSearchParams();
  for (const status of String(data.get("status") ?? "").split(",").filter(Boolean)) {
    params.append("status", status);
  }
  if (data.get("source")) params.set("source", data.get("source"));
  if (data.get("overdue")) params.set("overdue", "true");
  params.set("limit", String(PAGE));
  params.set("offset", String(offset));
  return params;
}

function row(ticket) {
  const overdue = ticket.status !== "closed" && new Date(ticket.due_at) < new Date();
  return el("li", { class: `ticket-row sev-${ticket.severity}${overdue ? " overdue" : ""}`,
    dataset: { id: ticket.id, status: ticket.status } },
  el("a", { href: `/tickets/${encodeURIComponent(ticket.id)}`, class: "ticket-link" },
    el("span", { class: "title" }, ticket.title)),
  el("div", { class: "badges" },
    el("span", { class: `status status-${ticket.status}` }, label("status", ticket.status)),
    el("span", { class: "badge" }, label("severity", ticket.severity)),
    ticket.major_hazard ? el("span", { class: "major" }, t("tickets.major")) : null,
    ticket.listed_supervision ? el("span", { class: "listed" }, t("tickets.listed")) : null,
    overdue ? el("span", { class: "overdue-mark" }, t("tickets.overdue")) : null),
  el("div", { class: "meta" },
    el("span", {}, institutions.get(ticket.institution)?.name ?? ticket.institution),
    el("span", {}, label("category", ticket.category)),
    el("span", {}, label("source", ticket.source)),
    el("span", {}, `${t("tickets.col.found")} ${localTime(ticket.found_at)}`),
    el("span", { class: "due" }, `${t("tickets.col.due")} ${localTime(ticket.due_at)}`)));
}

async function load(more = false) {
  if (!more) offset = 0;
  const answer = await fetch(`/api/v1/tickets?${query()}`, {
    credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!answer.ok) throw new ApiError(answer.status, `HTTP ${answer.status}`);
  const found = await answer.json();
  const total = Number(answer.headers.get("X-Total-Count") ?? found.length);
  const rows = found.map(row);
  if (more) $("tickets").append(...rows);
  else $("tickets").replaceChildren(...rows);
  offset += found.length;
  $("total").textContent = t("tickets.total", { count: total });
  $("empty").hidden = total > 0;
  $("more").hidden = offset >= total;
}

function failed(error) {
  $("notice").textContent = t("ticket.failed", { reason: error.message });
  $("notice").hidden = false;
}

form.addEventListener("change", () => load().catch(failed));
$("more").addEventListener("click", () => load(true).catch(failed));

(async () => {
  try {
    await whoAmI();
  } catch {
    return;
  }
  for (const i of await api("GET", "/api/v1/institutions").catch(() => [])) {
    institutions.set(i.id, i);
  }
  await load().catch(failed);
})();
