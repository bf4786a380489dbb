"""Ask a trained model about new sentences: P(positive), the words it did not know, and with
``--layer`` what a site's units do at every word.

    python -m src.predict <checkpoint> "a gorgeous, heartfelt film" "two hours I'll never get back"
    python -m src.predict <checkpoint> --file reviews.txt          # one sentence a line
    echo "a dull, lifeless remake" | python -m src.predict <checkpoint>
    python -m src.predict <checkpoint> "not bad at all" --layer head.2 --plot traces.png

A checkpoint carries its tokenizer and its shape (a compressed one its own head widths), so it is
all this needs: a plain argparse command, not a Hydra app, loading nothing but the file. It is
loaded by :func:`src.loading.load_network` (tensors and plain data only), so a file that is
not a checkpoint is refused in one line. Heavy imports wait until the arguments are read, so
``--help`` and a bad argument answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypedDict, cast

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from torch import Tensor

    from src.network import SentimentLSTM
    from src.sites import Site

PROG = "python -m src.predict"
ALL_UNITS = 16  # a site this wide or narrower shows every unit; a wider one its loudest ones
BATCH = 256  # sentences per padded batch: memory, not results


class PredictError(Exception):
    """Input this command cannot use; the message is one line naming the argument."""


@dataclass
class Prediction:
    """One sentence through the network."""

    sentence: str
    words: list[str]  # as typed, one per token
    unknown: list[str]  # the words the tokenizer maps to [UNK]
    prob: float  # P(positive) at the last word: the model's prediction
    word_probs: list[float]  # P(positive) had the sentence ended at each word
    activations: Tensor | None = None  # (words, units) at the --layer site


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="P(positive) of each sentence by a trained checkpoint (a baseline or a "
        "compressed one), with the words its tokenizer did not know. Sentences come from the "
        "arguments, from --file, or from standard input (one a line; blank lines are skipped).",
    )
    p.add_argument(
        "checkpoint",  # a str: Path("") would be ".", and the refusal would name that
        help="a .ckpt written by src.run (best, last, ...) or a compressed.ckpt",
    )
    p.add_argument("sentences", nargs="*", help="sentences to classify")
    p.add_argument("--file", type=Path, help="read sentences from FILE, one a line (- for stdin)")
    p.add_argument(
        "--layer",
        help="also show this site's activation after every word: a site name (head.2) or a "
        "head index (-1 is the last hidden layer)",
    )
    p.add_argument(
        "--top",
        type=int,
        default=8,
        help=f"with --layer, on a site wider than {ALL_UNITS} units, show this many of its "
        "loudest units per sentence (default 8)",
    )
    p.add_argument("--plot", type=Path, help="with --layer, draw the per-word traces to FILE.png")
    p.add_argument("--json", action="store_true", help="one JSON object per sentence instead")
    return p


def read_lines(stream: TextIO) -> list[str]:
    return [line.strip() for line in stream if line.strip()]


def gather_sentences(args: argparse.Namespace, stdin: TextIO) -> list[str]:
    """The arguments' sentences, then --file's (or standard input's when there are none)."""
    for i, sentence in enumerate(args.sentences, start=1):
        if not sentence.strip():
            raise PredictError(f"sentence {i} is empty: give each sentence some words")
    sentences = [s.strip() for s in args.sentences]
    from_stdin = str(args.file) == "-" if args.file is not None else not sentences
    if from_stdin and (args.file is not None or not stdin.isatty()):
        source = "standard input"
        try:
            sentences += read_lines(stdin)
        except UnicodeDecodeError:  # a strict locale; a UTF-8 one lets the bytes through
            raise PredictError(f"{source} is not UTF-8 text") from None
    elif args.file is not None:
        try:
            with args.file.open(encoding="utf-8") as stream:
                sentences += read_lines(stream)
        except (OSError, UnicodeDecodeError) as error:
            why = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
            raise PredictError(f"--file {args.file} cannot be read: {why or error}") from None
        source = f"--file {args.file}"
    else:
        source = "the arguments"
    if not sentences:
        raise PredictError(
            f"no sentence in {source}: give sentences as arguments, --file FILE (one a line) "
            "or pipe them in"
        )
    for i, sentence in enumerate(sentences, start=1):
        try:  # bytes that are not UTF-8 reach us as lone surrogates, which the tokenizer refuses
            sentence.encode("utf-8")
        except UnicodeEncodeError:
            raise PredictError(f"sentence {i} is not UTF-8 text: give sentences in UTF-8") from None
    return sentences


@dataclass
class Model:
    """A checkpoint's network (in eval mode), its tokenizer, and the words of a sentence it reads
    (``max_length`` and ``truncation_side`` as its test split was read; None: every word)."""

    network: SentimentLSTM
    tokenizer: Tokenizer
    max_length: int | None = None
    truncation_side: str = "right"


def load(path: Path) -> Model:
    """The checkpoint's model (:class:`Model`)."""
    from tokenizers import Tokenizer

    from src.loading import CheckpointError, load_network, reading_of

    network, checkpoint = load_network(path, "the checkpoint")
    try:
        tokenizer = Tokenizer.from_str(checkpoint.get("tokenizer") or "")
    except Exception as error:  # the tokenizers library raises its own exception kinds
        reason = " ".join(str(error).split())[:120]
        raise CheckpointError(
            f"the checkpoint {path} holds no usable tokenizer ({reason}): retrain it"
        ) from None
    reading = reading_of(checkpoint) or {}
    return Model(network, tokenizer, **reading)


def predict(model: Model, sentences: Sequence[str], site: Site | None) -> list[Prediction]:
    """The sentences in padded batches of :data:`BATCH`: the model's own sentence logits, and per
    word the logits (and the site's activations) from the LSTM states. A sentence longer than
    the model's ``max_length`` is cut as its test split was, and that is said once."""
    from src.tokens import UNK, kept

    sentences = list(sentences)
    encodings = model.tokenizer.encode_batch(sentences)
    read = []  # (ids, offsets) of the tokens each sentence keeps
    for i, (sentence, encoding) in enumerate(zip(sentences, encodings, strict=True), start=1):
        if not encoding.ids:
            raise PredictError(f"sentence {i} ({sentence!r}) holds no word the tokenizer reads")
        keep = slice(None)
        if model.max_length is not None:
            keep = kept(len(encoding.ids), model.max_length, model.truncation_side)
        read.append((encoding.ids[keep], encoding.offsets[keep]))
    if cut := sum(len(ids) < len(e.ids) for (ids, _), e in zip(read, encodings, strict=True)):
        which = "first" if model.truncation_side == "right" else "last"
        print(
            f"{cut} of {len(sentences)} sentences are longer than the {model.max_length} words "
            f"the model reads: their {which} {model.max_length} are read, as its test split's "
            "were (data.max_length, data.truncation_side)",
            file=sys.stderr,
        )
    unk = model.tokenizer.token_to_id(UNK)
    predictions = []
    for start in range(0, len(sentences), BATCH):
        chunk = slice(start, start + BATCH)
        outputs = _forward(model.network, [ids for ids, _ in read[chunk]], site)
        pairs = zip(sentences[chunk], read[chunk], strict=True)
        for b, (sentence, (ids, offsets)) in enumerate(pairs):
            n = len(ids)
            words = [sentence[begin:end] for begin, end in offsets]
            predictions.append(
                Prediction(
                    sentence,
                    words,
                    [w for w, i in zip(words, ids, strict=True) if i == unk],
                    float(outputs["probs"][b]),
                    outputs["word_probs"][b, :n].tolist(),
                    cast("Tensor", outputs["activations"])[b, :n] if site is not None else None,
                )
            )
    return predictions


class _Outputs(TypedDict):
    probs: Tensor
    word_probs: Tensor
    activations: Tensor | None


def _forward(network: SentimentLSTM, ids: list[list[int]], site: Site | None) -> _Outputs:
    import torch

    from src.sites import read_sentences
    from src.tokens import collate

    batch = collate([(torch.tensor(i, dtype=torch.long), 0) for i in ids])
    with torch.no_grad():
        reading = read_sentences(network, batch["ids"], batch["lengths"], site)
        return {
            "probs": torch.sigmoid(reading.logits),
            "word_probs": torch.sigmoid(reading.word_logits(network)),  # (B, T)
            "activations": reading.activations,  # (B, T, N), or None without a site
        }


def shown_units(activations: Tensor, top: int) -> list[int]:
    """Every unit of a narrow site; the ``top`` loudest (largest |activation|) of a wide one."""
    width = activations.shape[1]
    if width <= ALL_UNITS:
        return list(range(width))
    peak = activations.abs().amax(dim=0)
    return sorted(sorted(range(width), key=lambda u: -float(peak[u]))[:top])


def text(prediction: Prediction, site: Site | None, top: int) -> str:
    """The sentence's line, its unknown words, and with a site the per-word table."""
    verdict = "positive" if prediction.prob > 0.5 else "negative"
    lines = [f"{prediction.prob:.4f}  {verdict}  {prediction.sentence}"]
    if prediction.unknown:
        lines.append(f"        unknown words: {', '.join(prediction.unknown)}")
    if site is not None and prediction.activations is not None:
        acts = prediction.activations
        units = shown_units(acts, top)
        which = "its units" if len(units) == acts.shape[1] else f"its {len(units)} loudest units"
        legend = "; [word]: unknown" if prediction.unknown else ""
        lines.append(f"        {site.label}, {which}; P+: P(positive) had it ended there{legend}")
        unknown = set(prediction.unknown)
        known = [f"[{w}]" if w in unknown else w for w in prediction.words]
        width = max(4, *(len(w) for w in known))
        cells = [f"{u:>6}" for u in units]
        lines.append(f"        {'word':<{width}}  {'P+':>5}" + "".join(cells))
        for t, word in enumerate(known):
            values = "".join(f"{float(acts[t, u]):>6.2f}" for u in units)
            lines.append(f"        {word:<{width}}  {prediction.word_probs[t]:>5.2f}{values}")
    return "\n".join(lines)


def as_json(prediction: Prediction, site: Site | None) -> str:
    record = {
        "sentence": prediction.sentence,
        "p_positive": prediction.prob,
        "words": prediction.words,
        "unknown": prediction.unknown,
        "word_p_positive": prediction.word_probs,
    }
    if site is not None and prediction.activations is not None:
        record["site"] = site.name
        record["activations"] = prediction.activations.tolist()  # (words, units)
    return json.dumps(record)


def draw(predictions: Sequence[Prediction], site: Site, path: Path) -> None:
    """The per-word traces of every sentence, as the run's word_traces.png draws them."""
    from src.analysis.figures import Trace, word_traces

    # predictions read with ``site``: each holds its activations
    traces = [
        Trace(p.sentence, p.words, cast("Tensor", p.activations), p.prob) for p in predictions
    ]
    figure = word_traces(traces, site.label)
    try:
        figure.savefig(path, dpi=120)
    except OSError as error:
        raise PredictError(f"--plot {path} cannot be written: {error.strerror or error}") from None


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.checkpoint.strip():
        raise PredictError("the checkpoint path is empty: give a .ckpt file written by src.run")
    if args.plot is not None and args.layer is None:
        raise PredictError("--plot draws a site's activations: give --layer too (head.2, -1, ...)")
    if args.top < 1:
        raise PredictError(f"--top must be at least 1, got {args.top}")
    sentences = gather_sentences(args, stdin or sys.stdin)
    if encoder_main(args, sentences):  # a pretrained encoder's (model=minilm) checkpoint
        return 0
    model = load(Path(args.checkpoint))
    site = None
    if args.layer is not None:
        from src.sites import ModelShape, SiteError, resolve_site

        try:
            site = resolve_site(args.layer, ModelShape.of(model.network))
        except SiteError as error:  # its message names the config key, not the flag
            raise PredictError(str(error).replace("layer=", "--layer ", 1)) from None
    predictions = predict(model, sentences, site)
    for prediction in predictions:
        print(as_json(prediction, site) if args.json else text(prediction, site, args.top))
    if args.plot is not None and site is not None:
        draw(predictions, site, args.plot)
        print(f"drew {args.plot}", file=sys.stderr)
    return 0


def encoder_main(args: argparse.Namespace, sentences: list[str]) -> bool:
    """P(positive) of each sentence by a saved encoder and its probe; False when the checkpoint
    holds an LSTM."""
    from src.encoder import saved_encoder
    from src.loading import read_checkpoint

    saved = saved_encoder(read_checkpoint(args.checkpoint, "the checkpoint"))
    if saved is None:
        return False
    if args.layer is not None:
        raise PredictError("--layer shows an LSTM's sites; this checkpoint holds an encoder")
    for sentence, prob in zip(sentences, saved.probabilities(sentences).tolist(), strict=True):
        verdict = "positive" if prob > 0.5 else "negative"
        record = {"sentence": sentence, "p_positive": prob}
        print(json.dumps(record) if args.json else f"{prob:.4f}  {verdict}  {sentence}")
    return True


def run(argv: Sequence[str] | None = None) -> int:
    """:func:`main`, with every refusal printed as one line and exit status 2."""
    try:
        return main(argv)
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except PredictError as error:
        message = str(error)
    except Exception as error:
        from src.errors import SettingError  # CheckpointError

        if not isinstance(error, SettingError):
            raise
        message = str(error)
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(run())
