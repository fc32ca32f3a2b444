"""Callbacks: every finished evaluation reaches each logger; a failing one never stops a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evo_engine.analysis.history import load_history
from evo_engine.job.callbacks import CallbackError, CallbackSet, EvaluationRecord, check_callbacks

REPO = Path(__file__).resolve().parent.parent
SPHERE = REPO / "scenarios" / "sphere.py"
TESTS = Path(__file__).resolve().parent


def evo(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]),
           "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, "-m", "evo_engine", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=180, env=env)


def test_every_evaluation_reaches_the_logger_and_a_failing_one_warns(tmp_path: Path) -> None:
    r = evo(SPHERE, "--workers", 0, "--run-dir", "r", "--set", "max_evals=25",
            "--callback", "fake_loggers:Exploding", "--callback", "fake_loggers:JsonLinesLogger",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("callback 'fake_loggers:Exploding' failed") == 1
    lines = [json.loads(x) for x in (tmp_path / "r/fake_callback.jsonl").read_text().splitlines()]
    assert lines[-1] == {"closed": True}
    recs = lines[:-1]
    h = load_history(tmp_path / "r")
    assert [x["uid"] for x in recs] == h["uid"].tolist(), "one record per evaluation, in order"
    assert [x["n_finished"] for x in recs] == list(range(1, 26))
    assert np.allclose([x["fitness"] for x in recs], h["fitness"])
    assert recs[-1]["best"] == pytest.approx(float(np.nanmin(h["fitness"])))
    assert recs[0]["scenario"] == "sphere" and set(recs[0]["params"]) == {"lr", "layers", "activation"}
    events = (tmp_path / "r/log.jsonl").read_text()
    assert events.count('"event": "callback_failed"') == 26  # 25 records + close


def test_unknown_or_unimportable_callbacks_exit_2_before_the_run(tmp_path: Path) -> None:
    for name, match in [("tensorbored", "unknown callback 'tensorbored'"),
                        ("no_such_module:X", "cannot be imported")]:
        r = evo(SPHERE, "--workers", 0, "--run-dir", "r", "--callback", name, cwd=tmp_path)
        assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "r").exists()
    with pytest.raises(CallbackError, match="unknown callback"):
        check_callbacks(["nope"])


def record(uid: int, fitness: float | None = 1.0, state: str = "COMPLETE") -> EvaluationRecord:
    return EvaluationRecord(uid=uid, island=0, state=state, fitness=fitness,
                            params={"lr": 0.01, "act": "relu", "n": 3}, metrics={"loss": 0.5},
                            operator="ga", worker=0, duration_s=0.1, n_finished=uid + 1,
                            best_fitness=fitness, curve=[(1, 2.0), (2, 1.5)])


def test_a_logger_that_cannot_start_is_skipped_with_a_warning(tmp_path: Path) -> None:
    import fake_loggers  # noqa: F401 - importable because tests/ is on sys.path under pytest

    warnings: list[str] = []
    sys.modules["broken_logger_mod"] = type(sys)("broken_logger_mod")
    sys.modules["broken_logger_mod"].F = lambda run_dir, scenario: 1 / 0
    cbs = CallbackSet.create(["broken_logger_mod:F"], tmp_path, "s", warnings.append)
    assert not cbs.loggers and "could not start" in warnings[0]
    cbs(record(0))
    cbs.close()


def test_tensorboard_logger_writes_event_files(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cbs = CallbackSet.create(["tensorboard"], tmp_path, "s", pytest.fail)
    for uid in range(3):
        cbs(record(uid, fitness=3.0 - uid))
    cbs(record(3, fitness=None, state="FAILED"))
    cbs.close()
    assert not cbs.failures
    acc = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    fit = acc.Scalars("fitness")
    assert [e.step for e in fit] == [1, 2, 3] and [e.value for e in fit] == [3.0, 2.0, 1.0]
    assert [e.step for e in acc.Scalars("best_fitness")] == [1, 2, 3]
    assert len(acc.Scalars("metrics/loss")) == 4 and "params/act" not in acc.Tags()["scalars"]
    assert len(list((tmp_path / "tensorboard").glob("uid*"))) == 3, "one HParams run per complete"


def test_mlflow_logger_writes_one_run_per_evaluation(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    cbs = CallbackSet.create(["mlflow"], tmp_path, "scen", pytest.fail)
    cbs(record(0, fitness=0.25))
    cbs(record(1, fitness=None, state="PRUNED"))
    cbs.close()
    assert not cbs.failures
    # Read back as a user would, from a fresh process with a plain environment: the store is
    # one MLflow supports without MLFLOW_ALLOW_FILE_STORE (the file store needs it in MLflow 3).
    import os
    import subprocess
    import sys

    code = ("import sys; from mlflow.tracking import MlflowClient; c = MlflowClient("
            "tracking_uri=sys.argv[1]); e = c.get_experiment_by_name('scen'); "
            "print(sorted(r.data.tags['evo_engine.uid'] for r in c.search_runs([e.experiment_id])))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['0', '1']"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("scen")
    runs = {r.data.tags["evo_engine.uid"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"0", "1"}
    assert runs["0"].data.metrics["fitness"] == 0.25 and runs["0"].data.params["act"] == "relu"
    assert runs["0"].info.status == "FINISHED" and runs["1"].info.status == "KILLED"
    assert "fitness" not in runs["1"].data.metrics


def test_wandb_logger_writes_an_offline_run(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cbs = CallbackSet.create(["wandb"], tmp_path, "scen", pytest.fail)
    for uid in range(3):
        cbs(record(uid, fitness=1.0 + uid))
    cbs.close()
    assert not cbs.failures
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_the_queue_is_bounded_and_drops_the_oldest_with_a_count() -> None:
    # A logger slower than the results held every record of the run in an unbounded queue
    # (issue 30.5): now at most `limit` wait; the oldest go first, counted and warned once.
    import threading

    release = threading.Event()
    seen: list[int] = []

    class Slow:
        def log(self, rec: EvaluationRecord) -> None:
            release.wait(10)
            seen.append(rec.uid)

        def close(self) -> None:
            pass

    warnings: list[str] = []
    cbs = CallbackSet({"slow": Slow()}, warnings.append, limit=5)
    cbs(record(0))
    for _ in range(200):  # until the logger thread holds record 0 (blocked in log)
        if not cbs._queue:  # noqa: SLF001
            break
        threading.Event().wait(0.01)
    for uid in range(1, 21):
        cbs(record(uid))
    assert len(cbs._queue) == 5  # noqa: SLF001 - the bound itself
    assert cbs.dropped == 15 and sum("fell 5 evaluations behind" in w for w in warnings) == 1
    release.set()
    cbs.close(timeout=10)
    assert seen == [0, 16, 17, 18, 19, 20], "the newest survive, in order"
    assert "15 evaluation record(s) were dropped" in warnings[-1]


def test_a_callback_module_that_fails_to_import_is_bad_input_exit_2(tmp_path: Path) -> None:
    # The user's own module: a syntax error or an exception at import is their input, not
    # evo_engine's bug (it was a traceback, "internal error" and exit 1).
    (tmp_path / "my_syntax_logger.py").write_text("def make(run_dir, scenario)\n    pass\n")
    (tmp_path / "my_raising_logger.py").write_text("import os\nraise RuntimeError('no token')\n")
    r = evo(SPHERE, "--workers", 0, "--run-dir", "r", "--callback", "my_syntax_logger:make",
            cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "callback 'my_syntax_logger:make' cannot be imported" in r.stderr
    assert "SyntaxError" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(CallbackError, match=r"'my_raising_logger:make' cannot be imported: "
                                                r"RuntimeError: no token"):
            check_callbacks(["my_raising_logger:make"])
    finally:
        sys.path.remove(str(tmp_path))


def test_a_logger_that_calls_sys_exit_is_a_failing_logger_not_a_dead_thread() -> None:
    # A logger library that gives up with sys.exit() (SystemExit is no Exception) ended the
    # logger thread silently: every later record waited in the queue and was dropped, with a
    # warning that blamed slowness, and the other loggers got nothing more either.
    seen: list[int] = []

    class Quitter:
        def log(self, rec: EvaluationRecord) -> None:
            if rec.uid == 1:
                sys.exit(1)

        def close(self) -> None:
            sys.exit(1)

    class Keeper:
        def log(self, rec: EvaluationRecord) -> None:
            seen.append(rec.uid)

        def close(self) -> None:
            seen.append(-1)

    warnings: list[str] = []
    cbs = CallbackSet({"quitter": Quitter(), "keeper": Keeper()}, warnings.append, limit=100)
    for uid in range(5):
        cbs(record(uid))
    cbs.close(timeout=10)
    assert seen == [0, 1, 2, 3, 4, -1]
    assert cbs.failures == {"quitter": 2}
    assert sum("callback 'quitter' failed (SystemExit: 1)" in w for w in warnings) == 1
