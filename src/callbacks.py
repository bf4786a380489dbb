"""Lightning glue: look inside the tested model and leave the pictures and matrices behind.

The maths lives in :mod:`src.analysis`; this callback only feeds it and files the results.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from lightning.pytorch.loggers import WandbLogger

from src.analysis.clustering import cluster_sizes
from src.analysis.figures import cluster_panels, similarity_heatmap, word_traces
from src.analysis.layer import CLUSTERINGS, LayerAnalysis, analyse_layer
from src.analysis.probe import (
    AnalysisConfigError,
    check_known_words,
    check_target_width,
    probe_layer,
    probe_loader,
    resolve_layer,
    sentence_trace,
)
from src.analysis.similarity import MEASURES, affinity_from_dissimilarity, degenerate_neurons
from src.analysis.stats import effective_rank
from src.compress.base import check_choice
from src.compress.pipeline import layer_pair

log = logging.getLogger(__name__)


class NeuronAnalysis(L.Callback):
    """Probe one hidden layer of the tested model, measure its neurons' likeness, cluster them.

    It runs at the end of the first ``trainer.test``: the best checkpoint after a fit, or a model
    from the cache or ``ckpt_path``, all alike. ``result`` then holds what the compression step
    merges, and ``folder`` the artefacts: ``similarity.npy`` (the affinity between every two
    neurons; spectral clustering sees the live neurons' part), ``dissimilarity.npy``,
    ``clusters.json`` and three PNGs, also logged to W&B.
    """

    def __init__(
        self,
        layer: int | str,
        target_width: int,
        head_widths: list[int],
        folder: str,
        sentences: list[str] = ("I love this movie", "I hate this movie"),
        probe_sentences: int = 2000,
        measure: str = "shape",
        clustering: str = "spectral",
        chunk_size: int = 8192,
        seed: int = 0,
    ) -> None:
        self.layer = resolve_layer(layer, list(head_widths))
        check_target_width(target_width, head_widths[self.layer], layer)
        check_choice(measure, MEASURES, "analysis.measure")
        check_choice(clustering, CLUSTERINGS, "analysis.clustering")
        if probe_sentences < 1:
            raise AnalysisConfigError(
                f"analysis.probe_sentences={probe_sentences}: the probe set "
                "would be empty; use at least 1"
            )
        if not sentences:
            raise AnalysisConfigError("analysis.sentences is empty: give at least one")
        self.target_width, self.folder = target_width, Path(folder)
        self.sentences, self.probe_sentences = list(sentences), probe_sentences
        self.measure, self.clustering = measure, clustering
        self.chunk_size, self.seed = chunk_size, seed
        self.result: LayerAnalysis | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check the example sentences as soon as the tokenizer exists, before any training."""
        for sentence in self.sentences:
            check_known_words(trainer.datamodule.tokenizer, sentence)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.result is not None:  # only the baseline is analysed
            return
        datamodule = trainer.datamodule
        network = pl_module.network
        loader = probe_loader(datamodule.splits["train"], self.probe_sentences, self.seed)
        probe = probe_layer(network, loader, self.layer)
        pair = layer_pair(network, self.layer)
        self.result = analyse_layer(
            probe,
            pair.incoming(),
            pair.w_out,
            self.layer,
            self.target_width,
            self.measure,
            self.clustering,
            self.seed,
            self.chunk_size,
        )
        traces = [
            (s, *sentence_trace(network, datamodule.tokenizer, s, self.layer))
            for s in self.sentences
        ]
        self._save(self.result, traces, trainer)

    def _save(self, analysis: LayerAnalysis, traces: list, trainer: L.Trainer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        affinity = affinity_from_dissimilarity(analysis.dissimilarity)
        np.save(self.folder / "similarity.npy", affinity.numpy())
        np.save(self.folder / "dissimilarity.npy", analysis.dissimilarity.numpy())
        degenerate = degenerate_neurons(lambda: [analysis.probe.activations])
        status = analysis.status
        summary = {
            "layer": analysis.layer,
            "width": len(analysis.labels),
            "target_width": self.target_width,
            "measure": self.measure,
            "clustering": self.clustering,
            "probe_words": len(analysis.probe.activations),
            "labels": analysis.labels.tolist(),
            "sizes": cluster_sizes(analysis.labels),
            "silhouette": analysis.silhouette,
            "effective_rank": effective_rank(analysis.probe.activations),
            # One definition (src.analysis.neurons): alive, dead and nearly dead split the
            # layer; the last two were left out of the clustering. Constant ones overlap them.
            "alive": status.indices(status.alive),
            "dead": status.indices(status.dead),
            "nearly_dead": status.indices(status.nearly_dead),
            "constant": degenerate.constant,
        }
        (self.folder / "clusters.json").write_text(json.dumps(summary, indent=2) + "\n")
        log.info(
            "layer %d: %d live of %d neurons, clusters of sizes %s, silhouette %s",
            analysis.layer,
            len(summary["alive"]),
            summary["width"],
            summary["sizes"],
            summary["silhouette"],
        )
        figures = {
            "word_traces": word_traces(traces, analysis.layer),
            "similarity": similarity_heatmap(analysis.dissimilarity, analysis.labels),
            "clusters": cluster_panels(traces[0], analysis.labels),
        }
        for name, figure in figures.items():
            figure.savefig(self.folder / f"{name}.png", dpi=110)
            plt.close(figure)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for name in figures:
                    logger.log_image(f"analysis/{name}", images=[str(self.folder / f"{name}.png")])
                logger.log_metrics(
                    {
                        "analysis/live_neurons": len(summary["alive"]),
                        "analysis/silhouette": float("nan")
                        if analysis.silhouette is None
                        else analysis.silhouette,
                        "analysis/effective_rank": summary["effective_rank"],
                    }
                )


def find_analysis(callbacks: list[L.Callback]) -> LayerAnalysis | None:
    """What the :class:`NeuronAnalysis` among ``callbacks`` found, if it ran."""
    return next((c.result for c in callbacks if isinstance(c, NeuronAnalysis)), None)
