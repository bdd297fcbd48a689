// The benchmark report view: the comparison table (from comparison.md), the per-image timing
// chart, the engine's size-vs-quality and speed-vs-quality charts (the SVG files `blipq bench`
// writes), and the report files to download, exactly the files `blipq bench` writes.
import { $, download, el } from "./dom.js";

/** Shows a report; `title` says which models ran over which images (the table's caption). */
export function showReport(report, title) {
  const results = report.models.map((m) => JSON.parse(m.resultsJson));
  $("bench-output").hidden = false;
  $("bench-markdown").textContent = report.comparisonMarkdown;
  renderMarkdownTable(report.comparisonMarkdown, $("bench-table"), title);
  renderChart(results);
  // The trade-off charts as images (an <img> never runs anything inside the SVG).
  const tradeoffs = $("bench-tradeoffs");
  for (const img of tradeoffs.querySelectorAll("img")) URL.revokeObjectURL(img.src);
  tradeoffs.replaceChildren(
    ...report.charts.map((c) =>
      el("img", {
        src: URL.createObjectURL(new Blob([c.svg], { type: "image/svg+xml" })),
        alt: new DOMParser().parseFromString(c.svg, "image/svg+xml").querySelector("desc")?.textContent ?? c.file,
        "data-file": c.file,
        width: 640,
        height: 400,
      }),
    ),
  );
  const downloads = $("bench-downloads");
  downloads.replaceChildren();
  const files = [];
  for (const m of report.models) {
    files.push([`${m.label}_results.json`, m.resultsJson, "application/json"]);
    files.push([`${m.label}_captions.json`, m.captionsJson, "application/json"]);
  }
  files.push(["comparison.json", report.comparisonJson, "application/json"]);
  files.push(["comparison.md", report.comparisonMarkdown, "text/markdown"]);
  for (const c of report.charts) files.push([c.file, c.svg, "image/svg+xml"]);
  for (const [name, text, type] of files) {
    downloads.append(
      el("button", {
        type: "button",
        class: "secondary",
        "data-file": name,
        text: `Download ${name}`,
        onclick: () => download(name, text, type),
      }),
    );
  }
  $("bench-output").dataset.report = JSON.stringify({ files: files.map((f) => f[0]) });
  window.blipqLastReport = report; // for scripting and the e2e test
}

/** The table of a comparison.md (its `|` lines); the lines after it (the unit note) join the caption. */
function renderMarkdownTable(md, table, title) {
  const lines = md.trim().split("\n").map((l) => l.trim());
  const rows = lines
    .filter((l) => l.startsWith("|") && !/^\|(-+\|)+$/.test(l))
    .map((l) => l.replace(/^\||\|$/g, "").split("|").map((c) => c.trim()));
  const notes = lines.filter((l) => l && !l.startsWith("|")).join(" ");
  const [head, ...body] = rows;
  table.replaceChildren(
    el("caption", { text: `${title} (the first model is the reference). ${notes}`.trim() }),
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))),
    el(
      "tbody",
      {},
      ...body.map((r) => el("tr", {}, el("th", { scope: "row", text: r[0] }), ...r.slice(1).map((c) => el("td", { text: c })))),
    ),
  );
}

function renderChart(results) {
  const W = 720;
  const H = 260;
  const pad = { l: 56, r: 16, t: 16, b: 40 };
  const colors = ["#1d4ed8", "#c2410c", "#15803d", "#7e22ce"];
  const series = results.map((r) => r.performance_metrics.individual_times);
  const n = Math.max(...series.map((s) => s.length), 1);
  const maxT = Math.max(...series.flat(), 1e-6) * 1.1;
  const x = (i) => pad.l + (n === 1 ? (W - pad.l - pad.r) / 2 : (i / (n - 1)) * (W - pad.l - pad.r));
  const y = (t) => H - pad.b - (t / maxT) * (H - pad.t - pad.b);
  const ns = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  };
  const summary = results
    .map((r) => `${r.label}: mean ${(r.performance_metrics.avg_inference_time * 1000).toFixed(1)} ms per image`)
    .join("; ");
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-h chart-desc" });
  const desc = svg("desc", { id: "chart-desc" });
  desc.textContent = `Seconds per image for each model over ${n} images. ${summary}.`;
  root.append(desc);
  for (let k = 0; k <= 4; k++) {
    const t = (maxT * k) / 4;
    root.append(svg("line", { x1: pad.l, x2: W - pad.r, y1: y(t), y2: y(t), class: "grid" }));
    const label = svg("text", { x: pad.l - 6, y: y(t) + 4, "text-anchor": "end", class: "axis" });
    label.textContent = `${(t * 1000).toFixed(maxT < 0.05 ? 1 : 0)} ms`;
    root.append(label);
  }
  const xl = svg("text", { x: (W + pad.l) / 2, y: H - 8, "text-anchor": "middle", class: "axis" });
  xl.textContent = "image (eval order)";
  root.append(xl);
  series.forEach((s, k) => {
    const color = colors[k % colors.length];
    root.append(
      svg("polyline", {
        points: s.map((t, i) => `${x(i)},${y(t)}`).join(" "),
        fill: "none",
        stroke: color,
        "stroke-width": 2,
      }),
    );
    s.forEach((t, i) => root.append(svg("circle", { cx: x(i), cy: y(t), r: 3, fill: color })));
  });
  const legend = el(
    "ul",
    { class: "legend" },
    ...results.map((r, k) =>
      el("li", {}, el("span", { class: "swatch", style: `background:${colors[k % colors.length]}` }), r.label),
    ),
  );
  $("bench-chart").replaceChildren(root, legend);
}
