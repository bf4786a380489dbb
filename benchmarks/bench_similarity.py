"""How fast is the shape dissimilarity, against the ways one would write it without thinking?

    python benchmarks/bench_similarity.py [--quick]
    python benchmarks/bench_similarity.py --transformer   # MiniLM's sizes: 1,536 and 9,216 neurons

Data: relu(randn(words, N)) float32, served to our functions in batches of 4096 words, as the
probe would serve real activations. Every timing includes normalisation and everything else
from the (words, N) activations to the (N, N) result. Throughput counts the same useful work
for every method, N(N-1)/2 * words pair-words, though the cdist baselines compute both halves.

Each measurement runs in a fresh subprocess: it makes the data, warms up on tiny data (numba
compiles or loads its cache), resets the process's peak RSS (VmHWM, via /proc/self/clear_refs)
and reports peak RSS minus RSS at the start of the first call: memory the method itself needed
on top of the activations it was given (Linux only). Time is the best of up to 3 calls within
10 s. Slow baselines are first timed on a slice of the pairs and skipped when the extrapolated
time exceeds the budget. The matmul floor is torch's (MKL sgemm); the correlation measure uses the
same torch product, once per chunk.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.distance import cdist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.analysis.similarity import correlation_dissimilarity, shape_dissimilarity  # noqa: E402

BATCH = 4096
# words per N; words for the memory check of ours at N=1024; seconds allowed per baseline
FULL = {
    "sizes": {16: 100_000, 256: 100_000, 1024: 100_000, 4096: 20_000},
    "memory": (20_000, 100_000),
    "budget": 60,
}
QUICK = {"sizes": {16: 10_000, 256: 10_000, 1024: 2_000}, "memory": (2_000, 10_000), "budget": 5}
# all-MiniLM-L6-v2: one MLP (1,536 neurons) and all six at once (9,216), over 20k wordpieces
TRANSFORMER = {1536: 20_000, 9216: 20_000}


def activations(n: int, words: int) -> torch.Tensor:
    x = torch.randn(words, n, generator=torch.Generator().manual_seed(n))
    return x.clamp_(min=0)  # in place, so making the data never peaks above holding it


def batches(x: torch.Tensor) -> Callable:
    return lambda: iter(x.split(BATCH))


def normalised(x: torch.Tensor) -> torch.Tensor:
    """(N, words): each neuron's trace divided by its peak, the layout cdist wants."""
    return (x / x.amax(0).clamp_min(1e-30)).T.contiguous()


def naive_loop(x: torch.Tensor, limit: int | None = None) -> np.ndarray:
    """One pair at a time, two NumPy traces, the obvious way (only the first ``limit`` pairs)."""
    a = x.numpy()
    s = np.abs(a).max(0)
    n = a.shape[1]
    d = np.zeros((n, n))
    for i, j in itertools.islice(itertools.combinations(range(n), 2), limit):
        d[i, j] = d[j, i] = np.mean(np.abs(a[:, i] / s[i] - a[:, j] / s[j]))
    return d


def scipy_cdist(x: torch.Tensor, limit: int | None = None) -> np.ndarray:
    y = normalised(x).double().numpy()
    return cdist(y[:limit], y, "cityblock") / len(x)


def torch_cdist(x: torch.Tensor, limit: int | None = None) -> torch.Tensor:
    y = normalised(x)
    return torch.cdist(y[:limit], y, p=1) / len(x)


def timed(fn: Callable, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def extrapolate(fn: Callable, x: torch.Tensor, part: int, whole: int) -> float:
    """Estimated time of fn(x): the fixed cost of fn(x, 0), plus fn(x, part)'s rest scaled up."""
    timed(fn, x, 0)  # the first call pays for page faults: an inflated fixed cost made the
    fixed = timed(fn, x, 0)  # estimate negative, and a run of hours was started
    per_unit = (timed(fn, x, part) - fixed) / part
    if per_unit <= 0:  # timing noise: take the whole part as variable cost
        per_unit = timed(fn, x, part) / part
    return fixed + per_unit * whole


def _pairs(n: int) -> tuple[int, int]:
    return min(50, n * (n - 1) // 2), n * (n - 1) // 2


def _rows(n: int) -> tuple[int, int]:
    return min(16, n), n


# key: (label, fn(x, limit), None or n -> (part, whole) units for estimating slow baselines)
METHODS: dict[str, tuple[str, Callable, Callable | None]] = {
    "ours": ("ours: shape (numba)", lambda x, _=None: shape_dissimilarity(batches(x)), None),
    "naive": ("naive pair loop (numpy)", naive_loop, _pairs),
    "scipy": ("scipy cdist cityblock", scipy_cdist, _rows),
    "torch": ("torch.cdist p=1", torch_cdist, _rows),
    "corr": ("ours: correlation", lambda x, _=None: correlation_dissimilarity(batches(x)), None),
    "matmul": ("matmul floor torch x.T @ x", lambda x, _=None: x.T @ x, None),
}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def worker(method: str, n: int, words: int, budget: float) -> dict:
    """Time one method in this (fresh) process; report seconds and peak extra memory."""
    _, fn, units = METHODS[method]
    fn(activations(min(n, 8), 64))  # warm-up: numba compile or cache load, torch init
    x = activations(n, words)
    if units and (estimate := extrapolate(fn, x, *units(n))) > budget:
        return {"estimate": estimate}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    rss = _status_kib("VmRSS")
    runs = [timed(fn, x)]
    peak_mib = (_status_kib("VmHWM") - rss) / 1024
    while len(runs) < 3 and sum(runs) < 10:  # best of up to 3 runs, as the machine allows
        runs.append(timed(fn, x))
    return {"seconds": min(runs), "peak_mib": peak_mib}


def run_worker(method: str, n: int, words: int, budget: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, str(n), str(words), str(budget)]
    # A fixed mmap threshold makes glibc return every large block to the OS when it is freed, so
    # the warm-up and the estimate leave no resident free memory for the measured call to reuse.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 17)}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def check_against_torch(n: int, words: int) -> float:
    x = activations(n, words)
    reference = torch.cdist(normalised(x), normalised(x), p=1).double() / words
    return float((shape_dissimilarity(batches(x)) - reference).abs().max())


def transformer() -> None:
    """Our two measures at a transformer's sizes: seconds and peak memory beyond the
    activations (the (N, N) result included)."""
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print(
        f"{'N':>5} {'words':>7}  {'method':<26} {'seconds':>8} {'peak MiB':>9} {'result MiB':>10}"
    )
    for n, words in TRANSFORMER.items():
        for method in ("ours", "corr"):
            r = run_worker(method, n, words, budget=float("inf"))
            print(
                f"{n:>5} {words:>7}  {METHODS[method][0]:<26} {r['seconds']:>8.2f} "
                f"{r['peak_mib']:>9.0f} {n * n * 4 / 2**20:>10.0f}",
                flush=True,
            )
    print("\ntarget: 9,216 neurons over 20k wordpieces within 60 s (goal 20 s), bounded memory")


def main(quick: bool) -> None:
    setup = QUICK if quick else FULL
    budget = setup["budget"]
    print(
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"load average {os.getloadavg()[0]:.1f}; budget per baseline {budget} s\n"
    )
    print(
        f"{'N':>5} {'words':>7}  {'method':<26} {'seconds':>21} {'vs ours':>8} "
        f"{'Gpair-words/s':>13} {'peak MiB':>9}"
    )
    seconds: dict[tuple[str, int], float] = {}
    for n, words in setup["sizes"].items():
        for method, (label, _, _) in METHODS.items():
            r = run_worker(method, n, words, budget)
            t = seconds[method, n] = r.get("seconds", r.get("estimate"))
            ratio = t / seconds["corr" if method == "matmul" else "ours", n]
            shown, peak = f"{t:.3f}", f"{r.get('peak_mib', 0):.0f}"
            if "estimate" in r:
                shown, peak = f"skipped (est. {t:.0f} s)", "-"
            print(
                f"{n:>5} {words:>7}  {label:<26} {shown:>21} {ratio:>7.2f}x "
                f"{n * (n - 1) / 2 * words / t / 1e9:>13.3f} {peak:>9}",
                flush=True,
            )
        print()
    print("vs ours: time / time of ours for the same measure (shape, or correlation for matmul)")
    print("skipped rows: time and throughput extrapolated from a timed slice of the pairs")
    print("peak MiB: peak RSS during the call minus RSS before it (input activations excluded)\n")

    words = setup["sizes"][256]
    diff = check_against_torch(256, words)
    print(f"max |ours - torch.cdist / words| at N=256, {words} words: {diff:.2e}")
    peaks = {w: run_worker("ours", 1024, w, budget)["peak_mib"] for w in setup["memory"]}
    print(
        "ours at N=1024: peak "
        + ", ".join(f"{p:.0f} MiB for {w} words" for w, p in peaks.items())
        + f" (the activations themselves: {max(peaks) * 1024 * 4 / 2**20:.0f} MiB)\n"
    )

    speedup = seconds["torch", 1024] / seconds["ours", 1024]
    print(
        f"target: ours >= 2x torch.cdist throughput at N=1024: {speedup:.1f}x, {_met(speedup >= 2)}"
    )
    for n in setup["sizes"]:
        ratio = seconds["corr", n] / seconds["matmul", n]
        print(
            f"target: correlation <= 1.5x matmul time at N={n}: {ratio:.2f}x, {_met(ratio <= 1.5)}"
        )
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument(
        "--transformer", action="store_true", help="MiniLM's sizes: 1,536 and 9,216 neurons"
    )
    parser.add_argument("--worker", nargs=4, metavar=("METHOD", "N", "WORDS", "BUDGET"))
    args = parser.parse_args()
    if args.worker:
        method, n, words, budget = args.worker
        print(json.dumps(worker(method, int(n), int(words), float(budget))))
    elif args.transformer:
        transformer()
    else:
        main(args.quick)
