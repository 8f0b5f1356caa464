// The institutions the person may see: devices online of all, open alarms, each linked to
// its page.
import { api, ApiError, el, t, toLogin, whoAmI } from "./common.js";

const $ = (id) => document.getElementById(id);

function rate(online, devices) {
  return devices ? `${Math.round((100 * online) / devices)} %` : t("board.unknown");
}

function card(institution, alarms) {
  const mine = alarms.filter((a) => a.institution === institution.id).length;
  return el("li", { class: "card item", dataset: { id: institution.id } },
    el("a", { class: "title", href: `/institutions/${encodeURIComponent(institution.id)}` },
      institution.name),
    el("span", { class: "muted" },
      [institution.town, t(`type.${institution.type}`)].filter(Boolean).join(" · ")),
    el("dl", { class: "facts" },
      el("div", {}, el("dt", {}, t("institution.devices")), el("dd", {}, String(institution.devices))),
      el("div", {}, el("dt", {}, t("institution.online_rate")),
        el("dd", { class: "online-rate" }, rate(institution.online, institution.devices))),
      el("div", {}, el("dt", {}, t("institution.alarms")),
        el("dd", { class: mine ? "alarm-count hot" : "alarm-count" }, String(mine)))));
}

(async () => {
  try {
    await whoAmI();
    const [homes, alarms] = await Promise.all([
      api("GET", "/api/v1/institutions"),
      api("GET", "/api/v1/alerts?state=open&limit=1000"),
    ]);
    homes.sort((a, b) => a.name.localeCompare(b.name, "zh-CN"));
    $("institutions").replaceChildren(...homes.map((i) => card(i, alarms)));
    $("empty").hidden = homes.length > 0;
    $("institutions").removeAttribute("aria-busy");
  } catch (error) {
    if (!(error instanceof ApiError)) { toLogin(); return; }
    if (error.status === 401) return;
    $("notice").textContent = t("board.action.failed", { reason: error.message });
    $("notice").hidden = false;
  }
})();
