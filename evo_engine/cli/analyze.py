"""The ``analyze`` command: summary in the terminal, optional PNG plots and CSV export.

An empty run (no evaluation recorded yet) is not an error for the summary, which says so and
exits 0; asking it for ``--plots`` or ``--csv`` exits 2, since there is nothing to draw or
export. A run still in progress is read as far as it has committed. Every bad input (not a
run directory, a store from a newer evo_engine, an unwritable output) raises an
``InputError`` that ``evo_engine.cli.main.main`` prints as one line and turns into exit code 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evo_engine.cli.argtypes import positive_int
from evo_engine.errors import InputError

ANALYZE_EXAMPLES = """\
examples:
  python -m evo_engine analyze runs/adv                      # summary table in the terminal
  python -m evo_engine analyze runs/adv --plots runs/adv/plots
  python -m evo_engine analyze runs/adv --csv best.csv --top 20
  python -m evo_engine analyze runs/adv --plots plots --baseline runs/adv_sync
  python -m evo_engine analyze runs/moo --front front.csv     # several objectives: the front

plots written with --plots (each only when the run has data for it, else a line says why;
--format svg|pdf):
  best_so_far.png        best fitness so far vs evaluations (vs compute when pruning) and vs
                         evaluating time (start-up excluded, resumes marked), per island
  fitness_over_time.png  every evaluation's fitness when it finished, coloured by island;
                         pruned ones at their last reported value
  parameters.png         each hyperparameter over the run, best marked, log axes for log params
  importance.png         each parameter's drop in held-out R² when shuffled (random forest,
                         5-fold); not drawn when the forest explains nothing (R² < 0.2)
  influence.png          fitness vs the two most important parameters (as importance.png)
  parallel_coordinates.png  one line per complete or pruned evaluation across all parameters
  learning_curves.png    intermediate reports per evaluation, pruned ones marked (ASHA rungs)
  sigma.png              ES step size σ per parameter over the run (ES islands only)
  workers.png            worker timeline (Gantt) with idle gaps and per-worker utilization
  migrations.png         migrants between islands, accepted or rejected
  pareto.png             several objectives: every evaluation, the front, its knee
                         (pairwise panels for 3 objectives)
  hypervolume.png        several objectives: hypervolume so far vs evaluations and compute

works on a run still in progress (shows what is committed) and on a copy of the run
directory on a laptop: it reads RUN_DIR/run.zarr only and never writes to it.
exit codes: 0 done, 2 bad input (not a run directory, newer store format, nothing to plot)
or a damaged store: then the first line says what is damaged, the summary (and plots, CSV)
show the rows before the damage, and the last line refuses the store
"""


class AnalyzeError(InputError):
    """The run cannot give what ``analyze`` was asked for (e.g. plots of an empty run)."""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``analyze`` on the subparsers object of the main command line."""
    p = sub.add_parser(
        "analyze", help="summarize, plot and export a run (offline, from its run store)",
        description="Read RUN_DIR/run.zarr and print a summary: status, evaluations, wall time, "
                    "worker utilization, best per island and the top individuals.",
        epilog=ANALYZE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (holds run.zarr)")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write plots into DIR")
    p.add_argument("--format", dest="fmt", choices=("png", "svg", "pdf"), default="png",
                   help="file format of the plots (default png at 150 dpi; svg/pdf for a paper)")
    p.add_argument("--csv", type=Path, metavar="FILE",
                   help="write the evaluations to FILE (all of them, or with --top N those "
                        "of the N best configurations)")
    p.add_argument("--top", type=positive_int, metavar="N",
                   help="show the N best configurations (default 10); with --csv, export "
                        "only their complete evaluations")
    p.add_argument("--front", type=Path, metavar="FILE",
                   help="several objectives: write the Pareto front (knee marked) to FILE as CSV")
    p.add_argument("--baseline", type=Path, metavar="RUN_DIR",
                   help="another run to compare with (e.g. the --sync baseline): its best "
                        "and when this run reached it; its curve in best_so_far.png")
    return p


def _refuse_writing_into_a_run(args: argparse.Namespace) -> None:
    """An output path that is (or lies in) a run's own file: refused before anything is
    written, so ``--csv RUN/log.jsonl`` cannot replace the run's log."""
    from evo_engine.store.rundir import owned_by

    runs = [d for d in (args.run_dir, args.baseline) if d is not None]
    for flag, path in (("--csv", args.csv), ("--front", args.front), ("--plots", args.plots)):
        for run_dir in runs if path is not None else ():
            entry = owned_by(run_dir, path)
            if entry is not None:
                raise AnalyzeError(f"{flag} {path}: {entry} belongs to the run; analyze never "
                                   f"writes there (give a path outside it, e.g. "
                                   f"{run_dir / ('plots' if flag == '--plots' else 'best.csv')})")


def analyze_main(args: argparse.Namespace, print_fn: Callable[[str], None] = print) -> int:
    """Run ``analyze`` for parsed ``args``; returns the exit code (InputError on bad input)."""
    from evo_engine.analysis.export import write_csv
    from evo_engine.analysis.summary import compare_with_baseline, format_summary, summarize
    from evo_engine.store.reader import load_run
    from evo_engine.util import terminal

    cols = terminal.width()

    def say(text: str) -> None:  # every line within the terminal's width
        for line in terminal.wrap(text, cols):
            print_fn(line)

    run = load_run(args.run_dir)
    baseline = load_run(args.baseline) if args.baseline is not None else None
    _refuse_writing_into_a_run(args)  # after the loads: a path that is no run says so first
    if run.damage:  # said first: everything below covers only the rows before it
        say(f"the run store in {args.run_dir} is damaged: {'; '.join(run.damage)}; what follows "
            f"covers only the {run.n} evaluations before the damage")
        print_fn("")
    print_fn(format_summary(summarize(run, top=args.top or 10), str(args.run_dir)))
    from evo_engine.analysis.repeats import format_repeats

    repeats = format_repeats(run, top=args.top or 10)
    if repeats:
        print_fn("\n" + repeats)
    from evo_engine.analysis.rungs import format_rung_checks

    rungs = format_rung_checks(run)  # a pruned run: can its rungs be trusted?
    if rungs:
        print_fn("")
        for line in rungs.splitlines():
            say(line)
    from evo_engine.analysis.front import format_front, write_front_csv

    front = format_front(run, limit=args.top or 20, width=cols)
    if front:
        head, *rows = front.splitlines()
        print_fn("")
        say(head)
        for line in rows:
            print_fn(line)
    from evo_engine.analysis.pbt import format_pbt

    pbt = format_pbt(run)
    if pbt:
        print_fn("\n" + pbt)
    wants = [flag for flag, v in (("--plots", args.plots), ("--csv", args.csv)) if v is not None]
    if wants and run.n == 0:
        raise AnalyzeError(f"{args.run_dir} has no recorded evaluations yet: nothing for "
                           f"{' or '.join(wants)} (run analyze again once some have finished)")
    if baseline is not None:
        if baseline.n == 0:
            raise AnalyzeError(f"baseline {args.baseline} has no recorded evaluations")
        print_fn("")
        if baseline.attrs.get("scenario") != run.attrs.get("scenario"):
            say(f"note: baseline {args.baseline} ran scenario "
                f"{baseline.attrs.get('scenario')!r}, not {run.attrs.get('scenario')!r}")
        if run.n:
            say(compare_with_baseline(run, baseline, str(args.baseline)))
    if args.front is not None:
        rows = write_front_csv(run, args.front)
        say(f"wrote the {rows} members of the Pareto front to {args.front}")
    if args.csv is not None:
        rows = write_csv(run, args.csv, top=args.top)
        say(f"wrote {rows} evaluations to {args.csv}")
    if args.plots is not None:
        from evo_engine.analysis.plots import make_plots

        paths = make_plots(run, args.plots, baseline=baseline, fmt=args.fmt,
                           on_skip=lambda name, why: say(f"not drawn: {name}.{args.fmt}: {why}"))
        for line in terminal.wrap_items(f"wrote {len(paths)} plots to {args.plots}:",
                                        [p.name for p in paths], cols):
            print_fn(line)
    if run.damage:
        raise AnalyzeError(
            f"the run store in {args.run_dir} is damaged; the above covers only the "
            f"{run.n} evaluations before the damage: " + "; ".join(run.damage))
    return 0
