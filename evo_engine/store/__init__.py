"""The run store: the zarr evaluation log and snapshots, its writer (thread or process), the
dispatch journal, the run directory's lock and inputs, reading a run back, and replay.

Imports the search's types and engine (to snapshot and rebuild it), never the job.
"""
