"""Offline analysis of a run store: history as arrays, summary, plots, CSV export.

Importing this package stays light (numpy and zarr only); matplotlib is imported when plots
are drawn.
"""

from evo_engine.analysis.history import load_history, to_dataframe
from evo_engine.store.reader import STATE_NAMES, Run, load_run

__all__ = ["STATE_NAMES", "Run", "load_history", "load_run", "to_dataframe"]
