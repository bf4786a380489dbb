"""The neuron viewer: what it embeds, that it stays self-contained, and that it renders in Chromium.

The browser tests drive Debian's headless ``chromium`` through Playwright. Where either is
missing they skip with the reason, unless ``REQUIRE_BROWSER=1`` (as ``.ci/run`` sets): then a
missing browser is a failure, so CI cannot pass without ever opening the page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from src.viewer import (
    Example,
    ViewerData,
    render_viewer,
    topk_figure,
    wandb_html,
    write_viewer,
)
from tests.conftest import open_page

SENTENCES = [
    "i love this movie",
    "i hate this movie",
    "a great and moving story",
    "boring and far too long",
    "the cast is great but the plot is boring",
    "i love the music , i hate the ending",
    "not a great film",
    "what a wonderful mess",
    "we love it",
    "the plot was dull and boring",
]
# Hand-made word features: neuron 0 and 2 like "love"/"great", 1 and 3 "hate"/"boring".
LIKES = {
    "love": [3.0, 0, 2.0, 0],
    "great": [2.0, 0, 1.5, 0],
    "wonderful": [1.6, 0, 1.0, 0],
    "hate": [0, 3.0, 0, 2.2],
    "boring": [0, 2.5, 0, 2.0],
    "dull": [0, 1.5, 0, 1.0],
}


def word_activations(words: list[str], n: int, signed: bool, seed: int) -> torch.Tensor:
    """(T, n): each neuron's response to each word, with seeded noise; the last neuron dead."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for w in words:
        row = 0.3 * torch.randn(n, generator=g)
        row[:4] += torch.tensor(LIKES.get(w, [0.0] * 4))
        row[4:8] += row[:4]  # neurons 4..7 echo 0..3, so clusters are real
        rows.append(row)
    acts = torch.stack(rows)
    acts = torch.tanh(acts) if signed else torch.relu(acts)
    acts[:, -1] = 0.0  # dead
    acts[:, -2] *= 0.001  # nearly dead
    return acts


def make_data(n: int = 16, signed: bool = False, merged: bool = True) -> ViewerData:
    words = [s.split() for s in SENTENCES]
    acts = [word_activations(w, n, signed, seed=i) for i, w in enumerate(words)]
    flat = torch.cat(acts).numpy()
    with np.errstate(invalid="ignore"):  # the dead neuron has no variance
        corr = np.nan_to_num(np.corrcoef(flat.T))
    dissimilarity = 1 - np.abs(corr)
    labels = torch.tensor([i % 4 for i in range(n)])
    labels[-2:] = -1  # the dead and nearly dead ones are left out
    examples = []
    for i, sentence in enumerate(["i love this movie", "i hate this movie"]):
        w = sentence.split()
        traces = word_activations(w, n, signed, seed=100 + i)
        kept = traces[:, [0, 1, 2, 3]] * 1.5 if merged else None
        examples.append(Example(w, traces, kept, caption=f"P(positive)={0.9 - 0.8 * i:.2f}"))
    return ViewerData(
        site=f"head.2 ({n})",
        sentences=words,
        activations=acts,
        status=["alive"] * (n - 2) + ["nearly dead", "dead"],
        labels=labels,
        dissimilarity=torch.as_tensor(dissimilarity),
        examples=examples,
        merged_clusters=[0, 1, 2, 3] if merged else None,
        info={"data": "hand-made", "seed": "0"},
    )


def embedded(page: str) -> dict:
    """The JSON the page draws from, read back from its script block."""
    block = r'<script type="application/json" id="viewer-data">(.*?)</script>'
    match = re.search(block, page, re.S)
    assert match, "no data block in the page"
    return json.loads(match.group(1))


def test_top_k_sentences_histograms_and_index_match_the_activations() -> None:
    data = make_data()
    page = embedded(render_viewer(data, top_k=3))
    flat = torch.cat(data.activations).numpy()
    assert page["sentences"] == len(SENTENCES) and page["words"] == len(flat)
    for i, neuron in enumerate(page["neurons"]):
        peaks = [float(a[:, i].max()) for a in data.activations]
        expected = sorted(range(len(peaks)), key=lambda s: -peaks[s])[:3]
        assert [e["s"] for e in neuron["top"]] == expected
        assert [e["w"] for e in neuron["top"]] == [SENTENCES[s].split() for s in expected]
        assert sum(neuron["hist"]["c"]) == len(flat)
        assert neuron["peak"] == pytest.approx(flat[:, i].max(), rel=1e-2)
    assert page["neurons"][0]["top"][0]["s"] in (0, 5, 8)  # a sentence with "love"
    assert [n["status"] for n in page["neurons"]][-2:] == ["nearly dead", "dead"]
    assert not page["signed"] and "bottom" not in page["neurons"][0]
    # "love" makes neurons 0 and 2 (and their echoes 4, 6) fire, never the "hate" ones.
    love = page["index"]["love"]
    assert love[0] == 3  # three occurrences
    firing, scores = love[1::2], love[2::2]
    assert {0, 2} <= set(firing) and not {1, 3, 5, 7} & set(firing)
    assert scores == sorted(scores, reverse=True) and min(scores) >= 30  # % of each one's peak
    assert page["neurons"][1]["words"][0][0] in ("hate", "boring")


def test_flat_activations_give_the_same_page_as_per_sentence_ones() -> None:
    data = make_data()
    flat = make_data()
    flat.activations = torch.cat(flat.activations)
    assert render_viewer(flat) == render_viewer(data)


def test_signed_site_shows_most_negative_sentences_too() -> None:
    page = embedded(render_viewer(make_data(signed=True), top_k=2))
    assert page["signed"]
    bottom = page["neurons"][0]["bottom"]
    assert len(bottom) == 2 and min(bottom[0]["a"]) <= min(bottom[1]["a"]) < 0


def test_long_sentence_is_cut_around_its_peak() -> None:
    words = [f"w{i}" for i in range(100)]
    acts = torch.zeros(100, 2)
    acts[70, 0] = 5.0
    acts[:, 1] = 1.0
    data = ViewerData("toy (2)", [words], [acts], ["alive"] * 2, [0, 0], np.zeros((2, 2)))
    (entry,) = embedded(render_viewer(data, top_k=1, window=10))["neurons"][0]["top"]
    assert entry["n"] == 100 and len(entry["w"]) == 10 and 0 < entry["o"] <= 70
    assert entry["w"][entry["a"].index(max(entry["a"]))] == "w70"


def test_static_figure_colours_the_top_sentences_words(tmp_path: Path) -> None:
    data = make_data()
    fig = topk_figure(data, neuron=0, top_k=3)
    texts = fig.axes[0].texts
    patched = {t.get_text(): t.get_bbox_patch() for t in texts if t.get_bbox_patch()}
    drawn = [t.get_text() for t in texts]
    peaks = [float(a[:, 0].max()) for a in data.activations]
    best = SENTENCES[int(np.argmax(peaks))].split()
    assert drawn[2 : 2 + len(best)] == best  # after the title and the first rank label
    shade = {w: float(np.mean(p.get_facecolor()[:3])) for w, p in patched.items()}
    assert min(shade, key=shade.get) == "love"  # the darkest patch is neuron 0's favourite
    fig.savefig(tmp_path / "top3.png")
    assert (tmp_path / "top3.png").stat().st_size > 5_000
    with pytest.raises(ValueError, match="neuron=16 does not exist"):
        topk_figure(data, neuron=16)


def test_page_is_self_contained(tmp_path: Path) -> None:
    path = write_viewer(make_data(), tmp_path / "run" / "viewer.html")
    page = path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(//|[a-z]+:(?!,))""", page, re.I), (
        "a src or href points outside the file"
    )
    assert '<link rel="stylesheet"' not in page and "<script src" not in page
    # W&B's Html adds a stylesheet link to its site unless told not to.
    assert wandb_html(path).html == page


def test_sentence_words_cannot_break_out_of_the_page() -> None:
    data = make_data()
    data.sentences = [list(s) for s in data.sentences]
    data.sentences[0][0] = "</script><b>"
    data.site = "__DATA__</title>"  # spelled like a placeholder of the page's template
    page = render_viewer(data)
    assert page.count("</script>") == 2  # the data block's and the code's, nothing else
    assert page.count("</title>") == 1
    assert embedded(page)["site"] == "__DATA__</title>"
    assert "</script><b>" in embedded(page)["index"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: setattr(d, "labels", d.labels[:-1]), "labels has 15 entries"),
        (lambda d: setattr(d, "status", ["alive"] * 15 + ["zombie"]), "status ['zombie']"),
        (lambda d: d.activations.__setitem__(0, d.activations[0][:, :3]), "activations[0] has"),
        (lambda d: setattr(d, "merged_clusters", [0, 1]), "examples[0].merged has shape"),
        (lambda d: setattr(d, "dissimilarity", np.zeros((16, 3))), "dissimilarity must be"),
        (lambda d: d.activations.__setitem__(1, d.activations[1] * np.nan), "NaN"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_it(change, message: str) -> None:
    data = make_data()
    change(data)
    with pytest.raises(ValueError, match=re.escape(message)):
        render_viewer(data)


def test_size_for_2000_sentences_and_256_neurons(tmp_path: Path) -> None:
    """Embedding every activation would take ~60 MB here; the page embeds only what it shows."""
    rng = np.random.default_rng(0)
    vocab = [f"word{i}" for i in range(8000)]
    zipf = 1 / np.arange(1, len(vocab) + 1)
    lengths = rng.integers(5, 40, size=2000)
    words = [list(rng.choice(vocab, size=t, p=zipf / zipf.sum())) for t in lengths]
    flat = np.maximum(rng.normal(size=(lengths.sum(), 256)), 0).astype(np.float32)
    labels = np.arange(256) % 8
    data = ViewerData("head.0 (256)", words, flat, ["alive"] * 256, labels, np.eye(256))
    size = write_viewer(data, tmp_path / "viewer.html").stat().st_size
    print(f"viewer for 2000 sentences x 256 neurons: {size / 1e6:.1f} MB")
    assert size < 8e6


# ------------------------------------------------------------------ in a real browser

# The browser fixture and open_page live in conftest.py (the encoder's viewer test uses them).


def test_viewer_renders_and_searches_in_chromium(browser, tmp_path: Path) -> None:
    path = write_viewer(make_data(), tmp_path / "viewer.html", top_k=4)
    page, errors, requests = open_page(browser, path)

    # The neuron list, the selected neuron's top sentences, the clusters and the matrix.
    assert page.locator("#neuron-list li").count() == 16
    assert "Neuron viewer" in page.title() and "head.2 (16)" in page.inner_text("header")
    sentences = page.locator("#topk .sentence")
    assert sentences.count() == 4
    first = sentences.first.inner_text()
    assert any(word in first for word in ("love", "great", "wonderful")), first
    # Each word of the open neuron's (0's) best sentence is tinted by its activation over the
    # neuron's largest |activation|: red for positive, blue for negative, more opaque when higher.
    neuron = embedded(path.read_text(encoding="utf-8"))["neurons"][0]
    scale = max(abs(neuron["peak"]), abs(neuron["low"]))
    colours = sentences.first.locator(".tok").evaluate_all(
        "ts => ts.map(t => getComputedStyle(t).backgroundColor)"
    )
    for colour, a in zip(colours, neuron["top"][0]["a"], strict=True):
        *rgb, alpha = re.fullmatch(r"rgba\((\d+), (\d+), (\d+), ([\d.]+)\)", colour).groups()
        assert [int(c) for c in rgb] == ([67, 147, 195] if a < 0 else [214, 96, 77]), colour
        assert float(alpha) == pytest.approx(0.06 + 0.79 * min(1, abs(a) / scale), abs=0.01)
    assert page.locator("#neuron-list li .badge.dead").count() == 1
    assert page.locator("#neuron-list li .badge.nearly").count() == 1
    assert page.locator(".cluster-card").count() == 5  # 4 clusters and the left-out neurons
    assert page.locator("#cluster-0 svg polyline").count() == 2 * (4 + 1)  # 4 members, 1 merged
    assert (
        page.locator("#matrix-canvas").evaluate(
            "c => c.getContext('2d').getImageData(c.width / 2, c.height / 2, 1, 1).data[3]"
        )
        == 255
    )  # the matrix was drawn

    # Search: "hate" shows the neurons that fire on it, and clicking one opens it.
    page.fill("#search", "hate")
    results = page.locator("#search-results .result")
    results.first.wait_for()
    shown = {int(x) for x in results.evaluate_all("rs => rs.map(r => r.dataset.neuron)")}
    assert {1, 3} <= shown and not {0, 2} & shown
    screenshot_search = tmp_path / "viewer-search.png"
    page.screenshot(path=str(screenshot_search))
    results.first.click()
    assert page.inner_text("#neuron-detail h3").strip() in ("Neuron 1", "Neuron 3", "Neuron 5")
    page.fill("#search", "lov")
    assert "love" in page.inner_text("#search-results")  # a word it does not know: suggestions
    page.keyboard.press("Escape")

    # The filter narrows the list; a click on a list item opens that neuron.
    page.fill("#neuron-filter", "c2")
    assert page.locator("#neuron-list li").count() == 3  # 2, 6, 10 (14 is left out)
    page.click('#neuron-list li[data-neuron="6"]')
    assert page.inner_text("#neuron-detail h3").strip() == "Neuron 6"
    page.fill("#neuron-filter", "")

    page.click('#neuron-list li[data-neuron="0"]')
    page.evaluate("window.scrollTo(0, 0)")
    screenshot = tmp_path / "viewer.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshots: {screenshot} {screenshot_search}")
    assert screenshot.stat().st_size > 10_000
    assert errors == [], errors
    assert requests == [path.as_uri()], f"the page fetched more than itself: {requests}"
    page.close()


def test_viewer_for_256_signed_neurons_in_chromium(browser, tmp_path: Path) -> None:
    """A wide, signed site (an LSTM's tanh units): a list to filter, not 256 open panels."""
    path = write_viewer(make_data(n=256, signed=True, merged=False), tmp_path / "wide.html")
    page, errors, requests = open_page(browser, path)
    assert page.locator("#neuron-list li").count() == 256
    assert page.locator(".panel").count() == 1  # one neuron open at a time
    page.fill("#neuron-filter", "25")
    assert page.locator("#neuron-list li").count() == 1 + 6  # 25 and 250..255
    page.keyboard.press("Enter")
    assert page.inner_text("#neuron-detail h3").strip() == "Neuron 25"
    assert page.locator("#neuron-detail .sentences").count() == 2  # top and most negative
    assert "no compressed layer" in page.inner_text("#clusters")
    page.screenshot(path=str(tmp_path / "wide.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'wide.png'}")
    assert errors == [], errors
    assert requests == [path.as_uri()]
    page.close()
