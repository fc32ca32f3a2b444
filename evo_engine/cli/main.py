"""Command line: ``python -m evo_engine [run] SCENARIO ...`` and ``python -m evo_engine analyze RUN_DIR``.

Exit codes: 0 finished · 1 unexpected internal error · 2 bad input (including a damaged
run store) · 3 stopped early (signal or walltime), resumable with ``--resume``.

The run machinery is imported inside ``main``, after the stop signals are handled (see
``evo_engine.job.startup``), so a signal during the imports exits 3 too.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from evo_engine.cli.argtypes import nonneg_int, positive_float, positive_int
from evo_engine.errors import InputError
from evo_engine.job import startup

EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_STOPPED = 1, 2, 3

COMMANDS = ("run", "analyze")

RUN_EXAMPLES = """\
examples:
  python -m evo_engine scenarios/sphere.py --max-evals 200 --workers 2 --run-dir runs/r1
  mpiexec -n 33 python -m evo_engine scenarios/advection_lr.py --run-dir runs/adv
  mpiexec -n 33 python -m evo_engine scenarios/advection_lr.py --run-dir runs/adv --resume

exit codes: 0 finished, 1 internal error, 2 bad input (also: a damaged run store, an
unwritable run directory, a scenario or data file that changed since the run started),
3 stopped early (resumable: run the same command with --resume)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evo_engine",
        description="Asynchronous evolutionary hyperparameter optimization (local or under mpiexec).",
        epilog="`python -m evo_engine SCENARIO ...` is short for `python -m evo_engine run SCENARIO ...`.",
    )
    from evo_engine import __version__

    parser.add_argument("--version", action="version", version=f"evo_engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run (or resume) a scenario", epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a scenario file: asynchronous steady-state evolution with a zarr run store.",
    )
    run.add_argument("scenario", type=Path, help="scenario .py file")
    run.add_argument("--run-dir", type=Path, help="where run.zarr and log.jsonl go (default runs/<scenario name>)")
    run.add_argument("--max-evals", type=positive_int,
                     help="evaluation budget (overrides the scenario); with --resume it may "
                          "extend the run's budget, or lower it with a warning (never below "
                          "what the run holds)")
    run.add_argument("--max-time", type=positive_float, metavar="S",
                     help="wall-clock limit for this job in seconds, from its start (data and "
                          "worker start-up included): evaluations that cannot finish in time "
                          "are not started; then exit 3 (resumable)")
    run.add_argument("--seed", type=nonneg_int, help="random seed (overrides the scenario)")
    run.add_argument("--workers", type=nonneg_int,
                     help="local worker processes without mpiexec (0 = evaluate inline in this process)")
    run.add_argument("--preset", choices=("auto", "cpu", "full"), default="auto",
                     help="problem size preset: auto = full on a GPU, cpu otherwise")
    run.add_argument("--data-file", type=Path, metavar="FILE",
                     help="a data file the scenario trains on instead of generated data, e.g. a "
                          "real PDEBench 1D_Advection_Sols_beta4.0.hdf5 (sets EVO_ENGINE_ADVECTION_FILE)")
    run.add_argument("--sync", action="store_true",
                     help="generation barrier (the synchronous baseline to compare against)")
    run.add_argument("--batch", type=positive_int, metavar="K",
                     help="tasks each worker evaluates at once through the scenario's "
                          "objective_batch (overrides the scenario's batch)")
    run.add_argument("--fsync", choices=("never", "snapshots", "always"), default="snapshots",
                     help="when the run store is forced to disk, for what survives a node "
                          "crash (a killed job loses at most the last ~0.25 s in any case): "
                          "at every snapshot (default), after every write, or never")
    run.add_argument("--resume", action="store_true", help="continue the stopped run in --run-dir")
    run.add_argument("--force", action="store_true", help="start over in a non-empty --run-dir")
    run.add_argument("--quiet", action="store_true",
                     help="no summary at the end, and no progress unless --progress asks")
    run.add_argument("--progress", choices=("auto", "line", "json", "none"), default=None,
                     help="how progress shows on stderr: a live line redrawn in place, JSON "
                          "lines (each phase as it starts and ends, the first result, then "
                          "every 60 s: for batch logs), or nothing. auto (the default): the "
                          "line on a terminal (also rank 0's under mpiexec), JSON otherwise")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                     help="set a scenario field, checked like the scenario file's own value "
                          "(repeatable), e.g. --set islands=4 --set population_size=16; "
                          "operator settings by key: --set operator_settings.sigma0=0.2 on an "
                          "ES scenario, operator_settings.mutation_rate=0.3 on a GA one")
    run.add_argument("--callback", dest="callbacks", action="append", default=[], metavar="NAME",
                     help="log every finished evaluation to tensorboard, mlflow or wandb "
                          "(offline), or your own module:factory (repeatable)")
    run.add_argument("--warm-start", metavar="FILE|RUN_DIR[:N]",
                     help="evaluate known configurations first: a JSON/YAML list of parameter "
                          "dicts, or the best N (default population_size) of an earlier run")
    from evo_engine.cli.analyze import add_parser as add_analyze_parser

    add_analyze_parser(sub)
    return parser


def _normalise(argv: list[str]) -> list[str]:
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        return ["run", *argv]
    return argv


def main(argv: list[str] | None = None) -> int:
    previous = startup.install()
    try:
        return _main(argv)
    except startup.StopBeforeStart as stop:
        if startup.message(stop):
            print(startup.message(stop), file=sys.stderr)
        return EXIT_STOPPED
    finally:
        startup.restore(previous)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(_normalise(list(sys.argv[1:] if argv is None else argv)))
    try:
        if args.command == "analyze":
            import signal

            from evo_engine.cli.analyze import analyze_main

            # analyze only reads: an interrupt is an ordinary one.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for name in ("SIGTERM", "SIGUSR1"):
                signal.signal(getattr(signal, name), signal.SIG_DFL)
            return analyze_main(args)
        from evo_engine.job.run import RunOptions, execute

        if args.data_file is not None:
            if not args.data_file.is_file():
                raise InputError(f"--data-file {args.data_file} does not exist or is not a file")
            # Workers inherit the environment (local) or parse the same flags (MPI ranks).
            os.environ["EVO_ENGINE_ADVECTION_FILE"] = str(args.data_file.resolve())
        opts = RunOptions(
            scenario=args.scenario, run_dir=args.run_dir, max_evals=args.max_evals,
            max_time=args.max_time, seed=args.seed, workers=args.workers, preset=args.preset,
            sync=args.sync, force=args.force, resume=args.resume, quiet=args.quiet,
            progress=args.progress, batch=args.batch,
            sets=tuple(args.sets), warm_start=args.warm_start, callbacks=tuple(args.callbacks),
            fsync=args.fsync,
        )
        return execute(opts, print_fn=(lambda s: None) if args.quiet else print)
    except InputError as exc:
        print(f"evo_engine: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # `analyze ... | head`: the reader went away; that is not an error of ours.
        sys.stderr.close()
        return 0
    except startup.StopBeforeStart:
        raise
    except KeyboardInterrupt:
        print("evo_engine: interrupted", file=sys.stderr)
        return EXIT_STOPPED
    except Exception as exc:  # noqa: BLE001 - last resort: say it is our bug, with the traceback
        stop = startup.interruption(exc)
        if stop is not None:
            raise stop from None
        traceback.print_exc()
        print("evo_engine: internal error (a bug in evo_engine); please report it with the "
              "traceback above", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
