(function () {
  "use strict";
  const IDX = window.MEDSAGE_INDEX;
  const SVGNS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#ff2d55", "#00c8ff", "#ffd60a", "#30d158", "#bf5af2", "#ff9f0a", "#64d2ff", "#ff6482"];
  const STAGES = [["loc", "LOC"], ["vis", "VISUAL"], ["know", "KNOWLEDGE"], ["con", "CON"], ["answer", "ANSWER"]];
  if (!IDX) { document.getElementById("status").textContent = "data/index.js did not load"; return; }
  const F = IDX.facets;               // [{key, title, values: [...], multi}]
  const ROWS = IDX.rows;              // [id, v0, v1, ..., ] ; multi facets hold arrays
  const state = { sel: F.map(() => new Set()), q: "", page: 1, size: IDX.page_size };
  const chunks = {}, pending = {}, resolvers = {};

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "text") e.textContent = v; else if (k === "cls") e.className = v; else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }
  function sv(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
    return e;
  }

  // ---- URL hash <-> state: "#verdict=rejected,kept&source=x&q=abc&page=2"
  function readHash() {
    const h = new URLSearchParams(location.hash.replace(/^#/, ""));
    F.forEach((f, i) => {
      state.sel[i] = new Set();
      const v = h.get(f.key);
      if (v !== null) for (const name of v.split(",")) { const j = f.values.indexOf(name); if (j >= 0) state.sel[i].add(j); }
    });
    state.q = h.get("q") || "";
    state.page = Math.max(1, parseInt(h.get("page") || "1", 10) || 1);
    const size = parseInt(h.get("size") || "", 10);
    if (size > 0) state.size = size;
  }
  function writeHash() {
    const h = new URLSearchParams();
    F.forEach((f, i) => { if (state.sel[i].size) h.set(f.key, [...state.sel[i]].map(j => f.values[j]).join(",")); });
    if (state.q) h.set("q", state.q);
    if (state.page > 1) h.set("page", String(state.page));
    if (state.size !== IDX.page_size) h.set("size", String(state.size));
    const s = h.toString();
    history.replaceState(null, "", s ? "#" + s : location.pathname + location.search);
  }

  function has(row, i) {
    const v = row[i + 1];
    const sel = state.sel[i];
    if (!sel.size) return true;
    if (Array.isArray(v)) { for (const x of v) if (sel.has(x)) return true; return false; }
    return sel.has(v);
  }
  function matchAll(row, skip) {
    if (state.q && String(row[0]).toLowerCase().indexOf(state.q.toLowerCase()) < 0) return false;
    for (let i = 0; i < F.length; i++) if (i !== skip && !has(row, i)) return false;
    return true;
  }

  function compute() {
    const filtered = [];
    const counts = F.map(f => new Array(f.values.length).fill(0));
    for (let r = 0; r < ROWS.length; r++) {
      const row = ROWS[r];
      let fails = -1, nfail = 0;
      if (state.q && String(row[0]).toLowerCase().indexOf(state.q.toLowerCase()) < 0) continue;
      for (let i = 0; i < F.length; i++) if (!has(row, i)) { nfail++; fails = i; if (nfail > 1) break; }
      if (nfail === 0) filtered.push(r);
      // A facet's counts are over the items that pass every OTHER facet (faceted search).
      for (let i = 0; i < F.length; i++) {
        if (nfail === 0 || (nfail === 1 && fails === i)) {
          const v = row[i + 1];
          if (Array.isArray(v)) for (const x of v) counts[i][x]++; else counts[i][v]++;
        }
      }
    }
    return { filtered, counts };
  }

  function renderFacets(counts) {
    const box = document.getElementById("facets");
    box.textContent = "";
    F.forEach((f, i) => {
      if (!f.values.length) return;
      const group = el("div", { cls: "facet", "data-facet": f.key }, el("h3", { text: f.title }));
      const order = f.values.map((_, j) => j).sort((a, b) => counts[i][b] - counts[i][a] || (f.values[a] < f.values[b] ? -1 : 1));
      for (const j of order) {
        const cb = el("input", { type: "checkbox", "data-facet": f.key, "data-value": f.values[j] });
        cb.checked = state.sel[i].has(j);
        cb.addEventListener("change", () => {
          if (cb.checked) state.sel[i].add(j); else state.sel[i].delete(j);
          state.page = 1; update();
        });
        group.append(el("label", { cls: counts[i][j] ? "" : "zero" }, cb,
          el("span", { cls: "v", text: f.values[j] }), el("span", { cls: "n", text: String(counts[i][j]) })));
      }
      box.append(group);
    });
  }

  function loadChunk(c) {
    if (chunks[c]) return Promise.resolve(chunks[c]);
    if (!pending[c]) {
      pending[c] = new Promise((resolve, reject) => {
        const name = "data/items-" + String(c).padStart(5, "0") + ".js";
        const s = el("script", { src: name });
        s.onerror = () => reject(new Error(name + " did not load"));
        resolvers[c] = resolve;  // the chunk script calls window.medsageChunk(c, items)
        document.head.append(s);
      });
    }
    return pending[c];
  }
  window.medsageChunk = function (c, items) { chunks[c] = items; if (resolvers[c]) resolvers[c](items); };

  function pager(box, total, pages) {
    box.textContent = "";
    const prev = el("button", { type: "button", cls: "prev", text: "‹ prev" });
    const next = el("button", { type: "button", cls: "next", text: "next ›" });
    prev.disabled = state.page <= 1; next.disabled = state.page >= pages;
    prev.onclick = () => { state.page--; update(); };
    next.onclick = () => { state.page++; update(); };
    box.append(prev, el("span", { text: "page " + state.page + " of " + pages }), next);
  }

  function update() {
    writeHash();
    const { filtered, counts } = compute();
    renderFacets(counts);
    const pages = Math.max(1, Math.ceil(filtered.length / state.size));
    state.page = Math.min(state.page, pages);
    const start = (state.page - 1) * state.size;
    const shown = filtered.slice(start, start + state.size);
    const status = document.getElementById("status");
    status.textContent = filtered.length + " of " + ROWS.length + " items match" +
      (filtered.length ? "; showing " + (start + 1) + "–" + (start + shown.length) : "");
    status.dataset.matching = String(filtered.length);
    status.dataset.total = String(ROWS.length);
    pager(document.getElementById("pager-top"), filtered.length, pages);
    pager(document.getElementById("pager-bottom"), filtered.length, pages);
    const box = document.getElementById("items");
    const token = (update.token = (update.token || 0) + 1);
    const need = [...new Set(shown.map(r => Math.floor(r / IDX.chunk_size)))];
    Promise.all(need.map(loadChunk)).then(() => {
      if (token !== update.token) return;  // a newer filter change won
      box.textContent = "";
      if (!shown.length) box.append(el("div", { cls: "empty", text: "No item matches these filters." }));
      for (const r of shown) box.append(renderItem(chunks[Math.floor(r / IDX.chunk_size)][r % IDX.chunk_size]));
      box.dataset.rendered = String(shown.length);
      document.body.dataset.ready = "1";
    }, err => { box.textContent = String(err); document.body.dataset.ready = "error"; });
  }

  // ---- one item
  function imageBlock(item, img, idx, regions) {
    const w = img.w || 1000, h = img.h || 1000;
    const wrap = el("div", { cls: "imgwrap", "data-image": String(idx) });
    // width/height reserve the image's box before it loads, so the overlay is placed right at once.
    if (img.src) wrap.append(el("img", { src: img.src, alt: img.given, loading: "lazy", width: w, height: h }));
    else wrap.append(el("div", { cls: "placeholder", text: img.problem || "no image" }));
    const svg = sv("svg", { viewBox: "0 0 " + w + " " + h, preserveAspectRatio: "none", "data-w": w, "data-h": h });
    const fs = Math.max(w, h) * 0.04;
    for (const roi of (idx === 0 ? item.rois : [])) {
      // The annotation is what a trajectory should localise: white dashes; RPA variants: faint dots.
      const [x1, y1, x2, y2] = roi.px, ann = roi.origin === "annotation";
      if (ann) svg.append(sv("rect", { class: "roi-halo", x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none",
        stroke: "#000", "stroke-opacity": 0.8, "stroke-width": 3.5, "vector-effect": "non-scaling-stroke" }));
      svg.append(sv("rect", { class: "roi", x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none",
        stroke: ann ? "#fff" : "#9aa", "stroke-opacity": ann ? 1 : 0.7, "stroke-width": ann ? 1.5 : 1,
        "stroke-dasharray": ann ? "5 3" : "1 3", "vector-effect": "non-scaling-stroke",
        "data-label": roi.label || "", "data-origin": roi.origin }));
    }
    for (const reg of regions) {
      const color = reg.color, dash = reg.final ? null : "6 4";
      const common = { stroke: color, "stroke-width": 2.5, fill: "none", "vector-effect": "non-scaling-stroke",
        "stroke-dasharray": dash, "data-label": reg.label || "", "data-trace": reg.trace, "data-grid": reg.coords.join(",") };
      let tx, ty;
      if (reg.kind === "box") {
        const [x1, y1, x2, y2] = reg.px;
        svg.append(sv("rect", Object.assign({ class: "region box", x: x1, y: y1, width: x2 - x1, height: y2 - y1 }, common)));
        tx = x1; ty = y1 - fs * 0.25;
        if (ty < fs) ty = y1 + fs;
      } else {
        const [x, y] = reg.px, r = Math.max(w, h) * 0.012;
        svg.append(sv("circle", Object.assign({ class: "region point", cx: x, cy: y, r: r }, common, { fill: color })));
        svg.append(sv("circle", Object.assign({ cx: x, cy: y, r: r * 2.2 }, common, { class: "ring" })));
        tx = x + r * 2.6; ty = y + fs * 0.35;
      }
      const label = (reg.final ? "" : reg.trace + ": ") + (reg.label || reg.kind);
      const t = sv("text", { x: tx, y: ty, fill: color, "font-size": fs, "stroke-width": fs * 0.12, class: "region-label" });
      t.textContent = label;
      svg.append(t);
    }
    wrap.append(svg);
    return wrap;
  }

  function regionsOf(item) {
    const out = [];
    let k = 0;
    for (const t of item.traces) {
      // A short name for labels drawn on the image: "τ1", "attempt 2".
      const short = t.title.startsWith("τ") ? t.title.split(" ")[0] : t.title.replace(/ \(.*\)$/, "");
      for (const r of t.regions) out.push(Object.assign({}, r, { trace: short, final: t.final, color: PALETTE[k++ % PALETTE.length] }));
    }
    return out;
  }

  function renderItem(item) {
    const card = el("article", { cls: "item", "data-id": item.id, "data-verdict": item.verdict, "data-kind": item.kind });
    const head = el("div", { cls: "item-head" }, el("span", { cls: "iid", text: item.id }));
    for (const [label, value] of [["source", item.source], ["type", item.question_type], ["modality", item.modality]])
      if (value) head.append(el("span", { cls: "badge", title: label, text: value }));
    head.append(el("span", { cls: "badge verdict v-" + item.verdict, text: item.verdict }));
    if (item.check !== null && item.check !== undefined) head.append(el("span", { cls: "badge", text: "self-check" }));
    head.append(el("span", { cls: "where", text: item.where }));
    card.append(head);

    const top = el("div", { cls: "top" });
    const imgs = el("div", { cls: "images" });
    const regions = regionsOf(item);
    if (!item.images.length && regions.length) imgs.append(imageBlock(item, { src: null, problem: "no image recorded" }, 0, regions));
    if (!item.images.length && !regions.length) imgs.append(el("div", { cls: "noimage", text: "no image recorded" }));
    item.images.forEach((img, i) => imgs.append(imageBlock(item, img, i, i === 0 ? regions : [])));
    if (regions.length || item.rois.length) {
      const legend = el("ul", { cls: "legend" });
      if (item.images.length > 1) legend.append(el("li", { text: "regions are drawn on image 1 of " + item.images.length }));
      for (const r of regions) legend.append(el("li", {}, el("span", { cls: "sw " + r.kind, style: "border-color:" + r.color }),
        el("span", { text: (r.final ? "" : r.trace + ": ") + (r.label || "(no label)") + " — " + r.kind + " [" + r.coords.join(", ") + "]" })));
      for (const r of item.rois) legend.append(el("li", {}, el("span", { cls: "sw", style: r.origin === "annotation" ?
          "border-color:#777;border-style:dashed" : "border-color:#9aa;border-style:dotted" }),
        el("span", { text: "RoI " + (r.label ? r.label + " " : "") + "(" + r.origin + ") [" + r.px.map(v => Math.round(v)).join(", ") + "] px" })));
      imgs.append(legend);
    }
    top.append(imgs);

    const facts = el("div", { cls: "facts" });
    const dl = el("dl");
    const add = (k, v) => { if (v !== null && v !== undefined && v !== "") dl.append(el("dt", { text: k }), el("dd", {}, v)); };
    add("question", item.question);
    if (item.options) {
      const ul = el("ul", { cls: "options" });
      for (const [k, v] of Object.entries(item.options))
        ul.append(el("li", { cls: (item.ground_truth || "").trim().toUpperCase() === k.toUpperCase() ? "gt" : "", text: k + ". " + v }));
      add("options", ul);
    }
    add("ground truth", item.ground_truth);
    add("answer", item.answer);
    facts.append(dl);
    const good = ["kept", "correct"].includes(item.verdict), bad = ["rejected", "wrong", "unparsed", "malformed"].includes(item.verdict);
    const dec = el("div", { cls: "decision" + (good ? " good" : bad ? " bad" : "") },
      el("strong", { text: "decision: " }), el("span", { cls: "verdict-text", text: item.verdict }));
    if (item.reasons.length) { const ul = el("ul", { cls: "reasons" }); for (const r of item.reasons) ul.append(el("li", { text: r })); dec.append(ul); }
    const table = (values, cls, caption, fmt) => {
      const names = Object.keys(values || {});
      if (!names.length) return;
      const tab = el("table", { cls: cls }, el("caption", { text: caption }));
      tab.append(el("tr", {}, ...names.map(n => el("th", { text: n }))));
      tab.append(el("tr", {}, ...names.map(n => el("td", { "data-component": n, text: fmt(values[n]) }))));
      dec.append(tab);
    };
    table(item.rewards, "rewards", "rewards per component", v => Number(v).toFixed(3));
    table(item.judge, "rewards judge", "GPT-score (judge)", v => v === null ? "—" : String(v));
    facts.append(dec);
    if (item.problems.length) {
      const ul = el("ul");
      for (const p of item.problems) ul.append(el("li", { text: p }));
      facts.append(el("div", { cls: "problems" }, el("strong", { text: "problems" }), ul));
    }
    top.append(facts);
    card.append(top);

    if (item.traces.length || item.check !== null) {
      const grid = el("div", { cls: "stages" });
      grid.append(el("div", { cls: "h", text: "" }));
      for (const [, tag] of STAGES) grid.append(el("div", { cls: "h", text: tag }));
      const row = (t) => {
        grid.append(el("div", { cls: "rt", text: t.title }));
        for (const [key, tag] of STAGES) {
          const v = t.stages[key];
          grid.append(el("div", { cls: "stage " + key + (v ? "" : " missing") + (t.final ? "" : " nonfinal"),
            "data-stage": tag, "data-trace": t.title, text: v ? v : "— not found —" }));
        }
      };
      const nonfinal = item.traces.filter(t => t.title.startsWith("τ1"));
      const rest = item.traces.filter(t => !t.title.startsWith("τ1"));
      nonfinal.forEach(row);
      if (item.check !== null && item.check !== undefined) {
        grid.append(el("div", { cls: "rt checkt", text: "self-check" }));
        grid.append(el("div", { cls: "check", "data-stage": "CHECK", text: item.check || "— empty —" }));
      }
      rest.forEach(row);
      card.append(grid);
    }
    const more = [];
    for (const t of item.traces) {
      if (t.preamble) more.push(t.title + " preamble: " + t.preamble);
      for (const n of t.notes) more.push(t.title + " note: " + n);
      for (const s of t.issues) more.push(t.title + " strict format: " + s);
    }
    if (more.length || Object.keys(item.details).length) {
      const d = el("details", {}, el("summary", { text: "details" + (more.length ? " (" + more.length + " parser notes)" : "") }));
      if (more.length) d.append(el("pre", { text: more.join("\n") }));
      if (Object.keys(item.details).length) d.append(el("pre", { text: JSON.stringify(item.details, null, 2) }));
      card.append(d);
    }
    return card;
  }

  // ---- wiring
  document.getElementById("title").textContent = "medsage view — " + IDX.kind;
  document.getElementById("subtitle").textContent = IDX.path + " · " + ROWS.length + " items · " + IDX.summary +
    (IDX.notes.length ? " · " + IDX.notes.join(" · ") : "");
  const q = document.getElementById("q"), size = document.getElementById("size");
  readHash();
  q.value = state.q;
  if (![...size.options].some(o => Number(o.value) === state.size)) size.append(el("option", { text: String(state.size) }));
  size.value = String(state.size);
  let timer = null;
  q.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => { state.q = q.value.trim(); state.page = 1; update(); }, 150); });
  size.addEventListener("change", () => { state.size = Number(size.value); state.page = 1; update(); });
  document.getElementById("clear").onclick = () => { state.sel = F.map(() => new Set()); state.q = ""; q.value = ""; state.page = 1; update(); };
  window.addEventListener("hashchange", () => { readHash(); update(); });
  update();
})();
