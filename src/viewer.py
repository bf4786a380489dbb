"""A self-contained HTML page for looking inside one layer, neuron by neuron and cluster by cluster.

Researchers judge a layer by per-word views (NeuroX's coloured tokens, CircuitsVis, LSTMVis,
Neuronpedia's top-activating examples). This page gives them those views as one file with no
server and nothing fetched from the internet, so it opens from a run folder, a W&B panel or an
e-mail attachment alike. It is a pure function of plain arrays, no model code: the heavy work
(top-k sentences, histograms, the word index) is done here once, and the page only draws what is
embedded, so 2000 probe sentences x 256 neurons stay a file of a few MB. The page's template,
stylesheet and script are ``src/viewer_page/page.{html,css,js}``, inlined into each page.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from src.analysis.clustering import cluster_order
from src.analysis.neurons import STATUSES

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _array(value: Any, name: str, dtype: type = np.float64) -> np.ndarray:
    """A numpy array of a torch tensor or array-like, checked finite: NaN would break the JSON."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array: np.ndarray = np.asarray(value, dtype=dtype)
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
    whose rows follow the sentences' words in order (a :class:`src.analysis.layer.Probe`'s
    ``activations``). ``status`` is per neuron one of :data:`STATUSES`
    (:meth:`src.analysis.neurons.NeuronStatus.names`);
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


def _viridis() -> str:
    from matplotlib import colormaps

    rgb = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return rgb.tobytes().hex()


@dataclass(frozen=True)
class _Probe:
    """The probe set as every neuron's view reads it, computed once for all neurons."""

    words: list[list[str]]
    flat: np.ndarray  # (W, N) activations after each probe word, sentence after sentence
    starts: np.ndarray  # (S,) each sentence's first row in flat
    signed: bool  # whether any activation is negative: the page then shows troughs too
    scale: np.ndarray  # (N,) peak |activation|: the scale of each neuron's colours and scores
    vocab: np.ndarray  # (V,) the word types, lower-cased
    counts: np.ndarray  # (V,) each type's occurrences
    scores: np.ndarray  # (V, N) mean activation on each type, as a share of scale


def _probe(words: list[list[str]], flat: np.ndarray, starts: np.ndarray) -> _Probe:
    """Each neuron's scale, and its mean activation on each word type (lower-cased)."""
    scale = np.maximum(flat.max(axis=0), -flat.min(axis=0))  # np.abs would copy all of flat
    vocab, word_ids = np.unique(
        np.array([w.lower() for s in words for w in s], dtype=object), return_inverse=True
    )
    sums = np.zeros((len(vocab), flat.shape[1]))
    np.add.at(sums, word_ids, flat)
    counts = np.bincount(word_ids, minlength=len(vocab))
    scores = sums / counts[:, None] / np.where(scale > 0, scale, np.inf)
    signed = bool((flat < 0).any())
    return _Probe(words, flat, starts, signed, scale, vocab, counts, scores)


def _word_index(probe: _Probe, fire_threshold: float) -> dict[str, list[int]]:
    """The search's index: per word type its count, then (neuron, % of its peak) for at most 16
    neurons whose mean activation on it reaches ``fire_threshold`` of their peak, strongest
    first; flat lists, as the page reads them, to keep the file small."""
    index = {}
    for v, word in enumerate(probe.vocab):
        scores = probe.scores[v]
        firing = np.flatnonzero(np.abs(scores) >= fire_threshold)
        firing = firing[np.argsort(-np.abs(scores[firing]), kind="stable")][:16]
        index[word] = [int(probe.counts[v])] + [
            x for i in firing for x in (int(i), int(round(100 * scores[i])))
        ]
    return index


def _excerpt(probe: _Probe, sentence: int, neuron: int, window: int, trough: bool) -> dict:
    """One sentence of a neuron's top (or bottom) list, cut to ``window`` words around its peak
    (or trough): a 400-word review would not fit a line."""
    words = probe.words[sentence]
    lo = probe.starts[sentence]
    column = probe.flat[lo : lo + len(words), neuron]
    at = int(column.argmin() if trough else column.argmax())
    first = max(0, min(at - window // 2, len(column) - window))
    shown = slice(first, first + window)
    a = _round(column[shown], probe.scale[neuron])
    # Sentence, first word shown, its length, the words shown and their activations; short keys,
    # as top_k of them repeat for every neuron.
    return {"s": int(sentence), "o": first, "n": len(column), "w": words[shown], "a": a}


def _neuron(probe: _Probe, i: int, top_k: int, window: int, bins: int) -> dict:
    """Neuron ``i``'s panel: its summary numbers, histogram, top (and, where signed, most
    negative) sentences, and the frequent words it likes."""
    column, scale = probe.flat[:, i], probe.scale[i]
    counts, edges = np.histogram(column, bins=bins)
    hist = {"lo": _round(edges[0], scale), "hi": _round(edges[-1], scale), "c": counts.tolist()}
    # One occurrence is an anecdote, not a word the neuron likes.
    mean_on = np.where(probe.counts >= 2, probe.scores[:, i], -np.inf)
    liked = np.argsort(-mean_on, kind="stable")[:8]
    # Sentences ranked by their peak (and trough) activation.
    top = np.argsort(-np.maximum.reduceat(column, probe.starts), kind="stable")[:top_k]
    neuron = {
        "peak": _round(np.array(column.max()), scale),
        "low": _round(np.array(column.min()), scale),
        "mean": _round(np.array(column.mean(dtype=np.float64)), scale),
        "fires": round(float((column > 0).mean()), 4),
        "hist": hist,
        "top": [_excerpt(probe, s, i, window, False) for s in top],
        "words": [
            [str(probe.vocab[v]), int(round(100 * probe.scores[v, i]))]
            for v in liked
            if np.isfinite(mean_on[v]) and probe.scores[v, i] >= 0.1
        ],
    }
    if probe.signed:
        bottom = np.argsort(np.minimum.reduceat(column, probe.starts), kind="stable")[:top_k]
        neuron["bottom"] = [_excerpt(probe, s, i, window, True) for s in bottom]
    return neuron


def _matrix(dissimilarity: np.ndarray, labels: np.ndarray) -> dict:
    """The dissimilarity in cluster order, one byte a cell (base64) with viridis as the lookup
    table: 256 neurons take 90 kB rather than half a megabyte of JSON numbers."""
    order = cluster_order(torch.from_numpy(labels)).numpy()
    d = dissimilarity[order][:, order]
    lo, hi = float(d.min()), float(d.max())
    quantised = np.round(255 * (d - lo) / (hi - lo if hi > lo else 1.0)).astype(np.uint8)
    cells = base64.b64encode(quantised.tobytes()).decode("ascii")
    return {"order": order.tolist(), "lo": lo, "hi": hi, "cells": cells, "lut": _viridis()}


def _examples(examples: Sequence[Example]) -> list[dict]:
    """The example sentences' traces, transposed to one row per neuron: the line charts' series."""
    return [
        {
            "words": [str(w) for w in ex.words],
            "caption": ex.caption,
            "traces": np.round(_array(ex.traces, "traces"), 4).T.tolist(),  # (N, T)
            "merged": None
            if ex.merged is None
            else np.round(_array(ex.merged, "merged"), 4).T.tolist(),  # (k, T)
        }
        for ex in examples
    ]


def _payload(data: ViewerData, top_k: int, window: int, bins: int, fire_threshold: float) -> dict:
    """Everything the page draws, precomputed: only what the views need, never every activation."""
    words, flat, starts, labels = _check(data)
    probe = _probe(words, flat, starts)
    neurons = [
        {"status": data.status[i], "cluster": int(labels[i])}
        | _neuron(probe, i, top_k, window, bins)
        for i in range(flat.shape[1])
    ]
    merged = data.merged_clusters
    return {
        "site": data.site,
        "info": {str(k): str(v) for k, v in data.info.items()},
        "signed": probe.signed,
        "sentences": len(words),
        "words": int(flat.shape[0]),
        "top_k": top_k,
        "window": window,
        "fire_threshold": fire_threshold,
        "neurons": neurons,
        "index": _word_index(probe, fire_threshold),
        "examples": _examples(data.examples),
        "merged_clusters": None if merged is None else [int(c) for c in merged],
        "matrix": _matrix(_array(data.dissimilarity, "dissimilarity"), labels),
    }


@cache
def _asset(name: str) -> str:
    """The page's template, stylesheet or script: files in ``src/viewer_page/``, so an editor and
    a linter read them as HTML, CSS and JS; installed with the package as its data."""
    return (resources.files("src") / "viewer_page" / name).read_text(encoding="utf-8")


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
    for name, value in (("top_k", top_k), ("window", window), ("bins", bins)):
        if value < 1:
            raise ValueError(f"{name}={value} must be at least 1")
    if not 0 < fire_threshold <= 1:
        raise ValueError(f"fire_threshold={fire_threshold} must be in (0, 1]")
    payload = _payload(data, top_k, window, bins, fire_threshold)
    # "<" escaped, so no word of a sentence can close the script block early.
    blob = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")
    parts = {
        "TITLE": html.escape(f"Neuron viewer: {data.site}"),
        "CSS": _asset("page.css"),
        "JS": _asset("page.js"),
        "DATA": blob,
    }
    # One pass, so a site or word spelled like a placeholder is never substituted again.
    return re.sub(r"__(TITLE|CSS|JS|DATA)__", lambda m: parts[m.group(1)], _asset("page.html"))


def write_viewer(data: ViewerData, path: str | Path, **options: Any) -> Path:
    """Write :func:`render_viewer`'s page to ``path`` (folders made); options go to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_viewer(data, **options), encoding="utf-8")
    return path


_POS, _NEG = np.array([214, 96, 77]) / 255, np.array([67, 147, 195]) / 255  # as page.css
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
    width: float  # narrowed to the text's extent below
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
        x: float = x0
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


WORD_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 3px 8px; border-bottom: 1px solid #ddd;
text-align: left; vertical-align: top; }} .count {{ color: #888; font-size: 85%; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<input id="filter" placeholder="find a word" autofocus>
<table><thead><tr><th>row</th><th>training words</th><th>members</th>
<th>words, most frequent first</th></tr></thead><tbody id="rows">{rows}</tbody></table>
<script>
document.getElementById("filter").addEventListener("input", (event) => {{
  const wanted = event.target.value.trim().toLowerCase();
  for (const row of document.querySelectorAll("#rows tr")) {{
    row.hidden = wanted !== "" && !row.dataset.words.includes(" " + wanted + " ");
  }}
}});
</script></body></html>
"""


def render_word_groups(groups: Sequence[Mapping[str, Any]], title: str, summary: str) -> str:
    """A page of the rows that merged words share: each row's words by their count, with a
    filter that finds the row of any word. ``groups``: ``row``, ``count`` and ``words`` (pairs
    of a word and its count), as clusters.json holds them."""
    rows = []
    for group in groups:
        words = " ".join(
            f'{html.escape(word)}<span class="count">&nbsp;{count}</span>'
            for word, count in group["words"]
        )
        index = " ".join(html.escape(word.lower(), quote=True) for word, _ in group["words"])
        rows.append(
            f'<tr data-words=" {index} "><td>{group["row"]}</td><td>{group["count"]}</td>'
            f"<td>{len(group['words'])}</td><td>{words}</td></tr>"
        )
    return WORD_PAGE.format(
        title=html.escape(title), summary=html.escape(summary), rows="\n".join(rows)
    )


def wandb_html(path: str | Path) -> Any:
    """The written page as a ``wandb.Html``, unchanged.

    ``inject=False`` matters: W&B's default adds a stylesheet link to its own site, and the page
    must stay self-contained.
    """
    import wandb

    return wandb.Html(str(path), inject=False)
