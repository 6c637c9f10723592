"""Job (d)'s 'users' leg: the predict.py of the users' exam reports — load the model once, then for each
row build the prompt, generate, parse the label word, append it to result_NAME.txt — one row at a time.
The same instruction, chat template, greedy decoding, max_new_tokens and parsing rule as
`peftlab predict recipes/cola-smollm2-generate.yaml` (peftlab.tasks.cls_generate), so only the batching
differs.

    python bench/legs/predict_one_by_one.py JOB.json OUT.json

JOB.json: model (folder), data (CoLA dev TSV, no header: source, label, mark, sentence), rows,
instruction, label_words, max_new_tokens, result (the result_*.txt path)."""

from __future__ import annotations

import csv
import json
import sys
import time


def main() -> int:
    job, out = json.load(open(sys.argv[1])), sys.argv[2]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftlab.tasks.cls_generate import parse

    tok = AutoTokenizer.from_pretrained(job["model"])
    model = AutoModelForCausalLM.from_pretrained(job["model"]).eval()
    with open(job["data"], newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[: job["rows"]]
    words = [[w] for w in job["label_words"]]
    instruction = job["instruction"].replace("{choices}", ", ".join(job["label_words"]))
    started = time.perf_counter()
    answers = []
    for row in rows:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": f"{instruction}\n\n{row[3]}"}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            seq = model.generate(
                **ids,
                max_new_tokens=job["max_new_tokens"],
                do_sample=False,
                pad_token_id=tok.pad_token_id or tok.eos_token_id,
            )
        text = tok.decode(seq[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        label = parse(text, words)
        answers.append("" if label is None else str(label))  # the label's own spelling (CoLA: 0 / 1), as peftlab writes
    seconds = time.perf_counter() - started
    with open(job["result"], "w") as f:
        f.write("\n".join(answers) + "\n")
    gold = [r[1] for r in rows]
    json.dump(
        {
            "seconds": seconds,
            "rows": len(rows),
            "accuracy": sum(a == g for a, g in zip(answers, gold)) / len(rows),
            "unparsed": answers.count(""),
        },
        open(out, "w"),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
