"""The search: the engine's pure logic (islands, operators, budget, migration, dedupe, ASHA).

No transport, store, file, clock or MPI is imported here (``tests/test_layout.py``): every
task comes from ``engine.Engine._issue``, a function of engine state, so a replay is exact.
"""
