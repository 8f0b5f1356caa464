// One device: its readings (downsampled by the API) as one chart per field with the alarm
// thresholds (the device's own, else the centre's), over 24 h, 7 d or 30 d; its alarm history.
// Apache ECharts comes from /static/vendor/echarts.min.js (a classic script run before this).
import { api, ApiError, config, el, localTime, t, toLogin, whoAmI } from "./common.js";
import { FIELDS, readingText, stateChips, states, withUnit } from "./status.js";

const $ = (id) => document.getElementById(id);
const id = config.device;
const RANGES = { "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
// The thresholds drawn on each field's chart: [name in the thresholds, label].
const LINES = {
  smoke_db_m: [["smoke_db_m", "device.threshold.alarm"]],
  gas_lel_pct: [["gas_lel_pct", "device.threshold.major"],
    ["gas_lel_pct_critical", "device.threshold.critical"]],
  co_ppm: [["co_ppm", "device.threshold.alarm"]],
  temperature_c: [],
  battery_pct: [["battery_pct", "device.threshold.low_battery"]],
};
const charts = new Map(); // field -> ECharts instance
let device = null;
let range = "24h";
let asking = 0;

function notice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text ?? "";
}

function fact(label, ...value) {
  return el("div", {}, el("dt", {}, t(label)), el("dd", {}, ...value));
}

/** The thresholds of a field's chart: the device's own values, else the centre's. */
function thresholds(field) {
  const own = device?.thresholds ?? {};
  return LINES[field].map(([name, label]) => [own[name] ?? config.thresholds?.[name], label])
    .filter(([value]) => typeof value === "number");
}

const zoneTime = new Intl.DateTimeFormat(config.language === "en" ? "en-GB" : "zh-CN", {
  timeZone: config.timezone, month: "2-digit", day: "2-digit", hour: "2-digit",
  minute: "2-digit", hour12: false,
});

/** An axis label in the centre's time zone (ECharts itself knows only the browser's). */
function axisTime(ms) {
  const p = Object.fromEntries(zoneTime.formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
  return range === "24h" ? `${p.hour}:${p.minute}` : `${p.month}-${p.day} ${p.hour}:${p.minute}`;
}

function option(field, unit, points) {
  const lines = thresholds(field);
  const top = Math.max(...points.map(([, v]) => v), ...lines.map(([v]) => v));
  return {
    animation: false,
    grid: { left: 48, right: 16, top: 28, bottom: 28 },
    title: { text: `${t(`field.${field}`)} (${t(unit)})`, textStyle: { fontSize: 13 } },
    tooltip: {
      trigger: "axis",
      renderMode: "richText", // drawn, never HTML
      formatter: (items) => items.map((i) =>
        `${localTime(new Date(i.value[0]).toISOString())}\n${withUnit(i.value[1], unit)}`)
        .join("\n"),
    },
    xAxis: { type: "time", min: Date.now() - RANGES[range], max: Date.now(),
      axisLabel: { formatter: axisTime, hideOverlap: true } },
    yAxis: { type: "value", max: Number.isFinite(top) ? Math.ceil(top * 1.1 * 100) / 100 : null },
    series: [{
      type: "line", name: field, showSymbol: false, connectNulls: false,
      data: points.map(([at, value]) => [Date.parse(at), value]),
      markLine: {
        symbol: "none", silent: true,
        lineStyle: { color: "#d4380d", type: "dashed" },
        label: { formatter: (p) => `${p.name} ${p.value}`, position: "insideEndTop" },
        data: lines.map(([value, label]) => ({ name: t(label), yAxis: value })),
      },
    }],
  };
}

function chartBox(field) {
  let box = document.getElementById(`chart-${field}`);
  if (!box) {
    box = el("div", { class: "chart", id: `chart-${field}`, dataset: { field } });
    $("charts").append(box);
  }
  return box;
}

async function readings() {
  const asked = ++asking;
  const to = new Date();
  const from = new Date(to.getTime() - RANGES[range]);
  const query = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(),
    fields: FIELDS.map(([name]) => name).join(",") });
  const answer = await api("GET", `/api/v1/devices/${encodeURIComponent(id)}/readings?${query}`);
  if (asked !== asking) return; // a later range was chosen meanwhile
  $("every").textContent = t("device.every", { minutes: String(answer.every_s / 60) });
  for (const [field, unit] of FIELDS) {
    const points = answer.fields[field] ?? [];
    const box = chartBox(field);
    box.dataset.points = String(points.length);
    box.dataset.thresholds = thresholds(field).map(([v]) => v).join(",");
    let chart = charts.get(field);
    if (!chart) {
      chart = window.echarts.init(box, null, { renderer: "canvas" });
      charts.set(field, chart);
    }
    chart.setOption(option(field, unit, points), { notMerge: true });
    box.classList.toggle("no-data", points.length === 0);
    box.dataset.empty = t("device.no_data");
  }
  $("charts").dataset.range = range;
  $("charts").dataset.loaded = String(answer.every_s);
}

function historyRow(alert) {
  return el("li", { class: `row sev-${alert.severity}`, dataset: { id: alert.id } },
    el("span", { class: "badge" }, t(`severity.${alert.severity}`)),
    el("a", { href: `/alerts/${encodeURIComponent(alert.id)}` }, t(`kind.${alert.kind}`)),
    el("span", { class: "muted" }, localTime(alert.raised_at)),
    el("span", {}, t(`state.${alert.state}`)),
    alert.note ? el("span", { class: "note" }, alert.note) : null);
}

async function load() {
  const path = `/api/v1/devices/${encodeURIComponent(id)}`;
  const [found, history] = await Promise.all([
    api("GET", path),
    api("GET", `/api/v1/alerts?device=${encodeURIComponent(id)}&limit=200`),
  ]);
  device = found;
  const open = history.filter((a) => a.state !== "resolved");
  $("name").textContent = `${device.id} · ${t(`device.${device.kind}`)}`;
  const link = $("institution-link");
  link.href = `/institutions/${encodeURIComponent(device.institution)}`;
  link.textContent = device.institution;
  api("GET", `/api/v1/institutions/${encodeURIComponent(device.institution)}`)
    .then((i) => { link.textContent = i.name; }).catch(() => {});
  $("summary").replaceChildren(
    fact("institution.status", stateChips(states(device, open))),
    fact("institution.reading", readingText(device.reading)),
    fact("field.battery_pct", withUnit(device.reading?.battery_pct, "unit.battery")),
    fact("institution.last_seen", localTime(device.last_seen)));
  $("history").replaceChildren(...history.map(historyRow));
  $("history-empty").hidden = history.length > 0;
}

for (const button of document.querySelectorAll("[data-range]")) {
  button.addEventListener("click", () => {
    range = button.dataset.range;
    for (const other of document.querySelectorAll("[data-range]")) {
      other.classList.toggle("current", other === button);
    }
    readings().catch(failed);
  });
}
window.addEventListener("resize", () => { for (const chart of charts.values()) chart.resize(); });

function failed(error) {
  if (error instanceof ApiError && error.status === 401) return;
  notice(error instanceof ApiError && error.status === 404 ? t("device.missing")
    : t("board.action.failed", { reason: error.message }));
}

(async () => {
  try {
    await whoAmI();
  } catch (error) {
    if (!(error instanceof ApiError)) toLogin();
    return;
  }
  try {
    await load();
    await readings();
  } catch (error) {
    failed(error);
  }
})();
