// One hazard ticket: its fields, its trail, the steps the person may take now (the API says
// which: `steps`), and evidence — a photo from a phone's camera, made smaller, then cited by
// the step it supports.
import { api, config, el, label, localTime, shrunk, t, upload, whoAmI } from "./common.js";

const $ = (id) => document.getElementById(id);
const id = config.ticket;
const base = `/api/v1/tickets/${encodeURIComponent(id)}`;
let ticket = null;
let chosen = null; // the step whose form is open
const fresh = new Set(); // sha256 of the files uploaded on this page: cited by the next step

// The fields each step asks for beyond the note (all text; `required` as the API wants).
const STEP_FIELDS = {
  assigned: [["responsible_unit", "ticket.field.unit", false],
    ["responsible_person", "ticket.field.person", false],
    ["responsible_phone", "ticket.field.phone", false]],
  rectified: [["measures", "ticket.field.measures", true]],
};
const PATHS = { assigned: "assign", started: "start", rectified: "rectified", verified: "verify",
  rejected: "reject", reopened: "reopen", commented: "comment" };

function field(key, ...value) {
  return el("div", { class: "field" }, el("dt", {}, t(key)), el("dd", {}, ...value));
}

function actor(name) {
  return name === "system" ? t("ticket.system") : name;
}

function files() {
  // Every stored file of the ticket, from its trail (the API keeps them per ticket).
  const found = new Map();
  for (const event of ticket.events) {
    for (const item of event.evidence) if (item.sha256) found.set(item.sha256, item);
  }
  return [...found.values()];
}

function evidenceLink(item) {
  if (item.sha256) {
    return el("a", { href: `${base}/attachments/${item.sha256}`, target: "_blank",
      rel: "noopener" }, item.name);
  }
  if (item.url) return el("a", { href: item.url, target: "_blank", rel: "noopener noreferrer" }, item.name ?? item.url);
  return el("span", {}, item.name);
}

function draw(institution) {
  document.title = `${ticket.title} · ${t("ticket.title")}`;
  $("ticket").hidden = false;
  $("ticket-title").textContent = ticket.title;
  const overdue = ticket.status !== "closed" && new Date(ticket.due_at) < new Date();
  $("ticket-badges").replaceChildren(
    el("span", { class: `status status-${ticket.status}`, id: "ticket-status" },
      label("status", ticket.status)),
    el("span", { class: "badge" }, label("severity", ticket.severity)),
    ticket.major_hazard ? el("span", { class: "major" }, t("tickets.major")) : null,
    ticket.listed_supervision ? el("span", { class: "listed" }, t("tickets.listed")) : null,
    overdue ? el("span", { class: "overdue-mark" }, t("tickets.overdue")) : null);
  $("ticket-fields").replaceChildren(
    field("tickets.col.institution", institution?.name ?? ticket.institution),
    field("tickets.col.category", label("category", ticket.category)),
    field("ticket.field.source", label("source", ticket.source)),
    ticket.device ? field("ticket.field.device", ticket.device) : null,
    ticket.description ? field("ticket.field.description", ticket.description) : null,
    field("tickets.col.found", localTime(ticket.found_at)),
    field("tickets.col.due", localTime(ticket.due_at)),
    field("ticket.field.unit", ticket.responsible_unit),
    field("ticket.field.person", ticket.responsible_person,
      ticket.responsible_phone ? el("a", { href: `tel:${ticket.responsible_phone.replace(/[^0-9+]/g, "")}`, class: "phone" }, ticket.responsible_phone) : null),
    ticket.measures ? field("ticket.field.measures", ticket.measures) : null,
    field("ticket.field.verification", t(ticket.verification_required
      ? "ticket.verification.required" : "ticket.verification.waived")),
    field("ticket.field.reported_by", actor(ticket.reported_by)),
    ticket.rectified_by ? field("ticket.field.rectified_by", actor(ticket.rectified_by)) : null,
    ticket.verified_by ? field("ticket.field.verified_by", actor(ticket.verified_by)) : null,
    ticket.closed_at ? field("ticket.field.closed", localTime(ticket.closed_at)) : null);
  $("trail").replaceChildren(...ticket.events.map((event) => el("li", { class: `event action-${event.action}` },
    el("time", { datetime: event.at }, localTime(event.at)),
    el("strong", {}, label("action", event.action)),
    el("span", { class: "actor" }, actor(event.actor)),
    el("span", { class: "status" }, `→ ${label("status", event.status)}`),
    event.note ? el("p", { class: "note" }, event.note) : null,
    event.evidence.length ? el("p", { class: "evidence" }, `${t("ticket.evidence")}: `,
      ...event.evidence.map(evidenceLink)) : null)));
  const steps = ticket.steps;
  $("steps").hidden = false;
  $("no-steps").hidden = steps.length > 0;
  $("upload").hidden = !steps.includes("commented");
  $("step-buttons").replaceChildren(...steps.filter((s) => s !== "commented").concat(
    steps.includes("commented") ? ["commented"] : []).map((step) =>
    el("button", { type: "button", class: step === "commented" ? "" : "primary",
      dataset: { step } }, label("action", step))));
}

function openStep(step) {
  chosen = step;
  $("step-title").textContent = label("action", step);
  const inputs = (STEP_FIELDS[step] ?? []).map(([name, key, required]) =>
    el("label", {}, t(key), el(name === "measures" ? "textarea" : "input", {
      name, required, maxlength: name === "measures" ? 5000 : 200,
      value: name === "measures" ? undefined : ticket[name] ?? "",
    })));
  const stored = files();
  if (stored.length && step !== "assigned") {
    inputs.push(el("fieldset", { class: "cite" }, el("legend", {}, t("ticket.evidence")),
      ...stored.map((item) => el("label", { class: "check" },
        el("input", { type: "checkbox", name: "evidence", value: item.sha256,
          checked: fresh.has(item.sha256) }), item.name))));
  }
  $("step-fields").replaceChildren(...inputs);
  $("step-form").querySelector("textarea[name=note]").value = "";
  $("step-error").hidden = true;
  $("step-form").hidden = false;
  $("step-form").scrollIntoView({ block: "nearest" });
}

async function load() {
  ticket = await api("GET", base);
  const institution = await api("GET",
    `/api/v1/institutions/${encodeURIComponent(ticket.institution)}`).catch(() => null);
  draw(institution);
}

$("step-buttons").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-step]");
  if (button) openStep(button.dataset.step);
});

$("step-cancel").addEventListener("click", () => { $("step-form").hidden = true; });

$("step-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData($("step-form"));
  const body = {};
  const note = String(data.get("note") ?? "").trim();
  if (note) body.note = note;
  for (const [name] of STEP_FIELDS[chosen] ?? []) {
    const value = String(data.get(name) ?? "").trim();
    if (value) body[name] = value;
  }
  const cited = data.getAll("evidence");
  if (cited.length) body.evidence = cited.map((sha256) => ({ sha256 }));
  try {
    await api("POST", `${base}/${PATHS[chosen]}`, body);
    for (const sha256 of cited) fresh.delete(sha256);
    $("step-form").hidden = true;
    await load();
  } catch (error) {
    $("step-error").textContent = t("ticket.failed", { reason: error.message });
    $("step-error").hidden = false;
  }
});

$("upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("upload").querySelector("input[type=file]");
  if (!input.files.length) return;
  const state = $("upload-state");
  state.textContent = t("ticket.uploading");
  try {
    const file = await shrunk(input.files[0]);
    const form = new FormData();
    form.append("file", file, file.name);
    const stored = await upload(`${base}/attachments`, form);
    fresh.add(stored.sha256);
    state.textContent = t("ticket.uploaded", { name: stored.name });
    input.value = "";
    await load();
  } catch (error) {
    state.textContent = t("ticket.failed", { reason: error.message });
  }
});

(async () => {
  try {
    await whoAmI();
  } catch {
    return;
  }
  await load().catch((error) => {
    $("notice").textContent = t("ticket.failed", { reason: error.message });
    $("notice").hidden = false;
  });
})();
