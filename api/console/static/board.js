// The alarm board: every open alarm the person may see, live over the stream (SSE with the
// session cookie; the browser resumes with Last-Event-ID), critical ones flashing and
// sounding until a person acknowledges them, the connection's state always in sight.
import { api, ApiError, config, el, localTime, t, toLogin, whoAmI } from "./common.js";

const ALARM_KINDS = new Set(["smoke_alarm", "fire_confirmed", "gas_leak", "co_alarm"]);
const RANK = { critical: 4, major: 3, minor: 2, warning: 1 };
const MAY_ACT = new Set(["admin", "duty_officer", "institution"]);
const UNITS = { smoke_alarm: "unit.smoke", fire_confirmed: "unit.smoke", gas_leak: "unit.gas",
  co_alarm: "unit.co", low_battery: "unit.battery" };

const alarms = new Map(); // id -> alert
const institutions = new Map(); // id -> institution
const devices = new Map(); // id -> device
const asked = new Set(); // devices and institutions being fetched
let me = null;
let loaded = false;
let early = []; // stream events that came before the first load finished
let soundWanted = localStorage.getItem("hw-sound") === "on";
let stream = null;

const $ = (id) => document.getElementById(id);
const list = $("alarms");
const siren = $("siren");
const soundButton = $("sound");

/** Whether an alarm must be seen and heard: a fire, smoke, gas or CO alarm not yet
 * acknowledged by a person (it stays so when its condition cleared by itself). */
function needsAttention(alert) {
  return ALARM_KINDS.has(alert.kind) && !alert.acknowledged_at
    && (alert.state === "active" || alert.state === "cleared");
}

function order(a, b) {
  return (needsAttention(b) - needsAttention(a))
    || (RANK[b.severity] - RANK[a.severity])
    || (b.raised_at < a.raised_at ? -1 : b.raised_at > a.raised_at ? 1 : 0);
}

function threshold(alert, device) {
  const own = device?.thresholds ?? {};
  const value = (name) => own[name] ?? config.thresholds?.[name];
  switch (alert.kind) {
    case "smoke_alarm": case "fire_confirmed": return value("smoke_db_m");
    case "gas_leak":
      return alert.severity === "critical" ? value("gas_lel_pct_critical") : value("gas_lel_pct");
    case "co_alarm": return value("co_ppm");
    case "low_battery": return value("battery_pct");
    default: return undefined;
  }
}

function withUnit(number, alert) {
  if (number === undefined || number === null) return t("board.unknown");
  const unit = UNITS[alert.kind];
  return unit ? `${number} ${t(unit)}` : String(number);
}

function place(device) {
  const where = device?.location ?? {};
  const parts = [];
  if (where.building) parts.push(t("board.location.building", { value: where.building }));
  if (where.floor) parts.push(t("board.location.floor", { value: where.floor }));
  if (where.room) parts.push(t("board.location.room", { value: where.room }));
  if (device?.zone) parts.push(t("board.location.zone", { value: device.zone }));
  return parts.length ? parts.join(" ") : t("board.unknown");
}

function contacts(institution) {
  const people = [["board.contact.principal", institution?.principal],
    ["board.contact.safety", institution?.safety_manager]];
  const shown = people.filter(([, person]) => person?.name).map(([role, person]) =>
    el("span", { class: "contact" }, `${t(role)} ${person.name} `,
      person.phone ? el("a", { href: `tel:${person.phone.replace(/[^0-9+]/g, "")}` }, person.phone)
        : null));
  return shown.length ? shown : [t("board.unknown")];
}

function field(label, ...value) {
  return el("div", { class: "field" }, el("dt", {}, t(label)), el("dd", {}, ...value));
}

function card(alert) {
  const device = devices.get(alert.device);
  const institution = institutions.get(alert.institution);
  const attention = needsAttention(alert);
  const acts = me && MAY_ACT.has(me.user.role);
  const buttons = [];
  if (acts && alert.state === "active") {
    buttons.push(el("button", { type: "button", class: "primary", dataset: { act: "ack" } },
      t("board.ack")));
  }
  if (acts && (alert.state === "acknowledged" || alert.state === "cleared")) {
    if (alert.state === "cleared" && !alert.acknowledged_at) {
      buttons.push(el("button", { type: "button", class: "primary", dataset: { act: "ack" } },
        t("board.ack")));
    } else {
      buttons.push(el("button", { type: "button", dataset: { act: "resolve" } },
        t("board.resolve")));
    }
  }
  return el("li", {
    class: `alarm sev-${alert.severity} state-${alert.state}${attention ? " flash" : ""}`
      + (config.focus === alert.id ? " focus" : ""),
    id: `alarm-${alert.id}`,
    dataset: { id: alert.id, kind: alert.kind, severity: alert.severity, state: alert.state,
      device: alert.device },
  },
  el("header", {},
    el("span", { class: "badge" }, t(`severity.${alert.severity}`)),
    el("strong", { class: "kind" }, t(`kind.${alert.kind}`)),
    el("span", { class: "institution" }, el("a", {
      href: `/institutions/${encodeURIComponent(alert.institution)}`,
    }, institution?.name ?? alert.institution)),
    attention ? el("span", { class: "unacked" }, t("board.unacknowledged")) : null,
    el("span", { class: "state" }, t(`state.${alert.state}`))),
  el("dl", {},
    field("board.field.town", institution?.town ?? t("board.unknown")),
    field("board.field.location", place(device)),
    field("board.field.device",
      el("a", { href: `/devices/${encodeURIComponent(alert.device)}` }, alert.device),
      device ? ` · ${t(`device.${device.kind}`)}` : ""),
    field("board.field.value", withUnit(alert.value, alert)),
    field("board.field.threshold", withUnit(threshold(alert, device), alert)),
    field("board.field.first", localTime(alert.raised_at)),
    field("board.field.last", localTime(alert.last_seen_at)),
    field("board.field.count", String(alert.count)),
    field("board.field.contacts", ...contacts(institution)),
    alert.note ? field("board.field.note", alert.note) : null,
    alert.ticket_id ? field("board.field.ticket",
      el("a", { href: `/tickets/${encodeURIComponent(alert.ticket_id)}` }, alert.ticket_id)) : null),
  el("div", { class: "buttons" }, ...buttons));
}

// Each alarm's card, kept while nothing it shows has changed: a board of hundreds of alarms
// draws only what an event changed.
const cards = new Map(); // id -> { key, node }

const BUILD_PER_FRAME = 60; // cards made per frame: a board of 500 opens without freezing

function cached(alert, budget) {
  const key = [alert.updated_at, alert.state, alert.severity, alert.count,
    devices.has(alert.device), institutions.has(alert.institution)].join("|");
  const known = cards.get(alert.id);
  if (known && known.key === key) return known.node;
  if (budget.left <= 0) return known?.node ?? null; // the next frame makes it
  budget.left -= 1;
  const node = card(alert);
  cards.set(alert.id, { key, node });
  return node;
}

/** Put `nodes` in `parent` in this order, moving only what is out of place (a new alarm at
 * the top is one insertion, not a board drawn anew). */
function arrange(parent, nodes) {
  let next = parent.firstChild;
  for (const node of nodes) {
    if (node === next) next = next.nextSibling;
    else parent.insertBefore(node, next);
  }
  while (next) {
    const after = next.nextSibling;
    next.remove();
    next = after;
  }
}

function filtered() {
  const town = $("filter-town").value;
  const type = $("filter-type").value;
  const kind = $("filter-kind").value;
  return [...alarms.values()].filter((alert) => {
    const institution = institutions.get(alert.institution);
    return (!town || institution?.town === town) && (!type || institution?.type === type)
      && (!kind || alert.kind === kind);
  }).sort(order);
}

let drawing = false;
/** Draw the board at the next frame (a burst of events draws once). */
function draw() {
  if (drawing) return;
  drawing = true;
  requestAnimationFrame(() => {
    drawing = false;
    const shown = filtered();
    const budget = { left: BUILD_PER_FRAME };
    arrange(list, shown.map((alert) => cached(alert, budget)).filter(Boolean));
    if (budget.left <= 0) draw.again = true;
    for (const id of cards.keys()) if (!alarms.has(id)) cards.delete(id);
    $("empty").hidden = shown.length > 0;
    $("count-total").textContent = String(shown.length);
    for (const severity of Object.keys(RANK)) {
      $(`count-${severity}`).textContent =
        String(shown.filter((a) => a.severity === severity).length);
    }
    sound([...alarms.values()].some(needsAttention));
    if (config.focus && !draw.focused) {
      const target = $(`alarm-${config.focus}`);
      if (target) {
        target.scrollIntoView({ block: "center" });
        draw.focused = true;
      }
    }
    if (draw.again) {
      draw.again = false;
      draw();
    }
  });
}

function options(select, values, label) {
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, t("board.filter.all")),
    ...[...values].sort().map((value) => el("option", { value }, label(value))));
  select.value = chosen;
}

function fillFilters() {
  const towns = new Set([...institutions.values()].map((i) => i.town).filter(Boolean));
  const types = new Set([...institutions.values()].map((i) => i.type));
  options($("filter-town"), towns, (town) => town);
  options($("filter-type"), types, (type) => t(`type.${type}`));
  options($("filter-kind"), new Set(Object.keys(UNITS).concat(
    ["device_offline", "device_fault", "tamper"])), (kind) => t(`kind.${kind}`));
}

// --- sound (声光报警) ---------------------------------------------------------------------

function sound(on) {
  soundButton.classList.toggle("on", soundWanted);
  soundButton.classList.toggle("off", !soundWanted);
  soundButton.textContent = soundWanted ? t("board.sound.on") : t("board.sound.enable");
  document.body.classList.toggle("alarming", on);
  if (!on || !soundWanted) {
    siren.pause();
    return;
  }
  if (!siren.paused) return;
  siren.play().catch(() => {
    // The browser's autoplay rule: sound only after the person has clicked on the page.
    soundWanted = false;
    soundButton.classList.add("blocked");
    notice(t("board.sound.blocked"));
    sound(on);
  });
}

soundButton.addEventListener("click", () => {
  soundWanted = !soundWanted || soundButton.classList.contains("blocked");
  soundButton.classList.remove("blocked");
  localStorage.setItem("hw-sound", soundWanted ? "on" : "off");
  const on = [...alarms.values()].some(needsAttention);
  if (soundWanted && !on) {
    // A click is the gesture the browser waits for: play once, silently, to be allowed later.
    siren.muted = true;
    siren.play().then(() => { siren.pause(); siren.muted = false; }).catch(() => {});
  }
  notice(null);
  sound(on);
});

function notice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text ?? "";
}

// --- data -------------------------------------------------------------------------------

async function fetchMissing(alert) {
  const wanted = [];
  if (!devices.has(alert.device) && !asked.has(`d:${alert.device}`)) {
    asked.add(`d:${alert.device}`);
    wanted.push(api("GET", `/api/v1/devices/${encodeURIComponent(alert.device)}`)
      .then((d) => devices.set(d.id, d)).catch(() => {}));
  }
  if (!institutions.has(alert.institution) && !asked.has(`i:${alert.institution}`)) {
    asked.add(`i:${alert.institution}`);
    wanted.push(api("GET", `/api/v1/institutions/${encodeURIComponent(alert.institution)}`)
      .then((i) => { institutions.set(i.id, i); fillFilters(); }).catch(() => {}));
  }
  if (wanted.length) {
    await Promise.all(wanted);
    draw();
  }
}

function apply(alert) {
  const known = alarms.get(alert.id);
  if (known && known.updated_at > alert.updated_at) return; // an older change than shown
  if (alert.state === "resolved") alarms.delete(alert.id);
  else alarms.set(alert.id, alert);
  fetchMissing(alert);
}

/** The open alarms, and the event log's position up to which they hold every change (the
 * stream is followed from there: nothing raised meanwhile is missed). */
async function openAlarms() {
  const answer = await fetch("/api/v1/alerts?state=open&limit=1000", {
    credentials: "same-origin", headers: { Accept: "application/json" } });
  if (answer.status === 401) {
    toLogin();
    throw new ApiError(401, t("session.expired"));
  }
  if (!answer.ok) throw new ApiError(answer.status, `HTTP ${answer.status}`);
  position = answer.headers.get("X-Event-Position");
  return answer.json();
}

let position = null; // of the first load: where the first stream begins

async function load() {
  loaded = false; // changes that come meanwhile wait in `early`, then go over the snapshot
  const [found, homes, fleet] = await Promise.all([
    openAlarms(),
    api("GET", "/api/v1/institutions"),
    api("GET", "/api/v1/devices"),
  ]);
  for (const i of homes) institutions.set(i.id, i);
  for (const d of fleet) devices.set(d.id, d);
  alarms.clear();
  for (const alert of found) apply(alert);
  if (config.focus && !alarms.has(config.focus)) {
    try { apply(await api("GET", `/api/v1/alerts/${encodeURIComponent(config.focus)}`)); }
    catch { /* gone or not visible */ }
  }
  loaded = true;
  for (const alert of early) apply(alert);
  early = [];
  fillFilters();
  draw();
}

// --- the stream -------------------------------------------------------------------------

function connection(state) {
  const node = $("connection");
  node.className = `connection ${state}`;
  node.textContent = t(`board.connection.${state}`);
  document.body.classList.toggle("disconnected", state === "lost");
}

function onAlert(message) {
  const alert = JSON.parse(message.data).alert;
  if (!loaded) early.push(alert);
  else apply(alert);
  draw();
}

function connect() {
  connection("connecting");
  // Its first connection begins where the loaded board ends; a reconnection, where the
  // browser's last event was (it sends Last-Event-ID).
  const from = /^[0-9]{1,19}$/.test(position ?? "") ? `?last_event_id=${position}` : "";
  stream = new EventSource(`/api/v1/stream${from}`, { withCredentials: true });
  stream.addEventListener("open", () => {
    // Back after a break: read the board anew. Last-Event-ID resumes the stream, but a board
    // that had received no event yet has none to send, and what changed meanwhile must show.
    if (stream.wasDown) load().catch(failed);
    stream.wasDown = false;
    connection("open");
  });
  stream.addEventListener("alert", onAlert);
  stream.addEventListener("reset", () => { load().catch(failed); });
  stream.addEventListener("error", () => {
    stream.wasDown = true;
    connection("lost");
    if (stream.readyState === EventSource.CLOSED) {
      // The browser gave up (the session ended, or 429/503): find out, then try again.
      stream = null;
      setTimeout(async () => {
        try {
          await api("GET", "/api/v1/session");
          await load();
        } catch (error) {
          if (error instanceof ApiError && error.status === 401) return;
        }
        connect();
      }, 3000);
    }
  });
}

// --- acknowledging and resolving --------------------------------------------------------

const dialog = $("act");
let acting = null;

list.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-act]");
  if (!button) return;
  const id = button.closest("li").dataset.id;
  const alert = alarms.get(id);
  acting = { id, act: button.dataset.act };
  $("act-title").textContent =
    `${t(`kind.${alert.kind}`)} · ${institutions.get(alert.institution)?.name ?? alert.institution}`;
  $("act-submit").textContent = t(acting.act === "ack" ? "board.ack.submit" : "board.resolve.submit");
  $("act-note").value = "";
  $("act-error").hidden = true;
  dialog.showModal();
});

$("act-cancel").addEventListener("click", () => dialog.close());

$("act-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const note = $("act-note").value.trim();
  if (!note) return;
  try {
    const done = await api("POST",
      `/api/v1/alerts/${encodeURIComponent(acting.id)}/${acting.act === "ack" ? "ack" : "resolve"}`,
      { note });
    if (done?.id) apply(done);
    dialog.close();
    draw();
  } catch (error) {
    $("act-error").textContent = t("board.action.failed", { reason: error.message });
    $("act-error").hidden = false;
  }
});

for (const id of ["filter-town", "filter-type", "filter-kind"]) {
  $(id).addEventListener("change", draw);
}

function failed(error) {
  if (error instanceof ApiError && error.status === 401) return;
  notice(t("board.action.failed", { reason: error.message }));
}

(async () => {
  try {
    me = await whoAmI();
  } catch (error) {
    if (!(error instanceof ApiError)) toLogin();
    return;
  }
  await load().catch(failed);
  connect();
})();
