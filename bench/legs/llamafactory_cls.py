"""The LLaMA-Factory leg of job (f), time to a learned model: LLaMA-Factory has no classification head, so a
user of it tunes the model to answer the label word (SFT on prompt -> "positive"/"negative", template smollm2)
and scores it with its own predict (do_predict + predict_with_generate, generated_predictions.jsonl). One
run_exp does both, as one `llamafactory-cli train` with that YAML would. Runs in LLaMA-Factory's virtualenv.

    bench/.venv-llamafactory/bin/python bench/legs/llamafactory_cls.py JOB.json OUT.json

LLaMA-Factory's defaults stay, except what makes it the same job as the other legs (data, rows, cutoff, batch,
epochs, learning rate, LoRA, seed) and greedy answers of at most 4 new tokens (its default samples, temperature
0.95, up to 1,024 tokens: a user measuring accuracy turns that off). OUT.json: BenchTiming's figures and the
accuracy (an answer counts when its first word is the right label word)."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

from llamafactory_train import common_args
from timing import BenchTiming


def alpaca(tsv: str, rows: int, prompt: str, words: list[str]) -> list[dict]:
    with open(tsv, newline="") as f:
        table = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:rows]
    return [
        {"instruction": prompt.format(text=r["sentence"]), "input": "", "output": words[int(r["label"])]} for r in table
    ]


def first_word(answer: str) -> str:
    """The answer's first word, lower case, without trailing punctuation: 'Positive.' -> 'positive'."""
    return (answer.strip().split() or [""])[0].strip(".,!:;").lower()


def main() -> int:
    job, out = json.load(open(sys.argv[1])), sys.argv[2]
    scratch = Path(job["scratch"])
    data = scratch / "data"
    data.mkdir(parents=True, exist_ok=True)
    words = job["label_words"]
    for name, tsv, rows in (("train", job["data"], job["rows"]), ("dev", job["eval_data"], job["eval_rows"])):
        (data / f"{name}.json").write_text(json.dumps(alpaca(tsv, rows, job["prompt"], words)))
    (data / "dataset_info.json").write_text(
        json.dumps({"bench_train": {"file_name": "train.json"}, "bench_dev": {"file_name": "dev.json"}})
    )
    args = {  # LLaMA-Factory's own default system prompt (smollm2 template)
        **common_args(job, scratch),
        "do_train": True,
        "do_predict": True,
        "predict_with_generate": True,
        "do_sample": False,
        "max_new_tokens": 4,
        "dataset": "bench_train",
        "eval_dataset": "bench_dev",
        "dataset_dir": str(data),
    }
    from llamafactory.train.tuner import run_exp

    run_exp(args, callbacks=[BenchTiming(out)])
    answers = [json.loads(line) for line in open(scratch / "out" / "generated_predictions.jsonl")]
    right = sum(first_word(a["predict"]) == a["label"].strip() for a in answers)
    figures = json.load(open(out))
    json.dump(
        {**figures, "accuracy": right / len(answers), "answers": len(answers), "finished_at": time.time()},
        open(out, "w"),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
