"""Sweeps and studies: the plan (variants x grid, evaluation rows, a study's parts), which run folders
may be reused, running the runs (each its own `python -m peftlab` process, here one after another or
side by side on a process pool or Ray), progress and ETA, the child process's side (warm start, dying
with the sweep) and the console's view of a child's output.

Layer 9. May import: export and every layer below it.
"""

import sys

from peftlab import CommandPackage

sys.modules[__name__].__class__ = CommandPackage  # peftlab.sweep(...) is the Python API's sweep (peftlab.api)
