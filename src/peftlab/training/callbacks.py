"""transformers.Trainer callbacks: the measurement and bookkeeping that make a run folder.

Recorder writes one metrics.jsonl line per evaluation (epoch 0 first), times each epoch from the
optimizer steps alone (evaluation and checkpoint I/O excluded), saves the weights whenever the
chosen metric improves, stops early after `patience` evaluations without improvement, stops a
run whose loss turns NaN, and checkpoints an epoch's end only after its evaluation.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from transformers import ProgressCallback, TrainerCallback

from peftlab.runs import layout
from peftlab.runs.rundir import read_jsonl, write_jsonl
from peftlab.tasks.metrics import is_better

SKIP_KEYS = {"runtime", "samples_per_second", "steps_per_second", "epoch", "model_preparation_time"}


def loss_line(h: dict) -> dict:
    """One train_log.jsonl line (the run's end rewrites the file from the Trainer's whole log history)."""
    return {k: h[k] for k in ("step", "epoch", "loss", "learning_rate") if k in h}


class Recorder(TrainerCallback):
    def __init__(
        self,
        path: Path,
        metric: str,
        patience: int,
        is_main: bool,
        save_best,
        resume_from: Path | None,
        select_last: bool = False,
        saved: dict | None = None,
    ):
        self.path, self.metric, self.patience, self.is_main, self.save_best = path, metric, patience, is_main, save_best
        self.select_last = select_last  # keep the last evaluation's weights (AdaLoRA: ranks shrink during the run)
        self.lines = read_jsonl(path) if resume_from else []
        step = None
        if resume_from:  # evaluations after the checkpoint will be redone: forget them
            step = json.loads((resume_from / "trainer_state.json").read_text())["global_step"]
            self.lines = [l for l in self.lines if l["step"] <= step]
        self.best, self.bad_evals, self.saved = None, 0, None  # saved: the evaluation whose weights are on disk
        for line in self.lines:
            if self._update_best(line[metric]):
                self.saved = line
        self.saved_before_resume = False  # metrics_best is an evaluation that the resume redid
        if step is not None and isinstance(saved, dict) and metric in saved:
            # what the weights folder holds is the truth: killed after an evaluation saved the best weights but
            # before the checkpoint after it, those weights are on disk and that evaluation is redone, maybe
            # scoring otherwise (GPU kernels, data order); its redo must beat it to replace them
            self.best, self.saved = saved[metric], saved
            self.bad_evals = sum(l["step"] > saved.get("step", 0) for l in self.lines)
            self.saved_before_resume = saved.get("step", 0) > step
        self.epoch_train_s, self.t_step, self.t_epoch, self.partial = 0.0, None, None, False
        self.loss_log: list[dict] = []
        self.first_step_at = None  # wall clock (unix seconds) when this process began its first optimizer step

    def _update_best(self, value) -> bool:
        if self.select_last or is_better(self.metric, value, self.best):
            self.best, self.bad_evals = value, 0
            return True
        self.bad_evals += 1
        return False

    def has_epoch(self, epoch: int) -> bool:
        return any(l["epoch"] == epoch for l in self.lines)

    # -- timing
    def on_train_begin(self, args, state, control, **kw):
        per_epoch = max(1, state.max_steps // max(1, int(args.num_train_epochs)))
        self.partial = state.global_step % per_epoch != 0  # resumed in the middle of an epoch
        self.loss_log = [loss_line(h) for h in state.log_history if "loss" in h]  # a resumed run's steps so far

    def on_epoch_begin(self, args, state, control, **kw):
        self.epoch_train_s, self.t_epoch = 0.0, time.perf_counter()

    def on_step_begin(self, args, state, control, **kw):
        self.t_step = time.perf_counter()
        if self.first_step_at is None:
            self.first_step_at = time.time()

    def on_step_end(self, args, state, control, **kw):
        self.epoch_train_s += time.perf_counter() - self.t_step
        if state.epoch is not None and abs(state.epoch - round(state.epoch)) < 1e-9:
            # an epoch's last step: a save_steps checkpoint here would precede the epoch's evaluation, and a run
            # killed during that evaluation would resume past it, the epoch never evaluated nor its weights kept;
            # on_epoch_end's checkpoint comes after the evaluation
            control.should_save = False
        return control

    def on_epoch_end(self, args, state, control, **kw):
        self.epoch_wall_s = time.perf_counter() - self.t_epoch
        control.should_save = True  # a resume point at every epoch end, besides every save_steps
        control.should_log = True  # the steps since the last log: the epoch's train loss covers every step
        return control

    def on_log(self, args, state, control, logs=None, **kw):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss} at step {state.global_step}; lower the learning rate or use fp32"
            )
        if loss is not None and self.is_main:  # the loss so far, for `peftlab ui` to draw while the run runs
            self.loss_log.append(loss_line({**logs, "step": state.global_step, "epoch": state.epoch}))
            write_jsonl(self.path.parent / layout.TRAIN_LOG, self.loss_log)

    # -- evaluation
    def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
        if not metrics or "eval_loss" not in metrics:
            return  # a test-split evaluation, not an epoch's
        epoch = round(state.epoch or 0)
        line = {"epoch": epoch, "step": state.global_step}
        line.update({k[5:]: v for k, v in metrics.items() if k.startswith("eval_") and k[5:] not in SKIP_KEYS})
        line["eval_time_s"] = round(metrics.get("eval_runtime", 0.0), 3)
        if epoch > 0:
            line["train_time_s"] = round(self.epoch_train_s, 3)
            line["epoch_wall_s"] = round(self.epoch_wall_s, 3)
            line["train_loss"] = epoch_train_loss(state.log_history, epoch)
            if self.partial:
                line["partial_epoch_time"] = True
                self.partial = False
        if self._update_best(line[self.metric]):
            self.saved, self.saved_before_resume = line, False
            if self.is_main:
                self.save_best(model, line)
        self.lines.append(line)
        if self.is_main:
            write_jsonl(self.path, self.lines)
            shown = " ".join(
                f"{k} {line[k]:.4f}"
                for k in dict.fromkeys(("loss", "accuracy", "f1", self.metric))
                if k in line and isinstance(line[k], float)
            )
            timing = f"  train {line['train_time_s']:.1f} s" if epoch > 0 else ""
            print(f"epoch {epoch}: {shown}{timing}", flush=True)
        if self.patience and self.bad_evals >= self.patience and not self.select_last:
            control.should_training_stop = True
        return control

    # -- results
    def epochs_trained(self) -> int:
        return max((l["epoch"] for l in self.lines), default=0)

    def rate(self, count) -> float | None:
        seconds = sum(l.get("train_time_s", 0.0) for l in self.lines)
        return round(count / seconds, 2) if seconds else None

    def summary(self) -> dict:
        """metrics_best is the evaluation whose weights were saved (what the best-weights folder holds)."""
        first = next((l for l in self.lines if l["epoch"] == 0), None)
        best = self.saved
        full = [l["train_time_s"] for l in self.lines if l["epoch"] > 0 and not l.get("partial_epoch_time")]
        before = {"best_saved_before_resume": True} if self.saved_before_resume else {}
        return {
            **before,
            "best_epoch": best["epoch"] if best else None,
            "epochs_run": self.epochs_trained(),
            "metrics_epoch0": first,
            "metrics_best": best,
            "metrics_last": self.lines[-1] if self.lines else None,
            "epoch_times_s": [l.get("train_time_s") for l in self.lines if l["epoch"] > 0],
            "time_per_epoch_s": round(sum(full) / len(full), 3) if full else None,
        }


class TrackerSummary(TrainerCallback):
    """peftlab's own numbers for the report_to integration: the metrics at epoch 0 and at the best epoch
    (Recorder.summary, as in result.json) as peftlab/epoch0/<key> and peftlab/best/<key>, and
    peftlab/best_epoch, sent when training ends. TensorBoard gets each at its evaluation's step, through
    the Trainer's own writer; MLflow through its callback's on_log (at the last step). It must stand
    before the integrations among the callbacks (train.add_tracker_summary): their on_train_end closes
    the TensorBoard writer and ends the MLflow run."""

    def __init__(self, recorder: Recorder, callbacks: list):
        self.recorder, self.callbacks = recorder, callbacks

    def on_train_end(self, args, state, control, **kw):
        from transformers.integrations import MLflowCallback, TensorBoardCallback

        if not state.is_world_process_zero:
            return
        summary = self.recorder.summary()
        scalars = [
            (f"peftlab/{phase}/{k}", v, line["step"])
            for phase, line in (("epoch0", summary["metrics_epoch0"]), ("best", summary["metrics_best"]))
            if line
            for k, v in line.items()
            if k not in ("epoch", "step") and is_number(v)
        ]
        if summary["metrics_best"]:
            scalars.append(("peftlab/best_epoch", summary["best_epoch"], summary["metrics_best"]["step"]))
        for callback in self.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                for tag, value, step in scalars:
                    callback.tb_writer.add_scalar(tag, value, step)
                callback.tb_writer.flush()
            elif isinstance(callback, MLflowCallback):
                callback.on_log(args, state, control, logs={tag: value for tag, value, _ in scalars})


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class QuietProgress(ProgressCallback):
    """The progress bars, without printing every log dict under them (Recorder prints per epoch)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


class AdaLoraStep(TrainerCallback):
    """AdaLoRA re-allocates ranks from the gradients: peft asks for update_and_allocate after the
    optimizer step and before zero_grad (which the Trainer does not call by itself). Called before the
    optimizer step instead, as it once was here, the step moved the entries just masked off zero again:
    the evaluated model was not the pruned one its saved adapter is, and a reloaded run scored a hair
    differently (a QA no-answer threshold 2e-5 apart)."""

    def on_optimizer_step(self, args, state, control, model=None, **kw):
        model.base_model.update_and_allocate(state.global_step)


class ExtraSplits(TrainerCallback):
    """Scores more evaluation splits (e.g. `extra`, a knowledge-retention set) whenever the validation
    split is evaluated, through the task's own metrics. Their metrics are added to the validation
    metrics prefixed with the split name (eval_extra_rougeL), so the Recorder, which must come after
    this callback, writes them into the same metrics.jsonl line."""

    def __init__(self, env, datasets: dict, make_metrics):
        self.env, self.datasets, self.make_metrics = env, datasets, make_metrics

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        if not metrics or "eval_loss" not in metrics:
            return
        trainer = self.env.trainer
        own = trainer.compute_metrics
        try:
            for name, dataset in self.datasets.items():
                trainer.compute_metrics = self.make_metrics(name)
                out = trainer.predict(dataset, metric_key_prefix=name)  # predict fires no on_evaluate
                metrics.update({f"eval_{k}": v for k, v in out.metrics.items() if k[len(name) + 1 :] not in SKIP_KEYS})
                metrics[f"eval_{name}_eval_time_s"] = round(out.metrics.get(f"{name}_runtime", 0.0), 3)
        finally:
            trainer.compute_metrics = own


def epoch_train_loss(history: list[dict], epoch: int) -> float | None:
    """Mean training loss over the epoch's steps. Each logged loss is the mean over the steps since
    the previous log, so it is weighted by that step count (a short last interval counts less)."""
    total = steps = 0.0
    previous = 0
    for h in history:
        if "loss" not in h:
            continue
        if epoch - 1 < h.get("epoch", 0) <= epoch:
            total += h["loss"] * (h["step"] - previous)
            steps += h["step"] - previous
        previous = h["step"]
    return round(total / steps, 5) if steps else None
