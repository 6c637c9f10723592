"""GGUF export and llama.cpp scoring of SmolLM2-135M against transformers, on the same token ids.

    .venv/bin/python bench/llamacpp_vs_hf.py [--rows 40] [--repeats 3] [--types f16,q8_0,q4_0,q4_k_m]

1. Export the dequantized SmolLM2 folder to each type (peftlab.gguf_export): seconds and MB per file
   (f16 is the converter's run; the others are quantized from it, so their time excludes it).
2. Score " yes" / " no" after --rows CoLA dev prompts: transformers (fp32, batches of 16, padded)
   and llama.cpp (each GGUF above plus the package's own Q4_1 file; one sequence at a time, the
   prompt's KV cache reused for its second option). Tokens/s counts the prompt+option tokens of
   every sequence on both sides, the same number; llama.cpp evaluates fewer (prefix reuse), shown.
   Agreement: the share of prompts whose higher-scored option is transformers'.
Medians of --repeats; model loading excluded. Not a test: numbers depend on the CPU.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLA_DEV = "data:cola/in_domain_dev.tsv"  # a named data set (peftlab data list)
OPTIONS = ["yes", "no"]


def prompts(rows: int) -> list[str]:
    from peftlab.data.catalog import resolve

    with resolve(COLA_DEV, "bench").open() as f:
        sentences = [r[3] for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][:rows]
    return [f"Sentence: {s}\nIs this sentence grammatical? Answer:" for s in sentences]


def encoded(tok, texts: list[str]) -> list[list[dict]]:
    """Per prompt, each option's whole sequence (input_ids) and its token count (n_target)."""
    from peftlab.tasks.choices import encode_options

    out = []
    for p in texts:
        enc = encode_options(tok, p, OPTIONS, 256, "none")
        out.append([{"input_ids": enc["prompt_ids"] + ids, "n_target": len(ids)} for ids in enc["input_ids"]])
    return out


def hf_scores(model, enc: list[list[dict]], batch: int = 16) -> list[list[float]]:
    """Summed option log-probabilities, right-padded batches, as the transformers eval path scores."""
    import torch

    flat = [e for row in enc for e in row]
    out = []
    for i in range(0, len(flat), batch):
        part = flat[i : i + batch]
        width = max(len(e["input_ids"]) for e in part)
        ids = torch.tensor([e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in part])
        mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in part])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        for r, e in enumerate(part):
            n, end = e["n_target"], len(e["input_ids"])
            out.append(float(sum(logp[r, p - 1, ids[r, p]] for p in range(end - n, end))))
    return [out[i : i + len(OPTIONS)] for i in range(0, len(out), len(OPTIONS))]


def cpp_scores(scorer, enc: list[list[dict]]) -> list[list[float]]:
    return [[scorer.continuation(e["input_ids"], e["n_target"]) for e in row] for row in enc]


def timed(fn, repeats: int):
    values, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        values.append(time.perf_counter() - start)
    return statistics.median(values), result


def agreement(a: list[list[float]], b: list[list[float]]) -> float:
    pick = lambda row: max(range(len(row)), key=row.__getitem__)  # noqa: E731
    return sum(pick(x) == pick(y) for x, y in zip(a, b)) / len(a)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--types", default="f16,q8_0,q4_0,q4_k_m")
    ap.add_argument("--threads", type=int, default=0, help="both backends; 0: physical cores (a busy machine: fewer)")
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftlab.export.gguf import export_gguf, gguf_path, quantize
    from peftlab.hardware import physical_cores
    from peftlab.inference.llamacpp import LlamaScorer, open_llama
    from peftlab.models.loading import NAMED_MODELS, locate_package_file, resolve_model

    folder = resolve_model("smollm2-135m").path
    out = Path(tempfile.mkdtemp(prefix="peftlab-gguf-bench-"))
    files, rows = {}, []
    for kind in ["f16", *[t for t in args.types.split(",") if t != "f16"]]:
        start = time.perf_counter()  # f16: the converter; the others: quantized from that f16 file
        if kind == "f16":
            files.update(export_gguf(folder, out, ["f16"]))
        else:
            files[kind] = gguf_path(out, kind)
            quantize(files["f16"], files[kind], kind)
        rows.append(f"| {kind} | {time.perf_counter() - start:.1f} s | {files[kind].stat().st_size / 1e6:.1f} MB |")
    print("| file | time | size |\n|---|---|---|\n" + "\n".join(rows), flush=True)

    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(folder)
    enc = encoded(tok, prompts(args.rows))
    n_tokens = sum(len(e["input_ids"]) for row in enc for e in row)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    secs, ref = timed(lambda: hf_scores(model, enc), args.repeats)
    lines = [f"| transformers fp32 | {n_tokens / secs:.0f} | {n_tokens} | 1.000 |"]
    files["package Q4_1"] = locate_package_file("smollm2-135m", NAMED_MODELS["smollm2-135m"])
    for kind, path in files.items():
        scorer = LlamaScorer(open_llama(Path(path), n_ctx=512, n_threads=threads))
        secs, got = timed(lambda scorer=scorer: cpp_scores(scorer, enc), args.repeats)
        evaluated = scorer.evaluated // args.repeats
        lines.append(f"| llama.cpp {kind} | {n_tokens / secs:.0f} | {evaluated} | {agreement(got, ref):.3f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    print(
        f"\n{args.rows} CoLA prompts x {len(OPTIONS)} options, {n_tokens} tokens, median of {args.repeats}, "
        f"{threads} threads\n\n| backend | tokens/s | tokens evaluated | label agreement with transformers |\n"
        "|---|---|---|---|\n" + "\n".join(lines)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
