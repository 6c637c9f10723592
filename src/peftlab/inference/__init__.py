"""Inference outside training: one scoring path (a run, an export, a base model or a .gguf file, scored
through the task's own hooks on transformers or on llama.cpp), `peftlab eval` and `peftlab predict`.

Layer 7. May import: training, tasks, models, data, runs, config and the base modules.
"""
