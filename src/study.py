"""The claims study: one baseline per corpus and seed, every layer shrunk every way, the source's
claims judged with statistics over seeds.

python -m src.study                                          # the whole study (make claims)
python -m src.study seeds=[0] corpora=[rotten_tomatoes]       # one corpus, one seed

A run of ``src.run`` per compression would pay again, every time, for what does not depend on
the method: testing the baseline, probing the layer, the LSTM's pass over every sentence. Here
each baseline is trained once (or loaded from the same cache as ``src.run``), its last-word LSTM
states are computed once per split, and every method, layer and width is measured on them.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path

import hydra
import lightning as L
import matplotlib.pyplot as plt
import pandas as pd
import torch
import wandb
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.analysis.layer import LayerAnalysis, cluster_layer, probe_dissimilarity
from src.analysis.neurons import neuron_status
from src.analysis.probe import (
    AnalysisConfigError,
    check_target_width,
    probe_layer,
    probe_loader,
    resolve_layer,
)
from src.analysis.stats import (
    effective_rank,
    mcnemar_exact_interval,
    mcnemar_p,
)
from src.baseline import obtain_baseline
from src.claims import THRESHOLDS, StudyTables, check_claims, mean_std
from src.compress.pipeline import (
    Features,
    compress_layer,
    compression_metrics,
    head_logits,
    last_word_states,
    layer_features,
    layer_pair,
)
from src.data import SentimentDataModule
from src.model import SentimentLSTM, check_shape
from src.report import (
    accuracy_figure,
    aggregate,
    cka_figure,
    log_summary_run,
    pairwise_similarity,
    width_table,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
TABLES = tuple(field.name for field in fields(StudyTables))


class StudyConfigError(ValueError):
    """A study setting that cannot work; the message names it."""


@dataclass
class Rows:
    """The study's tables as they grow, one list of flat dicts each."""

    baselines: list[dict]
    layers: list[dict]
    runs: list[dict]
    comparisons: list[dict]
    similarity: list[dict]

    def frames(self) -> StudyTables:
        return StudyTables(*(pd.DataFrame(rows) for rows in vars(self).values()))


def run_configs(cfg: DictConfig) -> dict[tuple[str, int], DictConfig]:
    """The ``src.run`` config of every corpus and seed, composed (and so checked) up front."""
    if not cfg.corpora or not cfg.seeds:
        raise StudyConfigError("corpora and seeds must each name at least one")
    configs = {}
    pairs = [(d, s) for d in cfg.corpora for s in cfg.seeds_by_corpus.get(d) or cfg.seeds]
    for data, seed in pairs:
        folder = Path(cfg.runs_dir) / f"{data}-seed{seed}"
        own = cfg.corpus_overrides.get(data, [])
        overrides = [f"data={data}", *own, *cfg.overrides]
        configs[data, seed] = compose(
            "config", overrides=[*overrides, f"seed={seed}", f"output_dir={folder}"]
        )
        run = configs[data, seed]
        check_shape(run.model.head_widths, run.model.lstm.hidden_size, run.model.embedding_dim)
        try:
            for layer, widths in layer_grid(cfg, list(run.model.head_widths)).items():
                for width in widths:
                    check_target_width(width, run.model.head_widths[layer], layer)
        except AnalysisConfigError as error:  # it names src.run's settings: say where they are
            raise StudyConfigError(f"layers: {error}") from error
    return configs


def layer_grid(cfg: DictConfig, head_widths: list[int]) -> dict[int, list[int]]:
    """``layers`` as {layer index: target widths}, layers given as in ``src.run``'s ``layer``."""
    grid = {}
    for entry in cfg.layers:
        if "layer" not in entry or "widths" not in entry:
            raise StudyConfigError(f"layers: {entry} needs a layer and its widths")
        grid[resolve_layer(entry.layer, head_widths)] = list(entry.widths)
    return grid


def method_configs(cfg: DictConfig) -> dict[str, DictConfig]:
    """The ``compress`` config of every method, as ``compress=<name>`` would compose it."""
    if not cfg.methods:
        raise StudyConfigError("methods must name at least one compress method")
    configs = {}
    for method in cfg.methods:
        try:
            configs[method] = compose("config", overrides=[f"compress={method}"]).compress
        except MissingConfigException as error:
            choices = sorted(
                p.stem for p in (Path(__file__).parents[1] / "conf/compress").glob("*.yaml")
            )
            raise StudyConfigError(
                f"methods: {method} is not in conf/compress/; choose from {', '.join(choices)}"
            ) from error
        if "_target_" not in configs[method]:
            raise StudyConfigError(f"methods: {method} shrinks nothing; name a method")
    return configs


def trained_baseline(run: DictConfig) -> tuple[SentimentLSTM, SentimentDataModule, float]:
    """The network (trained now, or from the cache), its data and its training time."""
    L.seed_everything(run.seed, workers=True)  # as src.run: the same config trains the same
    datamodule = instantiate(run.data)
    callbacks = [instantiate(c) for name, c in run.callbacks.items() if name != "neuron_analysis"]
    loggers = [instantiate(c) for c in run.logger.values()]
    trainer = instantiate(run.trainer, logger=loggers, callbacks=callbacks)
    try:
        baseline = obtain_baseline(run, datamodule, trainer)
    finally:
        wandb.finish()  # a W&B run exists only when a baseline was trained now
    return baseline.model.network, datamodule, baseline.train_seconds


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits > 0).float() == labels


def baseline_accuracy(network: SentimentLSTM, states: Features) -> float:
    return accuracy(network.head_from(0, states.inputs), states.labels).float().mean().item()


def study_baseline(
    cfg: DictConfig, run: DictConfig, methods: dict[str, DictConfig], rows: Rows
) -> None:
    """Every layer, width and method on one corpus and seed, appended to ``rows``."""
    data, seed = run.data.name, run.seed
    network, datamodule, train_seconds = trained_baseline(run)
    states = {split: last_word_states(network, datamodule.loader(split)) for split in SPLITS}
    test_acc = baseline_accuracy(network, states["test"])
    rows.baselines.append(
        {"data": data, "seed": seed, "baseline/test_acc": test_acc}
        | {"baseline/val_acc": baseline_accuracy(network, states["validation"])}
        | {"baseline/train_seconds": train_seconds}
    )
    log.info("%s seed %d: baseline test accuracy %.4f", data, seed, test_acc)
    for layer, widths in layer_grid(cfg, list(run.model.head_widths)).items():
        loader = probe_loader(datamodule.splits["train"], run.analysis.probe_sentences, seed)
        probe = probe_layer(network, loader, layer)
        features = {split: layer_features(network, states[split], layer) for split in SPLITS}
        pair = layer_pair(network, layer)
        status = neuron_status(probe.activations, pair.w_out)  # as the clustering sees them
        rows.layers.append(
            {"data": data, "seed": seed, "layer": layer, "width": probe.activations.shape[1]}
            | {"dead": int(status.dead.sum()), "nearly_dead": int(status.nearly_dead.sum())}
            | {"effective_rank": effective_rank(probe.activations)}
        )
        weights = pair.incoming()
        dissimilarity = probe_dissimilarity(probe, run.analysis.measure)
        for width in widths:
            analysis = cluster_layer(
                probe,
                dissimilarity,
                weights,
                pair.w_out,
                layer,
                width,
                run.analysis.clustering,
                seed,
            )
            key = {"data": data, "seed": seed, "layer": layer, "target_width": width}
            shrink_every_way(cfg, run, network, analysis, methods, features, key, test_acc, rows)
        log.info(
            "%s seed %d layer %d: %d widths x %d methods",
            data,
            seed,
            layer,
            len(widths),
            len(methods),
        )


def shrink_every_way(
    cfg: DictConfig,
    run: DictConfig,
    network: SentimentLSTM,
    analysis: LayerAnalysis,
    methods: dict[str, DictConfig],
    features: dict[str, Features],
    key: dict,
    baseline_test_acc: float,
    rows: Rows,
) -> None:
    """Every method on one layer and width: a row each, then the siblings compared."""
    width, inputs, labels = key["target_width"], features["test"].inputs, features["test"].labels
    hidden, correct = {}, {}
    for name, method in methods.items():
        compression = compress_layer(
            method, network, analysis, width, features["train"], run.seed, run.data.batch_size
        )
        pair = compression.pair
        metrics = compression_metrics(
            network, analysis.layer, pair, {s: features[s] for s in ("validation", "test")}
        )
        metrics.pop("baseline/recomputed_test_acc")  # the same as baseline_test_acc
        rows.runs.append(
            key
            | {"method": name, "compress/epochs": method.get("epochs", 0)}
            | {"baseline/test_acc": baseline_test_acc, **metrics}
            | {"delta_acc": metrics["compressed/test_acc"] - baseline_test_acc}
            | {"compress_seconds": compression.seconds}
        )
        correct[name] = accuracy(head_logits(network, analysis.layer, pair, inputs), labels)
        hidden[name] = pair.hidden(inputs)
    compare(cfg, key, correct, hidden, rows)


def compare(
    cfg: DictConfig,
    key: dict,
    correct: dict[str, torch.Tensor],
    hidden: dict[str, torch.Tensor],
    rows: Rows,
) -> None:
    """Sibling methods on the same baseline, layer and width: paired accuracy differences for
    the pairs in ``comparisons``, and CKA between every two shrunk layers."""
    for a, b in cfg.comparisons:
        if a in correct and b in correct:
            low, high = mcnemar_exact_interval(correct[a], correct[b])
            diff = (correct[a].float().mean() - correct[b].float().mean()).item()
            rows.comparisons.append(
                key
                | {"a": a, "b": b, "diff": diff, "ci_low": low, "ci_high": high}
                | {"p": mcnemar_p(correct[a], correct[b])}
            )
    rows.similarity += [key | pair for pair in pairwise_similarity(hidden)]


def read_tables(folder: Path) -> StudyTables:
    """The tables a finished study wrote (:func:`write_tables`)."""
    return StudyTables(*(pd.read_csv(folder / f"{name}.csv") for name in TABLES))


def write_tables(folder: Path, tables: StudyTables) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in vars(tables).items():
        frame.to_csv(folder / f"{name}.csv", index=False)


def judge(folder: Path) -> tuple[pd.DataFrame, list[Path]]:
    """Judge the claims on a finished study's tables and write claims.md (the table, with the
    thresholds and the accuracy at a glance), claims.csv, accuracy.png (every layer) and
    cka.png (the claims' layer). ``python -m src.claims FOLDER`` runs it again."""
    tables = read_tables(folder)
    record = json.loads((folder / "study.json").read_text())
    layer, width = record["claims"]["layer"], record["claims"]["width"]
    claims = check_claims(tables, layer, width)
    claims.to_csv(folder / "claims.csv", index=False)
    baselines = tables.baselines.groupby("data", sort=False).agg(
        seeds=("seed", "nunique"),
        test_acc=("baseline/test_acc", lambda s: mean_std(s, 100)),
        val_acc=("baseline/val_acc", lambda s: mean_std(s, 100)),
        train_seconds=("baseline/train_seconds", lambda s: mean_std(s, digits=0)),
    )
    (folder / "claims.md").write_text(
        f"{claims.to_markdown(index=False)}\n\nThresholds: {THRESHOLDS}.\n\n"
        f"Baselines (accuracy in %, mean ± std over seeds)\n\n{baselines.to_markdown()}\n\n"
        "Test accuracy after shrinking (mean ± std over seeds)\n\n"
        f"{width_table(aggregate(tables.runs))}\n\n"
        f"Measured in {record['seconds'] / 60:.1f} min with `{record['command']}`.\n"
    )
    similarity = tables.similarity[tables.similarity["layer"] == layer]
    figures = {"accuracy": accuracy_figure(tables.runs), "cka": cka_figure(similarity)}
    paths = []
    for name, figure in figures.items():
        paths.append(folder / f"{name}.png")
        figure.savefig(paths[-1], dpi=100)
        plt.close(figure)
    return claims, paths


@hydra.main(version_base="1.3", config_path="../conf", config_name="study")
def main(cfg: DictConfig) -> pd.DataFrame:
    start = time.perf_counter()
    runs, methods = run_configs(cfg), method_configs(cfg)  # bad settings fail here, in seconds
    folder = Path(cfg.output_dir)
    rows = Rows(*([] for _ in TABLES))
    try:
        for run in runs.values():
            study_baseline(cfg, run, methods, rows)
    except BaseException:  # Ctrl-C or a failure: keep every measurement taken so far
        write_tables(folder / "partial", rows.frames())
        log.error("study stopped: what it measured is in %s", folder / "partial")
        raise
    shutil.rmtree(folder / "partial", ignore_errors=True)  # an earlier, stopped run's
    tables = rows.frames()
    last = list(runs.values())[-1]
    layer = resolve_layer(cfg.claims.layer, list(last.model.head_widths))
    record = {
        "seconds": time.perf_counter() - start,
        "command": shlex.join(["python", "-m", "src.study", *HydraConfig.get().overrides.task]),
        "claims": {"layer": layer, "width": cfg.claims.width},
        "config": OmegaConf.to_container(cfg),
    }
    write_tables(folder, tables)
    (folder / "study.json").write_text(json.dumps(record, indent=2) + "\n")
    claims, figures = judge(folder)
    print(claims.to_markdown(index=False))
    print(f"study: {folder / 'claims.md'} ({record['seconds'] / 60:.1f} min)")
    if cfg.wandb and "wandb" in last.logger:
        log_summary_run(
            folder,
            last.logger.wandb,
            name=f"study {folder.name}",
            job_type="claims",
            tables={"claims": claims, "runs": tables.runs, "baselines": tables.baselines},
            images=figures,
            config=record,
        )
    return claims


if __name__ == "__main__":
    main()
