"""Each quantized-families row against its family's merged model and the majority class, item by item
(McNemar's exact test: a binomial test over the sentences one got right and the other wrong).

    python docs/results/quantized-families/compare.py runs/quantized-families
"""

import json
import sys
from pathlib import Path

from scipy.stats import binomtest

ROWS = ("lora-r8-merged", "lora-r8-f16", "lora-r8-q8_0", "lora-r8-q4_0", "base-gguf-llamacpp")


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def mcnemar(ok: list[bool], other: list[bool]) -> tuple[int, int, float]:
    gained = sum(x and not y for x, y in zip(ok, other))
    lost = sum(y and not x for x, y in zip(ok, other))
    return gained, lost, binomtest(gained, gained + lost).pvalue if gained + lost else 1.0


def main(folder: str) -> None:
    head = ("family", "row", "accuracy", "vs merged: right only here / only there, McNemar p", "vs majority, McNemar p")
    print("| " + " | ".join(head) + " |")
    print("|---|---|---|---|---|")
    for family in ("smollm2-135m", "gemma3-270m"):
        ref = load(Path(folder) / family / "lora-r8-merged" / "predictions_validation.jsonl")
        labels = [r["label"] for r in ref]
        majority = max(set(labels), key=labels.count)
        ref_ok = [r["prediction"] == r["label"] for r in ref]
        for row in ROWS:
            preds = load(Path(folder) / family / row / "predictions_validation.jsonl")
            assert [p["text"] for p in preds] == [r["text"] for r in ref], "rows out of order"
            ok = [p["prediction"] == p["label"] for p in preds]
            g, lo, p = mcnemar(ok, ref_ok)
            _, _, pm = mcnemar(ok, [label == majority for label in labels])
            print(
                f"| {family} | {row} | {sum(ok) / len(ok):.3f} | +{g} / -{lo}, p {p:.3g} | "
                f"{labels.count(majority) / len(labels):.3f}, p {pm:.2g} |"
            )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/quantized-families")
