// One institution: its devices with their state (online / offline / fault / low battery, from
// the open alerts), last reading and battery, the online rate, open alarms and tickets; kept
// current by the live stream.
import { api, ApiError, config, el, localTime, t, toLogin, whoAmI } from "./common.js";
import { readingText, stateChips, states, withUnit } from "./status.js";

const $ = (id) => document.getElementById(id);
const id = config.institution;
const OPEN_TICKETS = ["open", "assigned", "rectifying", "awaiting_verification"];

function notice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text ?? "";
}

function fact(label, ...value) {
  return el("div", {}, el("dt", {}, t(label)), el("dd", {}, ...value));
}

function place(device) {
  const where = device.location ?? {};
  const parts = [where.building, where.floor && t("board.location.floor", { value: where.floor }),
    where.room && t("board.location.room", { value: where.room }),
    device.zone && t("board.location.zone", { value: device.zone })].filter(Boolean);
  return parts.length ? parts.join(" ") : t("board.unknown");
}

function deviceCard(device, alarms) {
  const found = states(device, alarms);
  return el("li", { class: `card item status-${found[0]}`, id: `device-${device.id}`,
    dataset: { id: device.id, status: found.join(" ") } },
  el("a", { class: "title", href: `/devices/${encodeURIComponent(device.id)}` }, device.id),
  el("span", { class: "muted" }, `${t(`device.${device.kind}`)} · ${place(device)}`),
  stateChips(found),
  el("dl", { class: "facts" },
    fact("institution.reading", readingText(device.reading)),
    fact("field.battery_pct", withUnit(device.reading?.battery_pct, "unit.battery")),
    fact("institution.last_seen", localTime(device.last_seen))));
}

function alarmRow(alert) {
  return el("li", { class: `row sev-${alert.severity}`, dataset: { id: alert.id } },
    el("span", { class: "badge" }, t(`severity.${alert.severity}`)),
    el("a", { href: `/alerts/${encodeURIComponent(alert.id)}` }, t(`kind.${alert.kind}`)),
    el("a", { href: `/devices/${encodeURIComponent(alert.device)}` }, alert.device),
    el("span", { class: "muted" }, localTime(alert.raised_at)),
    el("span", {}, t(`state.${alert.state}`)));
}

function ticketRow(ticket) {
  return el("li", { class: "row", dataset: { id: ticket.id } },
    el("strong", {}, ticket.title ?? ticket.category),
    el("span", {}, t(`ticket.status.${ticket.status}`)),
    ticket.device ? el("a", { href: `/devices/${encodeURIComponent(ticket.device)}` }, ticket.device)
      : null,
    el("span", { class: "muted" }, t("institution.ticket.due", { time: localTime(ticket.due_at) })),
    ticket.responsible_person ? el("span", {}, ticket.responsible_person) : null);
}

async function load() {
  const home = encodeURIComponent(id);
  const statuses = OPEN_TICKETS.map((s) => `status=${s}`).join("&");
  const [institution, devices, alarms, tickets] = await Promise.all([
    api("GET", `/api/v1/institutions/${home}`),
    api("GET", `/api/v1/devices?institution=${home}`),
    api("GET", `/api/v1/alerts?state=open&institution=${home}&limit=1000`),
    api("GET", `/api/v1/tickets?institution=${home}&${statuses}&limit=1000`),
  ]);
  $("name").textContent = institution.name;
  document.title = `${institution.name} · ${t("app.short")}`;
  devices.sort((a, b) => a.id.localeCompare(b.id));
  const shown = devices.map((d) => [d, states(d, alarms)]);
  const online = shown.filter(([, s]) => s.includes("online")).length;
  const count = (state) => shown.filter(([, s]) => s.includes(state)).length;
  $("summary").replaceChildren(
    fact("institution.town", institution.town ?? t("board.unknown")),
    fact("institution.devices", String(devices.length)),
    fact("institution.online_rate",
      el("span", { id: "online-rate" },
        devices.length ? `${Math.round((100 * online) / devices.length)} %` : t("board.unknown"))),
    fact("status.offline", String(count("offline"))),
    fact("status.fault", String(count("fault"))),
    fact("status.low_battery", String(count("low_battery"))));
  $("devices").replaceChildren(...devices.map((d) => deviceCard(d, alarms)));
  $("devices-empty").hidden = devices.length > 0;
  $("alarms").replaceChildren(...alarms.map(alarmRow));
  $("alarms-count").textContent = String(alarms.length);
  $("alarms-empty").hidden = alarms.length > 0;
  $("tickets").replaceChildren(...tickets.map(ticketRow));
  $("tickets-count").textContent = String(tickets.length);
  $("tickets-empty").hidden = tickets.length > 0;
  document.body.dataset.loaded = String(Date.now());
}

let pending = null;
/** Load again soon (a burst of changes loads once). */
function reload() {
  clearTimeout(pending);
  pending = setTimeout(() => load().catch(failed), 300);
}

function failed(error) {
  if (error instanceof ApiError && error.status === 401) return;
  notice(error instanceof ApiError && error.status === 404 ? t("institution.missing")
    : t("board.action.failed", { reason: error.message }));
}

function follow() {
  const stream = new EventSource("/api/v1/stream", { withCredentials: true });
  const mine = (message) => {
    try {
      const body = JSON.parse(message.data);
      const changed = body.alert ?? body.ticket;
      if (!changed || changed.institution === id) reload();
    } catch { reload(); }
  };
  stream.addEventListener("alert", mine);
  stream.addEventListener("ticket", mine);
  stream.addEventListener("reset", reload);
}

(async () => {
  try {
    await whoAmI();
  } catch (error) {
    if (!(error instanceof ApiError)) toLogin();
    return;
  }
  await load().then(follow).catch(failed);
})();
