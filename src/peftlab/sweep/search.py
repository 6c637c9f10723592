"""`search:` in a sweep file: each variant over a grid of learning rates (or other settings), the
setting chosen on the validation split, trials that are clearly behind stopped early by Optuna.

    search:
      lr: auto                      # a grid per method family (method_types.LR_GRIDS), or a list: [1e-4, 5e-4]
      lora_rank: [4, 8]             # any other config key, as a list: searched together with lr
      pruner: successive-halving    # | hyperband | median | none (every trial runs all its epochs)
      storage: ""                   # empty = SQLite in the sweep folder; an RDB URL shares one search

Every variant becomes one trial run per grid point (`lora-r8-lr0.0005`); the runs of a variant form
one Optuna study (named after the variant) in `storage`. A trial reports its validation metric after
every epoch (training/pruning.py); Optuna's pruner stops one that is clearly behind the variant's
other trials at that epoch, and its run folder then says `pruned` with the epoch it reached. The
report keeps, per variant, the trial with the best validation score (report/search.py) and lists
every trial. The trials run in grid order with the variant's own setting (or the family's usual rate)
first, so the later ones are measured against a good trial at their first epoch.

Why Optuna and not a loop of our own: successive halving, Hyperband and the median rule are its
pruners, its storage keeps a search across sweep restarts and machines, and its dashboard reads it.
The grid itself is fixed (the trials are planned run folders that a sweep can resume and skip);
Optuna decides which of them stop early.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.errors import UserError, closest

SEARCH_FILE = "search.db"  # the Optuna storage in the sweep folder (SQLite), unless `storage:` names another
OPTIONS = ("pruner", "storage")
PRUNERS = ("successive-halving", "hyperband", "median", "none")


def lr_family(method: str) -> str:
    """The family whose grid `lr: auto` uses for a method (models/method_types.LR_GRIDS)."""
    from peftlab.models.methods import method_of

    return method_of(method).lr_family


@dataclass
class Search:
    """A sweep's `search:` mapping, read and checked."""

    keys: dict  # config key -> list of values or "auto"
    pruner: str = "successive-halving"
    storage: str = ""  # empty: SQLite in the sweep folder
    folder: Path = field(default_factory=Path)
    asked: dict = field(default_factory=dict)  # run name -> Optuna trial id (this sweep process)

    @property
    def url(self) -> str:
        return self.storage or f"sqlite:///{(self.folder / SEARCH_FILE).resolve()}"


def read_search(value, where: str) -> Search | None:
    """The `search:` mapping of a sweep file, checked; None when there is none."""
    if value is None:
        return None
    example = "e.g. search: {lr: auto} or search: {lr: [1.0e-4, 5.0e-4, 2.0e-3]}"
    if not isinstance(value, dict) or not value:
        raise UserError(f"{where}: `search:` must map config keys to lists (or lr to auto), {example}")
    from peftlab.config.settings import typed_settings

    keys, options = {}, {}
    for key, values in value.items():
        if key in OPTIONS:
            options[key] = str(values or "")
        elif values == "auto" or str(values).strip() == "auto":
            if key not in ("lr", "learning_rate"):
                raise UserError(f"{where}: search: {key}: auto is for lr only; give a list, {example}")
            keys["lr"] = "auto"
        else:
            items = values if isinstance(values, list) else [values]
            if not items:
                raise UserError(f"{where}: search: {key} has an empty list")
            typed = [typed_settings({key: v}, f"{where}: search")[key] for v in items]
            keys["lr" if key == "learning_rate" else key] = list(dict.fromkeys(typed))
    pruner = options.get("pruner") or "successive-halving"
    if pruner not in PRUNERS:
        raise UserError(
            f"{where}: search: pruner: '{pruner}' is not one of {', '.join(PRUNERS)}{closest(pruner, PRUNERS)}"
        )
    if not keys:
        raise UserError(f"{where}: `search:` names no setting to search, {example}")
    return Search(keys, pruner, options.get("storage", ""))


def trial_points(search: Search, method: str, given: dict) -> list[dict]:
    """The trials of one variant: every combination of the searched values, the variant's own value of
    each key (`given`, when it is in the grid) first, then the family's usual rate first for lr: auto."""
    from peftlab.models.method_types import LR_GRIDS  # torch comes with it: only for a sweep that searches

    lists = []
    for key, values in search.keys.items():
        values = list(LR_GRIDS[lr_family(method)]) if values == "auto" else list(values)
        mine = given.get(key)
        if mine in values:  # the variant's own setting is a good first trial: put it first
            values.remove(mine)
            values.insert(0, mine)
        lists.append([(key, v) for v in values])
    return [dict(combo) for combo in itertools.product(*lists)]


# -- Optuna: one study per variant, one trial per run ---------------------------------------------


def direction_of(metric: str) -> str:
    """Optuna's direction for metric_for_best; `auto` is the task's default metric, higher-is-better for
    every task (tasks/*.py DEFAULT_METRIC), so the sweep need not load the task to know it."""
    from peftlab.tasks.metrics import LOWER_IS_BETTER

    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def load_study(search: Search, variant: str, metric: str, epochs: int):
    import optuna

    from peftlab.training.pruning import build_pruner  # transformers loads with it: only when a search runs

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=search.url,
        study_name=variant,
        direction=direction_of(metric),
        pruner=build_pruner(search.pruner, epochs),
        load_if_exists=True,
    )


def trial_spec(search: Search, run) -> str:
    """The `--trial` argument of a trial run's `peftlab train`: a new Optuna trial of its variant's study
    with the run's grid point, asked once per run and sweep process (a process started ahead reuses it)."""
    import optuna

    if run.name not in search.asked:
        metric = run.cfg.eval.metric_for_best
        study = load_study(search, run.variant, metric, run.cfg.train.epochs)
        # every value of the variant's grid, the same for each of its trials (Optuna refuses a parameter
        # whose choices change within a study); the queue gives this trial the run's own point
        distributions = {k: optuna.distributions.CategoricalDistribution(v) for k, v in run.space.items()}
        study.enqueue_trial(run.trial, skip_if_exists=False)
        trial = study.ask(distributions)
        trial.set_user_attr("run", run.name)
        search.asked[run.name] = trial._trial_id
    return json.dumps(
        {
            "storage": search.url,
            "study": run.variant,
            "trial_id": search.asked[run.name],
            "pruner": search.pruner,
            "epochs": run.cfg.train.epochs,
        }
    )


def tell(search: Search, run, result: dict | None) -> None:
    """After a trial run ended: its outcome into the study (complete with its best validation score,
    pruned, or failed), so later trials are measured against it."""
    import optuna

    trial_id = search.asked.pop(run.name, None)
    if trial_id is None:
        return
    study = load_study(search, run.variant, run.cfg.eval.metric_for_best, run.cfg.train.epochs)
    number = study._storage.get_trial_number_from_id(trial_id)
    metric = (result or {}).get("metric_for_best") or run.cfg.eval.metric_for_best  # `auto` resolved by the run
    state, value = optuna.trial.TrialState.FAIL, None
    if result and result.get("status") == "completed":
        value = (result.get("metrics_best") or {}).get(metric)
        state = optuna.trial.TrialState.PRUNED if result.get("pruned") else optuna.trial.TrialState.COMPLETE
    if state == optuna.trial.TrialState.COMPLETE and not isinstance(value, (int, float)):
        state = optuna.trial.TrialState.FAIL
    complete = state == optuna.trial.TrialState.COMPLETE
    study.tell(number, value if complete else None, state=state, skip_if_finished=True)


def settle_stale(search: Search, sweep) -> None:
    """At the start of a sweep: trials of this sweep's runs still marked running in the study were left by
    a sweep that was stopped (or a process started ahead and never used); they are failed, so a pruner
    does not wait on them. Only for the sweep folder's own SQLite: a shared storage's running trials may
    be another machine's."""
    if search.storage or not (sweep.folder / SEARCH_FILE).exists():
        return
    import optuna

    mine = {r.name for r in sweep.runs if r.variant}
    for variant in {r.variant for r in sweep.runs if r.variant}:
        run = next(r for r in sweep.runs if r.variant == variant)
        study = load_study(search, variant, run.cfg.eval.metric_for_best, run.cfg.train.epochs)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if t.user_attrs.get("run") in mine:
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
