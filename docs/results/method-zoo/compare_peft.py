"""The method zoo's SST-2/MiniLM part beside PEFT's own method comparison (MetaMathQA -> GSM8K test accuracy,
Llama-3.2-3B, 5,000 steps; huggingface/peft method_comparison/MetaMathQA/results at commit 5d602fd).

    python compare_peft.py report.json > zoo-vs-peft.md

PEFT's number per method is its default (or named) experiment listed in PEFT below; a method PEFT has not run is
'-'. The rank correlation is Spearman's over the methods both have (scipy).
"""

import json
import sys

from scipy.stats import spearmanr

# method -> (PEFT experiment, its GSM8K test accuracy)
PEFT = {
    "full": ("full-finetuning/llama-3.2-3B-lr_0.00001", 0.472),
    "lora": ("lora/llama-3.2-3B-rank32", 0.478),
    "dora": ("lora/llama-3.2-3B-rank32-dora", 0.469),
    "rslora": ("lora/llama-3.2-3B-rank64-rslora", 0.513),
    "adalora": ("adalora/llama-3.2-3B-rank32", 0.373),
    "ia3": ("ia3/llama-3.2-3B-default", 0.311),
    "loha": ("loha/llama-3.2-3B-rank32", 0.393),
    "lokr": ("lokr/llama-3.2-3B-rank32-factor4-lr0.003", 0.466),
    "prompt-tuning": ("prompt_tuning/llama-3.2-3B-default", 0.057),
    "p-tuning": ("ptuning/llama-3.2-3B-default", 0.350),
    "vera": ("vera/llama-3.2-3B-default", 0.354),
    "pvera": ("pvera/llama-3.2-3B-default", 0.353),
    "fourierft": ("fourierft/llama-3.2-3B-default", 0.000),
    "waveft": ("waveft/llama-3.2-3B-n_frequency-5000", 0.403),
    "oft": ("oft/llama-3.2-3B-rank32", 0.491),
    "boft": ("boft/llama-3.2-3B-default", 0.343),
    "road": ("road/llama-3.2-3B-lr_0.001", 0.385),
    "ln_tuning": ("ln_tuning/llama-3.2-3B-default", 0.000),
    "beft": ("beft/llama-3.2-3B-target-v_proj", 0.321),
    "vblora": ("vblora/llama-3.2-3B-default", 0.334),
    "miss": ("miss/llama-3.2-3B-default", 0.487),
    "shira": ("shira/llama-3.2-3B-lr_0.0003-random_seed_42", 0.510),
    "c3a": ("c3a/llama-3.2-3B-default", 0.487),
    "delora": ("delora/llama-3.2-3B-rank32", 0.468),
    "randlora": ("randlora/llama-3.2-3B-default", 0.478),
    "gralora": ("gralora/llama-3.2-3B-rank32", 0.495),
    "glora": ("glora/llama-3.2-3B-default", 0.418),
    "deft": ("deft/llama-3.2-3B-rank32", 0.482),
    "hira": ("hira/llama-3.2-3B-rank32-lr4.5e-3", 0.513),
    "lily": ("lily/llama-3.2-3B-rank140-mlp-a2-b2-s8.0", 0.526),
    "peanut": ("peanut/llama-3.2-3B-rank32-relu-depth0-s2.0", 0.449),
    "psoft": ("psoft/llama-3.2-3B-default", 0.449),
    "tinylora": ("tinylora/llama-3.2-3B-default", 0.012),
    "unilora": ("unilora/llama-3.2-3B-default", 0.002),
    "adamss": ("adamss/llama-3.2-3B-rank32", 0.345),
    "osf": ("osf/llama-3.2-3B-rank128", 0.427),
    "frod": ("frod/llama-3.2-3B-default", 0.509),
}


def main(path: str) -> None:
    s = json.load(open(path))
    metric, phase = s["metric"], s["headline"]["phase"]
    rows = []
    for g in s["groups"]:
        base = g["group"].split("-lr")[0].split("-method_args")[0].split("-vt")[0]
        method = g["method"] if base == g["method"] else g["group"]  # lora-pissa etc. are not PEFT's lora
        score = g[phase][metric]["mean"]
        epoch0 = g["metrics_epoch0"][metric]["mean"]
        rows.append((method, g["group"], epoch0, score, g["trainable_params"], g["time_per_epoch_s"]["mean"]))
    rows.sort(key=lambda r: -r[3])
    print(f"| method (run) | {metric} epoch 0 | {metric} best | trainable | s/epoch | PEFT GSM8K | PEFT experiment |")
    print("|---|---|---|---|---|---|---|")
    for method, group, e0, score, params, t in rows:
        exp, acc = PEFT.get(method, ("-", None))
        peft = f"{acc:.3f}" if acc is not None else "-"
        print(f"| {group} | {e0:.3f} | {score:.3f} | {params:,} | {t:.1f} | {peft} | {exp} |")
    both = [(r[3], PEFT[r[0]][1]) for r in rows if r[0] in PEFT]
    rho, p = spearmanr([a for a, _ in both], [b for _, b in both])
    print(f"\nSpearman's rank correlation over the {len(both)} methods both ran: {rho:.2f} (p = {p:.3f}).")


if __name__ == "__main__":
    main(sys.argv[1])
