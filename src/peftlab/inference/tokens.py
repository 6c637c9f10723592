"""Token sequences of an encoded split: what input tokens/s is counted from, and the longest prompt
the llama.cpp backend must fit."""

from __future__ import annotations


def count_tokens(dataset) -> int:
    """Non-padding input tokens of an encoded split (options of multiple-choice rows included)."""
    return sum(len(ids) for ids in sequences(dataset))


def sequences(dataset):
    """Every token sequence of an encoded split: one per row, or one per option of multiple-choice rows."""
    for ids in dataset["input_ids"]:
        if ids and isinstance(ids[0], list):
            yield from ids
        else:
            yield ids
