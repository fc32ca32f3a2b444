"""Searches replayed against the recorded table of the cpu advection task (issue 24, item 6).

The live verdict (``advection.py``) affords 5 searches per arm; this one runs 50 in minutes,
against real trainings recorded once by ``benchmarks/scenarios/advection_lr_table.py`` (200
learning rates × 3 training seeds, each with its validation fitness and the TEST fitness of
the same weights), as FCNet/HPOBench tables are used.

Arms, exactly as ``advection.py`` runs them (its classes): the engine with ``advection_lr``'s
settings (surrogate, hypertiling design, population 8, ``intensify`` 3; its pick is the
incumbent), random search (its best observed) and Optuna TPE, multivariate with the constant
liar (``study.best_trial``). Every search runs as ``make run``'s workers do: 2 jobs of 4
candidates in flight, a job's 4 results told together, the oldest job first.

An evaluation at learning rate ``lr`` with seed ``s`` reads the table's nearest learning rate
(in log lr; the table's spacing is about 0.02 decades, 5 % in lr) and returns the validation
fitness of one of its recorded replicates: a search's m-th evaluation of that table entry gets
replicate ``(j0 + m) mod 3``, with ``j0`` drawn from the search seed and the entry, so up to
three evaluations of one entry see three different trainings; once a search has read all
three, its next evaluation there reads the nearest entry with a replicate it has not read (so
no training is read twice by one search; the output gives how far reads moved, in decades of
lr). A replicate that diverged is a failed evaluation (NaN).

Scored on TEST, which no search reads: a pick's ``true`` value is the mean test fitness of the
trainings at the 5 table learning rates nearest its table entry, the entry itself left out
(15 trainings, about ±0.05 decades), so that the replicates a search picked it for (whose
test values move with their validation values: same weights, a within-entry correlation
near 1, printed) do not score their own luck; its ``own`` value (the mean test fitness of its
entry's 3 replicates) is reported beside it. Regret = true − the smallest true
value in the table. Reported at 10, 20 and 40 evaluations: per arm the median and quartiles
of regret over searches, and the engine against each arm paired by search seed (wins, losses,
ties; Wilcoxon signed-rank and sign test p, two-sided).

    python benchmarks/advection_table.py --table benchmarks/data/advection_lr_table.csv

Prints a table to stderr and one final JSON line to stdout (commit, versions, command). Not a
test.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from advection import ARMS, SCENARIOS, EngineSearch, TPESearch, provenance  # noqa: E402

from evo_engine.scenario import load_scenario  # noqa: E402

BUDGETS = (10, 20, 24, 40)
"""Evaluations at which picks are scored: the issue's 10 / 20 / 40 and the scenario's 24."""
NEIGHBOURS = 5
"""Table entries nearest a pick (itself not among them) whose test trainings make its true
value (15 trainings, about ±0.05 decades)."""
GOOD_REGION = 1.2
"""Entries whose true value is within 20 % of the best: where the seed noise decides picks."""
JOBS, BATCH = 2, 4
"""What make run's workers do: 2 jobs of 4 candidates trained as one stack."""


class Table:
    """The recorded trainings: learning rates, and per replicate validation and test fitness."""

    def __init__(self, lr: np.ndarray, val: np.ndarray, test: np.ndarray) -> None:
        order = np.argsort(lr)
        self.lr, self.val, self.test = lr[order], val[order], test[order]
        self.log_lr = np.log10(self.lr)
        self.true = np.array([self._true_at(i) for i in range(len(self.lr))])
        self.own = np.array([np.nanmean(t) if np.isfinite(t).any() else math.nan
                             for t in self.test])
        self.best_true = float(np.nanmin(self.true))

    @classmethod
    def read(cls, path: Path) -> Table:
        """The CSV ``python -m evo_engine analyze RUN --csv`` writes of the table's run."""
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        reps = sorted({int(k[len("val_fitness_r"):]) for k in (rows[0] if rows else {})
                       if k.startswith("val_fitness_r")})
        if not rows or not reps or "lr" not in rows[0]:
            raise ValueError(f"{path} is not a table of advection_lr_table.py's run (no lr / "
                             "val_fitness_r* columns)")

        def num(cell: str) -> float:
            return float(cell) if cell not in ("", None) else math.nan

        lr = np.array([num(r["lr"]) for r in rows])
        # a FAILED evaluation (every replicate diverged) has no per-replicate cells: NaN
        val = np.array([[num(r.get(f"val_fitness_r{j}", "")) for j in reps] for r in rows])
        test = np.array([[num(r.get(f"test_fitness_r{j}", "")) for j in reps] for r in rows])
        return cls(lr, val, test)

    def _true_at(self, i: int) -> float:
        distance = np.abs(self.log_lr - self.log_lr[i])
        distance[i] = np.inf  # not the entry's own trainings: a pick was picked for those
        near = np.argsort(distance, kind="stable")[:NEIGHBOURS]
        near = near[near != i]  # a table of fewer than NEIGHBOURS + 1 entries
        values = self.test[near].ravel()
        values = values[np.isfinite(values)]
        return float(values.mean()) if values.size else math.nan

    def noise(self) -> dict[str, float]:
        """The seed noise the table holds: pooled within-entry std of the validation and the
        test fitness, and the within-entry correlation of their deviations (one training's
        luck on validation carried to test: what scoring on a pick's own replicates would
        reward); over every fully trained entry and over the good region (``GOOD_REGION``)."""
        ok = np.isfinite(self.val).all(axis=1) & np.isfinite(self.test).all(axis=1)
        good = ok & (self.true <= GOOD_REGION * self.best_true)
        out: dict[str, float] = {
            "entries_all_replicates": int(ok.sum()),
            "entries_with_a_diverged_replicate": int((~np.isfinite(self.val)).any(axis=1).sum()),
            "good_region_entries": int(good.sum()),
        }
        for name, rows in (("", ok), ("good_region_", good)):
            dv = self.val[rows] - self.val[rows].mean(axis=1, keepdims=True)
            dt = self.test[rows] - self.test[rows].mean(axis=1, keepdims=True)
            dof = max(int(rows.sum()) * (self.replicates - 1), 1)
            norm = math.sqrt(float((dv ** 2).sum() * (dt ** 2).sum()))
            out.update({
                f"{name}val_seed_std": float(np.sqrt((dv ** 2).sum() / dof)),
                f"{name}test_seed_std": float(np.sqrt((dt ** 2).sum() / dof)),
                f"{name}val_test_within_corr": float((dv * dt).sum() / norm) if norm else math.nan,
            })
        return out

    def nearest(self, lr: float) -> int:
        return int(np.argmin(np.abs(self.log_lr - math.log10(lr))))

    @property
    def replicates(self) -> int:
        return int(self.val.shape[1])


class Replay:
    """One search's objective: each evaluation consumes one recorded training, the nearest
    (in log lr) of the table entries whose replicates this search has not all read; within an
    entry, replicates in the order j0, j0 + 1, ... (j0 drawn from the search seed and entry)."""

    def __init__(self, table: Table, search_seed: int) -> None:
        self.table, self.seed = table, search_seed
        self.used: dict[int, int] = {}
        self.distances: list[float] = []
        """|log10 lr asked - log10 lr read| of every read, in decades."""

    def __call__(self, params: dict) -> float:
        t, reps = self.table, self.table.replicates
        x = math.log10(float(params["lr"]))
        for i in np.argsort(np.abs(t.log_lr - x), kind="stable"):
            m = self.used.get(int(i), 0)
            if m < reps:
                break
        else:
            raise RuntimeError("the search read every training of the table")
        i = int(i)
        self.used[i] = m + 1
        self.distances.append(abs(float(t.log_lr[i]) - x))
        j0 = int(np.random.default_rng([self.seed, i]).integers(reps))
        return float(t.val[i, (j0 + m) % reps])


def run_search(method: Any, objective: Replay, search: int, evals: int,
               budgets: tuple[int, ...]) -> dict[int, dict]:
    """``JOBS`` jobs of ``BATCH`` candidates in flight, the oldest job told first; the pick
    after each budget's last tell."""
    jobs: deque[list[tuple[Any, dict, int]]] = deque()
    picks: dict[int, dict] = {}
    asked = 0
    while len(picks) < len(budgets) and (jobs or asked < evals):
        while asked < evals and len(jobs) < JOBS:
            n = min(BATCH, evals - asked)
            jobs.append([method.ask(search) for _ in range(n)])
            asked += n
        for handle, params, _seed in jobs.popleft():
            method.tell(handle, objective(params))
            if method.told in budgets:
                pick = method.pick()
                picks[method.told] = {} if pick is None else pick
    return picks


def plot_table(table: Table, path: Path) -> None:
    """Every recorded training (validation and test fitness against lr), the true value
    (the neighbours' mean test fitness) and PDEBench's default lr."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    reps = table.replicates
    x = np.repeat(table.lr, reps)
    ax.scatter(x, table.val.ravel(), s=9, marker="o", alpha=0.5, label="validation (searches see)")
    ax.scatter(x, table.test.ravel(), s=9, marker="x", alpha=0.5, label="test (scores)")
    ax.plot(table.lr, table.true, color="k", lw=1.2,
            label=f"true value: mean test of the {NEIGHBOURS} nearest other entries")
    ax.axvline(1e-3, color="grey", ls=":", lw=1, label="PDEBench default lr 1e-3")
    ax.axhline(table.best_true, color="k", ls="--", lw=0.6)
    ax.set_xscale("log")
    finite = np.concatenate([table.val[np.isfinite(table.val)], table.test[np.isfinite(table.test)]])
    low = float(finite.min()) if finite.size else 0.0
    ax.set_ylim(low * 0.95, max(low * 3.0, table.best_true * 1.5))  # the good region
    ax.set_xlabel("learning rate")
    ax.set_ylabel("fitness (lower is better)")
    diverged = int((~np.isfinite(table.val)).sum())
    ax.set_title(f"advection_lr, cpu preset: {len(table.lr)} learning rates x {reps} seeds "
                 f"({diverged} trainings diverged; points above the frame not shown)", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.savefig(path, dpi=120)


def make_method(arm: str, scenario: Any, search_seed: int) -> Any:
    if arm == "tpe":
        return TPESearch(scenario.space, search_seed, None)
    return EngineSearch(scenario, scenario.operator if arm == "engine" else "random",
                        search_seed, None)


def score(table: Table, pick: dict) -> dict[str, float]:
    if "lr" not in pick:  # every evaluation so far failed: no pick
        return {"true": math.nan, "own": math.nan, "regret": math.nan, "lr": math.nan}
    i = table.nearest(float(pick["lr"]))
    return {"true": float(table.true[i]), "own": float(table.own[i]),
            "regret": float(table.true[i] - table.best_true), "lr": float(pick["lr"])}


def compare(engine: list[float], other: list[float]) -> dict[str, Any]:
    """Paired by search seed: wins (engine lower regret), losses, ties; two-sided p values."""
    from scipy.stats import binomtest, wilcoxon

    pairs = [(a, b) for a, b in zip(engine, other, strict=True)
             if math.isfinite(a) and math.isfinite(b)]
    wins = sum(a < b for a, b in pairs)
    losses = sum(a > b for a, b in pairs)
    diffs = [a - b for a, b in pairs if a != b]
    return {
        "wins": wins, "losses": losses, "ties": len(pairs) - wins - losses,
        "median_difference": float(np.median([a - b for a, b in pairs])) if pairs else math.nan,
        "wilcoxon_p": float(wilcoxon(diffs).pvalue) if len(diffs) >= 2 else math.nan,
        "sign_p": float(binomtest(wins, wins + losses).pvalue) if wins + losses else math.nan,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True,
                        help="the table's CSV (analyze RUN --csv of advection_lr_table.py's run)")
    parser.add_argument("--searches", type=int, default=50,
                        help="searches per arm (0: only describe the table)")
    parser.add_argument("--first-seed", type=int, default=1, help="the first search seed")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma list of engine, random, tpe")
    parser.add_argument("--plot", type=Path, metavar="PNG",
                        help="also draw every recorded training and the true value into PNG")
    parser.add_argument("--min-entries", type=int, default=200,
                        help="refuse a table with fewer learning rates (a partial build)")
    args = parser.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or any(a not in ARMS for a in arms):
        parser.error(f"--arms takes a comma list of {', '.join(ARMS)}, got {args.arms!r}")
    if args.searches < 0 or args.first_seed < 1 or args.min_entries < NEIGHBOURS + 1:
        parser.error("need --searches >= 0, --first-seed >= 1, "
                     f"--min-entries >= {NEIGHBOURS + 1}")
    if not args.table.is_file():
        parser.error(f"--table {args.table}: no such file")
    try:
        table = Table.read(args.table)
    except (ValueError, KeyError, csv.Error, UnicodeDecodeError) as exc:
        parser.error(f"--table: {exc}")
    if len(table.lr) < args.min_entries:
        parser.error(f"--table {args.table} holds {len(table.lr)} learning rates, fewer than "
                     f"--min-entries {args.min_entries} (a partial build?)")
    if args.plot is not None:
        plot_table(table, args.plot)
    start = time.perf_counter()
    scenario = load_scenario(SCENARIOS / "advection_lr.py", "cpu")
    seeds = list(range(args.first_seed, args.first_seed + args.searches))
    per_arm: dict[str, dict[int, list[dict]]] = {a: {b: [] for b in BUDGETS} for a in arms}
    moved: dict[str, list[float]] = {a: [] for a in arms}
    for seed in seeds:
        for arm in arms:
            objective = Replay(table, seed)
            picks = run_search(make_method(arm, scenario, seed), objective, seed - 1,
                               max(BUDGETS), BUDGETS)
            moved[arm] += objective.distances
            for b in BUDGETS:
                per_arm[arm][b].append(score(table, picks[b]))
        print(f"search seed {seed} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    results: dict[str, Any] = {}
    for b in BUDGETS if seeds else ():
        row: dict[str, Any] = {}
        for arm in arms:
            regret = np.array([s["regret"] for s in per_arm[arm][b]])
            q1, med, q3 = np.nanpercentile(regret, [25, 50, 75])
            row[arm] = {"median_regret": float(med), "q1": float(q1), "q3": float(q3),
                        "mean_regret": float(np.nanmean(regret)),
                        "median_true": float(np.nanmedian([s["true"] for s in per_arm[arm][b]])),
                        "median_own": float(np.nanmedian([s["own"] for s in per_arm[arm][b]])),
                        "no_pick": int(np.isnan(regret).sum())}
        if "engine" in arms:
            eng = [s["regret"] for s in per_arm["engine"][b]]
            row["paired_engine_vs"] = {a: compare(eng, [s["regret"] for s in per_arm[a][b]])
                                       for a in arms if a != "engine"}
        results[str(b)] = row
    if seeds:
        print(f"{'evals':>5} {'arm':>7} {'median regret':>14} {'quartiles':>19} {'true':>7}",
              file=sys.stderr)
    for b in BUDGETS if seeds else ():
        for arm in arms:
            r = results[str(b)][arm]
            print(f"{b:>5} {arm:>7} {r['median_regret']:>14.5f} "
                  f"{r['q1']:>9.5f}-{r['q3']:<9.5f} {r['median_true']:>7.4f}", file=sys.stderr)
        for a, c in results[str(b)].get("paired_engine_vs", {}).items():
            print(f"      engine vs {a}: {c['wins']} wins, {c['losses']} losses, {c['ties']} ties;"
                  f" Wilcoxon p {c['wilcoxon_p']:.3g}, sign p {c['sign_p']:.3g}", file=sys.stderr)
    out = {
        "benchmark": "advection_table", "table": str(args.table), "entries": len(table.lr),
        "replicates": table.replicates, "noise": table.noise(), "best_true": table.best_true,
        "default_lr_1e-3_true": float(table.true[table.nearest(1e-3)]),
        "best_true_lr": float(table.lr[int(np.nanargmin(table.true))]),
        "neighbours": NEIGHBOURS, "jobs": JOBS, "batch": BATCH, "budgets": list(BUDGETS),
        "searches": args.searches, "first_search_seed": args.first_seed,
        "read_distance_decades": {
            a: {"median": float(np.median(d)), "p95": float(np.percentile(d, 95)),
                "max": float(np.max(d))} for a, d in moved.items() if d},
        "results": results,
        "per_search": {a: {str(b): per_arm[a][b] for b in BUDGETS} for a in arms},
        "seconds": round(time.perf_counter() - start, 1), **provenance(argv),
    }
    print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
