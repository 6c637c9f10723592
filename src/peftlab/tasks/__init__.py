"""Tasks: one module per task way (classification with a head, by likelihood or by generation, NER,
extractive QA, SFT, multiple choice by head, likelihood or generation), each with the same hooks
(prepare, encode, the model, collate, metrics, predictions) that contract.py lists; registry.py maps
task names to them.
Also the task metrics (metrics.py, squad_metrics.py) and few-shot examples (shots.py).

Layer 5. May import: models, data, runs, config and the base modules.
"""
