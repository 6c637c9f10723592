"""peftlab: run and compare ways to fine-tune language models on NLP tasks, honestly measured."""

__version__ = "0.1.0"
