"""The recorded table of the cpu advection task and the searches replayed against it (issue 24).

``benchmarks/scenarios/advection_lr_table.py`` turns one evaluation's replicate trainings into
a record; ``benchmarks/advection_table.py`` reads the exported table, hands each search's
evaluations recorded trainings and scores picks on the neighbours' TEST values. The numbers
below are chosen so that a wrong neighbour count, a replicate read twice or the own entry's
values instead of the neighbours' give other answers.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import advection_table as bench  # noqa: E402


def _scenario_module():
    spec = importlib.util.spec_from_file_location(
        "advection_lr_table", ROOT / "benchmarks" / "scenarios" / "advection_lr_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# 7 entries at uneven log10 lr (so no two neighbours tie); test values 10 * entry + replicate
LOG_LR = np.array([-4.0, -3.6, -3.1, -2.5, -2.0, -1.6, -0.9])
LR = 10.0 ** LOG_LR
VAL = np.array([[i + 0.1 * j for j in range(3)] for i in range(7)])
TEST = np.array([[10.0 * i + j for j in range(3)] for i in range(7)])


def table() -> bench.Table:
    test = TEST.copy()
    test[6, 0] = math.nan  # a diverged replicate is left out of the means
    return bench.Table(LR[::-1].copy(), VAL[::-1].copy(), test[::-1].copy())  # any row order


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def _entries(entries: list[int]) -> list[float]:
    return [10.0 * i + j for i in entries for j in range(3) if (i, j) != (6, 0)]


def test_true_value_is_the_mean_test_of_the_nearest_unread_trainings() -> None:
    t = table()
    assert np.allclose(t.lr, LR)  # sorted
    # nothing read: the 15 nearest trainings are those of the 5 nearest entries, itself included
    assert t.true[0] == pytest.approx(_mean(_entries([0, 1, 2, 3, 4]))) == pytest.approx(21.0)
    assert t.true[3] == pytest.approx(_mean(_entries([1, 2, 3, 4, 5]))) == pytest.approx(31.0)
    # entry 4: 5 (0.4 decades), 3 (0.5), then 2 and 6 both at 1.1: 15 trainings, one diverged
    assert t.true[4] == pytest.approx(_mean(_entries([2, 3, 4, 5, 6])))
    assert (t.diverged[4], t.diverged[0], t.diverged[6]) == (1, 0, 1)
    assert t.own[6] == pytest.approx(61.5) and t.own[2] == pytest.approx(21.0)
    assert t.best_true == pytest.approx(21.0)
    # what the search read is never used: entry 4's pick after reading all of entries 4 and 3
    read = {(4, j) for j in range(3)} | {(3, j) for j in range(3)}
    true, diverged = t.truth(4, read)
    assert true == pytest.approx(_mean(_entries([0, 1, 2, 5, 6])))  # 375 / 14
    assert diverged == 1
    scored = bench.score(t, {"lr": 1e-2}, read)
    assert scored["true"] == pytest.approx(375 / 14) and scored["diverged"] == 1
    assert scored["regret"] == pytest.approx(375 / 14 - 21.0) and scored["own"] == 41.0
    # one replicate read: the pick's two unread replicates still come first
    true, _ = t.truth(0, {(0, 1)})
    assert true == pytest.approx(_mean([0.0, 2.0] + _entries([1, 2, 3, 4]) + [50.0]))
    # No pick yet (every evaluation failed) is the worst a search can do: a loss, as in the
    # live verdict (advection.py scores a pick that never trains inf), not left out.
    assert bench.score(t, {}, set())["regret"] == math.inf


def test_a_search_never_reads_one_training_twice() -> None:
    t = table()
    replay = bench.Replay(t, search_seed=7)
    reads = [replay({"lr": 10 ** -2.1}) for _ in range(6)]  # nearest entry 4 (10^-2), then 3, 5
    # entry 4's three replicates, each once, in the rotation j0, j0+1, j0+2
    assert sorted(reads[:3]) == pytest.approx([4.0, 4.1, 4.2])
    j0 = int(np.random.default_rng([7, 4]).integers(3))
    assert reads[:3] == pytest.approx([4 + 0.1 * ((j0 + m) % 3) for m in range(3)])
    # then the next nearest entry (10^-2.5 is 0.4 decades away, 10^-1.6 0.5): entry 3
    assert sorted(reads[3:6]) == pytest.approx([3.0, 3.1, 3.2])
    assert replay.distances[:3] == pytest.approx([0.1] * 3)
    assert replay.distances[3:6] == pytest.approx([0.4] * 3)
    assert replay.read == {(4, 0), (4, 1), (4, 2), (3, 0), (3, 1), (3, 2)}
    other = bench.Replay(t, search_seed=8)  # another search starts afresh
    assert sorted(other({"lr": 1e-2}) for _ in range(3)) == pytest.approx([4.0, 4.1, 4.2])


def test_jobs_are_told_oldest_first_and_picks_taken_at_each_budget() -> None:
    events: list[tuple[str, int]] = []

    class Counting:
        told, asked = 0, 0

        def ask(self, search: int):
            self.asked += 1
            events.append(("ask", self.asked))
            return self.asked, {"lr": 1e-3}, 0

        def tell(self, handle, value) -> None:
            self.told += 1
            events.append(("tell", handle))

        def pick(self):
            return {"lr": 1e-3, "at": self.told}

    picks = bench.run_search(Counting(), lambda p: 0.0, 0, evals=10, budgets=(4, 10))
    assert picks == {4: ({"lr": 1e-3, "at": 4}, frozenset()),
                     10: ({"lr": 1e-3, "at": 10}, frozenset())}
    asks = [("ask", k) for k in range(1, 11)]
    tells = [("tell", k) for k in range(1, 11)]
    # two jobs of 4 asked; the first told; the third job (2 left) asked; then the rest in order
    assert events == asks[:8] + tells[:4] + asks[8:] + tells[4:]


def test_paired_comparison_counts_and_tests() -> None:
    c = bench.compare([1.0, 2.0, 3.0, 4.0, math.nan], [2.0, 2.0, 5.0, 3.0, 1.0])
    assert (c["wins"], c["losses"], c["ties"]) == (2, 1, 1)
    assert c["median_difference"] == pytest.approx(-0.5)
    assert c["sign_p"] == pytest.approx(1.0)


def test_a_pick_none_of_whose_trainings_trained_is_a_loss_not_left_out() -> None:
    # A pick whose 15 nearest unread trainings all diverged scored NaN: it was dropped from
    # the arm's median and from the paired tests, where the live verdict counts it a loss.
    t = table()
    every = {(e, j) for e in range(len(t.lr)) for j in range(3)}
    assert math.isnan(t.test[6, 0])  # entry 6's first training diverged
    true, diverged = t.truth(6, every - {(6, 0)})
    assert true == math.inf and diverged == 1  # only a diverged training left: it never trains
    true, diverged = t.truth(6, every)
    assert math.isnan(true) and diverged == 0  # nothing unread at all: no value
    c = bench.compare([1.0, math.inf, 3.0, math.inf], [2.0, 2.0, math.inf, math.inf])
    assert (c["wins"], c["losses"], c["ties"]) == (2, 1, 1)
    assert math.isfinite(c["wilcoxon_p"]) and math.isfinite(c["median_difference"])
    summary = bench.summarize_regret([0.1, 0.2, math.inf, 0.3])
    assert (summary["q1"], summary["median_regret"]) == (pytest.approx(0.175), 0.25)
    assert summary["q3"] == math.inf and summary["no_pick"] == 1


def _write(path: Path, rows: int) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "state", "lr", "fitness", *(f"val_fitness_r{j}" for j in range(3)),
                    *(f"test_fitness_r{j}" for j in range(3))])
        for u in range(rows):
            w.writerow([u, "finished", 10 ** (-5 + 4 * u / rows), 0.1, 0.1, 0.1, 0.1,
                        0.1, 0.1, 0.1])


def test_bad_tables_are_refused_with_exit_2(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "advection_table.py"),
                               *args], capture_output=True, text=True, timeout=120)

    partial = tmp_path / "partial.csv"
    _write(partial, 20)
    r = run("--table", str(partial))
    assert r.returncode == 2 and "holds 20 learning rates" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    other = tmp_path / "other.csv"
    other.write_text("uid,state,x\n0,finished,1\n")
    r = run("--table", str(other))
    assert r.returncode == 2 and "not a table" in r.stderr and "Traceback" not in r.stderr
    r = run("--table", str(tmp_path / "missing.csv"))
    assert r.returncode == 2 and "no such file" in r.stderr
    full = tmp_path / "full.csv"
    _write(full, 200)
    for args, says in ((["--arms", "engine,random,random"], "each once"),
                       (["--plot", str(tmp_path / "no" / "t.png")], "existing folder"),
                       (["--plot", str(tmp_path / "t.gif")], ".png")):
        r = run("--table", str(full), "--searches", "0", *args)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
    # a FAILED row whose error is not a diverged training (a crash) must not become data
    rows = full.read_text().splitlines()
    body = [r.replace("finished", "FAILED") + ",RuntimeError: worker died" if r.startswith("3,")
            else r + "," for r in rows[1:]]
    crashed = tmp_path / "crashed.csv"
    crashed.write_text("\n".join([rows[0] + ",error", *body]) + "\n")
    r = run("--table", str(crashed), "--searches", "0")
    assert r.returncode == 2 and "failed for another reason" in r.stderr, r.stderr
    no_test = tmp_path / "no_test.csv"
    no_test.write_text("uid,state,lr,val_fitness_r0\n0,finished,0.001,0.1\n")
    r = run("--table", str(no_test), "--min-entries", "2")
    assert r.returncode == 2 and "not a table" in r.stderr


def test_a_table_row_holds_every_replicate_and_the_mean_of_those_that_trained() -> None:
    mod = _scenario_module()
    from evo_engine.sciml.training import TrainingDiverged

    recs = [{"fitness": 0.05, "test_fitness": 0.06, "test_nrmse": 0.5},
            TrainingDiverged("diverged"),
            {"fitness": 0.07, "test_fitness": 0.10, "test_nrmse": 0.7}]
    row = mod._row(recs, [11, 12, 13])
    assert row["fitness"] == pytest.approx(0.06) and row["test_fitness"] == pytest.approx(0.08)
    assert row["replicates_ok"] == 2 and math.isnan(row["val_fitness_r1"])
    assert (row["seed_r0"], row["val_fitness_r2"], row["test_fitness_r2"]) == (11, 0.07, 0.10)
    with pytest.raises(TrainingDiverged):
        mod._row([TrainingDiverged("a"), TrainingDiverged("b"), TrainingDiverged("c")], [1, 2, 3])
    seeds = {mod.replicate_seed(s, j) for s in range(50) for j in range(3)}
    assert len(seeds) == 150  # no two evaluations or replicates share a training seed


def test_the_tables_seed_noise_is_pooled_within_entries() -> None:
    lr = np.array([1e-4, 1e-3, 1e-2])
    val = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 8.0], [1.0, math.nan, 1.0]])
    test = np.array([[2.0, 4.0, 6.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    n = bench.Table(lr, val, test).noise()
    # entries 0 and 1: squared deviations 2 and 6 over 4 degrees of freedom
    assert n["val_seed_std"] == pytest.approx(math.sqrt(8 / 4))
    assert n["test_seed_std"] == pytest.approx(math.sqrt(8 / 4))
    # deviations (-1,0,1)*(-2,0,2) -> 4; (-1,-1,2)*0 -> 0; norms sqrt(8) * sqrt(8)
    assert n["val_test_within_corr"] == pytest.approx(4 / 8)
    assert n["entries_all_replicates"] == 2 and n["entries_with_a_diverged_replicate"] == 1


def test_a_retraining_that_diverges_is_left_out_of_the_live_score_and_counted(monkeypatch) -> None:
    # benchmarks/advection.py crashed when one of a pick's three retrainings diverged (TPE's
    # search 12 picked lr near the cliff); it must score the others and say how many diverged,
    # and a pick none of whose retrainings trains scores inf (a loss to any arm).
    spec = importlib.util.spec_from_file_location("advection_bench", ROOT / "benchmarks" / "advection.py")
    live = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(live)
    from evo_engine.sciml.training import TrainingDiverged

    outcomes = {1: 0.050, 2: None, 3: 0.054}

    def fake(params, ctx, task):
        value = outcomes[ctx.seed]
        if value is None:
            raise TrainingDiverged("training diverged in epoch 4")
        return {"test_fitness": value, "test_nrmse": 2 * value, "fitness": value - 0.001}

    monkeypatch.setattr(live, "advection_test_metrics", fake)

    class Pool:
        def map(self, fn, *args):
            return map(fn, *args)

    got = live.score_on_test({"lr": 0.02}, [1, 2, 3], Pool(), task=None)
    assert got["test_fitness"] == pytest.approx(0.052)
    assert got["test_fitness_per_seed"] == [0.05, None, 0.054]
    assert got["retrainings_diverged"] == 1
    assert got["test_nrmse"] == pytest.approx(0.104)
    outcomes.update({1: None, 3: None})
    none = live.score_on_test({"lr": 0.03}, [1, 2, 3], Pool(), task=None)
    assert none["test_fitness"] == math.inf and none["retrainings_diverged"] == 3
    assert live.paired([got], [none]) == {"wins": 1, "losses": 0, "ties": 0, "pairs": 1}


def _live():
    spec = importlib.util.spec_from_file_location("advection_bench", ROOT / "benchmarks" / "advection.py")
    live = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(live)
    return live


def test_an_arm_with_a_pick_that_never_trained_keeps_finite_quartiles() -> None:
    # A pick none of whose retrainings trains scores inf (worse than any). np.percentile
    # interpolates a quartile that falls exactly on a value below an inf as x + 0 * inf = NaN:
    # the median of 0.05, 0.06, 0.07, inf, inf is 0.07, and the q3 of four searches and one
    # inf is the fourth value.
    live = _live()
    with np.errstate(invalid="ignore"):  # as a benchmark run sees it: NaN, and a warning
        two = live.summarize([{"test_fitness": v} for v in (0.05, math.inf, 0.06, math.inf, 0.07)])
    assert (two["q1"], two["median"], two["q3"]) == (0.06, 0.07, math.inf)
    with np.errstate(invalid="ignore"):
        one = live.summarize([{"test_fitness": v} for v in (0.05, 0.06, 0.07, 0.08, math.inf)])
    assert (one["q1"], one["median"], one["q3"]) == (0.06, 0.07, 0.08)
    seven = live.summarize([{"test_fitness": v} for v in (0.01, 0.02, 0.03, 0.04, 0.05, 0.06,
                                                          math.inf)])
    assert (seven["q1"], seven["median"], seven["q3"]) == pytest.approx((0.025, 0.04, 0.055))
    every = live.summarize([{"test_fitness": math.inf}] * 3)
    assert (every["q1"], every["median"], every["q3"]) == (math.inf,) * 3


def test_a_resumed_tpe_search_continues_its_sampler_instead_of_replaying_it(tmp_path: Path) -> None:
    # The live verdict's TPE arm keeps an Optuna journal per search and reopens it after a
    # stop. A sampler made afresh with the search seed draws its first points again: 4 trials
    # before the stop, and the 4 after it were the same 4 learning rates (duplicate trainings
    # an uninterrupted search never spends). Resumed, it must ask what it would have asked.
    # Optuna is the benchmarks' extra (`pip install -e ".[bench]"`), not the suite's.
    pytest.importorskip("optuna")
    live = _live()
    from evo_engine.space import Float, Space

    space = Space(lr=Float(1e-5, 1e-1, log=True))

    def run(folder: Path, stop_after: int | None, legacy: bool = False) -> list[float]:
        folder.mkdir()
        search = live.TPESearch(space, 3, folder)
        for n in range(12):
            if n == stop_after:
                if legacy:  # a folder from before the sampler was kept
                    (folder / "sampler.pkl").unlink()
                search = live.TPESearch(space, 3, folder)
            handle, params, _ = search.ask(2)
            search.tell(handle, (math.log10(params["lr"]) + 2.0) ** 2)
        return [t.params["lr"] for t in search.study.get_trials()]

    straight = run(tmp_path / "straight", None)
    resumed = run(tmp_path / "resumed", 4)
    assert len(set(resumed)) == len(resumed) == 12
    assert resumed == straight
    legacy = run(tmp_path / "legacy", 4, legacy=True)
    assert len(set(legacy)) == 12 and legacy[:4] == straight[:4]


def test_provenance_names_the_commit_the_job_started_from(tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    # A verdict runs for hours in a worktree where commits land meanwhile: the JSON's commit
    # was read when the job ended (the recorded live verdict of 2026-12-06 names 67b157a,
    # its code was 348d688), and its dirty flag after the job wrote its own files.
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                               "user.email=t@t", *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    git("init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-qm", "the code that runs")
    started = git("rev-parse", "HEAD")
    monkeypatch.setattr(sys.modules["advection"], "ROOT", repo)

    def meanwhile(table, path) -> None:  # the job's work: a commit lands, it writes a file
        (repo / "code.py").write_text("x = 2\n")
        git("commit", "-qam", "a commit made while the job ran")
        (repo / "plot.png").write_text("its own output")

    monkeypatch.setattr(bench, "plot_table", meanwhile)
    full = tmp_path / "full.csv"
    _write(full, 200)
    assert bench.main(["--table", str(full), "--searches", "0",
                       "--plot", str(tmp_path / "t.png")]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (out["commit"], out["dirty"]) == (started, False)


def test_a_search_lists_every_commit_that_worked_on_it(tmp_path: Path) -> None:
    # The live verdict outlives a session: its --out is copied to another machine and
    # continued there, after commits landed. A search's record named only the commit of the
    # job that finished it, so a search begun on one commit and ended on another looked like
    # one commit's work.
    spec = importlib.util.spec_from_file_location("advection_bench", ROOT / "benchmarks" / "advection.py")
    live = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(live)
    folder = tmp_path / "search0"
    folder.mkdir()
    first = {"commit": "a" * 40, "dirty": False}
    assert live._jobs_on(folder, first) == ["a" * 40]
    assert live._jobs_on(folder, first) == ["a" * 40]  # the same job's code again: once
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    (copy / "commits.txt").write_bytes((folder / "commits.txt").read_bytes())
    later = {"commit": "b" * 40, "dirty": True}
    assert live._jobs_on(copy, later) == ["a" * 40, "b" * 40 + "+dirty"]
    assert live._jobs_on(copy, first) == ["a" * 40, "b" * 40 + "+dirty", "a" * 40]
    assert (copy / "commits.txt").read_text().split() == ["a" * 40, "b" * 40 + "+dirty",
                                                          "a" * 40]
    older = tmp_path / "begun-before-the-list"  # a search a job of older code began
    older.mkdir()
    (older / "evaluations.jsonl").write_text("{}\n")
    assert live._jobs_on(older, later) == ["unrecorded", "b" * 40 + "+dirty"]
