// Saved answers on the analyst page: save an answer, list saved ones with their status, open one
// to see how each citation reads now (word-level diff), re-ask it beside the saved answer, mark it
// reviewed, export it. Uses app.js's helpers ($, el, api, errorText); text from the server only
// enters the page through textContent.
"use strict";

const saved = { answer: null, current: null };

const STATUS_LABELS = { current: "current", needs_review: "needs review", reviewed: "reviewed" };
const CHECK_LABELS = { unchanged: "unchanged", moved: "moved", changed: "changed", gone: "gone" };

function statusTag(status) {
  return el("span", { class: `tag saved-${status}`, text: STATUS_LABELS[status] || status });
}

function setActionStatus(message) {
  $("saved-action-status").textContent = message;
}

// ---- saving ----------------------------------------------------------------------------------

function offerSave(response) {
  const answered = response.query_id && response.refused !== true && (response.citations || []).length;
  saved.answer = answered ? response : null;
  $("save-answer").hidden = !answered;
  $("save-status").textContent = "";
  if (answered) $("save-title").value = $("question").value.trim().slice(0, 200);
}

async function saveAnswer(event) {
  event.preventDefault();
  if (!saved.answer) return;
  $("save-button").disabled = true;
  try {
    const response = await api("/v1/saved", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        query_id: saved.answer.query_id,
        title: $("save-title").value.trim(),
        notes: $("save-notes").value.trim(),
      }),
    });
    if (!response.ok) {
      $("save-status").textContent = await errorText(response);
      return;
    }
    const body = await response.json();
    $("save-status").textContent = "Saved";
    await loadSaved();
    await openSaved(body.saved_id);
  } finally {
    $("save-button").disabled = false;
  }
}

// ---- the list --------------------------------------------------------------------------------

async function loadSaved() {
  let response;
  try {
    response = await api("/v1/saved?limit=100");
  } catch {
    return;
  }
  if (!response.ok) {
    $("saved").hidden = true;
    return;
  }
  const { items = [] } = await response.json();
  $("saved-list").replaceChildren(
    ...items.map((item) =>
      el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: "history-item saved-item",
            "data-saved": item.saved_id,
            onclick: () => openSaved(item.saved_id),
          },
          el("span", { class: "history-question", text: item.title }),
          statusTag(item.status),
          el("time", { datetime: item.created_at, text: new Date(item.created_at).toLocaleString() }),
        ),
      ),
    ),
  );
  $("saved").hidden = false;
}

// ---- one saved answer ------------------------------------------------------------------------

function diffNodes(diff) {
  const nodes = [];
  diff.forEach((segment, i) => {
    if (i) nodes.push(" ");
    if (segment.op === "delete") nodes.push(el("del", { text: segment.text }));
    else if (segment.op === "insert") nodes.push(el("ins", { text: segment.text }));
    else nodes.push(segment.text);
  });
  return nodes;
}

function renderCitation(citation) {
  const check = citation.check || { status: "unchanged" };
  const item = el(
    "li",
    { class: `saved-citation check-${check.status}`, "data-citation": String(citation.n) },
    el(
      "p",
      { class: "saved-where" },
      el("strong", { text: `[${citation.n}] ${citation.document_title}` }),
      ` — ${citation.section_path} `,
      el("span", { class: `tag check-tag check-${check.status}`, text: CHECK_LABELS[check.status] || check.status }),
    ),
    el("p", { class: "meta", text: `Document ${citation.document_id}, version ${citation.version.slice(0, 12)}` }),
    el("blockquote", { class: "passage-text", text: citation.text }),
  );
  if (check.status === "moved") item.append(el("p", { class: "hint", text: `The same words are now under ${check.section}.` }));
  if (check.status === "gone") item.append(el("p", { class: "hint", text: "The cited text is no longer in the document." }));
  if (check.diff && check.diff.length) {
    item.append(
      el("p", { class: "hint", text: `Now under ${check.section}: removed words struck through, added words underlined.` }),
      el("blockquote", { class: "passage-text diff" }, ...diffNodes(check.diff)),
    );
  }
  return item;
}

function renderSaved(answer) {
  saved.current = answer;
  $("saved-title").textContent = answer.title;
  const meta = [
    `Saved ${new Date(answer.created_at).toLocaleString()} by ${answer.owner}`,
    `query ${answer.query_id}`,
  ];
  if (answer.shared_with.length) meta.push(`shared with ${answer.shared_with.join(", ")}`);
  if (answer.reviewed_by) meta.push(`reviewed by ${answer.reviewed_by}`);
  $("saved-meta").replaceChildren(statusTag(answer.status), " ", meta.join(" · "));
  $("saved-reasons").replaceChildren(...answer.reasons.map((reason) => el("li", { text: reason })));
  $("saved-reasons").hidden = answer.reasons.length === 0;
  $("saved-question").textContent = answer.question;
  $("saved-answer").textContent = answer.answer;
  $("saved-citations").replaceChildren(...answer.citations.map(renderCitation));
  $("review-button").hidden = answer.status !== "needs_review";
  $("reask").hidden = true;
  $("saved-detail").hidden = false;
}

async function openSaved(savedId) {
  setActionStatus("");
  const response = await api(`/v1/saved/${encodeURIComponent(savedId)}`);
  if (!response.ok) {
    showError(await errorText(response));
    return;
  }
  renderSaved(await response.json());
  for (const button of document.querySelectorAll("[data-saved]")) {
    button.setAttribute("aria-pressed", String(button.dataset.saved === savedId));
  }
  $("saved-title").focus();
}

function answerColumn(text, citations) {
  return [
    el("p", { text }),
    el(
      "ol",
      { class: "sources" },
      ...citations.map((c) => el("li", { text: `[${c.n}] ${c.document_title} — ${c.section_path}` })),
    ),
  ];
}

async function reask() {
  const answer = saved.current;
  if (!answer) return;
  setActionStatus("Asking again on today's documents…");
  const response = await api("/v1/query", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ question: answer.question }),
  });
  if (!response.ok) {
    setActionStatus(await errorText(response));
    return;
  }
  const today = await response.json();
  $("reask-old").replaceChildren(...answerColumn(answer.answer, answer.citations));
  $("reask-new").replaceChildren(...answerColumn(today.answer, today.citations || []));
  $("reask").hidden = false;
  setActionStatus("Asked again");
}

async function markReviewed() {
  const answer = saved.current;
  if (!answer) return;
  const response = await api(`/v1/saved/${encodeURIComponent(answer.saved_id)}/review`, { method: "POST" });
  if (!response.ok) {
    setActionStatus(await errorText(response));
    return;
  }
  renderSaved(await response.json());
  setActionStatus("Marked reviewed");
  loadSaved();
}

async function exportSaved(format) {
  const answer = saved.current;
  if (!answer) return;
  const response = await api(`/v1/saved/${encodeURIComponent(answer.saved_id)}/export?format=${format}`);
  if (!response.ok) {
    setActionStatus(await errorText(response));
    return;
  }
  const link = el("a", {
    href: URL.createObjectURL(await response.blob()),
    download: `saved-answer-${answer.saved_id}.${format === "html" ? "html" : "md"}`,
  });
  document.body.append(link);
  link.click();
  link.remove();
  setActionStatus(`Exported as ${format === "html" ? "HTML" : "Markdown"}`);
}

async function deleteSaved() {
  const answer = saved.current;
  if (!answer) return;
  const response = await api(`/v1/saved/${encodeURIComponent(answer.saved_id)}`, { method: "DELETE" });
  if (!response.ok) {
    setActionStatus(await errorText(response));
    return;
  }
  saved.current = null;
  $("saved-detail").hidden = true;
  loadSaved();
}

// ---- wiring ----------------------------------------------------------------------------------

// app.js tells when the caller changes and when an answer is shown.
document.addEventListener("regulus:signed-in", () => {
  $("saved-detail").hidden = true;
  loadSaved();
});
document.addEventListener("regulus:answer", (event) => offerSave(event.detail));

document.addEventListener("DOMContentLoaded", () => {
  $("save-answer").addEventListener("submit", saveAnswer);
  $("ask").addEventListener("submit", () => { $("save-answer").hidden = true; });
  $("saved-refresh").addEventListener("click", loadSaved);
  $("reask-button").addEventListener("click", reask);
  $("review-button").addEventListener("click", markReviewed);
  $("export-markdown").addEventListener("click", () => exportSaved("markdown"));
  $("export-html").addEventListener("click", () => exportSaved("html"));
  $("delete-saved").addEventListener("click", deleteSaved);
});
