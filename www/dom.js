// DOM helpers shared by the page's views: element lookup and creation, number formats, the
// alert region, file downloads.
import { MB } from "./common.js";

export const $ = (id) => document.getElementById(id);

export const fmtMB = (bytes) => `${(bytes / MB).toFixed(bytes < 10 * MB ? 2 : 1)} MB`;
/** Sizes of downloads: KB below 1 MB, so small JSON files do not read "0.00 MB". */
export const fmtSize = (bytes) => (bytes < MB ? `${(bytes / 1024).toFixed(1)} KB` : fmtMB(bytes));
export const fmtMs = (s) => `${(s * 1000).toFixed(1)} ms`;
export const fmtInt = (n) => n.toLocaleString("en-US");

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

/** Shows an error (or notice) in the alert region; keeps the last few. */
export function showMessage(text, kind = "error") {
  const box = $("messages");
  const msg = el(
    "div",
    { class: `msg ${kind}` },
    el("span", { text: `${kind === "error" ? "Error: " : ""}${text}` }),
    el("button", {
      type: "button",
      class: "dismiss",
      "aria-label": "Dismiss message",
      text: "×",
      onclick: () => msg.remove(),
    }),
  );
  box.append(msg);
  while (box.children.length > 4) box.firstElementChild.remove();
  if (kind === "error") console.warn(`blipq: ${text}`);
}

export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
