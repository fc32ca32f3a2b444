"""Searches replayed against the recorded table of the cpu advection task (issue 24, item 6).

The live verdict (``advection.py``) affords 5 searches per arm; this one runs 50 in minutes,
against real trainings recorded once by ``benchmarks/scenarios/advection_lr_table.py`` (200
learning rates × 3 training seeds, each with its validation fitness and the TEST fitness of
the same weights), as FCNet/HPOBench tables are used.

Arms, as ``advection.py`` runs them (its classes): the engine with ``advection_lr``'s
settings (surrogate, hypertiling design, population 8, ``intensify`` 3; its pick is the
incumbent), random search (its best observed) and Optuna TPE, multivariate with the constant
liar (``study.best_trial``). Every search runs as ``make run``'s workers do: 2 jobs of 4
candidates in flight, a job's 4 results told together, the oldest job first.

An evaluation at learning rate ``lr`` reads the table's nearest learning rate (in log lr; the
table's spacing is about 0.02 decades, 5 % in lr) and returns the validation fitness of one of
its recorded replicates: a search's m-th evaluation of that table entry gets replicate
``(j0 + m) mod 3``, with ``j0`` drawn from the search seed and the entry, so up to three
evaluations of one entry see three different trainings; once a search has read all three,
its next evaluation there reads the nearest entry with a replicate it has not read (so no
training is read twice by one search; the output gives how far reads moved, in decades of
lr). A replicate that diverged is a failed evaluation (NaN). One difference from a live run:
the table's trainings all have seeds of their own, so the engine's races, which a live run
trains on common seeds (the seeds' effect cancels from a comparison), are unpaired here; the
replay does not credit the engine with that.

Scored on TEST, which no search reads: a pick's ``true`` value is the mean test fitness of the
15 recorded trainings nearest it that its search never read (its own entry's unread
replicates first: fresh seeds of the pick, as the live verdict's retraining; then its
neighbours', about ±0.05 decades). A training the search read is never used: its test value
moves with the validation value the search picked it for (validation and test of one
training's weights correlate near 1 within an entry, printed; validation is the mean of the
last 3 epochs, test the final weights). A diverged training is left out of the mean and
counted (``diverged``). Regret = true − the best true value of a search that read nothing,
over the entries none of whose 15 trainings diverged. Reported at 10, 20, 24 and 40
evaluations: per arm the median and quartiles of regret over searches, and the engine against
each arm paired by search seed (wins, losses, ties; Wilcoxon signed-rank and sign test p,
two-sided, uncorrected for the 4 budgets × arms: read the pattern, not one p value).

    python benchmarks/advection_table.py --table benchmarks/tables/advection_lr_table.csv

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
from advection import (  # noqa: E402
    ARMS,
    SCENARIOS,
    EngineSearch,
    TPESearch,
    provenance,
    quartiles,
)

from evo_engine.scenario import load_scenario  # noqa: E402

BUDGETS = (10, 20, 24, 40)
"""Evaluations at which picks are scored: the issue's 10 / 20 / 40 and the scenario's 24."""
SCORE_TRAININGS = 15
"""Recorded trainings that make a pick's true value: the nearest ones (in log lr) that its
search never read; a pick's own unread replicates come first (about ±0.05 decades)."""
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
        scored = [self.truth(i) for i in range(len(self.lr))]
        self.true = np.array([t for t, _ in scored])
        """Each entry's true value for a search that read none of its neighbours' trainings."""
        self.diverged = np.array([d for _, d in scored])
        self.own = np.array([np.nanmean(t) if np.isfinite(t).any() else math.nan
                             for t in self.test])
        clean = np.where(self.diverged == 0, self.true, np.nan)
        if not np.isfinite(clean).any():
            raise ValueError("no table entry has a neighbourhood of trainings that all trained")
        self.best = int(np.nanargmin(clean))
        """The reference entry of regret: the best true value whose trainings all trained (a
        pick where some diverge would fail some users' trainings; it is no reference)."""
        self.best_true = float(self.true[self.best])

    @classmethod
    def read(cls, path: Path) -> Table:
        """The CSV ``python -m evo_engine analyze RUN --csv`` writes of the table's run."""
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        names = rows[0].keys() if rows else ()
        reps = sorted(int(k[len("val_fitness_r"):]) for k in names
                      if k.startswith("val_fitness_r") and k[len("val_fitness_r"):].isdigit())
        if not rows or not reps or "lr" not in names or any(
                f"test_fitness_r{j}" not in names for j in reps):
            raise ValueError(f"{path} is not a table of advection_lr_table.py's run (no lr, "
                             "val_fitness_r* and test_fitness_r* columns)")
        # A FAILED row must be a learning rate whose every training diverged: anything else (a
        # crash, a timeout, a killed stack) would be replayed as a property of the lr.
        broken = [r.get("uid", "?") for r in rows if r.get("state") == "FAILED"
                  and "TrainingDiverged" not in (r.get("error") or "")]
        if broken:
            raise ValueError(f"{path}: evaluations {', '.join(broken[:8])} failed for another "
                             "reason than diverged trainings; rebuild or resume the table")

        def num(cell: str) -> float:
            return float(cell) if cell not in ("", None) else math.nan

        lr = np.array([num(r["lr"]) for r in rows])
        # a FAILED evaluation (every replicate diverged) has no per-replicate cells: NaN
        val = np.array([[num(r.get(f"val_fitness_r{j}", "")) for j in reps] for r in rows])
        test = np.array([[num(r.get(f"test_fitness_r{j}", "")) for j in reps] for r in rows])
        return cls(lr, val, test)

    def truth(self, i: int, read: set[tuple[int, int]] | frozenset = frozenset()
              ) -> tuple[float, int]:
        """(mean TEST fitness of the ``SCORE_TRAININGS`` trainings nearest entry ``i`` that are
        not in ``read``, how many of them diverged). Nearest by |log lr| distance, ties by
        entry and replicate; a diverged training is left out of the mean and counted."""
        reps = self.replicates
        distance = np.repeat(np.abs(self.log_lr - self.log_lr[i]), reps)
        for e, j in read:
            distance[e * reps + j] = np.inf
        near = np.argsort(distance, kind="stable")
        near = near[np.isfinite(distance[near])][:SCORE_TRAININGS]
        values = self.test.ravel()[near]
        ok = np.isfinite(values)
        if not values.size:
            return math.nan, 0  # every training read: nothing can score it
        # Trainings left, none of which trained: the pick never trains, the worst (as the live
        # verdict scores it), not a value left out of the arm's median and the paired tests.
        return (float(values[ok].mean()) if ok.any() else math.inf), int((~ok).sum())

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
        self.read: set[tuple[int, int]] = set()
        """(entry, replicate) of every training this search read."""
        self.distances: list[float] = []
        """|log10 lr asked - log10 lr read| of every read, in decades."""

    def __call__(self, params: dict) -> float:
        t, reps = self.table, self.table.replicates
        x = math.log10(float(params["lr"]))
        for i in map(int, np.argsort(np.abs(t.log_lr - x), kind="stable")):
            m = sum((i, j) in self.read for j in range(reps))  # its replicates read so far
            if m < reps:
                break
        else:
            raise RuntimeError("the search read every training of the table")
        self.distances.append(abs(float(t.log_lr[i]) - x))
        j0 = int(np.random.default_rng([self.seed, i]).integers(reps))
        j = (j0 + m) % reps
        self.read.add((i, j))
        return float(t.val[i, j])


def run_search(method: Any, objective: Replay, search: int, evals: int,
               budgets: tuple[int, ...]) -> dict[int, tuple[dict, frozenset]]:
    """``JOBS`` jobs of ``BATCH`` candidates in flight, the oldest job told first; after each
    budget's last tell, the pick and the trainings read so far (what may not score it)."""
    jobs: deque[list[tuple[Any, dict, int]]] = deque()
    picks: dict[int, tuple[dict, frozenset]] = {}
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
                picks[method.told] = ({} if pick is None else pick,
                                      frozenset(getattr(objective, "read", ())))
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
            label=f"true value: mean test of the {SCORE_TRAININGS} nearest trainings")
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


def score(table: Table, pick: dict, read: set[tuple[int, int]]) -> dict[str, float]:
    """A pick's true value (the nearest trainings its search never read), regret, own value."""
    if "lr" not in pick:  # every evaluation so far failed: no pick, the worst
        return {"true": math.inf, "own": math.nan, "regret": math.inf, "lr": math.nan,
                "diverged": 0}
    i = table.nearest(float(pick["lr"]))
    true, diverged = table.truth(i, read)
    return {"true": true, "own": float(table.own[i]), "regret": true - table.best_true,
            "lr": float(pick["lr"]), "diverged": diverged}


def summarize_regret(regret: list[float]) -> dict[str, Any]:
    """An arm's regrets at one budget: quartiles where a search scored inf (``quartiles``), the
    mean, and how many searches named nothing that trains (inf)."""
    q1, med, q3 = quartiles(regret)
    return {"median_regret": med, "q1": q1, "q3": q3, "mean_regret": float(np.mean(regret)),
            "no_pick": sum(math.isinf(r) for r in regret)}


def compare(engine: list[float], other: list[float]) -> dict[str, Any]:
    """Paired by search seed: wins (engine lower regret), losses, ties; two-sided p values."""
    from scipy.stats import binomtest, wilcoxon

    # inf (no pick, or one that never trains) is the worst regret: two of them tie, and in
    # the signed-rank test its difference ranks above every finite one.
    pairs = [(a, b) for a, b in zip(engine, other, strict=True)
             if not (math.isnan(a) or math.isnan(b))]
    wins = sum(a < b for a, b in pairs)
    losses = sum(a > b for a, b in pairs)
    raw = [a - b for a, b in pairs if a != b]
    top = max((abs(d) for d in raw if math.isfinite(d)), default=0.0)
    diffs = [d if math.isfinite(d) else math.copysign(2.0 * top + 1.0, d) for d in raw]
    signed = [0.0 if a == b else a - b for a, b in pairs]  # two infs tie: 0, not NaN
    return {
        "wins": wins, "losses": losses, "ties": len(pairs) - wins - losses,
        "median_difference": float(np.median(signed)) if pairs else math.nan,
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
    if not arms or any(a not in ARMS for a in arms) or len(set(arms)) != len(arms):
        parser.error(f"--arms takes a comma list of {', '.join(ARMS)}, each once, got "
                     f"{args.arms!r}")
    if args.plot is not None and (args.plot.suffix.lower() not in (".png", ".svg", ".pdf")
                                  or not args.plot.parent.is_dir()):
        parser.error(f"--plot {args.plot}: needs an existing folder and a .png, .svg or .pdf "
                     "name")
    if args.searches < 0 or args.first_seed < 1 or args.min_entries < 2:
        parser.error("need --searches >= 0, --first-seed >= 1, "
                     "--min-entries >= 2")
    if not args.table.is_file():
        parser.error(f"--table {args.table}: no such file")
    try:
        table = Table.read(args.table)
    except (ValueError, KeyError, csv.Error, UnicodeDecodeError, OSError) as exc:
        parser.error(f"--table: {exc}")
    if len(table.lr) < args.min_entries:
        parser.error(f"--table {args.table} holds {len(table.lr)} learning rates, fewer than "
                     f"--min-entries {args.min_entries} (a partial build?)")
    origin = provenance(argv)  # before the job writes its own files or a commit lands
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
                per_arm[arm][b].append(score(table, *picks[b]))
        print(f"search seed {seed} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    results: dict[str, Any] = {}
    for b in BUDGETS if seeds else ():
        row: dict[str, Any] = {}
        for arm in arms:
            regret = [s["regret"] for s in per_arm[arm][b]]
            row[arm] = {**summarize_regret(regret),
                        "median_true": float(np.nanmedian([s["true"] for s in per_arm[arm][b]])),
                        "median_own": float(np.nanmedian([s["own"] for s in per_arm[arm][b]])),
                        "picks_scored_with_diverged_trainings": int(sum(
                            s["diverged"] > 0 for s in per_arm[arm][b]))}
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
        "best_true_lr": float(table.lr[table.best]),
        "score_trainings": SCORE_TRAININGS, "jobs": JOBS, "batch": BATCH, "budgets": list(BUDGETS),
        "searches": args.searches, "first_search_seed": args.first_seed,
        "read_distance_decades": {
            a: {"median": float(np.median(d)), "p95": float(np.percentile(d, 95)),
                "max": float(np.max(d))} for a, d in moved.items() if d},
        "results": results,
        "per_search": {a: {str(b): per_arm[a][b] for b in BUDGETS} for a in arms},
        "seconds": round(time.perf_counter() - start, 1), **origin,
    }
    print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
