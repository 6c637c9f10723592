"""Likelihood scoring of multiple-choice options: the prompt run once with the options scored from its KV
cache (the default) vs every option scored as its own whole sequence (the prompt re-read per option).

    .venv/bin/python bench/option_scoring.py [--examples 32] [--batch 4] [--max-length 256] [--repeats 3]

Data: the Kaggle LLM Science Exam sample kept with the tests (extra_train_set.csv: 5 options of ~3-29
tokens, a retrieved Wikipedia context before each question), read by task multiple_choice with
context_column=context, length_norm=tokens; prompts are cut from the left to max_length - the longest
option. Model: the packaged SmolLM2-135M (smollm2-135m, dequantized), fp32, eval mode, no gradients.
Both ways score the same token sequences (the same batches from the task's encoder and collator; the
whole-sequence way is the model's own fallback, LikelihoodScores.whole_sequences). Each figure is the
median of --repeats passes over all examples (min-max beside it), the two ways alternating; model
loading is excluded. Rows are questions. Not a test: the numbers depend on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from benchlib import ROOT, stats

from peftlab.hardware import cpu_info

EXAM = ROOT / "tests" / "fixtures" / "datasets" / "llm_science_exam" / "tony92151_augmented" / "extra_train_set.csv"
WAYS = {"prompt once (KV cache)": None, "whole sequences": "bench: the uncached way"}


def batches(n: int, batch: int, max_length: int):
    """(config, the encoded rows, their collated batches) of the first n questions."""
    from peftlab.config.settings import load_config
    from peftlab.data.splits import load_splits
    from peftlab.models.loading import load_tokenizer, resolve_model
    from peftlab.tasks import choices, multiple_choice

    cfg = load_config(
        None,
        [
            "task=multiple_choice",
            "model=smollm2-135m",
            f"train_file={EXAM}",
            f"validation_file={EXAM}",
            "context_column=context",
            f"max_length={max_length}",
            "length_norm=tokens",
        ],
    )
    examples = multiple_choice.prepare(load_splits(cfg.data, cfg.train.seed), cfg).examples["train"][:n]
    tok = load_tokenizer(resolve_model(cfg.model.model).path)
    ds = multiple_choice.encode(examples, tok, cfg)
    collator = choices.collate(tok)
    rows = [ds[i] for i in range(len(ds))]
    return cfg, rows, [collator(rows[i : i + batch]) for i in range(0, len(rows), batch)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4, help="questions per forward pass")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "option_scoring.md"))
    args = ap.parse_args()

    import torch

    from peftlab.models.loading import resolve_model
    from peftlab.tasks.choices import load_likelihood_model

    cfg, rows, parts = batches(args.examples, args.batch, args.max_length)
    n = len(rows)
    prompt_tokens = [len(r["prompt_ids"]) for r in rows]
    option_tokens = [t for r in rows for t in r["n_target"] if t]
    per_question = [sum(t > 0 for t in r["n_target"]) for r in rows]
    model = load_likelihood_model(resolve_model(cfg.model.model), cfg).eval()
    seconds, scores = {way: [] for way in WAYS}, {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for way, why in WAYS.items():
                model.whole_sequences = why
                start = time.perf_counter()
                scores[way] = torch.cat([model(**b)["logits"] for b in parts])
                seconds[way].append(time.perf_counter() - start)
    real = torch.cat([b["n_target"] > 0 for b in parts])
    diff = (scores["prompt once (KV cache)"] - scores["whole sequences"])[real].abs().max().item()
    med = {way: stats(s)["median"] for way, s in seconds.items()}
    cpu = cpu_info()
    lines = [
        f"# Option scoring: prompt once (KV cache) vs whole sequences ({datetime.now(timezone.utc):%Y-%m-%d})",
        "",
        f"{n} LLM Science Exam questions (extra_train_set.csv, with context), {len(option_tokens)} options "
        f"({min(per_question)}-{max(per_question)} each); smollm2-135m, {next(model.parameters()).dtype}, "
        f"batches of {args.batch} questions; "
        f"prompt tokens median {statistics.median(prompt_tokens):.0f} ({min(prompt_tokens)}-{max(prompt_tokens)}), "
        f"option tokens median {statistics.median(option_tokens):.0f} ({min(option_tokens)}-{max(option_tokens)}), "
        f"max_length {args.max_length}; median of {args.repeats} passes (min-max).",
        "",
        "| way | wall time | rows/s |",
        "|---|---|---|",
    ]
    for way, s in seconds.items():
        st = stats(s)
        lines.append(f"| {way} | {st['median']:.2f} s ({st['min']:.2f}-{st['max']:.2f}) | {n / st['median']:.2f} |")
    lines += [
        "",
        f"- prompt once vs whole sequences: **{med['whole sequences'] / med['prompt once (KV cache)']:.2f}x**",
        f"- largest score difference (length-normalised log-probability): {diff:.2e}",
        f"- CPU: {cpu['cpu_model']} ({cpu['cpu_count']} logical CPUs; flags: {', '.join(cpu['cpu_flags']) or '-'})",
        f"- torch {torch.__version__}, {torch.get_num_threads()} threads",
        "",
        "Command: `bench/option_scoring.py "
        f"--examples {args.examples} --batch {args.batch} --max-length {args.max_length} --repeats {args.repeats}`",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
