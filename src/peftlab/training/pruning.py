"""A trial of a sweep's `search:` (sweep/search.py): the run reports its validation metric to its Optuna
trial after every epoch and stops when Optuna's pruner says it is clearly behind its variant's other
trials. A pruned run ends as a completed run that says `pruned` (the epoch it reached) in result.json:
its numbers so far are real, the search keeps them, and a sweep run again does not redo it."""

from __future__ import annotations

import json
import math

from transformers import TrainerCallback

from peftlab.errors import UserError


def read_trial(text: str | None) -> dict | None:
    """`peftlab train --trial JSON` (written by the sweep), checked."""
    if not text:
        return None
    try:
        spec = json.loads(text)
        assert isinstance(spec, dict) and {"storage", "study", "trial_id"} <= set(spec)
    except (ValueError, AssertionError):
        raise UserError(
            f"--trial: '{text[:80]}' is not a sweep's trial (it is set by `peftlab sweep` for `search:`); "
            "leave it out to train on your own"
        ) from None
    return spec


class PruneTrial(TrainerCallback):
    """After each epoch's evaluation: report the metric to the trial; stop training when it is pruned.
    Runs after the Recorder (which writes the epoch's line and keeps the best weights)."""

    def __init__(self, spec: dict, metric: str, history: list):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=spec["study"], storage=spec["storage"], pruner=pruner_of(spec))
        self.trial = optuna.trial.Trial(study, spec["trial_id"])
        self.metric, self.pruned = metric, None
        for line in history:  # a resumed trial: its epochs before the stop, so the pruner sees them all
            self.report(line)

    def report(self, metrics: dict) -> float | None:
        epoch = round(metrics.get("epoch") or 0)
        value = metrics.get(f"eval_{self.metric}", metrics.get(self.metric))
        if epoch < 1 or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None  # epoch 0 is the untrained model, the same for every trial
        self.trial.report(float(value), step=epoch)
        return value

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        if not metrics or "eval_loss" not in metrics:
            return  # another split's evaluation (ExtraSplits), not the epoch's validation
        value = self.report({**(metrics or {}), "epoch": state.epoch})
        if value is not None and state.epoch < args.num_train_epochs and self.trial.should_prune():
            epoch = round(state.epoch)
            self.pruned = {
                "epoch": epoch,
                "value": value,
                "reason": f"{self.metric} {value:.4f} after epoch {epoch} is behind its variant's other trials "
                f"at that epoch ({self.trial.study.pruner.__class__.__name__})",
            }
            print(f"peftlab: pruned: {self.pruned['reason']}; the run stops here", flush=True)
            control.should_training_stop = True


def pruner_of(spec: dict):
    return build_pruner(spec.get("pruner", "successive-halving"), int(spec.get("epochs", 1)))


def build_pruner(name: str, epochs: int):
    """Optuna's pruner for a search's `pruner:`; the resource is the epoch (a trial reports after every
    epoch). Successive halving's rungs are at epochs 1, 3, 9, ...: at each only the best third go on
    (the first trial to reach a rung always does)."""
    import optuna

    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    return optuna.pruners.NopPruner()
