"""Where a model can be cut: named sites.

A site is a set of units with an activation at every word, the weights that produce those
activations and the weights that read them. The merge methods see a site as a
:class:`~src.compress.base.LayerPair` (the units' incoming weights and the next layer), so a new
place to cut is one new site class here and no change to the methods or to the evaluation core.

Today's sites are the head's hidden layers, named ``head.<index>`` (``head.2`` is the 16-neuron
layer of the default model) and labelled with their width in figures and tables
(``head.2 (16)``). The config's ``layer=`` takes a site's name, or a head index (``-1`` is the
last hidden layer).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from src.analysis.layer import Probe
from src.compress.base import LayerPair
from src.errors import SettingError
from src.model import SentimentLSTM


class SiteError(SettingError):
    """A ``layer`` or ``target_width`` that names no site, or a width the site cannot take."""


@dataclass(frozen=True)
class ModelShape:
    """What decides which sites exist: read from the config before any model is built, or from
    a network."""

    head_widths: tuple[int, ...]

    @classmethod
    def of(cls, network: SentimentLSTM) -> ModelShape:
        return cls(tuple(network.hidden_widths))


@dataclass(frozen=True)
class HeadSite:
    """Hidden layer ``index`` of the per-word head: post-ReLU neurons, read by the next Linear."""

    index: int
    width: int

    @property
    def name(self) -> str:
        return f"head.{self.index}"

    @property
    def label(self) -> str:
        """The name with the width, for figures and tables."""
        return f"{self.name} ({self.width})"

    def pair(self, network: SentimentLSTM) -> LayerPair:
        """The layer and the one that reads it, detached."""
        this, after = network.head[self.index], network.head[self.index + 1]
        return LayerPair(*(t.detach() for t in (this.weight, this.bias, after.weight, after.bias)))

    def rebuild(self, network: SentimentLSTM, pair: LayerPair) -> SentimentLSTM:
        """A copy of ``network`` with this layer (and the next) replaced by ``pair``."""
        shrunk = copy.deepcopy(network)
        replaced = ((self.index, pair.w_in, pair.b_in), (self.index + 1, pair.w_out, pair.b_out))
        for index, weight, bias in replaced:
            linear = nn.Linear(weight.shape[1], weight.shape[0])
            linear.weight.data.copy_(weight)
            linear.bias.data.copy_(bias)
            shrunk.head[index] = linear
        return shrunk

    def inputs(self, network: SentimentLSTM, states: Tensor) -> Tensor:
        """What the layer reads, (..., D), from the LSTM states (..., H)."""
        return network.layer_input(states, self.index)

    def activations(self, network: SentimentLSTM, states: Tensor) -> Tensor:
        """The layer's activations, (..., N), from the LSTM states (..., H)."""
        return torch.relu(network.head[self.index](self.inputs(network, states)))

    def logits(self, network: SentimentLSTM, pair: LayerPair, inputs: Tensor) -> Tensor:
        """Sentence logits from the layer's ``inputs`` (sentences, D) with ``pair`` in place:
        the head alone, since nothing below the layer changes."""
        y = pair.forward(inputs)
        if self.index + 2 == len(network.head):  # the pair's second layer is the output layer
            return y.squeeze(-1)
        return network.head_from(self.index + 2, torch.relu(y))

    @torch.no_grad()
    def probe(self, network: SentimentLSTM, loader: DataLoader) -> Probe:
        """The layer's inputs and activations at every real word of ``loader``'s sentences."""
        inputs, activations = zip(*self._words(network, loader), strict=True)
        return Probe(torch.cat(inputs), torch.cat(activations))

    def _words(self, network: SentimentLSTM, loader: DataLoader) -> Iterator[tuple[Tensor, ...]]:
        network.eval()
        for batch in loader:
            states = network.states(batch["ids"], batch["lengths"])  # (B, T, H)
            real = torch.arange(states.shape[1])[None, :] < batch["lengths"][:, None]  # (B, T)
            x = self.inputs(network, states[real])  # (words, D)
            yield x, torch.relu(network.head[self.index](x))

    @staticmethod
    def params(pair: LayerPair) -> tuple[int, int]:
        """Parameters of the layer, and of it plus the layer that reads it."""
        layer = pair.w_in.numel() + pair.b_in.numel()
        return layer, layer + pair.w_out.numel() + pair.b_out.numel()


Site = HeadSite


def all_sites(shape: ModelShape) -> list[Site]:
    """Every site of a model of this shape, in the order the network computes them."""
    return [HeadSite(i, w) for i, w in enumerate(shape.head_widths)]


def resolve_site(layer: int | str, shape: ModelShape) -> Site:
    """The site ``layer`` names: a site's name (``head.2``) or a head index (``2``, ``-1``)."""
    sites = all_sites(shape)
    n = len(sites)
    names = ", ".join(site.name for site in sites)
    indices = ", ".join(str(i) for i in [*range(n), *range(-1, -n - 1, -1)])
    choose = f"choose one of {names} (or a head index: {indices})"
    by_name = {site.name: site for site in sites}
    if isinstance(layer, str) and layer in by_name:
        return by_name[layer]
    try:
        index = int(str(layer).removeprefix("head."))
    except ValueError:
        raise SiteError(f"layer={layer} names no site; {choose}") from None
    if index == n:  # head.n is the output Linear: the head has n + 1 layers
        raise SiteError(f"layer={layer} is the output layer, which has nothing to merge; {choose}")
    if not -n <= index < n:
        raise SiteError(f"layer={layer} is out of range; {choose}")
    return sites[index % n]


def check_target_width(target_width: int, site: Site) -> None:
    """A width the site can be shrunk to: at least 1 and below its width."""
    if not 1 <= target_width < site.width:
        raise SiteError(
            f"target_width={target_width} must be between 1 and {site.width - 1}: "
            f"layer={site.name} has {site.width} units"
        )


def site_names(sites: Sequence[Site]) -> list[str]:
    return [site.name for site in sites]
