"""Models and methods: the named models and the packages that ship them, the GGUF-to-transformers
cache, loading a model for each head (classification with its pooling, token classification, QA,
causal LM) and its tokenizer; methods.py, the one METHODS table of thin functions over peft (and the
requires_grad rules of full / freeze / head), each row with what its method implies for the rest of
peftlab (the settings that apply, virtual tokens, what export can do).

Layer 4. May import: data, runs, config and the base modules.

`peftlab.models.apply_pooling` is written into the README of saved mean-pooling classifiers (users
call it to put the pooling back on a reloaded model): it stays importable from here.
"""

from peftlab.models.loading import apply_pooling

__all__ = ["apply_pooling"]
