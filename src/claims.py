"""The source's seven claims, checked against the study's tables with statistics over seeds.

Pure pandas: :mod:`src.study` measures, this module judges. Each claim is judged per seed, then
per corpus (holds when every seed agrees, does not hold when none does, depends otherwise), then
overall (the same rule over corpora). The thresholds below are the reading of the source's words
("about", "very similar"); they are printed with the table so that nobody has to guess them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import cast

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from src import schema
from src.report import (
    accuracy_figure,
    aggregate,
    cka_figure,
    drift_figure,
    study_front_figure,
    width_table,
)

SOURCE_BASELINE = 0.7969  # the source's test accuracy on its movie reviews
ABOUT = 0.015  # "about 79.7 %": at least 1.5 points below it, or anything above
SOURCE_COST = 0.007  # weight-sum 16 -> 4: 79.69 % -> 79 %
COST_SLACK = 0.005  # "about 0.7 points": a cost of at most 1.2 points
NEAR_BASELINE = 0.01  # "about the baseline": within one point
ALPHA = 0.05  # a paired difference counts when McNemar's p is below this
VERY_SIMILAR = 0.8  # linear CKA from which two layers' features count as very similar

THRESHOLDS = (
    f"baseline about {SOURCE_BASELINE:.1%}: at least {SOURCE_BASELINE - ABOUT:.1%}; "
    f"weight-sum cost about {SOURCE_COST * 100:.1f} points: at most "
    f"{(SOURCE_COST + COST_SLACK) * 100:.1f}; about the baseline: within "
    f"{NEAR_BASELINE * 100:.0f} point; a gain or loss: paired McNemar p < {ALPHA}; "
    f"very similar: linear CKA >= {VERY_SIMILAR}; more neurons than needed: a merge without "
    "training stays within one point of the baseline at half the width or less"
)
VERDICTS = {True: "holds", False: "does not hold", None: "depends"}


@dataclass
class StudyTables:
    """What the study measured; column names follow metrics.json (``data``, ``seed``, ...)."""

    baselines: pd.DataFrame  # data, seed: baseline/test_acc, ...
    layers: pd.DataFrame  # data, seed, layer: width, dead, effective_rank
    runs: pd.DataFrame  # data, seed, layer, method, target_width: compressed/test_acc, ...
    comparisons: pd.DataFrame  # data, seed, layer, target_width, a, b: diff, ci_low, ci_high, p
    similarity: pd.DataFrame  # data, seed, layer, target_width, a, b: cka, matched_r
    drift: pd.DataFrame  # data, seed, layer, method, target_width, position: error, sentences
    whole: pd.DataFrame  # data, seed: compress=whole_model's widths, scores and scratch anchor


@dataclass
class Finding:
    """One claim on one corpus: the figure, and whether it held for each seed."""

    figure: str
    per_seed: list[bool]

    @property
    def verdict(self) -> bool | None:
        return agreement(self.per_seed)


def agreement(results: list[bool]) -> bool | None:
    """True when all hold, False when none does, None (depends) otherwise."""
    if all(results):
        return True
    return False if not any(results) else None


def mean_std(values: pd.Series, scale: float = 1.0, digits: int = 2, sign: bool = False) -> str:
    """``mean ± std`` (the mean alone for one value)."""
    values = values.astype(float) * scale
    average = values.mean() if round(values.mean(), digits) else 0.0  # no "-0.00"
    mean = f"{average:{'+' if sign else ''}.{digits}f}"
    return f"{mean} ± {values.std():.{digits}f}" if len(values) > 1 else mean


class NotMeasured(LookupError):
    """The study left out what a claim needs (a method, layer or width)."""


def _pick(frame: pd.DataFrame, **where: object) -> pd.DataFrame:
    """The rows matching ``where``, by seed; none is :class:`NotMeasured`, never a verdict."""
    mask = np.ones(len(frame), dtype=bool)
    for key, value in where.items():
        if key not in frame:
            raise NotMeasured(key)
        mask &= frame[key] == value
    if not mask.any():
        raise NotMeasured(where)
    return frame[mask].sort_values(schema.SEED)


def baseline_accuracy(t: StudyTables, data: str, layer: str, width: int) -> Finding:
    acc = _pick(t.baselines, data=data)[schema.BASELINE_TEST_ACC]
    return Finding(f"{mean_std(acc, 100)} %", [a >= SOURCE_BASELINE - ABOUT for a in acc])


def _method(t: StudyTables, data: str, layer: str, width: int, method: str) -> pd.DataFrame:
    return _pick(t.runs, data=data, layer=layer, target_width=width, method=method)


def weight_sum_cost(t: StudyTables, data: str, layer: str, width: int) -> Finding:
    rows = _method(t, data, layer, width, "weight_sum")
    cost = -rows[schema.DELTA_ACC]
    figure = (
        f"cost {mean_std(cost, 100)} pts, agreement {mean_std(rows['compressed/agreement'], 100)} %"
    )
    return Finding(figure, [c <= SOURCE_COST + COST_SLACK for c in cost])


def retrain_recovers(t: StudyTables, data: str, layer: str, width: int) -> Finding:
    rows = _method(t, data, layer, width, "freeze_retrain")
    delta = rows[schema.DELTA_ACC]
    figure = f"{mean_std(delta, 100, sign=True)} pts"
    return Finding(figure, [d >= -NEAR_BASELINE for d in delta])


def _paired(t: StudyTables, data: str, layer: str, width: int, a: str, b: str) -> pd.DataFrame:
    return _pick(t.comparisons, data=data, layer=layer, target_width=width, a=a, b=b)


def _paired_figure(rows: pd.DataFrame, significant: pd.Series) -> str:
    return (
        f"{mean_std(rows['diff'], 100, sign=True)} pts, p < {ALPHA} in "
        f"{int(significant.sum())}/{len(rows)} seeds"
    )


def no_gain_from_cluster_init(t: StudyTables, data: str, layer: str, width: int) -> Finding:
    rows = _paired(t, data, layer, width, "cluster_init", "freeze_retrain")
    gain = (rows["diff"] > 0) & (rows["p"] < ALPHA)
    return Finding(_paired_figure(rows, rows["p"] < ALPHA), (~gain).tolist())


def weight_sum_beats_retrain(t: StudyTables, data: str, layer: str, width: int) -> Finding:
    rows = _paired(t, data, layer, width, "weight_sum", "freeze_retrain")
    better = (rows["diff"] > 0) & (rows["p"] < ALPHA)
    return Finding(_paired_figure(rows, rows["p"] < ALPHA), better.tolist())


def retrained_like_weight_sum(t: StudyTables, data: str, layer: str, width: int) -> Finding:
    rows = _pick(
        t.similarity, data=data, layer=layer, target_width=width, a="freeze_retrain", b="weight_sum"
    )
    figure = f"CKA {mean_std(rows['cka'])}, matched r {mean_std(rows['matched_r'])}"
    return Finding(figure, [c >= VERY_SIMILAR for c in rows["cka"]])


def smallest_faithful_width(runs: pd.DataFrame, baseline_acc: float) -> float:
    """The smallest width at which some merge without training stays within a point of the
    baseline (NaN when none does). The best method per width is picked after the fact: an
    optimistic reading of how few neurons the layer needs."""
    close = runs[runs[schema.COMPRESSED_TEST_ACC] >= baseline_acc - NEAR_BASELINE]
    return float(close[schema.TARGET_WIDTH].min()) if len(close) else float("nan")


def layer_is_redundant(t: StudyTables, data: str, layer: str, width: int) -> Finding:
    shape = _pick(t.layers, data=data, layer=layer)
    full = int(shape["width"].iloc[0])
    untrained = t.runs[(t.runs[schema.DATA] == data) & (t.runs[schema.LAYER] == layer)]
    untrained = untrained[untrained[schema.COMPRESS_EPOCHS] == 0]
    baseline = t.baselines[t.baselines[schema.DATA] == data].set_index(schema.SEED)[
        schema.BASELINE_TEST_ACC
    ]
    faithful = []
    for seed in shape[schema.SEED]:
        found = smallest_faithful_width(untrained[untrained[schema.SEED] == seed], baseline[seed])
        faithful.append(full if np.isnan(found) else found)
    faithful = pd.Series(faithful, dtype=float)
    figure = (
        f"dead {mean_std(shape['dead'], digits=1)} of {full}, effective rank "
        f"{mean_std(shape['effective_rank'], digits=1)}, within a point down to width "
        f"{mean_std(faithful, digits=1)}"
    )
    return Finding(figure, [w <= full / 2 for w in faithful])


Check = Callable[[StudyTables, str, str, int], Finding]
CLAIMS: list[tuple[str, Check]] = [
    ("The baseline LSTM reaches about 79.7 % test accuracy", baseline_accuracy),
    ("Weight-summing 16 -> 4 neurons, no training, costs about 0.7 points", weight_sum_cost),
    ("One epoch of freeze-retrain to 4 neurons gets back to about the baseline", retrain_recovers),
    ("Cluster-init gives no gain over freeze-retrain", no_gain_from_cluster_init),
    ("Weight-sum does better than the retrained layer", weight_sum_beats_retrain),
    ("The retrained layer's features are very similar to the weight-summed layer's",
     retrained_like_weight_sum),
    ("The layer has more neurons than it needs", layer_is_redundant),
    ("(ours) The LSTM has more units than it needs",
     lambda t, data, layer, width: layer_is_redundant(t, data, "lstm", width)),
]  # fmt: skip


def reason(findings: dict[str, Finding]) -> str:
    """A few words: on which corpora it held, did not, or split the seeds."""
    by_verdict: dict[str, list[str]] = {}
    for data, finding in findings.items():
        by_verdict.setdefault(VERDICTS[finding.verdict], []).append(data)
    labels = {"holds": "holds", "does not hold": "does not hold", "depends": "seeds disagree"}
    return "; ".join(
        f"{labels[verdict]} on {', '.join(by_verdict[verdict])}"
        for verdict in labels
        if verdict in by_verdict
    )


def check_claims(tables: StudyTables, layer: str, width: int) -> pd.DataFrame:
    """One row per claim: our figure per corpus (mean ± std over seeds), a verdict, a reason.

    ``layer`` and ``width`` are where the source made its claims: the 16-neuron layer, 4 kept.
    """
    corpora = list(dict.fromkeys(tables.baselines[schema.DATA]))
    rows = []
    for number, (claim, check) in enumerate(CLAIMS, start=1):
        findings: dict[str, Finding] = {}
        for data in corpora:
            try:
                findings[data] = check(tables, data, layer, width)
            except NotMeasured:
                continue
        row = {"claim": number, "statement": claim}
        for data in corpora:
            finding = findings.get(data)
            row[data] = (
                f"{finding.figure} ({VERDICTS[finding.verdict]})" if finding else "not measured"
            )
        verdicts = [f.verdict for f in findings.values()]
        overall = None if None in verdicts else agreement(cast(list[bool], verdicts))
        row["verdict"] = VERDICTS[overall] if findings else "not measured"
        row["why"] = reason(findings) if findings else "left out of the study"
        rows.append(row)
    return pd.DataFrame(rows)


TABLES = tuple(field.name for field in fields(StudyTables))


def best_single_site(t: StudyTables, data: str, seed: int) -> pd.Series | None:
    """The smallest model any one-site merge without training made within a point of the
    baseline on this corpus and seed (picked on the test split, after the fact: optimistic)."""
    base = t.baselines.set_index([schema.DATA, schema.SEED]).loc[
        (data, seed), schema.BASELINE_TEST_ACC
    ]
    runs = t.runs[(t.runs[schema.DATA] == data) & (t.runs[schema.SEED] == seed)]
    runs = runs[
        (runs[schema.COMPRESS_EPOCHS] == 0)
        & (runs[schema.COMPRESSED_TEST_ACC] >= base - NEAR_BASELINE)
    ]
    return None if runs.empty else runs.loc[runs[schema.COMPRESSED_PARAMS].idxmin()]


COLLAPSE = 0.05  # a merge "collapses" when it loses more than 5 points of test accuracy


def variant_table(t: StudyTables, method: str, layer: str, width: int) -> str:
    """``method`` and its variants (rows named ``method <overrides>``) side by side: test
    accuracy per corpus and seed at ``layer`` and ``width``, and over every site and width of
    the study how often each loses more than :data:`COLLAPSE` of the baseline's accuracy."""
    runs = t.runs[t.runs[schema.METHOD].str.split().str[0] == method]
    if runs[schema.METHOD].nunique() < 2:
        return ""
    runs = runs.assign(variant=runs[schema.METHOD].str.removeprefix(method).str.strip())
    runs["variant"] = runs["variant"].replace("", "(default)")
    cell = runs[(runs[schema.LAYER] == layer) & (runs[schema.TARGET_WIDTH] == width)]
    table = cell.pivot_table(
        index=[schema.DATA, schema.SEED], columns="variant", values=schema.COMPRESSED_TEST_ACC
    ).round(4)
    base = t.baselines.set_index([schema.DATA, schema.SEED])[schema.BASELINE_TEST_ACC]
    table.insert(0, "baseline", base.reindex(table.index).round(4))
    lost = runs[schema.BASELINE_TEST_ACC] - runs[schema.COMPRESSED_TEST_ACC] > COLLAPSE
    counts = runs.assign(lost=lost).groupby("variant")["lost"].agg(["sum", "count"])
    footer = "; ".join(f"{v}: {int(r['sum'])} of {int(r['count'])}" for v, r in counts.iterrows())
    return (
        f"{table.to_markdown()}\n\nCells (corpus, seed, site, width) where it loses more than "
        f"{COLLAPSE * 100:.0f} points: {footer}."
    )


def whole_table(t: StudyTables) -> str:
    """Per corpus and seed: the whole model's widths, its size and accuracy against the
    baseline, a model as large trained from scratch (the original's widths scaled to the same
    parameters), and the best one-site shrink beside it."""
    rows = []
    for record in t.whole.to_dict("records"):
        data, seed = record[schema.DATA], record[schema.SEED]
        base = t.baselines.set_index([schema.DATA, schema.SEED]).loc[(data, seed)]
        single = best_single_site(t, data, seed)
        ratio = base[schema.BASELINE_PARAMS] / record[schema.COMPRESSED_PARAMS]
        rows.append(
            {
                "data": data,
                "seed": seed,
                "widths": record[schema.COMPRESSED_WIDTHS],
                "params (x fewer)": f"{record['compressed/params']:,} ({ratio:.1f}x)",
                "test acc, change": f"{record['compressed/test_acc']:.4f} "
                f"({100 * record['delta_acc']:+.2f} pts)",
                "agreement": f"{record['compressed/agreement']:.4f}",
                "as large from scratch": f"{record.get('scratch/test_acc', float('nan')):.4f} "
                f"({record.get('scratch/shape', '')})",
                "best one-site shrink": "none within a point"
                if single is None
                else f"{single['layer']} -> {int(single['target_width'])} by {single['method']}: "
                f"{int(single['compressed/params']):,} params, {single['compressed/test_acc']:.4f}",
                "search": f"{int(record['search/candidates'])} models, "
                f"{record['search/seconds']:.0f} s",
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False)


WORDS = "words"  # the words site (src.sites.WordSite): its widths are shares of a vocabulary
WORD_METHODS = ("word_merge", "word_cutoff")  # the words site's merge and its anchor
LSTM_TARGET = ("lstm", 32)  # the LSTM's last point: 128 units -> 32


def words_table(t: StudyTables) -> str:
    """The words site: test accuracy change (points, mean ± std over seeds) per corpus, method
    and share of the rows kept."""
    runs = t.runs[t.runs[schema.LAYER] == WORDS]
    if runs.empty:
        return ""
    runs = runs.sort_values(schema.TARGET_WIDTH, ascending=False, kind="stable")
    share = (runs[schema.LAYER_WIDTH] / runs[schema.TARGET_WIDTH]).round().astype(int)
    runs = runs.assign(
        change=100 * (runs[schema.COMPRESSED_TEST_ACC] - runs[schema.BASELINE_TEST_ACC]),
        kept="1/" + share.astype(str),  # the same shares on every corpus: one column each
    )
    table = runs.pivot_table(
        index=[schema.DATA, schema.METHOD],
        columns="kept",
        values="change",
        aggfunc=lambda v: mean_std(v, sign=True),
        sort=False,
    )
    rows = runs.groupby(schema.DATA, sort=False)[schema.LAYER_WIDTH].first()
    note = "; ".join(f"{d}: {int(n):,} words" for d, n in rows.items())
    return f"{table.to_markdown()}\n\nRows kept as a share of the vocabulary ({note})."


def fewest_rows_within(runs: pd.DataFrame, slack: float) -> float:
    """How many times fewer rows the smallest width keeps that is within ``slack`` of the
    baseline, as is every larger width measured (1.0 when the largest is not): a small width
    that happens to be within while a larger one is not says nothing about "down to"."""
    ordered = runs.sort_values(schema.TARGET_WIDTH, ascending=False)
    within = ordered[schema.COMPRESSED_TEST_ACC] >= ordered[schema.BASELINE_TEST_ACC] - slack
    held = within.astype(int).cummin().astype(bool)  # True while every larger width held
    if not held.any():
        return 1.0
    best = ordered[held].iloc[-1]
    return float(best[schema.LAYER_WIDTH] / best[schema.TARGET_WIDTH])


Target = dict[str, str]  # a row of the targets table: the target, how many held, the figures


def target(name: str, held: pd.Series, figure: str) -> Target:
    return {"target": name, "held": f"{int(held.sum())} of {len(held)}", "figures": figure}


def targets_table(t: StudyTables, max_drop: float) -> pd.DataFrame:
    """The study's targets for merging words and the whole model (issue #20), each counted
    over the runs (corpus x seed) that measured it: what held, in how many, and the figures."""
    runs = t.runs[t.runs[schema.COMPRESS_EPOCHS] == 0]
    rows = [*whole_targets(t.whole, max_drop), *word_targets(runs), *lstm_targets(runs)]
    return pd.DataFrame(rows)


def whole_targets(whole: pd.DataFrame, max_drop: float) -> list[Target]:
    """The whole model's targets: its size within a point, the budget kept on test, the scratch
    anchor beaten, and the IMDB search's seconds."""
    if whole.empty:
        return []
    ratio = whole[schema.BASELINE_PARAMS] / whole[schema.COMPRESSED_PARAMS]
    drop = -whole[schema.DELTA_ACC]
    per_run = [
        f"{d} {s}: {r:.1f}x, {-100 * x:+.2f} pts"
        for d, s, r, x in zip(whole[schema.DATA], whole[schema.SEED], ratio, drop, strict=True)
    ]
    rows = [
        target(
            "whole model: >= 4x fewer parameters, test drop <= 1 point",
            (ratio >= 4) & (drop <= NEAR_BASELINE),
            "; ".join(per_run),
        ),
        target(
            "whole model: >= 10x fewer parameters, test drop <= 1 point",
            (ratio >= 10) & (drop <= NEAR_BASELINE),
            f"largest ratio {ratio.max():.1f}x",
        ),
        target(
            f"whole model: test drop within max_drop ({100 * max_drop:.1f} pts)",
            drop <= max_drop + 1e-9,
            f"worst {-100 * drop.max():+.2f} pts",
        ),
    ]
    if schema.SCRATCH_TEST_ACC in whole:
        anchored = whole.dropna(subset=[schema.SCRATCH_TEST_ACC])
        gap = 100 * (anchored[schema.COMPRESSED_TEST_ACC] - anchored[schema.SCRATCH_TEST_ACC])
        rows.append(
            target(
                "merged >= as many parameters trained from scratch (proportional widths, "
                "learning rate on validation)",
                gap >= 0,
                "merged minus scratch: " + ", ".join(f"{g:+.2f}" for g in gap),
            )
        )
    seconds = whole.groupby(schema.DATA, sort=False)[schema.SEARCH_SECONDS].mean()
    imdb = whole.loc[whole[schema.DATA] == "imdb", schema.SEARCH_SECONDS]
    rows.append(
        target(
            "whole-model search on IMDB within 120 s",
            imdb <= 120,
            "mean " + ", ".join(f"{d} {v:.0f} s" for d, v in seconds.items()),
        )
    )
    return rows


def word_targets(runs: pd.DataFrame) -> list[Target]:
    """The word site's targets (of ``runs``, the training-free cells): rows within a point, and
    the merge against the frequency cut-off at every size."""
    words = runs[runs[schema.LAYER] == WORDS]
    if words.empty:
        return []
    rows = []
    merged = words[words[schema.METHOD] == WORD_METHODS[0]]
    if not merged.empty:
        per_seed = pd.Series(
            {
                key: fewest_rows_within(cells, NEAR_BASELINE)
                for key, cells in merged.groupby([schema.DATA, schema.SEED], sort=False)
            }
        )
        figure = "; ".join(f"{d} {s}: {x:.1f}x" for (d, s), x in per_seed.items())
        rows.append(
            target("word site (word_merge): >= 4x fewer rows within 1 point", per_seed >= 4, figure)
        )
        rows.append(
            target(
                "word site (word_merge): >= 10x fewer rows within 1 point", per_seed >= 10, figure
            )
        )
    cells = words.pivot_table(
        index=[schema.DATA, schema.SEED, schema.TARGET_WIDTH],
        columns=schema.METHOD,
        values=schema.COMPRESSED_TEST_ACC,
    )
    if set(WORD_METHODS) <= set(cells.columns):
        cells = cells.dropna(subset=list(WORD_METHODS))
        gap = 100 * (cells[WORD_METHODS[0]] - cells[WORD_METHODS[1]])
        rows.append(
            target(
                "word_merge >= the frequency cut-off at every size (cells)",
                gap >= 0,
                f"merge minus cut-off: worst {gap.min():+.2f}, mean {gap.mean():+.2f} pts",
            )
        )
    return rows


def lstm_targets(runs: pd.DataFrame) -> list[Target]:
    """The LSTM's target (of ``runs``, the training-free cells): the best method's count of runs
    within a point at :data:`LSTM_TARGET`, beside every method's."""
    layer, width = LSTM_TARGET
    lstm = runs[(runs[schema.LAYER] == layer) & (runs[schema.TARGET_WIDTH] == width)]
    if lstm.empty:
        return []
    within = lstm[schema.COMPRESSED_TEST_ACC] >= lstm[schema.BASELINE_TEST_ACC] - NEAR_BASELINE
    counts = within.groupby(lstm[schema.METHOD]).agg(["sum", "count"])
    best = counts["sum"].idxmax()
    figure = "; ".join(
        f"{m}: {int(r['sum'])} of {int(r['count'])}"
        for m, r in counts.sort_values("sum", ascending=False).iterrows()
    )
    held = within[lstm[schema.METHOD] == best]
    return [
        target(
            f"LSTM 128 -> {width} within 1 point, no training (best method: {best})", held, figure
        )
    ]


def phase_shares(phases: dict[str, float], seconds: float) -> str:
    """Where the study's time went: ``: baseline 12 % (3.1 min), ...`` ('' when not recorded),
    and what no phase timed (tables, figures, the W&B runs) as ``other``, so the parts add up."""
    if not phases or not seconds:
        return ""
    parts = dict(phases) | {"other": max(0.0, seconds - sum(phases.values()))}
    return ": " + ", ".join(
        f"{name} {100 * spent / seconds:.0f} % ({spent / 60:.1f} min)"
        for name, spent in parts.items()
    )


def time_line(record: dict) -> str:
    """claims.md's last line: the command's wall time (when recorded), the units' own time summed
    over every job (more than the wall when jobs ran side by side), and where it went."""
    wall = record.get("wall_seconds")
    took = f"{wall / 60:.1f} min wall, " if wall else ""
    return (
        f"Measured with `{record['command']}`: {took}{record['seconds'] / 60:.1f} min of the "
        f"units' own time summed{phase_shares(record.get('phases', {}), record['seconds'])}.\n"
    )


def read_tables(folder: Path) -> StudyTables:
    """The tables a finished study wrote (:func:`write_tables`); a table it left empty is an
    empty frame."""

    def read(name: str) -> pd.DataFrame:
        try:
            return pd.read_csv(folder / f"{name}.csv")
        except pd.errors.EmptyDataError:
            return pd.DataFrame()

    return StudyTables(*(read(name) for name in TABLES))


def write_tables(folder: Path, tables: StudyTables) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in vars(tables).items():
        frame.to_csv(folder / f"{name}.csv", index=False)


def judge(folder: Path) -> tuple[pd.DataFrame, list[Path]]:
    """Judge the claims on a finished study's tables and write claims.md (the table, with the
    thresholds and the accuracy at a glance), claims.csv, accuracy.png (every site) and
    cka.png (the claims' site). ``python -m src.claims FOLDER`` runs it again."""
    tables = read_tables(folder)
    record = json.loads((folder / "study.json").read_text())
    layer, width = record["claims"][schema.LAYER], record["claims"]["width"]
    claims = check_claims(tables, layer, width)
    claims.to_csv(folder / "claims.csv", index=False)
    baselines = tables.baselines.groupby("data", sort=False).agg(
        seeds=("seed", "nunique"),
        test_acc=(schema.BASELINE_TEST_ACC, lambda s: mean_std(s, 100)),
        val_acc=(schema.BASELINE_VAL_ACC, lambda s: mean_std(s, 100)),
        train_seconds=(schema.BASELINE_TRAIN_SECONDS, lambda s: mean_std(s, digits=0)),
    )
    (folder / "claims.md").write_text(
        f"{claims.to_markdown(index=False)}\n\nThresholds: {THRESHOLDS}.\n\n"
        f"Baselines (accuracy in %, mean ± std over seeds)\n\n{baselines.to_markdown()}\n\n"
        "Test accuracy after shrinking (mean ± std over seeds)\n\n"
        f"{width_table(aggregate(tables.runs[tables.runs[schema.LAYER] != WORDS]))}\n\n"
        f"{time_line(record)}"
    )
    variants = variant_table(tables, "weight_sum", layer, width)
    if variants:
        with (folder / "claims.md").open("a") as md:
            md.write(f"\nWeight-sum's representative, {layer} -> {width}\n\n{variants}\n")
    words = words_table(tables)
    if words:
        with (folder / "claims.md").open("a") as md:
            md.write(f"\nThe words site: test accuracy change (points), rows kept\n\n{words}\n")
    if not tables.whole.empty:
        with (folder / "claims.md").open("a") as md:
            md.write(
                f"\nThe whole model to a budget (compress=whole_model)\n\n{whole_table(tables)}\n"
            )
    max_drop = (record["config"].get("whole_model") or {}).get("max_drop", NEAR_BASELINE)
    targets = targets_table(tables, max_drop)
    targets.to_csv(folder / "targets.csv", index=False)
    if not targets.empty:
        with (folder / "claims.md").open("a") as md:
            md.write(
                "\nTargets (merging words and the whole model)\n\n"
                f"{targets.to_markdown(index=False)}\n"
            )
    figures = {"accuracy": accuracy_figure(tables.runs)}
    similarity = tables.similarity
    if not similarity.empty:  # a study without the claims' site has no pairs there to draw
        similarity = similarity[similarity[schema.LAYER] == layer]
    if not similarity.empty:
        figures["cka"] = cka_figure(similarity)
    if not tables.drift.empty:
        figures["drift"] = drift_figure(tables.drift)
    if not tables.whole.empty or (tables.runs[schema.LAYER] == WORDS).any():
        figures["front"] = study_front_figure(tables.runs, tables.whole, tables.baselines)
    paths = []
    for name, figure in figures.items():
        paths.append(folder / f"{name}.png")
        figure.savefig(paths[-1], dpi=100, bbox_inches="tight")
        plt.close(figure)
    return claims, paths


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Judge a finished study's claims again.")
    parser.add_argument("folder", help="a study's output_dir (results/claims by default)")
    print(judge(Path(parser.parse_args().folder))[0].to_markdown(index=False))
