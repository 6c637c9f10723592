"""The bench's measuring callback for the legs that are not peftlab (plain Trainer, LLaMA-Factory): the
same figures peftlab's Recorder writes to result.json, taken the same way, so every leg is read alike.
Standalone (transformers only): it runs in LLaMA-Factory's virtualenv too."""

from __future__ import annotations

import json
import time

from transformers import TrainerCallback


class BenchTiming(TrainerCallback):
    """Sums the optimizer steps' wall time (evaluation and set-up excluded, as peftlab's train_tokens_per_s),
    notes when the first step began (unix seconds) and the Trainer's final mean training loss; writes
    them with the non-padding tokens seen to `out` (JSON) when training ends."""

    def __init__(self, out: str):
        self.out, self.step_s, self.t, self.first_step_at, self.train_loss = out, 0.0, None, None, None

    def on_step_begin(self, args, state, control, **kw):
        self.t = time.perf_counter()
        self.first_step_at = self.first_step_at or time.time()

    def on_step_end(self, args, state, control, **kw):
        self.step_s += time.perf_counter() - self.t

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "train_loss" in logs:
            self.train_loss = logs["train_loss"]

    def on_train_end(self, args, state, control, **kw):
        with open(self.out, "w") as f:
            json.dump(
                {
                    "first_step_at": self.first_step_at,
                    "train_time_s": self.step_s,
                    "train_tokens": int(state.num_input_tokens_seen),
                    "steps": state.global_step,
                    "train_loss": self.train_loss,
                },
                f,
            )
