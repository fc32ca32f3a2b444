"""Leaf helpers with no evo_engine imports: terminal layout, busy-time accounting, the names
of the stop signals."""
