"use strict";
const D = JSON.parse(document.getElementById("viewer-data").textContent);
const N = D.neurons.length;
const NS = (() => { const d = document.createElement("div"); d.innerHTML = "<svg></svg>";
  return d.firstChild.namespaceURI; })();
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
  "#ff9da7", "#9c755f", "#bab0ac"];
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}
function svg(tag, attrs, ...children) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) if (c != null) e.append(c);
  return e;
}
function fmt(x) {
  if (x === 0) return "0";
  const a = Math.abs(x);
  return a >= 100 ? x.toFixed(0) : a >= 1 ? x.toFixed(2) : a >= 0.01 ? x.toFixed(3)
    : x.toExponential(1);
}
function clusterName(c) { return c < 0 ? "left out" : "c" + c; }
function badge(status) {
  if (status === "alive") return null;
  return el("span", {class: "badge " + (status === "dead" ? "dead" : "nearly"), text: status,
    title: status === "dead" ? "never fires on the probe words"
      : "tiny next to the layer's peak, or firing on almost no word"});
}
// Words coloured by activation, relative to the neuron's peak |activation| on the probe set.
const POS = "214,96,77", NEG = "67,147,195";  // as --pos and --neg in the CSS
function tint(a, scale) {
  const t = scale > 0 ? Math.min(1, Math.abs(a) / scale) : 0;
  return "rgba(" + (a < 0 ? NEG : POS) + "," + (0.06 + 0.79 * t).toFixed(3) + ")";
}
function scaleOf(n) { return Math.max(Math.abs(n.peak), Math.abs(n.low)); }

// ---------- header and summary ----------
$("title").textContent = "Neuron viewer \u00b7 " + D.site;
for (const [k, v] of Object.entries(D.info)) {
  const c = el("span", {class: "chip"}); c.append(el("b", {text: k + " "}), v);
  $("info").append(c);
}
const counts = {alive: 0, "nearly dead": 0, dead: 0};
D.neurons.forEach((n) => counts[n.status]++);
const nClusters = new Set(D.neurons.map((n) => n.cluster).filter((c) => c >= 0)).size;
for (const [k, v] of [["neurons", N], ["alive", counts.alive],
  ["nearly dead", counts["nearly dead"]], ["dead", counts.dead], ["clusters", nClusters],
  ["probe sentences", D.sentences], ["probe words", D.words]]) {
  $("summary").append(el("div", {class: "stat"}, el("div", {class: "v", text: String(v)}),
    el("div", {class: "k", text: k})));
}

// ---------- the neuron list ----------
let selected = 0;
let visible = [];
function neuronMatches(i, tokens) {
  const n = D.neurons[i];
  const fields = [String(i), "n" + i, "c" + n.cluster, "cluster" + n.cluster,
    ...n.status.split(" "), n.cluster < 0 ? "left" : ""];
  return tokens.every((t) => fields.some((f) => f.startsWith(t)));
}
function renderList() {
  const tokens = $("neuron-filter").value.toLowerCase().trim().split(/\s+/).filter(Boolean);
  const hideDead = $("hide-dead").checked;
  const sort = $("neuron-sort").value;
  visible = [...Array(N).keys()].filter((i) => neuronMatches(i, tokens)
    && !(hideDead && D.neurons[i].status === "dead"));
  const key = {index: (i) => i, cluster: (i) => (D.neurons[i].cluster < 0 ? 1e9
    : D.neurons[i].cluster) * 1e4 + i, peak: (i) => -D.neurons[i].peak,
    fires: (i) => -D.neurons[i].fires}[sort];
  visible.sort((a, b) => key(a) - key(b));
  const top = Math.max(1e-12, ...D.neurons.map(scaleOf));
  const list = $("neuron-list");
  list.replaceChildren();
  for (const i of visible) {
    const n = D.neurons[i];
    const li = el("li", {"data-neuron": i, title: "neuron " + i + ", peak " + fmt(n.peak),
      onclick: () => select(i)},
      el("span", {class: "id", text: "#" + i}), el("span", {class: "cl muted",
        text: n.cluster < 0 ? "out" : clusterName(n.cluster)}),
      el("span", {class: "mini"}, el("div", {style: "width:" + (100 * scaleOf(n) / top)
        .toFixed(1) + "%"})), badge(n.status));
    if (i === selected) li.classList.add("sel");
    list.append(li);
  }
  $("neuron-count").textContent = visible.length + " of " + N + " neurons";
}
for (const id of ["neuron-filter", "neuron-sort", "hide-dead"]) {
  $(id).addEventListener("input", renderList);
}
$("neuron-filter").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && visible.length) select(visible[0]);
});
$("neuron-list").addEventListener("keydown", (e) => {
  const at = visible.indexOf(selected);
  if (e.key === "ArrowDown" && at < visible.length - 1) { select(visible[at + 1]);
    e.preventDefault(); }
  if (e.key === "ArrowUp" && at > 0) { select(visible[at - 1]); e.preventDefault(); }
});

// ---------- one neuron ----------
function histogram(n) {
  const W = 340, H = 150, L = 8, B = 34, T = 10, c = n.hist.c;
  const top = Math.log1p(Math.max(...c, 1)), bw = (W - 2 * L) / c.length;
  const g = svg("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img"});
  const x = (v) => L + (W - 2 * L) * (v - n.hist.lo) / ((n.hist.hi - n.hist.lo) || 1);
  c.forEach((v, k) => {
    const h = (H - B - T) * Math.log1p(v) / top;
    const mid = n.hist.lo + (k + 0.5) * (n.hist.hi - n.hist.lo) / c.length;
    g.append(svg("rect", {x: L + k * bw + 0.5, y: H - B - h, width: Math.max(1, bw - 1),
      height: h, fill: mid < 0 ? "rgb(" + NEG + ")" : "rgb(" + POS + ")", rx: 1},
      svg("title", {}, `${v} words in [${fmt(n.hist.lo + k * (n.hist.hi - n.hist.lo)
        / c.length)}, ${fmt(n.hist.lo + (k + 1) * (n.hist.hi - n.hist.lo) / c.length)})`)));
  });
  g.append(svg("line", {x1: L, x2: W - L, y1: H - B, y2: H - B, class: "axis"}));
  const ticks = [n.hist.lo, n.hist.hi];
  if (n.hist.lo < 0 && n.hist.hi > 0) ticks.push(0);
  for (const t of ticks) {
    g.append(svg("text", {x: x(t), y: H - B + 14, "text-anchor": t === n.hist.lo ? "start"
      : t === n.hist.hi ? "end" : "middle"}, fmt(t)));
  }
  g.append(svg("text", {x: W / 2, y: H - 4, "text-anchor": "middle"},
    "activation on every probe word (log count)"));
  return g;
}
function sentenceRow(entry, n, rank, label) {
  const scale = scaleOf(n);
  const best = label === "trough" ? Math.min(...entry.a) : Math.max(...entry.a);
  const text = el("span", {class: "text"});
  if (entry.o > 0) text.append("\u2026 ");
  entry.w.forEach((w, k) => {
    const a = entry.a[k];
    const t = el("span", {class: "tok" + (a === best ? " peak" : ""), text: w,
      title: w + ": " + fmt(a)});
    t.style.background = tint(a, scale);
    text.append(t, " ");
  });
  if (entry.o + entry.w.length < entry.n) text.append("\u2026");
  return el("div", {class: "sentence", "data-sentence": entry.s},
    el("span", {class: "rank", text: "#" + rank + "  " + fmt(best)}), text);
}
function legend(n) {
  const s = scaleOf(n);
  const ramp = el("span", {class: "ramp"});
  ramp.style.background = D.signed ? `linear-gradient(90deg, ${tint(-s, s)}, ${tint(0, s)}, `
    + `${tint(s, s)})` : `linear-gradient(90deg, ${tint(0, s)}, ${tint(s, s)})`;
  return el("div", {class: "legend"}, el("span", {text: D.signed ? fmt(-s) : "0"}), ramp,
    el("span", {text: fmt(s)}), el("span", {text: "colour: activation after each word; "
      + "hover a word for its value"}));
}
function select(i, scroll) {
  selected = i;
  for (const li of document.querySelectorAll("#neuron-list li")) {
    li.classList.toggle("sel", Number(li.dataset.neuron) === i);
  }
  const list = $("neuron-list"), cur = list.querySelector(`li[data-neuron="${i}"]`);
  if (cur && (cur.offsetTop < list.scrollTop
    || cur.offsetTop + cur.offsetHeight > list.scrollTop + list.clientHeight)) {
    list.scrollTop = cur.offsetTop - list.clientHeight / 2;  // the list only, not the page
  }
  const n = D.neurons[i];
  const detail = $("neuron-detail");
  detail.replaceChildren();
  const head = el("div", {class: "detail-head"}, el("h3", {text: "Neuron " + i}), badge(n.status),
    el("span", {class: "chip link", text: "cluster " + clusterName(n.cluster), onclick: () => {
      if (n.cluster >= 0) $("cluster-" + n.cluster).scrollIntoView({behavior: "smooth"}); }}),
    el("span", {class: "chip", text: "peak " + fmt(n.peak)}),
    el("span", {class: "chip", text: "mean " + fmt(n.mean)}),
    el("span", {class: "chip", text: (D.signed ? "min " + fmt(n.low) + " \u00b7 " : "")
      + "> 0 on " + (100 * n.fires).toFixed(1) + "% of words"}));
  const words = el("div", {class: "chips"});
  for (const [w, s] of n.words) {
    words.append(el("span", {class: "chip link", text: w + " " + s + "%", title: "mean "
      + "activation on '" + w + "' is " + s + "% of the peak; click to search it",
      onclick: () => { $("search").value = w; search(); }}));
  }
  const side = el("div", {}, el("h3", {text: "Histogram"}), histogram(n),
    el("h3", {text: "Words it likes", style: "margin-top:12px"}),
    el("p", {class: "muted", text: "mean activation on the word in % of the peak; words seen "
      + "twice or more"}),
    n.words.length ? words : el("p", {class: "muted", text: "none reaches 10%"}));
  const main = el("div", {}, el("h3", {text: `Top ${n.top.length} sentences`}), legend(n),
    el("div", {class: "sentences", id: "topk"},
      ...n.top.map((e, k) => sentenceRow(e, n, k + 1, "peak"))));
  if (n.bottom) {
    main.append(el("h3", {text: `Most negative ${n.bottom.length}`, style: "margin-top:14px"}),
      el("div", {class: "sentences"}, ...n.bottom.map((e, k) => sentenceRow(e, n, k + 1,
        "trough"))));
  }
  if (n.status === "dead") {
    main.prepend(el("p", {class: "muted", text: "Dead: it never fires on the probe words, "
      + "so every sentence below is as good as any other."}));
  }
  detail.append(el("div", {class: "panel"}, head, el("div", {class: "detail-grid"}, side, main)));
  if (scroll) $("neurons").scrollIntoView({behavior: "smooth"});
  try { history.replaceState(null, "", "#n" + i); } catch (e) { /* a sandboxed frame */ }
}

// ---------- search ----------
function search() {
  const q = $("search").value.trim().toLowerCase();
  const box = $("search-results");
  box.replaceChildren();
  if (!q) { box.hidden = true; return; }
  box.hidden = false;
  const hit = Object.hasOwn(D.index, q) ? D.index[q] : null;
  if (!hit) {
    const near = Object.keys(D.index).filter((w) => w.startsWith(q)).slice(0, 12);
    box.append(el("p", {class: "muted", text: `"${q}" is not a probe word.`
      + (near.length ? " Did you mean:" : "")}));
    const chips = el("div", {class: "chips"});
    for (const w of near) chips.append(el("span", {class: "chip link", text: w, onclick: () => {
      $("search").value = w; search(); }}));
    box.append(chips);
    return;
  }
  const firing = [];
  for (let k = 1; k < hit.length; k += 2) firing.push([hit[k], hit[k + 1]]);
  box.append(el("p", {class: "muted", text: `"${q}": ${hit[0]} time${hit[0] > 1 ? "s" : ""} in `
    + `the probe set; ${firing.length ? firing.length + " neuron" + (firing.length > 1 ? "s"
      : "") + " fire" + (firing.length > 1 ? "" : "s") + " on it" : "no neuron fires on it"} `
    + `(mean activation on it at least ${Math.round(100 * D.fire_threshold)}% of the neuron's `
    + "peak)."}));
  for (const [i, s] of firing) {
    const bar = el("div", {class: "bar" + (s < 0 ? " neg" : "")});
    bar.style.width = Math.min(100, Math.abs(s)) + "%";
    box.append(el("div", {class: "result", "data-neuron": i, onclick: () => {
      box.hidden = true; select(i, true); }}, el("b", {text: "#" + i}),
      el("div", {title: s + "% of its peak"}, bar), el("span", {class: "muted", text: s + "%"})));
  }
}
$("search").addEventListener("input", search);
$("search").addEventListener("keydown", (e) => { if (e.key === "Escape") {
  $("search-results").hidden = true; } });
document.addEventListener("click", (e) => {
  if (!e.target.closest(".searchbox")) $("search-results").hidden = true;
});

// ---------- clusters ----------
function lineChart(words, series, title) {
  const W = Math.max(260, 42 * words.length + 60), H = 190, L = 44, R = 10, T = 10, B = 52;
  const all = series.flatMap((s) => s.values);
  let lo = Math.min(0, ...all), hi = Math.max(...all, 1e-9);
  const pad = (hi - lo) * 0.06; hi += pad; if (lo < 0) lo -= pad;
  const x = (k) => L + (W - L - R) * (words.length > 1 ? k / (words.length - 1) : 0.5);
  const y = (v) => T + (H - T - B) * (hi - v) / (hi - lo);
  const g = svg("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img"},
    svg("title", {}, title));
  for (const v of [lo, 0, hi]) {
    g.append(svg("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), class: "axis",
      "stroke-dasharray": v === 0 ? "" : "3 3"}));
    g.append(svg("text", {x: L - 5, y: y(v) + 4, "text-anchor": "end"}, fmt(v)));
  }
  words.forEach((w, k) => g.append(svg("text", {x: x(k), y: H - B + 14, "text-anchor": "end",
    transform: `rotate(-35 ${x(k)} ${H - B + 14})`}, w.length > 12 ? w.slice(0, 11) + "\u2026"
    : w)));
  for (const s of series) {
    const pts = s.values.map((v, k) => `${x(k).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    g.append(svg("polyline", {points: pts, fill: "none", stroke: s.color,
      "stroke-width": s.width || 1.8, "stroke-opacity": s.opacity || 1,
      "stroke-dasharray": s.dash || "", "stroke-linejoin": "round"},
      svg("title", {}, s.name)));
    if (s.values.length <= 30 && (s.width || 1.8) >= 1.8) {
      s.values.forEach((v, k) => g.append(svg("circle", {cx: x(k), cy: y(v), r: 2.6,
        fill: s.color}, svg("title", {}, `${s.name} after "${words[k]}": ${fmt(v)}`))));
    }
  }
  return g;
}
function renderClusters() {
  const labels = D.neurons.map((n) => n.cluster);
  const ids = [...new Set(labels)].filter((c) => c >= 0).sort((a, b) => a - b);
  const hasMerged = D.merged_clusters !== null && D.examples.some((e) => e.merged);
  $("cluster-note").textContent = D.examples.length
    ? "Each cluster's members after every word of the example sentences; beside them the "
      + "neuron that stands for the cluster after compression."
      + (hasMerged ? "" : " This run has no compressed layer.")
    : "No example sentences were given.";
  const cards = $("cluster-cards");
  for (const c of ids) {
    const members = labels.map((l, i) => (l === c ? i : -1)).filter((i) => i >= 0);
    const chips = el("div", {class: "members"});
    members.forEach((i, k) => {
      const chip = el("span", {class: "chip link", text: "#" + i, onclick: () => select(i, true)});
      if (members.length <= PALETTE.length) {
        chip.style.borderColor = PALETTE[k];
        chip.style.boxShadow = `inset 3px 0 0 ${PALETTE[k]}`;
      }
      if (k >= 24) chip.hidden = true;  // a 64-neuron cluster would fill the screen
      chips.append(chip);
    });
    if (members.length > 24) {
      const more = el("span", {class: "chip link", text: `+${members.length - 24} more`});
      more.addEventListener("click", () => {
        for (const ch of chips.children) ch.hidden = false;
        more.remove();
      });
      chips.append(more);
    }
    const card = el("div", {class: "cluster-card", id: "cluster-" + c},
      el("h3", {text: `Cluster ${c} \u00b7 ${members.length} neuron${members.length > 1 ? "s"
        : ""}`}), chips);
    const kept = (D.merged_clusters || []).map((m, j) => (m === c ? j : -1))
      .filter((j) => j >= 0);
    const many = members.length > PALETTE.length;
    const row = el("div", {class: "examples"});
    for (const ex of D.examples) {
      const series = members.map((i, k) => ({name: "neuron " + i, values: ex.traces[i],
        color: many ? "#4e79a7" : PALETTE[k], width: many ? 1 : 1.8,
        opacity: many ? 0.35 : 1}));
      if (many) {
        series.push({name: "mean of the members", color: "#1f2328", width: 2.4,
          values: ex.words.map((_, t) => members.reduce((a, i) => a + ex.traces[i][t], 0)
            / members.length)});
      }
      const caption = `"${ex.words.join(" ")}"` + (ex.caption ? " \u00b7 " + ex.caption : "");
      const charts = el("div", {class: "trace-row"}, el("figure", {},
        lineChart(ex.words, series, `cluster ${c} on ${caption}`),
        el("figcaption", {text: many ? "members (thin), their mean (bold)" : "members"})));
      if (ex.merged && !kept.length) {
        charts.append(el("div", {class: "placeholder", text: "no kept neuron stands for this "
          + "cluster"}));
      } else if (ex.merged) {
        const ms = kept.map((j, k) => ({name: "merged neuron " + j, values: ex.merged[j],
          color: ["#1f2328", "#8250df", "#bf3989"][k % 3], width: 2.4, dash: "6 3"}));
        charts.append(el("figure", {}, lineChart(ex.words, ms, `merged neuron for cluster ${c}`),
          el("figcaption", {text: "after compression: merged neuron "
            + kept.map((j) => "#" + j).join(", ")})));
      }
      row.append(el("div", {class: "example"}, el("div", {class: "caption", text: caption}),
        charts));
    }
    card.append(row);
    cards.append(card);
  }
  const out = labels.map((l, i) => (l < 0 ? i : -1)).filter((i) => i >= 0);
  if (out.length) {
    const chips = el("div", {class: "members"});
    for (const i of out) {
      chips.append(el("span", {class: "chip link", text: "#" + i, onclick: () => select(i, true)},
        badge(D.neurons[i].status)));
    }
    cards.append(el("div", {class: "cluster-card", id: "cluster-left-out"},
      el("h3", {text: `Left out of the clustering \u00b7 ${out.length}`}), chips));
  }
}

// ---------- dissimilarity ----------
function renderMatrix() {
  const m = D.matrix, order = m.order, n = order.length;
  const cells = Uint8Array.from(atob(m.cells), (ch) => ch.charCodeAt(0));
  const lut = [];
  for (let k = 0; k < 256; k++) lut.push("#" + m.lut.slice(6 * k, 6 * k + 6));
  const cv = $("matrix-canvas"), ctx = cv.getContext("2d");
  const labelled = n <= 40, off = labelled ? 30 : 6, S = cv.width - off - 6, cs = S / n;
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, cv.width, cv.height);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      ctx.fillStyle = lut[cells[r * n + c]];
      ctx.fillRect(off + c * cs, off + r * cs, Math.ceil(cs), Math.ceil(cs));
    }
  }
  const labels = order.map((i) => D.neurons[i].cluster);
  ctx.strokeStyle = "#fff"; ctx.lineWidth = n > 64 ? 1.5 : 2.5;
  ctx.fillStyle = "#57606a"; ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "center";
  let start = 0, shown = -1e9;
  for (let k = 1; k <= n; k++) {
    if (k === n || labels[k] !== labels[k - 1]) {
      if (k < n) {
        ctx.beginPath(); ctx.moveTo(off + k * cs, off); ctx.lineTo(off + k * cs, off + S);
        ctx.moveTo(off, off + k * cs); ctx.lineTo(off + S, off + k * cs); ctx.stroke();
      }
      const mid = off + (start + k) / 2 * cs, name = clusterName(labels[start]);
      const w = ctx.measureText(name).width, x = Math.min(mid, off + S - w / 2);
      if (x - shown > w + 6) { ctx.fillText(name, x, off + S + 15); shown = x; }  // underneath
      start = k;
    }
  }
  if (labelled) {
    ctx.font = "10px system-ui, sans-serif";
    order.forEach((i, k) => {
      ctx.textAlign = "center"; ctx.fillText(String(i), off + (k + 0.5) * cs, off - 7);
      ctx.textAlign = "right"; ctx.fillText(String(i), off - 5, off + (k + 0.5) * cs + 3);
    });
  }
  const bar = $("matrix-bar"), b = bar.getContext("2d");
  for (let y = 0; y < bar.height; y++) {
    b.fillStyle = lut[255 - Math.floor(255 * y / (bar.height - 1))];
    b.fillRect(0, y, bar.width, 1);
  }
  $("matrix-hi").textContent = fmt(m.hi);
  $("matrix-lo").textContent = fmt(m.lo);
  const at = (e) => {
    const rect = cv.getBoundingClientRect(), k = cv.width / rect.width;
    const c = Math.floor(((e.clientX - rect.left) * k - off) / cs);
    const r = Math.floor(((e.clientY - rect.top) * k - off) / cs);
    return r >= 0 && r < n && c >= 0 && c < n ? [r, c] : null;
  };
  const readout = $("matrix-readout");
  const idle = "hover a cell";
  readout.textContent = idle;
  cv.addEventListener("mousemove", (e) => {
    const p = at(e);
    if (!p) { readout.textContent = idle; return; }
    const [r, c] = p, v = m.lo + (m.hi - m.lo) * cells[r * n + c] / 255;
    readout.textContent = `#${order[r]} (${clusterName(labels[r])}) vs #${order[c]} `
      + `(${clusterName(labels[c])}): ${fmt(v)}`;
  });
  cv.addEventListener("click", (e) => { const p = at(e); if (p) select(order[p[0]], true); });
}

renderList();
renderClusters();
renderMatrix();
const fromHash = /^#n(\d+)$/.exec(location.hash);
select(fromHash && Number(fromHash[1]) < N ? Number(fromHash[1])
  : D.neurons.findIndex((n) => n.status === "alive") >= 0
    ? D.neurons.findIndex((n) => n.status === "alive") : 0);
