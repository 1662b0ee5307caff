// Server-sent events over fetch: EventSource cannot POST a question, so the stream is read by hand.
// Follows the HTML spec's parsing rules: CR, LF or CRLF line ends, "field: value" lines, several
// data lines joined with "\n", comments starting with ":", a blank line dispatching the event.
"use strict";

/**
 * Read an event stream from a ReadableStream of bytes, calling onEvent(type, data) per event.
 * Chunks may split anywhere, even inside a UTF-8 character or between CR and LF.
 * Resolves when the stream ends; an event left unterminated at the end is dropped, as the spec says.
 */
async function readServerSentEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  let buffer = "";
  let type = "";
  let data = [];

  function line(text) {
    if (text === "") {
      if (data.length) onEvent(type || "message", data.join("\n"));
      type = "";
      data = [];
      return;
    }
    if (text.startsWith(":")) return;
    const colon = text.indexOf(":");
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
  }

  function drain(final) {
    for (;;) {
      const end = buffer.search(/\r\n|\r|\n/);
      if (end === -1) return;
      // A lone CR at the very end may be the first half of CRLF: wait for the next chunk.
      if (!final && buffer[end] === "\r" && end === buffer.length - 1) return;
      const width = buffer.startsWith("\r\n", end) ? 2 : 1;
      line(buffer.slice(0, end));
      buffer = buffer.slice(end + width);
    }
  }

  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    drain(false);
  }
  buffer += decoder.decode();
  drain(true);
}
