"""A saved answer as a memo: Markdown, or one self-contained HTML file (inline style, no script,
nothing loaded from elsewhere), both carrying the question, the answer, every citation with its
section path, quoted text and document version, the dates and the audit references."""

from __future__ import annotations

import enum
import html

from core.saved import CitationStatus, SavedAnswer, SavedCitation


class MemoFormat(enum.StrEnum):
    MARKDOWN = "markdown"
    HTML = "html"


MEDIA_TYPES = {MemoFormat.MARKDOWN: "text/markdown", MemoFormat.HTML: "text/html"}
SUFFIXES = {MemoFormat.MARKDOWN: "md", MemoFormat.HTML: "html"}


def memo(answer: SavedAnswer, format: MemoFormat) -> str:
    return markdown_memo(answer) if format is MemoFormat.MARKDOWN else html_memo(answer)


def _when(answer: SavedAnswer) -> list[tuple[str, str]]:
    """The facts every memo opens with, as (label, value)."""
    facts = [
        ("Saved", f"{answer.created_at:%Y-%m-%d %H:%M} UTC by {answer.owner}"),
        ("Status", answer.status.value.replace("_", " ")),
        ("Audit reference", f"query #{answer.query_id}, saved answer {answer.saved_id}"),
    ]
    if answer.model:
        facts.append(("Answered by", answer.model))
    if answer.checked_at:
        facts.append(("Last re-checked", f"{answer.checked_at:%Y-%m-%d %H:%M} UTC"))
    if answer.reviewed_at:
        facts.append(
            ("Reviewed", f"{answer.reviewed_at:%Y-%m-%d %H:%M} UTC by {answer.reviewed_by}")
        )
    return facts


def _check_line(citation: SavedCitation) -> str | None:
    check = citation.check
    if check.status is CitationStatus.UNCHANGED:
        return None
    if check.status is CitationStatus.MOVED:
        return f"moved: the same words are now under {check.section}"
    if check.status is CitationStatus.CHANGED:
        return f"changed: the passage now reads differently (under {check.section})"
    return "gone: the cited text is no longer in the document"


def markdown_memo(answer: SavedAnswer) -> str:
    lines = [f"# {answer.title}", ""]
    lines += [f"- **{label}:** {value}" for label, value in _when(answer)]
    lines += ["", "## Question", "", answer.question, "", "## Answer", "", answer.answer, ""]
    if answer.notes:
        lines += ["## Notes", "", answer.notes, ""]
    if answer.reasons:
        lines += ["## Needs review", ""] + [f"- {reason}" for reason in answer.reasons] + [""]
    lines += ["## Citations", ""]
    for c in answer.citations:
        page = f", page {c.page}" if c.page else ""
        lines += [f"### [{c.n}] {c.document_title} — {c.section_path}{page}", ""]
        lines += [f"Document `{c.document_id}`, version `{c.version}`", ""]
        lines += [f"> {line}" for line in c.text.splitlines() if line.strip()] + [""]
        if c.quote and c.quote != c.text:
            lines += [f"Quoted: “{c.quote}”", ""]
        status = _check_line(c)
        if status:
            lines += [f"**Re-check ({c.check.checked_version}):** {status}", ""]
        if c.check.diff:
            lines += ["Changes (~~removed~~ **added**):", "", _markdown_diff(c), ""]
    return "\n".join(lines).rstrip() + "\n"


def _markdown_diff(citation: SavedCitation) -> str:
    marks = {"delete": "~~{}~~", "insert": "**{}**", "equal": "{}"}
    return " ".join(marks[s.op].format(s.text) for s in citation.check.diff)


_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; color: #1b1f24; max-width: 50rem; margin: 2rem auto;
  padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; } h3 { font-size: 1rem; }
dl { display: grid; grid-template-columns: auto 1fr; gap: .2rem 1rem; } dt { font-weight: 600; }
dd { margin: 0; } blockquote { margin: .5rem 0; padding: .5rem 1rem; border-left: 4px solid #0b5cad;
  background: #f7f9fb; white-space: pre-wrap; } code { font-size: .85rem; word-break: break-all; }
.review { background: #fff1dc; color: #7a3e00; padding: .5rem 1rem; border-radius: 6px; }
del { background: #fde8eb; color: #8a1020; } ins { background: #e3f6e8; color: #0b5a25; }
"""


def html_memo(answer: SavedAnswer) -> str:
    e = html.escape
    facts = "".join(f"<dt>{e(label)}</dt><dd>{e(value)}</dd>" for label, value in _when(answer))
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(answer.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(answer.title)}</h1><dl>{facts}</dl>",
        f"<h2>Question</h2><p>{e(answer.question)}</p>",
        f"<h2>Answer</h2><p>{e(answer.answer)}</p>",
    ]
    if answer.notes:
        parts.append(f"<h2>Notes</h2><p>{e(answer.notes)}</p>")
    if answer.reasons:
        items = "".join(f"<li>{e(reason)}</li>" for reason in answer.reasons)
        parts.append(f'<div class="review"><h2>Needs review</h2><ul>{items}</ul></div>')
    parts.append("<h2>Citations</h2>")
    for c in answer.citations:
        page = f", page {c.page}" if c.page else ""
        parts.append(f"<h3>[{c.n}] {e(c.document_title)} — {e(c.section_path)}{page}</h3>")
        parts.append(
            f"<p>Document <code>{e(c.document_id)}</code>, version <code>{e(c.version)}</code></p>"
        )
        parts.append(f"<blockquote>{e(c.text)}</blockquote>")
        if c.quote and c.quote != c.text:
            parts.append(f"<p>Quoted: “{e(c.quote)}”</p>")
        status = _check_line(c)
        if status:
            version = e(c.check.checked_version or "")
            parts.append(f"<p><strong>Re-check (<code>{version}</code>):</strong> {e(status)}</p>")
        if c.check.diff:
            tags = {"delete": "del", "insert": "ins"}
            words = " ".join(
                f"<{tags[s.op]}>{e(s.text)}</{tags[s.op]}>" if s.op in tags else e(s.text)
                for s in c.check.diff
            )
            parts.append(f"<p>Changes:</p><blockquote>{words}</blockquote>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
