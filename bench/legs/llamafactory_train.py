"""The LLaMA-Factory leg of job (a): `llamafactory-cli train` with the equivalent YAML, run through
llamafactory's own entry point (run_exp) so the bench's BenchTiming callback can ride along. Runs in
LLaMA-Factory's virtualenv (bench/.venv-llamafactory, made by bench/run.py).

    bench/.venv-llamafactory/bin/python bench/legs/llamafactory_train.py JOB.json OUT.json

LLaMA-Factory's defaults stay, except what makes it the same job: the data (registered from the
shared alpaca demo file), template smollm2 with the model's own default system prompt (LLaMA-Factory's
ends in a '.' the model's does not, which would add tokens), cutoff, batch size, epochs, learning rate,
LoRA rank/alpha/dropout/targets, seed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from timing import BenchTiming


def common_args(job: dict, scratch: Path) -> dict:
    """The run_exp settings every bench leg of LLaMA-Factory shares: SFT with LoRA, the job's sizes and seed,
    template smollm2, no checkpoints, no logging elsewhere."""
    lora = job["lora"]
    return {
        "model_name_or_path": job["model"],
        "stage": "sft",
        "finetuning_type": "lora",
        "lora_rank": lora["r"],
        "lora_alpha": lora["alpha"],
        "lora_dropout": lora["dropout"],
        "lora_target": ",".join(lora["target"]),
        "template": "smollm2",
        "cutoff_len": job["max_length"],
        "overwrite_cache": True,
        "output_dir": str(scratch / "out"),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": job["batch_size"],
        "num_train_epochs": 1.0,
        "learning_rate": job["lr"],
        "seed": job["seed"],
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "plot_loss": False,
        "include_num_input_tokens_seen": "non_padding",
    }


def main() -> int:
    job, out = json.load(open(sys.argv[1])), sys.argv[2]
    scratch = Path(job["scratch"])
    (scratch / "data").mkdir(parents=True, exist_ok=True)
    (scratch / "data" / "dataset_info.json").write_text(
        json.dumps({"bench_alpaca": {"file_name": os.path.abspath(job["data"])}})
    )
    args = {
        **common_args(job, scratch),
        "do_train": True,
        "dataset": "bench_alpaca",
        "dataset_dir": str(scratch / "data"),
        "default_system": job["default_system"],
        "max_samples": job["rows"],
        "preprocessing_num_workers": None,
    }
    from llamafactory.train.tuner import run_exp

    run_exp(args, callbacks=[BenchTiming(out)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
