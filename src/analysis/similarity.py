"""How alike two hidden neurons behave, measured over every probe word.

The activations of one layer are too many words to hold at once, so every function here takes a
*re-iterable source*: a zero-argument callable whose every call yields float tensors of shape
(words_in_batch, N), one row per real word. Nothing concatenates the whole set; work is done in
word chunks of ``chunk_size`` rows, so memory is bounded by the chunk and the (N, N) result.

Two measures are offered (``analysis.measure``):

``shape``
    The source's measure. Each neuron's trace is divided by its peak |x|, so a neuron that is 3x
    another has the same normalised trace, and D[i, j] = mean_w |y_wi - y_wj|. The all-pairs sum
    uses |a - b| = a + b - 2 min(a, b): the row sums are O(words * N) and only sum_w min(a, b)
    is pairwise, two SIMD operations (min, add) per pair and word in a numba kernel.

    Signed units (the LSTM's h = o * tanh(c)) can be merged through a negative factor, so a unit
    and its negation are as alike as a unit and its double. For them
    D[i, j] = min(mean_w |y_wi - y_wj|, mean_w |y_wi + y_wj|): the closer of j and -j. The
    identity above holds for all reals, so the same kernel run on the 2N traces [y, -y] gives
    both terms (|y_i + y_j| = |y_i - (-y_j)|) at twice the pairs. Whether a site is signed is
    read from the data (any negative activation) unless given; non-negative sites (post-ReLU)
    take the source's path unchanged, and on them the signed formula would give the same
    numbers anyway, since mean (y_i + y_j) >= mean |y_i - y_j| when both are >= 0.
``correlation``
    1 - |Pearson r|, streamed through centred cross products (one float32 product per chunk of
    words, merged in float64): about one (words x N)^T (words x N) product, plus one centring
    pass over the words, which only shows when N is so small that the product is memory-bound.
    It already ignores the sign: r(i, -j) = -r(i, j), so a negation is at dissimilarity 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

Batches = Callable[[], Iterable[Tensor]]
MEASURES = ("shape", "correlation")

_TILE = 48  # neurons per side of a tile in the shape kernel; a multiple of both register blocks


@dataclass(frozen=True)
class TraceStats:
    """Per-neuron range from one streaming pass: enough to normalise and to flag degenerates."""

    n_words: int
    low: Tensor  # (N,) min x
    high: Tensor  # (N,) max x

    @property
    def peak(self) -> Tensor:
        """max |x|, the shape measure's normalisation."""
        return torch.maximum(self.high, -self.low)

    @property
    def scales(self) -> Tensor:
        """The peak, with 1 for dead neurons so normalising never divides by zero."""
        peak = self.peak
        return torch.where(peak > 0, peak, torch.ones_like(peak))

    @property
    def dead(self) -> Tensor:
        return self.peak == 0

    @property
    def signed(self) -> bool:
        """Whether any neuron ever goes negative: the shape measure then compares with signs."""
        return bool((self.low < 0).any())

    @property
    def constant(self) -> Tensor:
        """Alive but never changing: no shape and no variance to compare."""
        return (self.low == self.high) & ~self.dead


@dataclass(frozen=True)
class DegenerateNeurons:
    """Neurons whose similarity to others is a convention rather than a measurement."""

    dead: list[int]
    constant: list[int]


def _as_float32(batch: Tensor, n: int | None, device: torch.device | str = "cpu") -> Tensor:
    """A batch as a (words, N) float32 tensor on ``device``, checking it has the source's
    width."""
    if batch.ndim != 2 or (n is not None and batch.shape[1] != n):
        raise ValueError(
            f"activation batches must be (words, {n or 'N'}), got {tuple(batch.shape)}"
        )
    return batch.detach().to(device, torch.float32)


def _as_rows(batch: Tensor, n: int | None) -> np.ndarray:
    return _as_float32(batch, n).numpy()


def _word_chunks(batches: Batches, chunk_size: int) -> Iterator[np.ndarray]:
    """Re-cut the batches into fresh contiguous (<= chunk_size, N) float32 blocks."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    pending: list[np.ndarray] = []
    filled, n = 0, None
    for raw in batches():
        batch = _as_rows(raw, n)
        n = batch.shape[1]
        start = 0
        while start < len(batch):
            take = min(chunk_size - filled, len(batch) - start)
            pending.append(batch[start : start + take])
            filled, start = filled + take, start + take
            if filled == chunk_size:
                yield np.concatenate(pending)
                pending, filled = [], 0
    if filled:
        yield np.concatenate(pending)


def _widen(bounds: tuple[np.ndarray, np.ndarray] | None, rows: np.ndarray) -> tuple:
    """Per-neuron (min, max) so far, widened by ``rows``."""
    low, high = rows.min(axis=0), rows.max(axis=0)
    if bounds is None:
        return low, high
    return np.minimum(bounds[0], low), np.maximum(bounds[1], high)


def trace_stats(batches: Batches) -> TraceStats:
    """Word count and per-neuron min and max, in one pass over the source."""
    n_words, bounds = 0, None
    for raw in batches():
        rows = _as_rows(raw, None if bounds is None else len(bounds[0]))
        if len(rows):
            bounds = _widen(bounds, rows)
            n_words += len(rows)
    if bounds is None:
        raise ValueError("the activation source yielded no words")
    return TraceStats(n_words, *map(torch.from_numpy, bounds))


def trace_scales(batches: Batches) -> Tensor:
    """Each neuron's peak |activation| (1 for dead neurons): what the shape measure divides by."""
    return trace_stats(batches).scales


def degenerate_neurons(source: Batches | TraceStats) -> DegenerateNeurons:
    """Indices of dead (never nonzero) and constant neurons, for the caller to log."""
    stats = source if isinstance(source, TraceStats) else trace_stats(source)
    return DegenerateNeurons(
        dead=stats.dead.nonzero().flatten().tolist(),
        constant=stats.constant.nonzero().flatten().tolist(),
    )


@njit(parallel=True, fastmath=True, cache=True)
def _add_min_sums(yt: np.ndarray, tiles: np.ndarray, total: np.ndarray) -> None:
    """total[i, j] += sum_w min(yt[i, w], yt[j, w]) for all j >= i (and a few j < i, unused).

    ``yt`` is (neurons, words), padded to a multiple of 4 neurons, so each neuron's trace is
    contiguous: a 2 x 4 block of pairs keeps 8 float32 SIMD accumulators in registers while it
    reduces over the chunk's words, reading 6 traces for 8 pairs. ``tiles`` holds the top-left
    corner of each upper-triangle tile; threads take tiles.
    """
    n = yt.shape[0]
    for t in prange(tiles.shape[0]):
        i0, j0 = tiles[t, 0], tiles[t, 1]
        for i in range(i0, min(i0 + _TILE, n), 2):
            a0, a1 = yt[i], yt[i + 1]
            for j in range(max(j0, i - i % 4), min(j0 + _TILE, n), 4):
                b0, b1, b2, b3 = yt[j], yt[j + 1], yt[j + 2], yt[j + 3]
                s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0.0)
                for w in range(yt.shape[1]):
                    x0, x1 = a0[w], a1[w]
                    z0, z1, z2, z3 = b0[w], b1[w], b2[w], b3[w]
                    s00 += min(x0, z0)
                    s01 += min(x0, z1)
                    s02 += min(x0, z2)
                    s03 += min(x0, z3)
                    s10 += min(x1, z0)
                    s11 += min(x1, z1)
                    s12 += min(x1, z2)
                    s13 += min(x1, z3)
                total[i, j] += s00
                total[i, j + 1] += s01
                total[i, j + 2] += s02
                total[i, j + 3] += s03
                total[i + 1, j] += s10
                total[i + 1, j + 1] += s11
                total[i + 1, j + 2] += s12
                total[i + 1, j + 3] += s13


def _triangle_tiles(n: int) -> np.ndarray:
    starts = range(0, n, _TILE)
    return np.array([(i, j) for i in starts for j in starts if j >= i], dtype=np.int64)


def _signed_tiles(offset: int) -> np.ndarray:
    """Tiles for traces laid out as [y (padded to ``offset`` rows), -y]: the upper triangle of
    the y-by-y block and of the y-by-(-y) block, half of what the full 2N triangle would cost.

    ``offset`` is a multiple of the tile, so no tile straddles the two blocks. In the cross
    block the kernel computes whole tiles (every column index there exceeds every row index).
    """
    starts = range(0, offset, _TILE)
    same = [(i, j) for i in starts for j in starts if j >= i]
    cross = [(i, offset + j) for i in starts for j in starts if j >= i]
    return np.array(same + cross, dtype=np.int64)


def shape_dissimilarity(
    batches: Batches,
    scales: Tensor | None = None,
    chunk_size: int = 8192,
    signed: bool | None = None,
) -> Tensor:
    """D[i, j] = mean over words of |x_wi / s_i - x_wj / s_j| (float64, symmetric, zero diagonal);
    for ``signed`` traces the smaller of that and mean |x_wi / s_i + x_wj / s_j|.

    ``scales`` defaults to :func:`trace_scales` (an extra pass over the source). ``signed``
    defaults to whether any activation is negative (:attr:`TraceStats.signed`; the same pass,
    or one of its own when ``scales`` are given). Per chunk, the kernel sums min(y_i, y_j) in
    float32 over at most ``chunk_size`` words, and chunks are added in float64, so the result
    matches a float64 reference to ~1e-7.
    """
    if scales is None or signed is None:
        stats = trace_stats(batches)
        scales = stats.scales if scales is None else scales
        signed = stats.signed if signed is None else signed
    scale_array = scales.to("cpu", torch.float32).numpy()
    if signed:
        return _signed_shape_dissimilarity(batches, scale_array, chunk_size)
    n = len(scale_array)
    n_pad = -(-n // 4) * 4
    row_sums, min_sums, n_words = _min_sums_pass(
        batches, scale_array, chunk_size, n_pad, _triangle_tiles(n_pad), n_pad
    )
    # sum |a - b| = sum a + sum b - 2 sum min(a, b), in place to hold few (N, N) arrays at once.
    min_sums *= -2.0
    min_sums += row_sums[:, None]
    min_sums += row_sums[None, :]
    d = np.triu(min_sums[:n, :n], k=1)
    d += d.T
    np.maximum(d, 0.0, out=d)  # rounding can leave identical traces a hair below 0
    d /= n_words
    return torch.from_numpy(d)


def _min_sums_pass(
    batches: Batches,
    scales: np.ndarray,
    chunk_size: int,
    rows: int,
    tiles: np.ndarray,
    sum_rows: int,
    negated_at: int | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One pass over the words: per row of the normalised traces (``rows``, padded; with the
    negated traces from row ``negated_at`` when given) the sum over words, and the pairwise
    sums of minima over ``tiles`` into a (``sum_rows``, ``rows``) float64 array."""
    n = len(scales)
    row_sums, min_sums, n_words = np.zeros(rows), np.zeros((sum_rows, rows)), 0
    for chunk in _word_chunks(batches, chunk_size):
        if chunk.shape[1] != n:
            raise ValueError(f"{n} scales for activations of width {chunk.shape[1]}")
        yt = np.zeros((rows, len(chunk)), dtype=np.float32)
        chunk /= scales  # chunks are fresh copies
        yt[:n] = chunk.T
        if negated_at is not None:
            np.negative(yt[:n], out=yt[negated_at : negated_at + n])
        row_sums += yt.sum(axis=1, dtype=np.float64)
        _add_min_sums(yt, tiles, min_sums)
        n_words += len(chunk)
    if not n_words:
        raise ValueError("the activation source yielded no words")
    return row_sums, min_sums, n_words


def _signed_shape_dissimilarity(batches: Batches, scales: np.ndarray, chunk_size: int) -> Tensor:
    """The signed shape measure: the kernel on the traces [y, -y], two blocks of its result."""
    n = len(scales)
    offset = -(-n // _TILE) * _TILE  # -y starts on a tile boundary
    rows = offset + -(-n // 4) * 4
    # Every tile's rows are in the first block, so the sums need only ``offset`` rows.
    row_sums, min_sums, n_words = _min_sums_pass(
        batches, scales, chunk_size, rows, _signed_tiles(offset), offset, negated_at=offset
    )
    # sum |y_i -+ y_j| = sum y_i + sum (+-y_j) - 2 sum min(y_i, +-y_j), upper triangles only.
    own, negated = row_sums[:n], row_sums[offset : offset + n]
    minus = own[:, None] + own[None, :] - 2.0 * min_sums[:n, :n]
    plus = own[:, None] + negated[None, :] - 2.0 * min_sums[:n, offset : offset + n]
    d = np.triu(np.minimum(minus, plus), k=1)
    d += d.T
    np.maximum(d, 0.0, out=d)
    d /= n_words
    return torch.from_numpy(d)


def correlation_dissimilarity(
    batches: Batches, chunk_size: int = 8192, device: torch.device | str = "cpu"
) -> Tensor:
    """1 - |Pearson r| between neurons (float64, symmetric, zero diagonal, never NaN).

    The shifted-data algorithm: with k the first word's activations, it streams sum(x - k) and
    (x - k)^T (x - k), so a large mean costs no precision. Batches are centred straight into one
    reused (chunk_size, N) buffer, which is the only copy of the words; each full buffer is one
    float32 product by torch's BLAS (the matmul floor's own kernel), added into float64. A
    constant or dead neuron centres to exact zeros, so its variance is exactly 0: its r is
    defined as 0 with every other neuron (dissimilarity 1). On another ``device`` (a GPU) the
    buffers and products live there; the result comes back to the CPU.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    count, filled, shift = 0, 0, None

    def flush() -> None:
        centred = buffer[:filled]
        products.add_(torch.mm(centred.T, centred, out=product32))
        sums.add_(centred.sum(dim=0))

    for raw in batches():
        rows = _as_float32(raw, None if shift is None else len(shift), device)
        if shift is None and len(rows):
            shift, n = rows[0].clone(), rows.shape[1]
            buffer, product32 = (torch.empty(m, n, device=device) for m in (chunk_size, n))
            products = torch.zeros(n, n, dtype=torch.float64, device=device)
            sums = torch.zeros(n, dtype=torch.float64, device=device)
        start = 0
        while start < len(rows):
            assert shift is not None  # set by the first batch with rows
            take = min(chunk_size - filled, len(rows) - start)
            torch.sub(rows[start : start + take], shift, out=buffer[filled : filled + take])
            filled, start = filled + take, start + take
            if filled == chunk_size:
                flush()
                filled = 0
        count += len(rows)
    if shift is None:
        raise ValueError("the activation source yielded no words")
    if filled:
        flush()
    mean = sums / count
    scatter = products.addr_(mean, mean, alpha=-count)  # in place: one (N, N) float64 array
    var = scatter.diagonal().clone()
    flat = var <= 0
    inv_std = torch.where(flat, 0.0, var.clamp_min(torch.finfo(var.dtype).tiny).rsqrt())
    corr = scatter.mul_(inv_std[:, None]).mul_(inv_std[None, :]).abs_().clamp_(max=1.0)
    return corr.fill_diagonal_(1.0).neg_().add_(1.0).cpu()


def shape_dissimilarity_dense(
    batches: Batches,
    device: torch.device | str,
    scales: Tensor | None = None,
    chunk_size: int = 8192,
    signed: bool | None = None,
) -> Tensor:
    """:func:`shape_dissimilarity` as dense products on ``device`` (a GPU's path): per chunk of
    words, ``torch.cdist(p=1)`` of the normalised traces adds sum_w |y_wi - y_wj| (and, for
    signed traces, sum_w |y_wi + y_wj|) in float32, chunks added in float64, like the CPU
    kernel. The same numbers on any device; on the CPU the numba kernel is the faster."""
    if scales is None or signed is None:
        stats = trace_stats(batches)
        scales = stats.scales if scales is None else scales
        signed = stats.signed if signed is None else signed
    scales = scales.to(device, torch.float32)
    n = len(scales)
    minus = torch.zeros(n, n, dtype=torch.float64, device=device)
    plus = torch.zeros_like(minus) if signed else None
    n_words = 0
    for raw in batches():
        for rows in _as_float32(raw, n, device).split(chunk_size):
            traces = (rows / scales).T.contiguous()  # (N, words): one trace per row
            minus += torch.cdist(traces, traces, p=1).double()
            if plus is not None:
                plus += torch.cdist(traces, -traces, p=1).double()
            n_words += len(rows)
    if not n_words:
        raise ValueError("the activation source yielded no words")
    d = minus if plus is None else torch.minimum(minus, plus)
    return d.fill_diagonal_(0.0).div_(n_words).cpu()


def dissimilarity_matrix(
    batches: Batches,
    measure: str = "shape",
    chunk_size: int = 8192,
    signed: bool | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The (N, N) dissimilarity chosen by the ``analysis.measure`` setting, computed on
    ``device`` (``analysis.device``) and returned on the CPU.

    ``signed`` (shape only; default: read from the data) compares each unit with the others and
    their negations; correlation always does.
    """
    on_cpu = torch.device(device).type == "cpu"
    if measure == "shape" and on_cpu:
        return shape_dissimilarity(batches, chunk_size=chunk_size, signed=signed)
    if measure == "shape":
        return shape_dissimilarity_dense(batches, device, chunk_size=chunk_size, signed=signed)
    if measure == "correlation":
        return correlation_dissimilarity(batches, chunk_size=chunk_size, device=device)
    raise ValueError(f"analysis.measure={measure!r} is not one of {', '.join(MEASURES)}")


def affinity_from_dissimilarity(d: Tensor) -> Tensor:
    """Gaussian affinity exp(-d^2 / (2 sigma^2)) for spectral clustering.

    sigma is the median off-diagonal dissimilarity, so the kernel adapts to the measure's scale;
    when that is 0 (most neurons identical) the largest one is used, and 1 if all are 0.
    """
    d = d.double()
    off = d[~torch.eye(len(d), dtype=torch.bool)]
    sigma = off.median() if len(off) else d.new_tensor(1.0)
    if sigma <= 0:
        sigma = off.max() if len(off) and off.max() > 0 else d.new_tensor(1.0)
    a = torch.exp(-(d**2) / (2 * sigma**2))
    a = (a + a.T) / 2
    return a.fill_diagonal_(1.0)
