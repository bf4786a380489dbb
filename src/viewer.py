"""A self-contained HTML page for looking inside one layer, neuron by neuron and cluster by cluster.

Researchers judge a layer by per-word views (NeuroX's coloured tokens, CircuitsVis, LSTMVis,
Neuronpedia's top-activating examples). This page gives them those views as one file with no
server and nothing fetched from the internet, so it opens from a run folder, a W&B panel or an
e-mail attachment alike. It is a pure function of plain arrays, no model code: the heavy work
(top-k sentences, histograms, the word index) is done here once, and the page only draws what is
embedded, so 2000 probe sentences x 256 neurons stay a file of a few MB.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STATUSES = ("alive", "nearly dead", "dead")


def _array(value: Any, name: str, dtype: type = np.float64) -> np.ndarray:
    """A numpy array of a torch tensor or array-like, checked finite: NaN would break the JSON."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=dtype)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values; the viewer needs finite numbers")
    return array


@dataclass
class Example:
    """One example sentence traced through the layer, and through the merged layer if any."""

    words: Sequence[str]
    traces: Any  # (T, N) activations of the probed layer after each word
    merged: Any | None = None  # (T, k) activations of the compressed layer after each word
    caption: str = ""  # e.g. "P(positive)=0.93"


@dataclass
class ViewerData:
    """What the page shows, as plain data (torch tensors or numpy arrays both accepted).

    ``activations`` is one (T_i, N) array per probe sentence, or one flat (sum T_i, N) array
    whose rows follow the sentences' words in order (what :func:`src.analysis.probe.probe_layer`
    returns for an unshuffled loader). ``status`` is per neuron one of :data:`STATUSES`;
    ``labels`` the cluster of each neuron, -1 for those left out of the clustering.
    ``merged_clusters`` says, per kept neuron of the merged layer, which cluster it stands for.
    """

    site: str  # e.g. "head.2 (16)"
    sentences: Sequence[Sequence[str]]
    activations: Any
    status: Sequence[str]
    labels: Any  # (N,)
    dissimilarity: Any  # (N, N)
    examples: Sequence[Example] = ()
    merged_clusters: Sequence[int] | None = None  # (k,)
    info: Mapping[str, str] = field(default_factory=dict)  # shown in the header: data, seed...


def neuron_status(width: int, dead: Sequence[int], nearly_dead: Sequence[int]) -> list[str]:
    """Per neuron its status, from the ``dead`` and ``nearly_dead`` lists of clusters.json."""
    status = ["alive"] * width
    for i in nearly_dead:
        status[i] = "nearly dead"
    for i in dead:
        status[i] = "dead"
    return status


def _check(data: ViewerData) -> tuple[list[list[str]], np.ndarray, np.ndarray, np.ndarray]:
    """The probe words, their flat activations (W, N), sentence starts, labels; or a clear error."""
    dissimilarity = _array(data.dissimilarity, "dissimilarity")
    if dissimilarity.ndim != 2 or dissimilarity.shape[0] != dissimilarity.shape[1]:
        raise ValueError(f"dissimilarity must be square (N, N), got {dissimilarity.shape}")
    n = len(dissimilarity)
    labels = _array(data.labels, "labels").astype(np.int64).reshape(-1)
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} neurons (dissimilarity)")
    if len(data.status) != n:
        raise ValueError(f"status has {len(data.status)} entries for {n} neurons (dissimilarity)")
    bad = sorted({s for s in data.status if s not in STATUSES})
    if bad:
        raise ValueError(f"status {bad} unknown; each neuron is one of {list(STATUSES)}")
    words = [[str(w) for w in s] for s in data.sentences]
    if not words or not all(words):
        raise ValueError("sentences must hold at least one probe sentence, none of them empty")
    lengths = np.array([len(s) for s in words])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    acts = data.activations
    if hasattr(acts, "ndim") and acts.ndim == 2:
        flat = _array(acts, "activations", np.float32)  # 2000 IMDB reviews x 256: 0.5 GB
    else:
        if len(acts) != len(words):
            raise ValueError(f"activations has {len(acts)} entries for {len(words)} sentences")
        rows = [_array(a, f"activations[{i}]", np.float32) for i, a in enumerate(acts)]
        for i, (a, t) in enumerate(zip(rows, lengths, strict=True)):
            if a.shape != (t, n):
                raise ValueError(
                    f"activations[{i}] has shape {a.shape}, expected ({t}, {n}): one row per "
                    "word of the sentence, one column per neuron"
                )
        flat = np.concatenate(rows)
    if flat.shape != (lengths.sum(), n):
        raise ValueError(
            f"activations has shape {flat.shape}; the sentences' words and the dissimilarity "
            f"ask for ({lengths.sum()}, {n})"
        )
    k = None if data.merged_clusters is None else len(data.merged_clusters)
    for i, example in enumerate(data.examples):
        traces = _array(example.traces, f"examples[{i}].traces")
        if traces.shape != (len(example.words), n):
            raise ValueError(
                f"examples[{i}].traces has shape {traces.shape}, expected "
                f"({len(example.words)}, {n}): one row per word, one column per neuron"
            )
        if example.merged is not None:
            merged = _array(example.merged, f"examples[{i}].merged")
            if k is None:
                raise ValueError(f"examples[{i}].merged is given but merged_clusters is not")
            if merged.shape != (len(example.words), k):
                raise ValueError(
                    f"examples[{i}].merged has shape {merged.shape}, expected "
                    f"({len(example.words)}, {k}): one column per entry of merged_clusters"
                )
    return words, flat, starts, labels


def _round(values: np.ndarray, scale: float) -> list:
    """About three significant digits relative to ``scale``: enough to read, small to embed."""
    decimals = 3 if scale <= 0 else max(0, 2 - int(np.floor(np.log10(scale))))
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


def _cluster_order(labels: np.ndarray) -> np.ndarray:
    """Neurons grouped by cluster, left-out ones last (as src.analysis.clustering.cluster_order)."""
    key = np.where(labels < 0, labels.max() + 1, labels)
    return np.argsort(key, kind="stable")


def _viridis() -> str:
    from matplotlib import colormaps

    rgb = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return rgb.tobytes().hex()


def _payload(data: ViewerData, top_k: int, window: int, bins: int, fire_threshold: float) -> dict:
    """Everything the page draws, precomputed: only what the views need, never every activation."""
    words, flat, starts, labels = _check(data)
    n = flat.shape[1]
    signed = bool((flat < 0).any())
    # Per neuron, the scale of its colours and scores (np.abs would copy all of flat).
    peak_abs = np.maximum(flat.max(axis=0), -flat.min(axis=0))

    # The word index: per word type (lower-cased), the mean activation of every neuron on it.
    vocab, word_ids = np.unique(
        np.array([w.lower() for s in words for w in s], dtype=object), return_inverse=True
    )
    sums = np.zeros((len(vocab), n))
    np.add.at(sums, word_ids, flat)
    counts = np.bincount(word_ids, minlength=len(vocab))
    scores = sums / counts[:, None] / np.where(peak_abs > 0, peak_abs, np.inf)
    index = {}
    for v, word in enumerate(vocab):
        firing = np.flatnonzero(np.abs(scores[v]) >= fire_threshold)
        firing = firing[np.argsort(-np.abs(scores[v, firing]), kind="stable")][:16]
        index[word] = [int(counts[v])] + [
            x for i in firing for x in (int(i), int(round(100 * scores[v, i])))
        ]

    # Per sentence and neuron, the peak (and trough): what top-k ranks sentences by.
    sentence_max = np.maximum.reduceat(flat, starts, axis=0)  # (S, N)
    sentence_min = np.minimum.reduceat(flat, starts, axis=0)
    frequent = counts >= 2  # one occurrence is an anecdote, not a word the neuron likes

    def entry(sentence: int, neuron: int, trough: bool) -> dict:
        lo = starts[sentence]
        column = flat[lo : lo + len(words[sentence]), neuron]
        at = int(column.argmin() if trough else column.argmax())
        first = max(0, min(at - window // 2, len(column) - window))
        shown = slice(first, first + window)
        return {
            "s": int(sentence),
            "o": first,
            "n": len(column),
            "w": words[sentence][shown],
            "a": _round(column[shown], peak_abs[neuron]),
        }

    neurons = []
    for i in range(n):
        column = flat[:, i]
        top = np.argsort(-sentence_max[:, i], kind="stable")[:top_k]
        counts_i, edges = np.histogram(column, bins=bins)
        mean_on = np.where(frequent, scores[:, i], -np.inf)
        liked = np.argsort(-mean_on, kind="stable")[:8]
        neuron = {
            "status": data.status[i],
            "cluster": int(labels[i]),
            "peak": _round(np.array(column.max()), peak_abs[i]),
            "low": _round(np.array(column.min()), peak_abs[i]),
            "mean": _round(np.array(column.mean(dtype=np.float64)), peak_abs[i]),
            "fires": round(float((column > 0).mean()), 4),
            "hist": {
                "lo": _round(edges[0], peak_abs[i]),
                "hi": _round(edges[-1], peak_abs[i]),
                "c": counts_i.tolist(),
            },
            "top": [entry(s, i, False) for s in top],
            "words": [
                [str(vocab[v]), int(round(100 * scores[v, i]))]
                for v in liked
                if np.isfinite(mean_on[v]) and scores[v, i] >= 0.1
            ],
        }
        if signed:
            bottom = np.argsort(sentence_min[:, i], kind="stable")[:top_k]
            neuron["bottom"] = [entry(s, i, True) for s in bottom]
        neurons.append(neuron)

    order = _cluster_order(labels)
    d = _array(data.dissimilarity, "dissimilarity")[order][:, order]
    lo, hi = float(d.min()), float(d.max())
    quantised = np.round(255 * (d - lo) / (hi - lo if hi > lo else 1.0)).astype(np.uint8)
    examples = [
        {
            "words": [str(w) for w in ex.words],
            "caption": ex.caption,
            "traces": np.round(_array(ex.traces, "traces"), 4).T.tolist(),  # (N, T)
            "merged": None
            if ex.merged is None
            else np.round(_array(ex.merged, "merged"), 4).T.tolist(),  # (k, T)
        }
        for ex in data.examples
    ]
    return {
        "site": data.site,
        "info": {str(k): str(v) for k, v in data.info.items()},
        "signed": signed,
        "sentences": len(words),
        "words": int(flat.shape[0]),
        "top_k": top_k,
        "window": window,
        "fire_threshold": fire_threshold,
        "neurons": neurons,
        "index": index,
        "examples": examples,
        "merged_clusters": None
        if data.merged_clusters is None
        else [int(c) for c in data.merged_clusters],
        "matrix": {
            "order": order.tolist(),
            "lo": lo,
            "hi": hi,
            "cells": base64.b64encode(quantised.tobytes()).decode("ascii"),
            "lut": _viridis(),
        },
    }


def render_viewer(
    data: ViewerData,
    top_k: int = 10,
    window: int = 40,
    bins: int = 30,
    fire_threshold: float = 0.3,
) -> str:
    """The page as one HTML string: inline CSS, JS and data, nothing fetched from anywhere.

    ``top_k`` sentences per neuron, each cut to ``window`` words around its peak; ``bins`` bars
    per histogram; the search lists the neurons whose mean activation on the typed word reaches
    ``fire_threshold`` of their peak |activation| on the probe set (at most 16 per word).
    """
    if top_k < 1:
        raise ValueError(f"top_k={top_k} must be at least 1")
    if window < 1:
        raise ValueError(f"window={window} must be at least 1")
    if bins < 1:
        raise ValueError(f"bins={bins} must be at least 1")
    if not 0 < fire_threshold <= 1:
        raise ValueError(f"fire_threshold={fire_threshold} must be in (0, 1]")
    payload = _payload(data, top_k, window, bins, fire_threshold)
    # "<" escaped, so no word of a sentence can close the script block early.
    blob = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")
    parts = {
        "TITLE": html.escape(f"Neuron viewer: {data.site}"),
        "CSS": _CSS,
        "JS": _JS,
        "DATA": blob,
    }
    # One pass, so a site or word spelled like a placeholder is never substituted again.
    return re.sub(r"__(TITLE|CSS|JS|DATA)__", lambda m: parts[m.group(1)], _PAGE)


def write_viewer(data: ViewerData, path: str | Path, **options: Any) -> Path:
    """Write :func:`render_viewer`'s page to ``path`` (folders made); options go to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_viewer(data, **options), encoding="utf-8")
    return path


_POS, _NEG = np.array([214, 96, 77]) / 255, np.array([67, 147, 195]) / 255  # as the page's
_PATCH = "round,pad=0.25"


def topk_figure(data: ViewerData, neuron: int, top_k: int = 5, window: int = 20) -> Figure:
    """One neuron's top-k probe sentences with each word's patch coloured by its activation.

    The static figure papers ask for, in the page's colours; save it as PDF for vector text.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    words, flat, starts, _ = _check(data)
    if not 0 <= neuron < flat.shape[1]:
        raise ValueError(f"neuron={neuron} does not exist: the site has {flat.shape[1]} neurons")
    column = flat[:, neuron]
    scale = float(max(column.max(), -column.min())) or 1.0
    top = np.argsort(-np.maximum.reduceat(column, starts), kind="stable")[:top_k]
    fig = Figure(dpi=100)
    renderer = FigureCanvasAgg(fig).get_renderer()
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    width, line, x0 = 900, 26, 76  # pixels, as the axes' data units below
    title = ax.text(8, 16, f"{data.site}, neuron {neuron}: top {len(top)} probe sentences "
                    f"(colour: activation / {scale:.3g})", fontsize=10, va="center")  # fmt: skip
    right, y = title.get_window_extent(renderer).width + 16, 44
    for rank, s in enumerate(top, 1):
        acts = column[starts[s] : starts[s] + len(words[s])]
        at = int(acts.argmax())
        first = max(0, min(at - window // 2, len(acts) - window))
        ax.text(8, y, f"#{rank}  {acts.max():.2f}", fontsize=9, va="center", color="#656d76")
        shown = range(first, min(first + window, len(acts)))
        tokens = [("\u2026", None)] * (first > 0) + [(words[s][k], acts[k]) for k in shown]
        tokens += [("\u2026", None)] * (shown.stop < len(acts))
        x = x0
        for word, a in tokens:
            text = ax.text(x, y, word, fontsize=10, va="center", ha="left")
            if a is not None:
                t = min(1.0, abs(a) / scale)
                colour = 1 - t * 0.85 * (1 - (_NEG if a < 0 else _POS))  # over white
                text.set_bbox({"facecolor": colour, "edgecolor": "none", "boxstyle": _PATCH})
            w = text.get_window_extent(renderer).width
            if x + w > width - 8 and x > x0:  # wrap
                x, y = x0, y + line
                text.set_position((x, y))
            x += w + 9
            right = max(right, x)
        y += line + 6
    width = min(width, right + 4)
    fig.set_size_inches(width / 100, (y - 10) / 100)
    ax.set_xlim(0, width)
    ax.set_ylim(y - 10, 0)
    return fig


def wandb_html(path: str | Path) -> Any:
    """The written page as a ``wandb.Html``, unchanged.

    ``inject=False`` matters: W&B's default adds a stylesheet link to its own site, and the page
    must stay self-contained.
    """
    import wandb

    return wandb.Html(str(path), inject=False)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>__TITLE__</title>
<style>__CSS__</style>
</head>
<body>
<header id="top">
  <div class="brand"><span class="logo">&#9673;</span> <span id="title"></span></div>
  <div id="info" class="chips"></div>
  <div class="searchbox">
    <input id="search" type="search" placeholder="Search a word: which neurons fire on it?"
      autocomplete="off" spellcheck="false" aria-label="search the probe words">
    <div id="search-results" hidden></div>
  </div>
  <nav><a href="#neurons">Neurons</a><a href="#clusters">Clusters</a>
    <a href="#matrix">Dissimilarity</a></nav>
</header>
<main>
<section id="summary" class="cards"></section>
<section id="neurons">
  <h2>Neurons</h2>
  <div class="neuron-view">
    <aside>
      <input id="neuron-filter" type="search" placeholder="filter: 12, c3, dead..."
        autocomplete="off" aria-label="filter neurons">
      <div class="toggles">
        <select id="neuron-sort" aria-label="sort neurons">
          <option value="index">by index</option><option value="cluster">by cluster</option>
          <option value="peak">by peak</option><option value="fires">by firing share</option>
        </select>
        <label><input type="checkbox" id="hide-dead"> hide dead</label>
      </div>
      <div id="neuron-count" class="muted"></div>
      <ul id="neuron-list" tabindex="0"></ul>
    </aside>
    <div id="neuron-detail"></div>
  </div>
</section>
<section id="clusters"><h2>Clusters</h2><p class="muted" id="cluster-note"></p>
  <div id="cluster-cards"></div></section>
<section id="matrix"><h2>Dissimilarity, ordered by cluster</h2>
  <p class="muted">Lines mark the cluster boundaries; neurons left out of the clustering come
  last. Hover a cell to read it; click it to open its row's neuron.</p>
  <div class="matrix-wrap"><canvas id="matrix-canvas" width="560" height="580"></canvas>
    <div class="cbar"><span id="matrix-hi"></span><canvas id="matrix-bar" width="18"
      height="300"></canvas><span id="matrix-lo"></span></div>
    <div id="matrix-readout" class="muted"></div></div>
</section>
</main>
<footer class="muted">One self-contained file: every number it shows is embedded below.</footer>
<script type="application/json" id="viewer-data">__DATA__</script>
<script>__JS__</script>
</body>
</html>
"""

_CSS = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d0d7de; --bg:#f6f8fa; --card:#fff;
  --accent:#0969da; --pos:214,96,77; --neg:67,147,195; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  color:var(--fg); background:var(--bg); }
header { position:sticky; top:0; z-index:5; display:flex; flex-wrap:wrap; align-items:center;
  gap:10px 18px; padding:10px 22px; background:#fff; border-bottom:1px solid var(--line); }
.brand { font-weight:650; font-size:17px; } .logo { color:rgb(var(--pos)); }
nav a { margin-left:14px; color:var(--accent); text-decoration:none; font-weight:500; }
main { padding:8px 22px 30px; max-width:1400px; margin:auto; }
h2 { font-size:18px; margin:24px 0 10px; } h3 { font-size:15px; margin:0 0 8px; }
.muted { color:var(--muted); font-size:12.5px; }
.chips { display:flex; flex-wrap:wrap; gap:6px; }
.chip { background:var(--bg); border:1px solid var(--line); border-radius:12px; padding:1px 9px;
  font-size:12px; white-space:nowrap; }
.chip b { font-weight:600; }
.searchbox { position:relative; flex:1 1 300px; max-width:460px; }
#search, #neuron-filter { width:100%; padding:7px 10px; border:1px solid var(--line);
  border-radius:6px; font:inherit; }
#search:focus, #neuron-filter:focus { outline:2px solid #54aeff66; border-color:var(--accent); }
#search-results { position:absolute; top:38px; left:0; right:0; background:#fff;
  border:1px solid var(--line); border-radius:8px; box-shadow:0 8px 24px #8c959f33; padding:10px;
  max-height:60vh; overflow:auto; }
.result { display:grid; grid-template-columns:64px 1fr 52px; align-items:center; gap:8px;
  padding:3px 4px; border-radius:4px; cursor:pointer; }
.result:hover { background:var(--bg); }
.bar { height:10px; border-radius:3px; background:rgb(var(--pos)); }
.bar.neg { background:rgb(var(--neg)); }
.cards { display:flex; flex-wrap:wrap; gap:10px; margin-top:14px; }
.stat { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:8px 14px; min-width:110px; }
.stat .v { font-size:20px; font-weight:650; } .stat .k { color:var(--muted); font-size:12px; }
.neuron-view { display:grid; grid-template-columns:250px 1fr; gap:16px; align-items:start; }
aside { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px;
  position:sticky; top:70px; }
.toggles { display:flex; justify-content:space-between; align-items:center; margin:8px 0 4px;
  font-size:12.5px; }
#neuron-list { position:relative; list-style:none; margin:6px 0 0; padding:0; max-height:62vh;
  overflow:auto; outline:none; }
#neuron-list li { display:flex; align-items:center; gap:6px; padding:4px 6px; border-radius:5px;
  cursor:pointer; font-size:13px; }
#neuron-list li:hover { background:var(--bg); }
#neuron-list li.sel { background:#ddf4ff; box-shadow:inset 3px 0 0 var(--accent); }
#neuron-list .id { font-weight:600; width:42px; } #neuron-list .cl { width:34px; }
.mini { flex:1; height:6px; background:var(--bg); border-radius:3px; overflow:hidden; }
.mini > div { height:100%; background:rgb(var(--pos)); }
.badge { font-size:10.5px; font-weight:600; border-radius:9px; padding:0 6px;
  text-transform:uppercase; letter-spacing:.02em; }
.badge.dead { background:#ffebe9; color:#cf222e; border:1px solid #ff818266; }
.badge.nearly { background:#fff8c5; color:#9a6700; border:1px solid #d4a72c66; }
.panel { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px;
  margin-bottom:14px; }
.detail-head { display:flex; flex-wrap:wrap; align-items:center; gap:10px; margin-bottom:10px; }
.detail-head h3 { font-size:20px; margin:0; }
.detail-grid { display:grid; grid-template-columns:minmax(280px,360px) 1fr; gap:16px; }
.sentences { display:flex; flex-direction:column; gap:6px; }
.sentence { display:flex; gap:10px; align-items:baseline; padding:5px 8px; border-radius:6px;
  background:#fbfcfd; border:1px solid #eaeef2; }
.sentence .rank { color:var(--muted); font-size:11.5px; width:74px; flex:none;
  font-variant-numeric:tabular-nums; }
.sentence .text { line-height:1.9; }
.tok { padding:1px 2px; margin:0 1px; border-radius:3px; }
.tok.peak { outline:1.5px solid #1f232899; }
.legend { display:flex; align-items:center; gap:8px; font-size:12px; color:var(--muted); }
.ramp { width:140px; height:10px; border-radius:3px; border:1px solid var(--line); }
.cluster-card { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:12px 14px; margin-bottom:12px; }
.cluster-card .members { display:flex; flex-wrap:wrap; gap:4px; margin:4px 0 8px; }
.chip.link { cursor:pointer; } .chip.link:hover { border-color:var(--accent); }
.examples { display:flex; flex-wrap:wrap; gap:10px 36px; }
.example .caption { font-size:12.5px; font-weight:500; margin:4px 0 2px; }
.trace-row { display:flex; gap:10px; align-items:flex-start; }
.trace-row figure { margin:0; } figcaption { font-size:12px; color:var(--muted); }
.placeholder { width:260px; height:190px; display:flex; align-items:center;
  justify-content:center; text-align:center; border:1px dashed var(--line); border-radius:6px;
  color:var(--muted); font-size:12.5px; padding:10px; }
.matrix-wrap { display:flex; gap:14px; align-items:flex-start; }
.cbar { display:flex; flex-direction:column; align-items:center; gap:4px; font-size:12px;
  color:var(--muted); padding-top:24px; }
#matrix-bar { border:1px solid var(--line); }
#matrix-readout { padding-top:24px; min-width:220px; }
#matrix-canvas { background:#fff; border:1px solid var(--line); border-radius:6px;
  cursor:crosshair; max-width:100%; }
footer { text-align:center; padding:16px; }
svg text { font:11px system-ui,sans-serif; fill:#57606a; }
svg .axis { stroke:#d0d7de; }
@media (max-width: 900px) { .neuron-view, .detail-grid { grid-template-columns:1fr; }
  aside { position:static; } }
"""

_JS = r"""
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
"""
