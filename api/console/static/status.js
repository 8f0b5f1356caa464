// A device's state as the institution and device pages show it, from its live state and the
// open alerts of its institution (GET /api/v1/alerts?state=open&institution=…).
import { el, t } from "./common.js";

const ALARM_KINDS = new Set(["smoke_alarm", "fire_confirmed", "gas_leak", "co_alarm"]);
// The fields of a reading, in the order shown, with their units.
export const FIELDS = [
  ["smoke_db_m", "unit.smoke"], ["gas_lel_pct", "unit.gas"], ["co_ppm", "unit.co"],
  ["temperature_c", "unit.temperature"], ["battery_pct", "unit.battery"],
];

/** The states of a device, most urgent first: alarm, offline, fault, low_battery, online,
 * unknown (never heard from). Offline, fault and low battery come from the open alerts. */
export function states(device, alerts) {
  const kinds = new Set(alerts.filter((a) => a.device === device.id).map((a) => a.kind));
  const found = [];
  if ([...kinds].some((kind) => ALARM_KINDS.has(kind))) found.push("alarm");
  if (kinds.has("device_offline") || device.online === false) found.push("offline");
  if (kinds.has("device_fault") || kinds.has("tamper")) found.push("fault");
  if (kinds.has("low_battery")) found.push("low_battery");
  if (!found.includes("offline") && device.online === true) found.push("online");
  if (!found.length) found.push("unknown");
  return found;
}

/** The chips of a device's states. */
export function stateChips(list) {
  return el("span", { class: "states" },
    ...list.map((s) => el("span", { class: `chip st-${s}`, dataset: { state: s } }, t(`status.${s}`))));
}

/** A number with its unit. */
export function withUnit(value, unit) {
  if (value === undefined || value === null) return t("board.unknown");
  const rounded = Math.round(value * 100) / 100;
  return `${rounded} ${t(unit)}`;
}

/** The latest reading as text: "燃气 3.5 %LEL · 电量 87 %". */
export function readingText(reading) {
  const parts = FIELDS.filter(([name]) => typeof reading?.[name] === "number")
    .map(([name, unit]) => `${t(`field.${name}`)} ${withUnit(reading[name], unit)}`);
  return parts.length ? parts.join(" · ") : t("board.unknown");
}
