"""One job of a run: start-up, the coordinator loop, deadlines, warm start, callbacks,
overrides, progress and logging, wired over a transport and the store.

Importing this package imports nothing: ``job.startup`` must run before anything slow.
"""
