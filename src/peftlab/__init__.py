"""peftlab: run and compare ways to fine-tune language models on NLP tasks, honestly measured."""

from __future__ import annotations

import time

__version__ = "0.1.0"
PROCESS_STARTED = time.time()  # before torch and transformers load: result.json's time to first step counts from here
WARM_STARTED = None  # when a sweep started this process ahead of its turn (peftlab.child.wait_for_go)
