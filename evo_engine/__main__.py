"""``python -m evo_engine``: see evo_engine.cli."""

import sys

# Before anything slow is imported: a stop signal from here on exits 3, not 143.
from evo_engine import startup

startup.install()

try:
    from evo_engine.cli import main
except startup.StopBeforeStart as stop:
    if startup.message(stop):
        print(startup.message(stop), file=sys.stderr)
    sys.exit(3)

sys.exit(main())
