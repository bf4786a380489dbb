"""The claims study: the grid of the evaluation core over corpora, seeds, sites, widths and methods,
plus the comparisons between methods and the source's claims judged over seeds.

python -m src.study                                          # the whole study (make claims)
python -m src.study seeds=[0] corpora=[rotten_tomatoes]       # one corpus, one seed

Each corpus and seed is one :class:`~src.workbench.Workbench` (its baseline trained once, or loaded
from the cache ``src.run`` shares); every cell of the grid is one ``evaluate`` on it, exactly what
a ``src.run`` job measures.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import pandas as pd
import torch
import wandb
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src import schema
from src.analysis.stats import effective_rank, mcnemar_exact_interval, mcnemar_p
from src.claims import TABLES, StudyTables, judge, write_tables
from src.errors import SettingError, reported
from src.network import check_shape
from src.pipeline import open_workbench, shrink_whole
from src.report import log_summary_run, pairwise_similarity
from src.sites import ModelShape, Site, check_target_width, resolve_site
from src.threads import use_job_cpu
from src.workbench import AnalysisSettings, Compression, Workbench, method_choices

log = logging.getLogger(__name__)


class StudyConfigError(SettingError):
    """A study setting that cannot work; the message names it."""


@dataclass
class Rows:
    """The study's tables as they grow, one list of flat dicts each."""

    baselines: list[dict]
    layers: list[dict]
    runs: list[dict]
    comparisons: list[dict]
    similarity: list[dict]
    drift: list[dict]
    whole: list[dict]

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
        overrides = [f"data={data}", *own, *cfg.overrides, f"seed={seed}", f"output_dir={folder}"]
        run = configs[data, seed] = compose("config", overrides=overrides)
        check_shape(run.model.head_widths, run.model.lstm.hidden_size, run.model.embedding_dim)
        AnalysisSettings.of(run)
        site_grid(cfg, ModelShape.of_settings(run.model))
    return configs


def site_grid(cfg: DictConfig, shape: ModelShape) -> dict[Site, list[int]]:
    """``layers`` as {site: target widths}, each site named as ``src.run``'s ``layer``."""
    grid = {}
    for entry in cfg.layers:
        if "layer" not in entry or "widths" not in entry:
            raise StudyConfigError(f"layers: {entry} needs a layer and its widths")
        try:
            site = resolve_site(entry.layer, shape)
            for width in entry.widths:
                check_target_width(width, site)
        except SettingError as error:  # it names src.run's settings: say where they are
            raise StudyConfigError(f"layers: {error}") from error
        grid[site] = list(entry.widths)
    return grid


def method_configs(cfg: DictConfig) -> dict[str, Compression]:
    """Every method of the study by its row name: ``methods``, or every choice of
    conf/compress/. An entry is a choice, optionally followed by its own overrides
    (``"weight_sum compress.method.representative=max_activation"``)."""
    entries = list(cfg.methods) if cfg.methods is not None else method_choices()
    entries += list(cfg.get("variants") or [])
    if not entries:
        raise StudyConfigError("methods must name at least one compress method")
    methods = {}
    for entry in entries:
        choice, *settings = str(entry).split()
        try:
            compress = compose("config", overrides=[f"compress={choice}", *settings]).compress
        except MissingConfigException as error:
            raise StudyConfigError(
                f"methods: {choice} is not in conf/compress/; choose from "
                f"{', '.join(method_choices())}"
            ) from error
        methods[str(entry)] = Compression.of(compress)
        if methods[str(entry)].method is None:
            raise StudyConfigError(f"methods: {choice} shrinks nothing; name a method")
    return methods


def study_baseline(
    cfg: DictConfig, run: DictConfig, methods: dict[str, Compression], rows: Rows
) -> None:
    """Every site, width and method on one corpus and seed, appended to ``rows``."""
    data, seed = run.data.name, run.seed
    try:
        opened = open_workbench(run, [instantiate(c) for c in run.logger.values()])
    finally:
        wandb.finish()  # a W&B run exists only when a baseline was trained now
    bench, train_seconds = opened.bench, opened.baseline.train_seconds
    scores = bench.baseline_scores()
    rows.baselines.append(
        {schema.DATA: data, schema.SEED: seed, **scores}
        | {schema.BASELINE_TRAIN_SECONDS: train_seconds}
    )
    log.info(
        "%s seed %d: baseline test accuracy %.4f", data, seed, scores[schema.BASELINE_TEST_ACC]
    )
    for site, widths in site_grid(cfg, ModelShape.of(bench.network)).items():
        status = bench.status(site)
        rows.layers.append(
            {schema.DATA: data, schema.SEED: seed, schema.LAYER: site.name, "width": site.width}
            | {"dead": int(status.dead.sum()), "nearly_dead": int(status.nearly_dead.sum())}
            | {"effective_rank": effective_rank(bench.probe(site).activations)}
        )
        usable = {
            name: m
            for name, m in methods.items()
            if m.step.epochs == 0 or not site.in_recurrence or data in cfg.lstm_retraining
        }
        for width in widths:
            key = {schema.DATA: data, schema.SEED: seed, schema.LAYER: site.name}
            key[schema.LAYER_WIDTH] = site.width
            shrink_every_way(cfg, bench, site, key | {schema.TARGET_WIDTH: width}, usable, rows)
        log.info(
            "%s seed %d %s: %d widths x %d methods",
            *(data, seed, site.label, len(widths), len(usable)),
        )
    if cfg.whole_model is not None:
        rows.whole.append({schema.DATA: data, schema.SEED: seed} | whole_model_row(cfg, run, bench))


def whole_model_row(cfg: DictConfig, run: DictConfig, bench: Workbench) -> dict:
    """compress=whole_model on this baseline (the study's ``whole_model`` settings over the
    choice's own), with its anchor."""
    compress = OmegaConf.merge(
        compose("config", overrides=["compress=whole_model"]).compress, cfg.whole_model
    )
    row, _ = shrink_whole(run, compress, bench)
    row[schema.BASELINE_PARAMS] = bench.baseline_scores()[schema.BASELINE_PARAMS]
    log.info("%s seed %d whole model: %s", run.data.name, run.seed, row[schema.COMPRESSED_WIDTHS])
    return row


def shrink_every_way(
    cfg: DictConfig,
    bench: Workbench,
    site: Site,
    key: dict,
    methods: dict[str, Compression],
    rows: Rows,
) -> None:
    """Every method on one site and width: a row each, then the siblings compared."""
    test_acc = bench.baseline_scores()[schema.BASELINE_TEST_ACC]
    correct, features = {}, {}
    for name, m in methods.items():
        try:
            evaluation = bench.evaluate(m.step, m.method, site, key[schema.TARGET_WIDTH])
        except SettingError as why:  # e.g. a method that builds new units, at the LSTM
            log.info("%s at %s: not applicable (%s)", name, site.name, why)
            continue
        if evaluation.drift is not None:
            rows.drift += [
                key | {schema.METHOD: name, "position": t, "error": float(e), "sentences": int(n)}
                for t, (e, n) in enumerate(
                    zip(evaluation.drift.by_position, evaluation.drift.sentences, strict=True)
                )
            ]
        rows.runs.append(
            key
            | {schema.METHOD: name, schema.COMPRESS_EPOCHS: m.step.epochs}
            | {schema.BASELINE_TEST_ACC: test_acc, **evaluation.metrics}
        )
        correct[name], features[name] = evaluation.correct, evaluation.features
    compare(cfg, key, correct, features, rows)


def compare(
    cfg: DictConfig,
    key: dict,
    correct: dict[str, torch.Tensor],
    features: dict[str, torch.Tensor],
    rows: Rows,
) -> None:
    """Sibling methods on the same baseline, site and width: paired accuracy differences for
    the pairs in ``comparisons``, and CKA between every two shrunk sites."""
    for a, b in cfg.comparisons:
        if a in correct and b in correct:
            low, high = mcnemar_exact_interval(correct[a], correct[b])
            diff = (correct[a].float().mean() - correct[b].float().mean()).item()
            rows.comparisons.append(
                key
                | {"a": a, "b": b, "diff": diff, "ci_low": low, "ci_high": high}
                | {"p": mcnemar_p(correct[a], correct[b])}
            )
    rows.similarity += [key | pair for pair in pairwise_similarity(features)]


@hydra.main(version_base="1.3", config_path="../conf", config_name="study")
@reported
def main(cfg: DictConfig) -> pd.DataFrame:
    start = time.perf_counter()
    runs, methods = run_configs(cfg), method_configs(cfg)  # bad settings fail here, in seconds
    use_job_cpu(None)
    last = list(runs.values())[-1]
    claims_site = resolve_site(cfg.claims.layer, ModelShape.of_settings(last.model))
    folder = Path(cfg.output_dir)
    rows = Rows(*([] for _ in TABLES))
    try:
        for run in runs.values():
            study_baseline(cfg, run, methods, rows)
            write_tables(folder / "partial", rows.frames())  # kept even if the machine goes
    except BaseException:  # Ctrl-C or a failure: keep every measurement taken so far
        write_tables(folder / "partial", rows.frames())
        log.error("study stopped: what it measured is in %s", folder / "partial")
        raise
    shutil.rmtree(folder / "partial", ignore_errors=True)  # an earlier, stopped run's
    record = {
        "seconds": time.perf_counter() - start,
        "command": shlex.join(["python", "-m", "src.study", *HydraConfig.get().overrides.task]),
        "claims": {"layer": claims_site.name, "width": cfg.claims.width},
        "config": OmegaConf.to_container(cfg),
    }
    tables = rows.frames()
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
