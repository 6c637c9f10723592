"""Configuration: the typed sections (model / data / task / method / train / eval), each field with its
default, type and one-line help (from which `--help` and `peftlab config --help` are made); loading a
YAML with its values kept as written, key=value overrides, LLaMA-Factory's key names as aliases, and
the difference between a saved config and a new one.

Layer 1 of the package (see tests/test_layers.py). May import: peftlab.errors, peftlab.hardware.
"""
