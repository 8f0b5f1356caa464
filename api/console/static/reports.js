// The monthly reports: a preview of the table, and its download as Excel or CSV (the same
// endpoint; the session cookie goes with a plain link).
import { api, el, t, whoAmI } from "./common.js";

const $ = (id) => document.getElementById(id);
const form = $("report-form");

function thisMonth() {
  // The centre's month, not the browser's.
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-GB", {
    timeZone: JSON.parse($("hw-config").textContent).timezone, year: "numeric", month: "2-digit",
  }).formatToParts(new Date()).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}`;
}

async function show() {
  const data = new FormData(form);
  const month = String(data.get("month"));
  const params = (format) => new URLSearchParams({ month, lang: String(data.get("lang")), format });
  const path = `/api/v1/reports/${data.get("report")}`;
  $("download-xlsx").href = `${path}?${params("xlsx")}`;
  $("download-csv").href = `${path}?${params("csv")}`;
  $("notice").hidden = true;
  try {
    const table = await api("GET", `${path}?${params("json")}`);
    $("report-title").textContent = table.title;
    $("report-table").replaceChildren(
      el("thead", {}, el("tr", {}, ...table.headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, ...table.rows.map((row) =>
        el("tr", {}, ...row.map((cell) => el("td", {}, cell ?? ""))))));
  } catch (error) {
    $("notice").textContent = t("ticket.failed", { reason: error.message });
    $("notice").hidden = false;
  }
}

form.addEventListener("change", show);

(async () => {
  try {
    await whoAmI();
  } catch {
    return;
  }
  form.elements.month.value = thisMonth();
  await show();
})();
