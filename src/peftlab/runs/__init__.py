"""The run folder, the unit of truth: atomic writes of its files, reads that tell an unreadable file
from a missing one, a run's status, saving weights (model, adapter, head) with their loader note,
clearing what a killed writer left, and what a run measures of itself (parameters, memory, sizes,
library versions, git hash).

Layer 2. May import: config, and the base modules (peftlab, peftlab.errors, peftlab.hardware).
"""
