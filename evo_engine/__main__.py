"""``python -m evo_engine``: see evo_engine.cli."""

import sys

from evo_engine.cli import main

sys.exit(main())
