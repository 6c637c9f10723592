"""Reports: pure functions over run folders. Tables (epoch 0, best epoch, costs, seeds as mean ± std),
the significance tests, evaluation rows, plots, the HTML page, a study's gathered report, and the
one-run summary printed after `peftlab train`.

Layer 10. May import: sweep and every layer below it.
"""

import sys

from peftlab import CommandPackage

sys.modules[__name__].__class__ = CommandPackage  # peftlab.report(...) is the Python API's report (peftlab.api)
