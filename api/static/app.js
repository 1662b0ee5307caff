// The analyst page: sign in with a key, ask, watch the answer stream, open the cited passages.
// Plain DOM code, no framework and no build step; text from the server only ever enters the page
// through textContent, never as HTML.
"use strict";

const NOT_COVERED = "The indexed documents do not address this.";
const KEY_STORAGE = "regulus.apiKey";
// The same rules as generation/citations.py, so answers without server-side sentences split alike.
const MARKER = /\[(\d+(?:\s*[,;]\s*\d+)*)\]/g;
const SENTENCE_END = /(?:(?<=[.!?])|(?<=[.!?][”"’)]))(?:\s*\[[\d,;\s]+\])*\s+(?=[A-Z0-9(‘'"“])/g;

const $ = (id) => document.getElementById(id);
const state = { passages: new Map(), citations: new Map(), controller: null, opener: null };

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return fetch(path, { ...options, headers });
}

/** The error body's message ({"error": {"message"}}), or the status when there is none. */
async function errorText(response) {
  let message = "";
  try {
    const body = await response.clone().json();
    message = body?.error?.message || "";
  } catch {
    message = (await response.text()).trim().slice(0, 500);
  }
  message = message || response.statusText || "request failed";
  if (response.status === 401 || response.status === 403) {
    return `Not allowed (${response.status}): ${message}. Sign in with a valid API key.`;
  }
  return `Error ${response.status}: ${message}`;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// ---- sign-in ---------------------------------------------------------------------------------

function showSignedIn() {
  const signedIn = Boolean(apiKey());
  $("signin-fields").hidden = signedIn;
  $("signout-button").hidden = !signedIn;
  $("signin-status").textContent = signedIn ? "Signed in" : "Not signed in";
  document.dispatchEvent(new CustomEvent("regulus:signed-in", { detail: { signedIn } }));
}

async function signIn(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) {
    $("signin-status").textContent = "Enter an API key first";
    $("api-key").focus();
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  $("api-key").value = "";
  const response = await loadDocuments();
  if (response && (response.status === 401 || response.status === 403)) {
    sessionStorage.removeItem(KEY_STORAGE);
    showSignedIn();
    $("signin-status").textContent = `Key refused: ${await errorText(response)}`;
    $("api-key").focus();
    return;
  }
  showSignedIn();
  loadHistory();
}

function signOut() {
  sessionStorage.removeItem(KEY_STORAGE);
  showSignedIn();
  $("history").hidden = true;
  $("api-key").focus();
  loadDocuments();
}

// ---- filter suggestions ----------------------------------------------------------------------

function fillList(id, values) {
  $(id).replaceChildren(...[...new Set(values.filter(Boolean))].sort().map((v) => el("option", { value: v })));
}

/** Suggestions for the filter fields from the documents the caller may read. */
async function loadDocuments() {
  let response;
  try {
    response = await api("/v1/documents?limit=500");
  } catch {
    return null;
  }
  if (!response.ok) return response;
  const body = await response.json();
  const documents = Array.isArray(body) ? body : body.items || [];
  const meta = (d, key) => (d.metadata || {})[key];
  fillList("l-documents", documents.map((d) => d.document_id));
  fillList("l-jurisdictions", documents.map((d) => meta(d, "jurisdiction")));
  fillList("l-regulators", documents.map((d) => meta(d, "regulator")));
  fillList("l-types", documents.map((d) => meta(d, "document_type")));
  return response;
}

// ---- history ---------------------------------------------------------------------------------

/** The caller's own past questions; the section stays hidden where the server has no history. */
async function loadHistory() {
  let response;
  try {
    response = await api("/v1/query/history?limit=20");
  } catch {
    return;
  }
  if (!response.ok) {
    $("history").hidden = true;
    return;
  }
  const { items = [] } = await response.json();
  $("history-list").replaceChildren(
    ...items.map((item) => {
      const when = item.time ? new Date(item.time) : null;
      const button = el(
        "button",
        { type: "button", class: "history-item", onclick: () => reuse(item.question) },
        el("span", { class: "history-question", text: item.question }),
      );
      if (when && !Number.isNaN(when.valueOf())) {
        button.append(el("time", { datetime: item.time, text: when.toLocaleString() }));
      }
      if (item.refused) button.append(el("span", { class: "tag", text: "not answered" }));
      return el("li", {}, button);
    }),
  );
  $("history").hidden = items.length === 0;
}

function reuse(question) {
  $("question").value = question;
  $("question").focus();
}

// ---- asking ----------------------------------------------------------------------------------

function listValue(id) {
  const values = $(id).value.split(",").map((v) => v.trim()).filter(Boolean);
  return values.length ? values : null;
}

function requestBody() {
  const filters = {
    document_ids: listValue("f-documents"),
    jurisdictions: listValue("f-jurisdictions"),
    regulators: listValue("f-regulators"),
    document_types: listValue("f-types"),
    effective_from: $("f-from").value || null,
    effective_to: $("f-to").value || null,
  };
  const body = { question: $("question").value.trim(), stream: true };
  const used = Object.fromEntries(Object.entries(filters).filter(([, v]) => v !== null));
  if (Object.keys(used).length) body.filters = used;
  if ($("f-top-k").value) body.top_k = Number($("f-top-k").value);
  return body;
}

function resetResult() {
  showError("");
  closePassage(false);
  state.passages = new Map();
  state.citations = new Map();
  $("result").hidden = false;
  $("refusal").hidden = true;
  $("pii").hidden = true;
  $("support").hidden = true;
  $("answer").replaceChildren();
  $("sources").replaceChildren();
  $("sources-heading").textContent = "Sources";
  $("meta").textContent = "";
}

function setBusy(busy, status) {
  $("answer").setAttribute("aria-busy", String(busy));
  $("ask-button").disabled = busy;
  $("stop-button").hidden = !busy;
  $("answer-status").textContent = status;
}

async function ask(event) {
  event.preventDefault();
  const body = requestBody();
  if (!body.question) {
    showError("Type a question first.");
    $("question").focus();
    return;
  }
  resetResult();
  setBusy(true, "Searching the documents…");
  state.controller = new AbortController();
  let finished = false;
  try {
    const response = await api("/v1/query", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream, application/json" },
      body: JSON.stringify(body),
      signal: state.controller.signal,
    });
    if (!response.ok) {
      showError(await errorText(response));
      // A model server outage still answers with what retrieval found.
      const passages = await response.json().then((b) => b.passages, () => null);
      if (passages?.length) renderSources(passages, new Set(), "Retrieved passages");
      else $("result").hidden = true;
      setBusy(false, "No answer");
      return;
    }
    const type = response.headers.get("content-type") || "";
    if (type.startsWith("text/event-stream")) {
      const streamed = el("p", { class: "streaming" });
      $("answer").replaceChildren(streamed);
      await readServerSentEvents(response.body, (name, data) => {
        const payload = JSON.parse(data);
        if (name === "passages") {
          renderSources(payload.passages || [], new Set(), "Retrieved passages");
          $("answer-status").textContent = "Writing the answer…";
        } else if (name === "token") {
          streamed.append(payload.text || "");
        } else if (name === "final") {
          finished = true;
          renderAnswer(payload);
        } else if (name === "error") {
          finished = true;
          showError(payload?.error?.message || "the answer failed");
          setBusy(false, "No answer");
        }
      });
      if (!finished) {
        showError("The answer stream ended before the answer was complete.");
        setBusy(false, "No answer");
      }
    } else {
      finished = true;
      renderAnswer(await response.json());
    }
  } catch (error) {
    if (error.name === "AbortError") setBusy(false, "Stopped");
    else {
      showError(`The request failed: ${error.message}`);
      setBusy(false, "No answer");
    }
  } finally {
    state.controller = null;
  }
}

// ---- rendering the answer --------------------------------------------------------------------

function citedNumbers(sentence) {
  const numbers = [];
  for (const match of sentence.matchAll(MARKER)) {
    for (const part of match[1].split(/[,;]/)) {
      const n = Number(part.trim());
      if (!numbers.includes(n)) numbers.push(n);
    }
  }
  return numbers;
}

/** Sentences as the server's verifier sees them; split here when the response carries none. */
function answerSentences(response) {
  if (Array.isArray(response.sentences) && response.sentences.length) return response.sentences;
  const text = response.answer || "";
  const parts = [];
  let start = 0;
  for (const match of text.matchAll(SENTENCE_END)) {
    parts.push(text.slice(start, match.index + match[0].trimEnd().length));
    start = match.index + match[0].length;
  }
  parts.push(text.slice(start));
  return parts
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => ({ text: s.replace(MARKER, "").replace(/\s+/g, " ").trim(), citations: citedNumbers(s) }));
}

function percent(value) {
  return `${Math.round(value * 100)}%`;
}

function citationButton(n, sentence) {
  const passage = state.passages.get(n);
  if (!passage) return el("span", { class: "cite missing", text: `[${n}]`, title: "No such passage" });
  const where = [passage.document_title, passage.section_path].filter(Boolean).join(", ");
  return el("button", {
    type: "button",
    class: "cite",
    text: `[${n}]`,
    "aria-label": `Citation ${n}: ${where}`,
    "data-n": String(n),
    onclick: (event) => openPassage(n, event.currentTarget, sentence),
  });
}

function renderSentence(sentence) {
  const node = el("span", { class: "sentence" }, sentence.text);
  for (const n of sentence.citations || []) node.append(" ", citationButton(n, sentence.text));
  if (sentence.supported === false) {
    node.classList.add("unsupported");
    const score = typeof sentence.support === "number" ? ` (support ${percent(sentence.support)})` : "";
    node.append(
      " ",
      el("span", { class: "badge warn" }, el("span", { "aria-hidden": "true", text: "⚠" }), ` Not supported by the cited passage${score}`),
    );
    // Why, when a check found it: "duration 48 hours not in the cited passage (it says 72 hours)".
    if (sentence.reason) node.append(" ", el("span", { class: "reason" }, sentence.reason));
  }
  return node;
}

function sentencesParagraph(sentences) {
  const paragraph = el("p");
  sentences.forEach((sentence, i) => {
    if (i) paragraph.append(" ");
    paragraph.append(renderSentence(sentence));
  });
  return paragraph;
}

const PART_STATUS = {
  answered: ["ok", "Answered"],
  unanswered: ["warn", "Not answered by the passages found"],
  not_covered: ["warn", "Not covered by the indexed documents"],
};

/** A multi-part answer: each part of the question, its status, and the sentences answering it. */
function renderParts(parts, sentences) {
  const list = el("ol", { class: "parts" });
  parts.forEach((part, i) => {
    const [kind, label] = PART_STATUS[part.status] || PART_STATUS.unanswered;
    const item = el(
      "li",
      { class: `part ${part.status}` },
      el("p", { class: "part-question" }, el("strong", { text: `Part ${i + 1}: ` }), part.text, " ", el("span", { class: `badge ${kind}`, text: label })),
    );
    const own = sentences.filter((sentence) => sentence.part === i + 1);
    if (own.length) item.append(sentencesParagraph(own));
    list.append(item);
  });
  return list;
}

function renderAnswer(response) {
  state.passages = new Map((response.passages || []).map((p) => [p.n, p]));
  state.citations = new Map((response.citations || []).map((c) => [c.n, c]));
  const refused = response.refused === true || (response.answer || "").trim() === NOT_COVERED;
  const parts = Array.isArray(response.parts) ? response.parts : [];
  let shown = [];
  if (!refused && parts.length > 1) shown = [renderParts(parts, answerSentences(response))];
  else if (!refused) shown = [sentencesParagraph(answerSentences(response))];
  $("answer").replaceChildren(...shown);
  $("refusal").hidden = !refused;

  if (Array.isArray(response.pii) && response.pii.length) {
    $("pii").replaceChildren(
      el("span", { "aria-hidden": "true", text: "⚠ " }),
      el("strong", { text: "Personal data flagged in this answer: " }),
      response.pii.join(", "),
    );
    $("pii").hidden = false;
  }
  if (typeof response.support_score === "number") {
    $("support").textContent = `Verified support: ${percent(response.support_score)} of sentences backed by their passages.`;
    $("support").hidden = false;
  }
  const cited = new Set([
    ...state.citations.keys(),
    ...answerSentences(response).flatMap((sentence) => sentence.citations || []),
  ]);
  renderSources(response.passages || [], cited, refused ? "Closest passages" : "Sources");
  const usage = response.usage;
  const meta = [`Model: ${response.model || usage?.model || "unknown"}`];
  if (usage) {
    meta.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
    if (usage.cost_usd) meta.push(`$${usage.cost_usd.toFixed(4)}`);
  }
  if (response.query_id) meta.push(`query ${response.query_id}`);
  $("meta").textContent = meta.join(" · ");
  setBusy(false, refused ? "Not answered" : "Answered");
  loadHistory();
  document.dispatchEvent(new CustomEvent("regulus:answer", { detail: response }));
}

function renderSources(passages, cited, heading) {
  $("sources-heading").textContent = heading;
  for (const p of passages) state.passages.set(p.n, state.passages.get(p.n) || p);
  const shown = cited.size ? passages.filter((p) => cited.has(p.n)) : passages;
  $("sources").replaceChildren(
    ...shown.map((p) => {
      const where = [p.section_path || p.section, p.page ? `page ${p.page}` : ""].filter(Boolean).join(", ");
      return el(
        "li",
        {},
        el(
          "button",
          { type: "button", class: "source", "data-n": String(p.n), onclick: (e) => openPassage(p.n, e.currentTarget) },
          el("span", { class: "source-n", text: `[${p.n}]` }),
          el("span", { class: "source-title", text: p.document_title }),
          el("span", { class: "source-where", text: where }),
        ),
      );
    }),
  );
}

// ---- the passage panel -----------------------------------------------------------------------

/** Text nodes with the quote wrapped in <mark>; whitespace differences are tolerated. */
function highlighted(text, quote) {
  if (!quote) return [text];
  let start = text.indexOf(quote);
  let length = quote.length;
  if (start === -1) {
    const words = quote.trim().split(/\s+/).map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const match = new RegExp(words.join("\\s+")).exec(text);
    if (!match) return [text];
    start = match.index;
    length = match[0].length;
  }
  return [text.slice(0, start), el("mark", { text: text.slice(start, start + length) }), text.slice(start + length)];
}

/** What to highlight: the sentence itself where it quotes the passage, else the citation's quote. */
function quoteFor(n, sentence) {
  const verbatim = (sentence || "").replace(/^[“"‘']+|[”"’']+$/g, "").trim();
  if (verbatim.length >= 20 && state.passages.get(n).text.includes(verbatim)) return verbatim;
  return state.citations.get(n)?.quote;
}

function openPassage(n, opener, sentence) {
  const passage = state.passages.get(n);
  if (!passage) return;
  state.opener = opener || null;
  $("passage-n").textContent = `[${n}]`;
  $("passage-title").textContent = passage.document_title;
  $("passage-section").textContent = passage.section_path || passage.section || "—";
  $("passage-page").textContent = passage.page ?? "—";
  $("passage-document").textContent = passage.document_id;
  $("passage-text").replaceChildren(...highlighted(passage.text, quoteFor(n, sentence)));
  for (const button of document.querySelectorAll("[data-n]")) {
    button.setAttribute("aria-pressed", String(button.dataset.n === String(n)));
  }
  $("passage").hidden = false;
  $("passage-heading").focus();
  $("passage-text").querySelector("mark")?.scrollIntoView({ block: "nearest" });
}

function closePassage(returnFocus = true) {
  $("passage").hidden = true;
  for (const button of document.querySelectorAll("[data-n]")) button.removeAttribute("aria-pressed");
  if (returnFocus && state.opener?.isConnected) state.opener.focus();
  state.opener = null;
}

// ---- wiring ----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("signin").addEventListener("submit", signIn);
  $("signout-button").addEventListener("click", signOut);
  $("ask").addEventListener("submit", ask);
  $("stop-button").addEventListener("click", () => state.controller?.abort());
  $("passage-close").addEventListener("click", () => closePassage());
  $("passage").addEventListener("keydown", (e) => {
    if (e.key === "Escape") closePassage();
  });
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("ask").requestSubmit();
  });
  showSignedIn();
  loadDocuments();
  loadHistory();
});
