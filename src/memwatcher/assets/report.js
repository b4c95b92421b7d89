// memwatcher's memleak report: icicle graph, plot over time, stack table and run metadata,
// drawn from the JSON in #memleak-data. No library, no network. When done it sets
// <body data-rendered="ok"> (or "error" with the message shown): tests read that marker.
(function () {
  "use strict";
  const body = document.body;

  function fail(message) {
    body.dataset.rendered = "error";
    const box = document.getElementById("error");
    box.hidden = false;
    box.textContent = "This report failed to render: " + message;
  }
  window.addEventListener("error", (ev) => fail(ev.message || String(ev.error)));

  // ------------------------------------------------------------------ helpers

  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const c of children) node.append(c);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = Math.abs(n), u = 0;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    const text = u === 0 ? String(Math.round(v)) : v.toFixed(v < 10 ? 2 : 1);
    return (n < 0 ? "-" : "") + text + " " + units[u];
  }

  const fmtCount = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

  function fmtSecs(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }

  const basename = (p) => p.slice(p.lastIndexOf("/") + 1);

  function hash(text) {  // FNV-1a: stable colours per name
    let h = 0x811c9dc5;
    for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
    return h >>> 0;
  }

  // ------------------------------------------------------------------ data

  const D = JSON.parse($("memleak-data").textContent);
  const meta = D.meta, run = meta.run || {};
  const UNKNOWN = -1;  // frame index of a stack the kernel could not record
  const REST = -2;  // the callees too narrow to draw, drawn as one block
  const frame = (i) => {
    if (i === UNKNOWN) return { name: "[stack not recorded]", file: "", line: 0, module: "", inlined: false };
    const f = D.frames[i];
    return { name: f[0], file: f[1] >= 0 ? D.paths[f[1]] : "", line: f[2], module: f[3] >= 0 ? D.paths[f[3]] : "", inlined: !!f[4] };
  };
  const where = (f) => (f.file ? basename(f.file) + (f.line ? ":" + f.line : "") : f.module ? basename(f.module) : "");
  const stacks = D.stacks.map((s) => ({
    id: s[0], bytes: s[1], allocs: s[2], age: s[3], verdict: s[4], growth: s[5], growing: s[6],
    frames: s[7].length ? s[7] : [UNKNOWN],
    // Share of what the stack allocated since tracing began that it freed again (null: unknown).
    freedShare: s[8] > 0 && s[9] !== null && s[9] !== undefined ? s[9] / s[8] : null, allocated: s[8],
  }));
  // A stack's name: its allocation site and, where other stacks share the site, the innermost
  // frame in which it differs from all of them (the caller that tells them apart). Found by
  // counting the stacks through each node of a trie of frames, innermost first. (Stacks can
  // have the same frames all through: frames without lines merge whatever their offsets.)
  (function nameCallers() {
    const trie = { kids: new Map(), count: 0 };
    for (const s of stacks) {
      let node = trie;
      for (const fi of s.frames) {
        if (!node.kids.has(fi)) node.kids.set(fi, { kids: new Map(), count: 0 });
        node = node.kids.get(fi);
        node.count++;
      }
    }
    for (const s of stacks) {
      let node = trie.kids.get(s.frames[0]), depth = 0;
      while (node.count > 1 && depth + 1 < s.frames.length) node = node.kids.get(s.frames[++depth]);
      if (node.count > 1) depth = Math.min(1, s.frames.length - 1);  // the same frames all through: the caller
      s.caller = depth > 0 ? frame(s.frames[depth]).name : "";
    }
  })();
  const site = (s) => frame(s.frames[0]).name + (s.caller ? " ← " + s.caller : "");
  const searchText = new Map();  // frame index -> what a search matches: name, file:line, module
  function textOf(i) {
    let t = searchText.get(i);
    if (t === undefined) {
      const f = frame(i);
      t = f.name + " " + f.file + ":" + f.line + " " + f.module;
      searchText.set(i, t);
    }
    return t;
  }

  let weight = "bytes";
  const value = (n) => (weight === "bytes" ? n.bytes : n.allocs);
  let pattern = null;  // RegExp of the search, or null
  const hits = (fi) => pattern !== null && pattern.test(textOf(fi));
  const stackHit = (s) => pattern !== null && s.frames.some(hits);

  // ------------------------------------------------------------------ header and cards

  function header() {
    $("target").textContent = meta.target || "";
    const parts = [meta.time || ""];
    if (run.kernel) parts.push("kernel " + run.kernel);
    if (run.hostname) parts.push(run.hostname);
    parts.push(meta.final ? "final report" : "written before the trace ended");
    if (meta.estimated) parts.push("estimates: 1 in " + meta.sample_rate + " allocations sampled");
    $("subtitle").textContent = parts.filter(Boolean).join(" · ");
    const lost = ["lost_allocs", "lost_stacks", "stack_errors", "lost_inflight", "missed_frees"]
      .reduce((sum, k) => sum + (meta[k] || 0), 0);
    const growing = stacks.filter((s) => s.verdict === "growing").length;
    const held = stacks.filter((s) => s.bytes > 0).length;
    const cards = [
      [fmtBytes(meta.total_outstanding_bytes), "outstanding"],
      [fmtCount(meta.total_outstanding_allocs), "allocations"],
      [fmtCount(held), "stacks holding memory"],
      [fmtCount(growing), "stacks growing", growing > 0],
      [fmtSecs(meta.traced_s), "traced, " + fmtCount(meta.intervals) + " reads"],
      [fmtCount(lost), "lost or missed events", lost > 0],
    ];
    for (const [big, small, warn] of cards) {
      $("cards").append(el("div", { class: "card" + (warn ? " warn" : "") }, el("b", {}, big), el("span", {}, small)));
    }
  }

  // ------------------------------------------------------------------ icicle graph

  const ROW_PX = 18, MIN_PX = 0.7, LABEL_PX = 28;
  const root = { frame: null, parent: null, kids: new Map(), bytes: 0, allocs: 0, depth: 0, sorted: {} };
  for (const s of stacks) {
    if (s.bytes <= 0 && s.allocs <= 0) continue;
    let node = root;
    node.bytes += s.bytes;
    node.allocs += s.allocs;
    for (let i = s.frames.length - 1; i >= 0; i--) {  // outermost first: main on top
      const fi = s.frames[i];
      let kid = node.kids.get(fi);
      if (!kid) {
        kid = { frame: fi, parent: node, kids: new Map(), bytes: 0, allocs: 0, depth: node.depth + 1, sorted: {} };
        node.kids.set(fi, kid);
      }
      kid.bytes += s.bytes;
      kid.allocs += s.allocs;
      node = kid;
    }
  }
  let zoom = root;
  let shown = [];  // nodes drawn, by the index in their element's data-i

  function kidsOf(node) {
    if (!node.sorted[weight]) node.sorted[weight] = [...node.kids.values()].sort((a, b) => value(b) - value(a));
    return node.sorted[weight];
  }

  const FAMILIES = [28, 200, 140, 275, 48, 340, 175];
  function colour(node) {
    if (node.frame === null) return "hsl(210, 12%, 82%)";
    if (node.frame === UNKNOWN || node.frame === REST) return "hsl(0, 0%, 85%)";
    const f = frame(node.frame);
    if (!f.module && !f.file) return "hsl(0, 0%, 80%)";
    const base = FAMILIES[hash(f.module || f.file) % FAMILIES.length];
    const h = hash(f.name);
    return "hsl(" + (base + (h % 24) - 12) + ", " + (62 + (h >> 8) % 18) + "%, " + (70 + (h >> 16) % 12) + "%)";
  }

  function label(node) {
    if (node.frame === null) {
      const outstanding = meta.total_outstanding_bytes || 0;
      if (root.bytes >= outstanding) return ["all stacks", ""];
      // JSON lines saved with --top hold only the largest stacks of each read.
      return ["the stacks listed: " + fmtBytes(root.bytes) + " of " + fmtBytes(outstanding) + " outstanding", ""];
    }
    if (node.frame === REST) return [node.count + " narrower callees", ""];
    const f = frame(node.frame);
    return [f.name + (f.inlined ? " (inlined)" : ""), where(f)];
  }

  function renderFlame() {
    const box = $("flame");
    box.textContent = "";
    shown = [];
    if (value(root) <= 0) {
      box.style.height = "";
      box.append(el("div", { class: "empty" }, "Nothing outstanding at the end of the trace."));
      return;
    }
    const width = box.clientWidth;
    const frag = document.createDocumentFragment();
    let deepest = 0;
    const add = (node, x, w, depth, cls) => {
      const div = el("div", { class: "f" + cls, "data-i": shown.length });
      div.style.cssText = "left:" + x.toFixed(1) + "px;top:" + depth * ROW_PX + "px;width:" + w.toFixed(1) + "px;background:" + colour(node);
      if (w >= LABEL_PX) {
        const [name, loc] = label(node);
        div.append(name);
        if (loc) div.append(el("i", {}, " " + loc));
      }
      shown.push(node);
      frag.append(div);
      deepest = Math.max(deepest, depth);
    };
    const chain = [];
    for (let n = zoom; n; n = n.parent) chain.unshift(n);
    chain.slice(0, -1).forEach((n, depth) => add(n, 0, width, depth, " anc" + (n.frame !== null && hits(n.frame) ? " hit" : "")));
    const scale = width / value(zoom);
    const lay = (node, x, depth) => {
      add(node, x, value(node) * scale, depth, node.frame !== null && hits(node.frame) ? " hit" : "");
      const kids = kidsOf(node);
      let k = 0;
      for (; k < kids.length && value(kids[k]) * scale >= MIN_PX; k++) {
        lay(kids[k], x, depth + 1);
        x += value(kids[k]) * scale;
      }
      // The narrower callees (sorted last) as one grey block: their memory stays visible.
      const rest = { frame: REST, parent: node, count: 0, bytes: 0, allocs: 0 };
      for (; k < kids.length; k++) {
        rest.count++;
        rest.bytes += kids[k].bytes;
        rest.allocs += kids[k].allocs;
      }
      if (value(rest) * scale >= MIN_PX) add(rest, x, value(rest) * scale, depth + 1, " rest");
    };
    lay(zoom, 0, chain.length - 1);
    box.style.height = (deepest + 1) * ROW_PX + "px";
    box.append(frag);
  }

  function describe(node) {
    const total = value(root);
    const [name, loc] = label(node);
    const f = node.frame !== null && node.frame >= 0 ? frame(node.frame) : null;
    let text = name + (loc ? "  " + (f && f.file ? f.file + (f.line ? ":" + f.line : "") : loc) : "");
    if (f && f.module) text += "  [" + f.module + "]";
    text += "  —  " + fmtBytes(node.bytes) + " in " + fmtCount(node.allocs) + " allocations";
    text += " (" + ((100 * value(node)) / total).toFixed(1) + "% of all " + (weight === "bytes" ? "bytes" : "allocations") + ")";
    return text;
  }

  function wireFlame() {
    const box = $("flame");
    const nodeAt = (ev) => {
      const i = ev.target.closest(".f") ? Number(ev.target.closest(".f").dataset.i) : -1;
      return i >= 0 ? shown[i] : null;
    };
    box.addEventListener("mousemove", (ev) => {
      const node = nodeAt(ev);
      if (node) $("hover").textContent = describe(node);
    });
    box.addEventListener("click", (ev) => {
      const node = nodeAt(ev);
      if (node && node.frame !== REST) {
        zoom = node;
        renderFlame();
      }
    });
    $("reset").addEventListener("click", () => {
      zoom = root;
      renderFlame();
    });
    for (const radio of document.querySelectorAll("input[name=weight]")) {
      radio.addEventListener("change", () => {
        weight = radio.value;
        if (value(zoom) <= 0) zoom = root;
        renderFlame();
        renderMatch();
      });
    }
    let timer = 0;
    $("search").addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(search, 150);
    });
    // Redrawn when its width changes: a window resized, a scroll bar come or gone.
    let drawnWidth = box.clientWidth, resize = 0;
    new ResizeObserver(() => {
      if (box.clientWidth === drawnWidth) return;
      drawnWidth = box.clientWidth;
      clearTimeout(resize);
      resize = setTimeout(renderFlame, 50);
    }).observe(box);
  }

  function search() {
    const text = $("search").value.trim();
    try {
      pattern = text ? new RegExp(text, "i") : null;
    } catch (e) {  // not a regex: the literal text
      pattern = new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "i");
    }
    try {  // in the address too (#search=...): a link or a reload shows the same matches
      history.replaceState(null, "", text ? "#search=" + encodeURIComponent(text) : location.pathname);
    } catch (e) {
      // a page the browser will not let rewrite its address (sandboxed): the search still works
    }
    renderFlame();
    renderMatch();
    renderTable();
  }

  function renderMatch() {
    if (pattern === null) {
      $("match").textContent = "";
      return;
    }
    let sum = 0;
    for (const s of stacks) if (stackHit(s)) sum += weight === "bytes" ? s.bytes : s.allocs;
    const total = value(root) || 1;
    const amount = weight === "bytes" ? fmtBytes(sum) : fmtCount(sum) + " allocations";
    $("match").textContent = "matched " + amount + " (" + ((100 * sum) / total).toFixed(1) + "%)";
  }

  // ------------------------------------------------------------------ plot over time

  const PALETTE = ["#d1495b", "#00798c", "#edae49", "#6a4c93", "#30a14e", "#8d6e63"];

  function niceStep(range, ticks) {
    const raw = range / ticks, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  function renderPlot() {
    const S = D.series, t = S.t_s, n = t.length;
    const W = 1000, H = 260, L = 78, R = 24, T = 14, B = 30;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "outstanding bytes over time" });
    const lines = [{ name: "total", values: S.bytes, colour: "#1f2328", width: 2.4 }];
    S.stacks.forEach(([id, values], k) => {
      const s = stacks.find((x) => x.id === id);
      lines.push({ name: site(s), values, colour: PALETTE[k % PALETTE.length], width: 1.6 });
    });
    const t0 = t.reduce((a, b) => Math.min(a, b), 0), t1 = n && t[n - 1] > t0 ? t[n - 1] : t0 + 1;  // from the attach
    const top = [S.bytes, ...S.stacks.map(([, v]) => v)].flat().reduce((a, b) => (b === null ? a : Math.max(a, b)), 1);
    // Steps round in the unit the ticks are written in (1 KiB, 2 KiB, 5 KiB, not 19.5 KiB).
    const unit = Math.pow(1024, Math.max(0, Math.floor(Math.log(top) / Math.log(1024))));
    const step = niceStep(top / unit, 4) * unit, yMax = Math.ceil((top * 1.04) / step) * step;
    const x = (s) => L + ((s - t0) / (t1 - t0 || 1)) * (W - L - R);
    const y = (b) => T + (1 - b / yMax) * (H - T - B);
    for (let v = 0; v <= yMax + step / 2; v += step) {
      chart.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      const tick = svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" });
      const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
      tick.textContent = (v ? parseFloat((v / unit).toFixed(2)) + " " + units[Math.round(Math.log(unit) / Math.log(1024))] : "0");
      chart.append(tick);
    }
    const tStep = niceStep(t1 - t0 || 1, 8);
    for (let s = Math.ceil(t0 / tStep) * tStep; s <= t1 + 1e-9; s += tStep) {
      const tick = svg("text", { x: x(s), y: H - B + 16, "text-anchor": "middle" });
      tick.textContent = (Math.round(s * 100) / 100) + " s";
      chart.append(tick);
    }
    chart.append(svg("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), stroke: "#8c959f" }));
    for (const line of lines.slice().reverse()) {  // total last: on top
      let d = "", pen = false;
      line.values.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        d += (pen ? "L" : "M") + x(t[i]).toFixed(1) + "," + y(v).toFixed(1);
        pen = true;
      });
      chart.append(svg("path", { d, fill: "none", stroke: line.colour, "stroke-width": line.width, "stroke-linejoin": "round" }));
      if (n <= 40) {
        line.values.forEach((v, i) => {
          if (v !== null) chart.append(svg("circle", { cx: x(t[i]), cy: y(v), r: 2.6, fill: line.colour }));
        });
      }
    }
    if (n < 2) {
      const note = svg("text", { class: "note", x: L + 12, y: T + 16 });
      note.textContent = "One read only: trace longer or with a shorter --interval for a curve.";
      chart.append(note);
    }
    // Crosshair: the values at the read nearest the pointer.
    const cross = svg("line", { y1: T, y2: H - B, stroke: "#8c959f", "stroke-dasharray": "3 3", visibility: "hidden" });
    const readout = svg("text", { x: L + 8, y: T + 12, visibility: "hidden" });
    chart.append(cross, readout);
    chart.addEventListener("mousemove", (ev) => {
      const box = chart.getBoundingClientRect();
      const px = ((ev.clientX - box.left) / box.width) * W;
      let best = 0;
      for (let i = 1; i < n; i++) if (Math.abs(x(t[i]) - px) < Math.abs(x(t[best]) - px)) best = i;
      if (!n) return;
      cross.setAttribute("x1", x(t[best]));
      cross.setAttribute("x2", x(t[best]));
      cross.setAttribute("visibility", "visible");
      readout.textContent = "at " + t[best].toFixed(1) + " s: " +
        lines.map((l) => l.name + " " + fmtBytes(l.values[best])).join(" · ");
      readout.setAttribute("visibility", "visible");
    });
    $("plot").append(chart);
    for (const line of lines) {
      const key = el("i", {});
      key.style.background = line.colour;
      $("legend").append(el("span", {}, key, line.name));
    }
  }

  // ------------------------------------------------------------------ table

  const PAGE_ROWS = 200;
  let rowLimit = PAGE_ROWS, sortKey = "bytes";
  const sorters = {
    site: (a, b) => site(a).localeCompare(site(b)),
    bytes: (a, b) => b.bytes - a.bytes,
    allocs: (a, b) => b.allocs - a.allocs,
    verdict: (a, b) => String(a.verdict).localeCompare(String(b.verdict)),
    growth: (a, b) => (b.growth || 0) - (a.growth || 0),
    growing: (a, b) => (b.growing || 0) - (a.growing || 0),
    age: (a, b) => (b.age || 0) - (a.age || 0),
    freed: (a, b) => (a.freedShare ?? 2) - (b.freedShare ?? 2),
  };

  function framesRow(s) {
    const cell = el("td", { class: "frames", colspan: 7 });
    s.frames.forEach((fi, k) => {
      const f = frame(fi);
      const loc = f.file ? f.file + (f.line ? ":" + f.line : "") : "";
      const extra = [loc, f.module ? "[" + f.module + "]" : "", f.inlined ? "(inlined)" : ""].filter(Boolean).join("  ");
      cell.append(el("div", {}, "#" + String(k).padEnd(3) + f.name + "  ", el("span", { class: "loc" }, extra)));
    });
    cell.append(el("div", { class: "loc" }, "stack id " + s.id));
    return el("tr", { class: "detail" }, cell);
  }

  function renderTable() {
    const tbody = document.querySelector("#stacks tbody");
    tbody.textContent = "";
    const rows = stacks.filter((s) => pattern === null || stackHit(s)).sort(sorters[sortKey]);
    for (const s of rows.slice(0, rowLimit)) {
      const f = frame(s.frames[0]);
      const verdict = s.verdict || "none";
      const tr = el(
        "tr", { class: "row" + (stackHit(s) ? " hit" : "") },
        el("td", { class: "text site" }, f.name + " ", el("small", {}, where(f)), s.caller ? " ← " + s.caller : ""),
        el("td", {}, fmtBytes(s.bytes)),
        el("td", {}, fmtCount(s.allocs)),
        el("td", { class: "text" }, el("span", { class: "verdict " + verdict }, s.verdict || "new")),
        el("td", {}, s.verdict === "growing" ? fmtBytes(s.growth) + "/s" : "–"),
        el("td", {}, s.verdict === "growing" ? fmtSecs(s.growing) : "–"),
        el("td", {}, fmtSecs(s.age)),
        el("td", { title: s.allocated ? fmtBytes(s.allocated) + " allocated since tracing began" : "" },
          s.freedShare === null ? "–" : Math.floor(s.freedShare * 1000) / 10 + "%"),
      );
      tr.addEventListener("click", () => {
        const next = tr.nextElementSibling;
        if (next && next.classList.contains("detail")) next.remove();
        else tr.after(framesRow(s));
      });
      tbody.append(tr);
    }
    const more = $("more");
    more.hidden = rows.length <= rowLimit;
    more.textContent = "show all " + fmtCount(rows.length) + " stacks";
    for (const th of document.querySelectorAll("#stacks th")) th.classList.toggle("sorted", th.dataset.key === sortKey);
  }

  function wireTable() {
    for (const th of document.querySelectorAll("#stacks th")) {
      th.addEventListener("click", () => {
        sortKey = th.dataset.key;
        renderTable();
      });
    }
    $("more").addEventListener("click", () => {
      rowLimit = Infinity;
      renderTable();
    });
  }

  // ------------------------------------------------------------------ metadata

  function renderMeta() {
    const table = $("meta");
    const show = (value) => {
      if (value === null || value === undefined) return "–";
      if (Array.isArray(value)) return value.map((v) => (/^[\w@%+=:,./-]+$/.test(v) ? v : JSON.stringify(v))).join(" ");
      if (typeof value === "object") return JSON.stringify(value);
      return String(value);
    };
    const row = (key, value, bad) => table.append(el("tr", {}, el("th", {}, key), el("td", bad ? { class: "bad" } : {}, show(value))));
    const LOST = ["lost_allocs", "lost_stacks", "stack_errors", "lost_inflight", "missed_frees"];
    for (const key of ["target", "time", "final", "traced_s", "intervals"]) if (key in meta) row(key, meta[key]);
    for (const [key, value] of Object.entries(run)) {
      if (key === "options" && value && typeof value === "object") {
        row("options", Object.entries(value).map(([k, v]) => k + "=" + show(v)).join("  "));
      } else row(key, value);
    }
    for (const [key, value] of Object.entries(meta)) {
      if (key === "run" || ["target", "time", "final", "traced_s", "intervals"].includes(key)) continue;
      if (key === "unwind" && value && typeof value === "object") {
        for (const [k, v] of Object.entries(value)) row("unwind " + k, v);
      } else row(key, value, LOST.includes(key) && value > 0);
    }
  }

  // ------------------------------------------------------------------ main

  function main() {
    const start = performance.now();
    header();
    renderPlot();
    renderTable();
    wireTable();
    renderMeta();
    renderFlame();  // last: the page's full height decides whether a scroll bar narrows it
    wireFlame();
    const linked = /^#search=(.*)$/.exec(location.hash);
    if (linked) {
      try {
        $("search").value = decodeURIComponent(linked[1]);
      } catch (e) {  // a malformed %-escape: the text as written
        $("search").value = linked[1];
      }
      search();
    }
    body.dataset.renderMs = Math.round(performance.now() - start);
    if (body.dataset.rendered !== "error") body.dataset.rendered = "ok";
  }

  try {
    main();
  } catch (e) {
    fail(e && e.stack ? e.stack : String(e));
  }
})();
