"""Few-shot prompts for the LLM ways of a task (`shots: k` in `peftlab eval` / `predict`).

k solved examples are drawn with the seed from the training split and put before every evaluated
prompt. Two shapes of prepared example exist, and each keeps its own prompt format:
  Choice        (classify_by likelihood, multiple_choice likelihood): the demonstrations are the task's
                own filled prompt followed by the right option, as the scorer would see a right answer;
  Conversation  (classify_by generate, mc_head generate, sft): the demonstrations become earlier chat
                turns, so the chat template renders them exactly as it renders the evaluated turn.
A training example whose prompt equals an evaluated one is never drawn: a shot must not give the
answer away (the users' train and dev files sometimes share rows).
"""

from __future__ import annotations

import random
from dataclasses import replace

from peftlab.errors import UserError
from peftlab.tasks.chat import Conversation
from peftlab.tasks.choices import Choice

SEPARATOR = "\n\n"


def key_of(example) -> str:
    """What makes two examples the same question: the prompt text (Choice) or the last user turn."""
    return example.prompt if isinstance(example, Choice) else example.turns[-1][0]


def draw_shots(train: list, evaluated: list, k: int, seed: int) -> list:
    """k training examples (seeded), none of which shares its prompt with an evaluated example."""
    banned = {key_of(e) for e in evaluated}
    pool = [e for e in train if key_of(e) not in banned]
    if len(pool) < k:
        raise UserError(
            f"shots: {k} few-shot examples asked for, but train_file has only {len(pool)} rows that "
            f"are not among the evaluated ones; lower shots or give a larger train_file"
        )
    return random.Random(seed).sample(pool, k)


def demo_text(shot: Choice) -> str:
    return f"{shot.prompt} {shot.options[shot.answer]}"


def with_shots(example, shots: list):
    """The example with the demonstrations before it, in the example's own format."""
    if isinstance(example, Choice):
        return replace(example, prompt=SEPARATOR.join([*map(demo_text, shots), example.prompt]))
    demo_turns = [turn for s in shots for turn in s.turns]
    return Conversation(example.system, demo_turns + list(example.turns))


def apply_shots(examples: dict[str, list], k: int, seed: int, splits: list[str]) -> list[dict]:
    """Put k shots from examples['train'] before every example of `splits`, in place; returns the shots
    as they are shown (prompt and answer), for the result file."""
    if k <= 0:
        return []
    first = next(iter(examples["train"]), None)
    if not isinstance(first, (Choice, Conversation)):
        raise UserError(
            "shots: few-shot prompts need an LLM prompt: classification with classify_by generate or "
            "likelihood, multiple_choice with mc_head likelihood or generate, or sft; this task has a trained head"
        )
    evaluated = [e for s in splits for e in examples[s]]
    shots = draw_shots(examples["train"], evaluated, k, seed)
    for split in splits:
        items = examples[split]
        items[:] = [with_shots(e, shots) for e in items]  # in place: sft's Examples list keeps its notes
    if isinstance(first, Choice):
        return [{"prompt": s.prompt, "answer": s.options[s.answer]} for s in shots]
    return [{"prompt": s.turns[-1][0], "answer": s.turns[-1][1]} for s in shots]
