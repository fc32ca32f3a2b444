"""GPU code paths checked on a CPU: fake ``torch.cuda`` functions and devices.

No GPU runs these tests (CI has none); each fake stands for what CUDA does where it matters:
how many devices a worker sees, which device a state belongs to, when memory is released.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from evo_engine.sciml import checkpoint


class FakeCudaRng:
    """The CUDA generators of ``visible`` devices; device i's state is the byte 100 + i."""

    def __init__(self, visible: int) -> None:
        self.visible = visible
        self.set: list[tuple[int, int]] = []  # (state byte, device index) per set_rng_state

    @staticmethod
    def _index(device: int | str | torch.device = "cuda") -> int:
        d = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        return 0 if d.index is None else d.index

    def get_rng_state(self, device: int | str | torch.device = "cuda") -> torch.Tensor:
        return torch.tensor([100 + self._index(device)], dtype=torch.uint8)

    def get_rng_state_all(self) -> list[torch.Tensor]:
        return [self.get_rng_state(i) for i in range(self.visible)]

    def set_rng_state(self, state: torch.Tensor, device: int | str | torch.device = "cuda") -> None:
        index = self._index(device)
        if index >= self.visible:  # torch.cuda.default_generators[index]
            raise IndexError("tuple index out of range")
        self.set.append((int(state[0]), index))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.visible)
        for module in (torch.cuda, torch.cuda.random):
            monkeypatch.setattr(module, "get_rng_state", self.get_rng_state)
            monkeypatch.setattr(module, "set_rng_state", self.set_rng_state)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", self.get_rng_state_all)


class Placed(torch.nn.Linear):
    """A model whose parameters say they live on ``device`` (no GPU needed to place it)."""

    def __init__(self, device: str) -> None:
        super().__init__(2, 1)
        self.placed = torch.device(device)

    def parameters(self, recurse: bool = True):  # noqa: ANN201 - as nn.Module's
        return iter([SimpleNamespace(device=self.placed)])


def _optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(torch.nn.Linear.parameters(model), lr=1e-3)


@pytest.mark.parametrize("visible", [1, 4])
def test_a_checkpoint_saved_on_cuda_1_restores_its_cuda_rng_on_the_loading_workers_device(
        visible: int, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Saved by a worker training on cuda:1 of a node where it saw 4 GPUs ...
    FakeCudaRng(visible=4).install(monkeypatch)
    saver = Placed("cuda:1")
    checkpoint.save_checkpoint(tmp_path / "c.pt", saver, _optimizer(saver), None, 3, {"lr": 1e-3})
    # ... loaded by a worker on cuda:0 that sees one GPU (a resume in another allocation, or
    # one GPU per task) or the same four.
    loading = FakeCudaRng(visible=visible)
    loading.install(monkeypatch)
    loader = Placed("cuda:0")
    checkpoint.restore(checkpoint.load_checkpoint(tmp_path / "c.pt"), loader, _optimizer(loader),
                       None)
    # The generator the saved training used (cuda:1's, byte 101) goes on on cuda:0, the
    # device this training runs on; no other device is touched.
    assert loading.set == [(101, 0)]


def test_a_cpu_checkpoint_restored_on_a_gpu_leaves_the_cuda_rng_alone(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Linear(2, 1)
    checkpoint.save_checkpoint(tmp_path / "c.pt", model, _optimizer(model), None, 1, {"lr": 1e-3})
    fake = FakeCudaRng(visible=2)
    fake.install(monkeypatch)
    loader = Placed("cuda:1")
    checkpoint.restore(checkpoint.load_checkpoint(tmp_path / "c.pt"), loader, _optimizer(loader),
                       None)
    assert fake.set == []


# -- an out-of-memory evaluation gives its GPU memory back ---------------------------------------


class Activations:
    """Stands for the tensors an evaluation held when it ran out of memory."""


@pytest.mark.parametrize("batched", [False, True])
def test_after_an_out_of_memory_evaluation_the_cache_is_emptied_once_its_tensors_are_gone(
        batched: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import weakref

    from evo_engine.search.messages import EvalState, Task
    from evo_engine.space import Float, Space
    from evo_engine.transports.worker import WorkerRuntime

    held: list[weakref.ref] = []
    alive_at_release: list[bool] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache",
                        lambda: alive_at_release.append(held[0]() is not None))

    def objective(params: dict, ctx: object) -> float:
        activations = Activations()
        held.append(weakref.ref(activations))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def objective_batch(params_list: list, ctxs: list) -> list:
        try:
            objective({}, None)
        except torch.OutOfMemoryError as exc:
            return [exc for _ in params_list]  # as train_advection_batch returns a group's error
        return []

    worker = WorkerRuntime(objective, 0, "cuda:0", None, gpu=False,
                           objective_batch=objective_batch if batched else None)
    genome = Space(x=Float(0, 1)).encode({"x": 0.5})
    tasks = [Task(uid=u, island=0, genome=genome, params={"x": 0.5}, seed=u) for u in (1, 2)]
    results = worker.run_batch(tasks) if batched else [worker.run(tasks[0])]
    assert all(r.state is EvalState.FAILED and "out of memory" in r.error for r in results)
    assert "Tried to allocate 2.00 GiB" in results[0].error and "objective" in results[0].error
    # The cache is emptied after the failed evaluation's tensors were freed: emptied while the
    # traceback still held them, it gave nothing back (and packed ranks could not use it).
    assert alive_at_release and not any(alive_at_release)


@pytest.mark.parametrize("raises", [True, False])
def test_a_stack_that_runs_out_of_memory_is_trained_again_in_halves(
        raises: bool, capfd: pytest.CaptureFixture[str]) -> None:
    # One member too many on the GPU failed all K members of the stack (the error out of the
    # call, or, from train_advection_batch, returned for each member of the group).
    from evo_engine.search.messages import EvalState, Task
    from evo_engine.space import Float, Space
    from evo_engine.transports.worker import WorkerRuntime

    calls: list[list[float]] = []

    def objective_batch(params_list: list, ctxs: list) -> list:
        xs = [p["x"] for p in params_list]
        calls.append(xs)
        if len(xs) > 2 or 0.9 in xs:  # room for two; x = 0.9 does not fit even alone
            err = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
            if raises:
                raise err
            return [err for _ in xs]
        return [10 * x for x in xs]

    worker = WorkerRuntime(lambda p, c: 0.0, 0, "cuda:0", None, gpu=False,
                           objective_batch=objective_batch)
    space = Space(x=Float(0, 1))
    xs = [0.1, 0.2, 0.3, 0.4, 0.9]
    tasks = [Task(uid=10 + i, island=0, genome=space.encode({"x": x}), params={"x": x}, seed=i)
             for i, x in enumerate(xs)]
    results = worker.run_batch(tasks)
    assert [r.uid for r in results] == [10, 11, 12, 13, 14]
    assert [r.state for r in results] == [EvalState.COMPLETE] * 4 + [EvalState.FAILED]
    assert [r.fitness for r in results[:4]] == pytest.approx([1.0, 2.0, 3.0, 4.0])
    assert "out of memory" in results[4].error
    # 5 -> 3 + 2 -> (2 + 1) + (1 + 1): each member with the half that trained it
    assert calls == [xs, [0.1, 0.2, 0.3], [0.1, 0.2], [0.3], [0.4, 0.9], [0.4], [0.9]]
    assert [r.batch for r in results] == [10, 10, 12, 13, 14]
    assert "5 members of a stack of 5 ran out of memory" in capfd.readouterr().err


def _oom_worker(objective_batch, **kw):
    from evo_engine.search.messages import Task
    from evo_engine.space import Float, Space
    from evo_engine.transports.worker import WorkerRuntime

    ticks = iter(range(1000))
    worker = WorkerRuntime(lambda p, c: 0.0, 0, "cuda:0", None, gpu=False,
                           objective_batch=objective_batch, clock=lambda: float(next(ticks)),
                           **kw)
    space = Space(x=Float(0, 1))
    tasks = [Task(uid=10 + i, island=0, genome=space.encode({"x": x}), params={"x": x}, seed=i)
             for i, x in enumerate([0.1, 0.2, 0.3, 0.4])]
    return worker, tasks


def _first_call_fails(fail):
    """A fake objective_batch whose first call, the whole stack of 4, returns (or raises)
    what ``fail(ctxs)`` does, and whose retries train (10 * x); and the list of its calls."""
    calls: list[list[float]] = []

    def objective_batch(params_list: list, ctxs: list) -> list:
        xs = [p["x"] for p in params_list]
        calls.append(xs)
        if len(xs) == 4:
            return fail(ctxs)
        return [10 * x for x in xs]

    return calls, objective_batch


def test_only_members_that_ran_out_of_memory_together_are_trained_again() -> None:
    from evo_engine.search.messages import EvalState

    calls: list[list[float]] = []
    shared = torch.OutOfMemoryError("CUDA out of memory (a group of two)")

    def objective_batch(params_list: list, ctxs: list) -> list:
        xs = [p["x"] for p in params_list]
        calls.append(xs)
        if len(xs) == 1:
            return [10 * xs[0]]
        # 0.1 and 0.3 trained as one group and ran out of memory together; 0.2 and 0.4 each
        # alone and ran out on their own (different errors): retrying them alone buys nothing
        return [shared, torch.OutOfMemoryError("alone"), shared,
                torch.OutOfMemoryError("alone")]

    worker, tasks = _oom_worker(objective_batch)
    results = worker.run_batch(tasks)
    assert calls == [[0.1, 0.2, 0.3, 0.4], [0.1], [0.3]]
    assert [r.state for r in results] == [EvalState.COMPLETE, EvalState.FAILED,
                                         EvalState.COMPLETE, EvalState.FAILED]
    # one batch id per stack that gave results: kept members 11, 13; retried 10, 12 alone
    assert [r.batch for r in results] == [10, 11, 12, 11]


def test_a_stack_that_ran_out_of_memory_keeps_its_pruned_members_and_its_time() -> None:
    from evo_engine.search.messages import EvalState

    def fail(ctxs: list) -> list:
        ctxs[1]._stop = True  # ASHA stopped member 2 before the stack ran out of memory
        raise torch.OutOfMemoryError("CUDA out of memory")

    calls, objective_batch = _first_call_fails(fail)
    worker, tasks = _oom_worker(objective_batch)
    results = worker.run_batch(tasks)
    assert calls == [[0.1, 0.2, 0.3, 0.4], [0.1, 0.3], [0.4]]
    assert [r.state for r in results] == [EvalState.COMPLETE, EvalState.PRUNED,
                                         EvalState.COMPLETE, EvalState.COMPLETE]
    # the worker's busy time is counted once per batch, from the result whose uid is the
    # batch: the failed attempt's time stays with the member it gave a result for
    assert (results[1].batch, results[1].t_start, results[1].t_end) == (11, 0.0, 1.0)
    assert [r.batch for r in results] == [10, 11, 10, 13]
    assert results[0].t_start == 2.0


def test_a_member_told_to_stop_is_pruned_whatever_the_call_returned_for_it() -> None:
    from evo_engine.search.messages import EvalState

    shared = torch.OutOfMemoryError("CUDA out of memory (the stack)")

    def fail(ctxs: list) -> list:
        ctxs[3]._stop = True  # ASHA stopped it before the group ran out of memory
        return [shared] * 4

    calls, objective_batch = _first_call_fails(fail)
    worker, tasks = _oom_worker(objective_batch)
    results = worker.run_batch(tasks)
    assert calls == [[0.1, 0.2, 0.3, 0.4], [0.1, 0.2], [0.3]]
    assert [r.state for r in results] == [EvalState.COMPLETE] * 3 + [EvalState.PRUNED]


def test_a_retry_that_follows_an_attempt_with_no_result_starts_at_the_attempt() -> None:
    def fail(ctxs: list) -> list:
        raise torch.OutOfMemoryError("CUDA out of memory")

    _, objective_batch = _first_call_fails(fail)
    worker, tasks = _oom_worker(objective_batch)
    results = worker.run_batch(tasks)
    assert [r.batch for r in results] == [10, 10, 12, 12]
    assert results[0].t_start == 0.0 < results[2].t_start  # the attempt's time is counted


def test_with_a_time_limit_a_stack_that_ran_out_of_memory_is_not_retried() -> None:
    from evo_engine.search.messages import EvalState
    from evo_engine.transports.base import WorkerSpec
    from evo_engine.transports.inline import InlineTransport

    # the retries could run past eval_timeout_s and take the finished members with them
    for limit, split in ((None, True), (60.0, False)):
        transport = InlineTransport(WorkerSpec(objective=lambda p, c: 0.0,
                                               eval_timeout_s=limit))
        transport.start()
        assert [r.split_on_oom for r in transport._runtimes] == [split]

    calls: list[list[float]] = []

    def objective_batch(params_list: list, ctxs: list) -> list:
        calls.append([p["x"] for p in params_list])
        raise torch.OutOfMemoryError("CUDA out of memory")

    worker, tasks = _oom_worker(objective_batch, split_on_oom=False)
    results = worker.run_batch(tasks)
    assert len(calls) == 1 and all(r.state is EvalState.FAILED for r in results)


# -- local workers: as many as the cores this process was given --------------------------------


def test_the_default_local_workers_are_the_cores_of_the_allocation_not_of_the_node(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from evo_engine.job.run import default_workers

    # `salloc -c 4 --gpus=1` on a 64-core GPU node: the process may run on 4 cores.
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {8, 9, 10, 11}, raising=False)
    scenario = SimpleNamespace(workers=None)
    assert default_workers(scenario, None) == 4  # not 64 processes, each a CUDA context
    assert default_workers(scenario, 2) == 2
    assert default_workers(SimpleNamespace(workers=3), None) == 3


# -- the coordinator's data generation on a GPU ---------------------------------------------------


def test_a_data_set_generated_on_a_gpu_gives_the_solvers_cached_memory_back(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from evo_engine.sciml import advection

    recipe = advection.AdvectionRecipe(samples=4, nx=16, nt=3, solver="fv")
    solved: list[str] = []
    emptied: list[int] = []

    def solve_block(recipe, a, b, initial, device):  # noqa: ANN001, ANN202 - as _solve_block
        solved.append(device)
        return np.zeros((b - a, recipe.nt, recipe.nx), dtype=np.float32)

    monkeypatch.setattr(advection, "_solve_block", solve_block)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(len(solved)))
    advection.write_advection(recipe, tmp_path / "adv.h5", device="cuda")
    # Rank 0 (or the local coordinator) generates before the workers start and then trains
    # nothing: the 1 GB blocks' memory goes back to the GPU, to the workers bound to it.
    assert solved == ["cuda"] and emptied == [1]
    advection.write_advection(recipe, tmp_path / "cpu.h5", device="cpu", processes=1)
    assert emptied == [1]  # nothing to give back from a CPU solve


def test_a_worker_that_must_generate_its_data_solves_on_its_own_gpu(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evo_engine.context import Context
    from evo_engine.sciml import advection, training

    # A data directory the coordinator's prepare did not fill (node-local scratch on a
    # worker's node): the worker generates the file itself.
    monkeypatch.setenv("EVO_ENGINE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("EVO_ENGINE_ADVECTION_FILE", raising=False)
    devices: list[str | None] = []
    monkeypatch.setattr(advection, "write_advection",
                        lambda recipe, out, device=None: devices.append(device) or out)
    monkeypatch.setattr(training, "_load_split", lambda task, path, split, device: {})
    task = training.AdvectionTask(recipe=advection.AdvectionRecipe(samples=4, nx=16, nt=12),
                                  nx=16, nt=12, epochs=1)
    training.load_split(task, "train", Context.standalone(0, device="cuda:2"))
    # "cuda" would be the current device, cuda:0, for every worker of the node.
    assert devices == ["cuda:2"]
