"""Training: the checks made before anything is written, the transformers Trainer built for a task
and a method, its callbacks (epoch-0 evaluation, best epoch, resume, progress), the answer-only
loss, precision choices, the run's loss plot, and `peftlab data check` (what train would see).

Layer 6. May import: tasks, models, data, runs, config and the base modules.
"""
