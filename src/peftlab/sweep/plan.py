"""`peftlab sweep SWEEP.yaml`: many runs from one file, each in its own `peftlab train` process.

A sweep file holds a base config and the runs to make from it:

    name: sst2-minilm-methods        # sweep folder name (default: the file's stem)
    output_dir: runs/sweeps          # where the sweep folder goes (default: runs)
    base: sst2-minilm-lora.yaml      # optional config file (relative to this file, or to the cwd)
    config: {epochs: 2}              # optional overrides of the base, flat or in sections
    variants:                        # an explicit list; each may override any config key
      - {name: full, method: full, lr: 5.0e-5}
      - {method: lora, lora_rank: 8} # unnamed: named by its settings (lora-r8)
    grid: {seed: [1, 2, 3]}          # cartesian product, crossed with the variants

Why a process per run: peak memory is then the run's own, and a crash (or an out-of-memory kill)
takes one run down, not the sweep. The sweep folder holds one run folder per run, `sweep.json`
(the plan and each run's status), `logs/` and `report/`. Running the sweep again skips finished
runs, resumes interrupted ones from their last checkpoint and retries failed ones from scratch;
a run folder is reused only if its config.yaml equals the config planned now (else the sweep stops
before running anything, or reruns it with --rerun-changed). `.lock` keeps a second sweep out.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.config.settings import (
    SECTIONS,
    Config,
    build_config,
    read_yaml_mapping,
    typed_settings,
)
from peftlab.errors import UserError, closest
from peftlab.runs import layout
from peftlab.runs.rundir import run_status
from peftlab.sweep.search import Search, read_search, trial_points

SWEEP_KEYS = ("name", "output_dir", "base", "config", "variants", "grid", "search", "description", "report_epochs")
# How a setting shows in a run name: lora_rank=8 -> r8, seed=1 -> s1, lr=5e-4 -> lr0.0005.
SHORT = {
    "lora_rank": "r",
    "lora_r": "r",
    "seed": "s",
    "lr": "lr",
    "learning_rate": "lr",
    "epochs": "ep",
    "num_virtual_tokens": "vt",
    "freeze_layers": "last",
    "batch_size": "bs",
    "max_samples": "n",
    "lora_init": "",  # lora-r8-pissa
    "loraplus_lr_ratio": "lp",  # lora-r8-lp16
}


@dataclass
class PlannedRun:
    name: str  # run folder name
    group: str  # the variant without its seed: runs of one group are averaged over seeds
    settings: dict  # what this run sets on top of the base (variant + grid point)
    cfg: Config
    seed: int
    kind: str = "train"  # train | eval (a baseline, or an evaluation of another run of the sweep)
    of: str = ""  # eval: the run folder name it evaluates; empty = the config's model, untrained
    export: str = ""  # eval of a run: merged | f16 | q8_0 | q4_0 | q4_k_m (exported first)
    variant: str = ""  # a trial of `search:`: the variant it is a trial of (its Optuna study)
    trial: dict = field(default_factory=dict)  # a trial: its point of the search grid, e.g. {"lr": 0.0005}
    space: dict = field(default_factory=dict)  # a trial: the variant's whole grid, {key: [values]}

    def entry(self, status: str, **extra) -> dict:
        """This run's line in sweep.json: who it is, its status, and what else the caller knows."""
        return {
            "name": self.name,
            "group": self.group,
            "seed": self.seed,
            "settings": self.settings,
            **({"variant": self.variant, "trial": self.trial} if self.variant else {}),
            "status": status,
            **extra,
        }


@dataclass
class Sweep:
    name: str
    source: Path
    folder: Path
    runs: list[PlannedRun] = field(default_factory=list)
    description: str = ""
    report_epochs: list = field(default_factory=list)  # the report's extra table: the metric after these epochs
    search: Search | None = None  # `search:`: each variant over a grid, chosen on validation (search.py)


def slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(value)).strip("_")


def folder_name(raw, what: str) -> str:
    """A name the user wrote (a sweep's, a study part's, a variant's), as the folder it becomes: slug()'s
    spelling, checked by layout.check_folder_name. A separator in the name as written is refused, not
    spelled away: `a/b` meant a folder inside a folder, and `..` or `logs` would be no run's own folder."""
    text = str(raw)
    if any(sep in text for sep in layout.SEPARATORS):
        layout.check_folder_name(text, what)  # raises: a path
    name = slug(text)
    return layout.check_folder_name(name, what if name == text else f"{what} '{text}', as a folder name,")


def name_of(settings: dict) -> str:
    """Run name from settings: the method first, then short key+value pairs (lora-r8-lr0.0005)."""
    parts = [slug(settings["method"])] if "method" in settings else []
    for key, value in settings.items():
        if key in ("method", "name"):
            continue
        if isinstance(value, (list, dict)):
            value = "_".join(map(str, value.values() if isinstance(value, dict) else value))
        parts.append(f"{SHORT.get(key, key + '_')}{slug(value)}")
    return "-".join(parts) or "base"


def flat_settings(data: dict) -> dict:
    """Sectioned or flat settings -> flat {key: value} (for names and display)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in SECTIONS:
            out.update(value)
        else:
            out[key] = value
    return out


def check_keys(
    data: dict, where: str, keys: tuple = SWEEP_KEYS, what: str = "sweep key", holder: str = "a sweep file"
) -> None:
    for key in data:
        if key not in keys:
            raise UserError(
                f"{where}: unknown {what} '{key}'{closest(str(key), keys)}; {holder} has "
                f"{', '.join(keys)} (config keys go under `config:`, `variants:` or `grid:`)"
            )


def grid_points(grid, where: str) -> list[dict]:
    if not grid:
        return [{}]
    if not isinstance(grid, dict):
        raise UserError(f"{where}: `grid:` must map config keys to lists, e.g. grid: {{seed: [1, 2, 3]}}")
    keys, values = list(grid), []
    for key in keys:
        vals = grid[key] if isinstance(grid[key], list) else [grid[key]]
        if not vals:
            raise UserError(f"{where}: grid key '{key}' has an empty list")
        values.append(vals)
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def find_base(base: str, sweep_file: Path) -> Path:
    for candidate in (sweep_file.parent / base, Path(base)):
        if candidate.is_file():
            return candidate
    raise UserError(f"{sweep_file}: base config '{base}' not found next to the sweep file nor in {Path.cwd()}")


def config_layers(data: dict, path: Path, where: str, between: list = (), split: bool = False):
    """A sweep mapping's `base:` file and `config:` overrides, as config layers (`between`: layers that go
    over the base and under the config; split=True: (base layers, config layers))."""
    layers = []
    if data.get("base"):
        if not isinstance(data["base"], str):
            raise UserError(
                f"{where}: `base:` is the path of a config file; put settings written here under "
                f"`config:` instead (e.g. config: {{model: minilm-l6, epochs: 2}})"
            )
        base_file = find_base(data["base"], path)
        layers.append((read_yaml_mapping(base_file), str(base_file)))
    if data.get("config"):
        if not isinstance(data["config"], dict):
            raise UserError(f"{where}: `config:` must be a mapping of config keys")
        layers.append((data["config"], f"{where}: config"))
    n_base = 1 if data.get("base") else 0
    if split:
        return layers[:n_base], layers[n_base:]
    return layers[:n_base] + list(between) + layers[n_base:]


def sweep_from(
    data: dict, path: Path, output_dir: str | None = None, pre_layers: list = (), where: str = "", between: list = ()
) -> Sweep:
    """The planned runs of one sweep mapping; `pre_layers` (a study's base file) come first, `between`
    (a study's config:) over this mapping's base file and under its config:."""
    where = where or str(path)
    base_layers = list(pre_layers) + config_layers(data, path, where, between)
    variants = data.get("variants") or [{}]
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise UserError(f"{where}: `variants:` must be a list of mappings, e.g. - {{method: lora, lora_rank: 8}}")
    points = grid_points(data.get("grid"), where)
    # settings typed by their fields (lr: 5.0e-4 -> 0.0005), so names and sweep.json show numbers as
    # numbers and a string key's `no` as "no"
    typed_points = [typed_settings(p, f"{where}: grid") for p in points]
    typed_variants = [
        typed_settings(
            flat_settings({k: v for k, v in variant.items() if k not in ("name", *EVAL_KEYS)}),
            f"{where}: variants[{i}]",
        )
        for i, variant in enumerate(variants)
    ]
    seed_varies = len({p.get("seed") for p in typed_points}) > 1 or len({v.get("seed") for v in typed_variants}) > 1

    name = folder_name(data.get("name") or path.stem, f"{where}: name" if data.get("name") else f"{where}: file name")
    folder = Path(output_dir or data.get("output_dir") or "runs") / name
    sweep = Sweep(
        name,
        path,
        folder,
        description=str(data.get("description") or ""),
        report_epochs=report_epochs_of(data.get("report_epochs"), where),
    )
    sweep.search = read_search(data.get("search"), where)
    if sweep.search:
        sweep.search.folder = folder
    seen: dict[str, int] = {}
    for i, variant in enumerate(variants):
        variant = dict(variant)
        given = variant.pop("name", None)
        kind, of, export = read_eval_keys(variant, f"{where}: variants[{i}]")
        for key in ("output_dir", "run_name"):
            if key in flat_settings(variant):
                raise UserError(f"{where}: variants[{i}]: '{key}' is set by the sweep; remove it")
        for point, typed_point in zip(points, typed_points):
            at = f"{where}: variants[{i}]" + (f" x grid {point}" if point else "")
            settings = {**typed_variants[i], **typed_point}
            layers = base_layers + [(variant, f"{where}: variants[{i}]"), (point, f"{where}: grid")]
            cfg = build_config(layers)
            searched = sweep.search.keys if sweep.search else {}
            group_settings = {k: v for k, v in settings.items() if k != "seed" and k not in searched}
            group = folder_name(given, f"{where}: variants[{i}]: name") if given else name_of(group_settings)
            trials = [{}]
            if sweep.search and kind == "train":
                trials = trial_points(sweep.search, cfg.method.method, given_values(settings))
            for trial in trials:
                run_cfg = build_config(layers + [(trial, f"{where}: search")]) if trial else cfg
                trial_group = f"{group}-{name_of(trial)}" if trial else group
                run_name = f"{trial_group}-s{run_cfg.train.seed}" if seed_varies else trial_group
                layout.check_folder_name(run_name, f"{at}: run name")
                if run_name in seen:
                    raise UserError(
                        f"{at}: two runs would both be named '{run_name}' (also variants[{seen[run_name]}]); "
                        f"give the variants distinct `name:`s"
                    )
                seen[run_name] = i
                run_cfg.train.output_dir, run_cfg.train.run_name = str(folder), run_name
                target = evaluated_run(of, run_cfg.train.seed, seed_varies, sweep.runs, at)
                planned = PlannedRun(
                    run_name, trial_group, {**settings, **trial}, run_cfg, run_cfg.train.seed, kind, target, export
                )
                if trial:
                    planned.variant, planned.trial = group, trial
                    planned.space = {k: sorted({t[k] for t in trials}, key=str) for k in trial}
                sweep.runs.append(planned)
    return sweep


def given_values(settings: dict) -> dict:
    """The values a variant (or its grid point) sets itself, under the names `search:` uses: its trial with
    them goes first. A value it inherits from the base file is not its own choice: the family's order holds."""
    return {("lr" if k == "learning_rate" else k): v for k, v in settings.items()}


def report_epochs_of(value, where: str) -> list[int]:
    """The epochs of the report's extra table; sweep files keep scalars as their text (config/settings.py), so
    each item is read as a whole number here."""
    if value is None:
        return []
    items = value if isinstance(value, list) else []
    epochs = [int(e) for e in items if re.fullmatch(r"\s*\d+\s*", str(e))]
    if not items or len(epochs) != len(items) or min(epochs) < 1:
        raise UserError(
            f"{where}: `report_epochs:` must be a list of epoch numbers (1 or more), e.g. [1, 5, 10]; got {value!r}"
        )
    return sorted(set(epochs))


EVAL_KEYS = ("kind", "of", "export")  # variant keys that make a row an evaluation, not a training run


def read_eval_keys(variant: dict, where: str) -> tuple[str, str, str]:
    """Pop `kind: eval`, `of: <variant name>`, `export: <type>` from a variant (in place)."""
    from peftlab.export.merge import EXPORT_KINDS

    kind, of, export = (str(variant.pop(k, "") or "") for k in EVAL_KEYS)
    kind = kind or ("eval" if of or export else "train")
    if kind not in ("train", "eval"):
        raise UserError(f"{where}: kind: '{kind}' is not train or eval")
    if export and not of:
        raise UserError(f"{where}: export: {export} needs `of:` (the variant whose run is exported)")
    if export and export not in EXPORT_KINDS:
        raise UserError(f"{where}: export: '{export}' is not one of {', '.join(EXPORT_KINDS)}")
    if export and export != "merged":  # llama.cpp there, said before the sweep trains anything
        from peftlab.export.gguf import check_types

        try:
            check_types([export])
        except UserError as e:
            raise UserError(f"{where}: export: {export}: {e}") from None
    return kind, slug(of) if of else "", export


def eval_overrides(run: PlannedRun) -> list[str]:
    """An evaluation row's own settings as `peftlab eval` key=value pairs, over the config of the run it
    evaluates (seed and the row keys left out): its command line and the sweep's reuse check share them."""
    return [f"{k}={v}" for k, v in flat_settings(run.settings).items() if k not in EVAL_KEYS + ("seed",)]


def evaluated_run(of: str, seed: int, seed_varies: bool, planned: list, where: str) -> str:
    """The run folder an `of:` row evaluates: the named variant's run with the same seed, planned earlier."""
    if not of:
        return ""
    name = f"{of}-s{seed}" if seed_varies else of
    match = next((r for r in planned if r.name == name), None)
    if match is None or match.kind != "train":
        trained = ", ".join(r.group for r in planned if r.kind == "train") or "none"
        raise UserError(f"{where}: of: '{of}' names no training variant listed before it (trained: {trained})")
    return name


# -- running ------------------------------------------------------------------------------------


def describe(settings: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items()) or "(base config)"


def print_plan(sweep: Sweep) -> None:
    print(f"sweep {sweep.name}: {len(sweep.runs)} runs -> {sweep.folder}")
    width = max(len(r.name) for r in sweep.runs)
    for i, run in enumerate(sweep.runs, 1):
        status = run_status(sweep.folder / run.name)
        what = (
            ""
            if run.kind == "train"
            else (
                "eval "
                + (f"of {run.of}" if run.of else "of the base model")
                + (f" ({run.export})" if run.export else "")
                + ": "
            )
        )
        print(f"  {i:>3}. {run.name:<{width}}  [{status}]  {what}{describe(run.settings)}")
