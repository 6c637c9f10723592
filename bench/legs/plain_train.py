"""The 'plain' leg: a minimal transformers Trainer + peft script, the way the users' reports do it
(dynamic padding, library defaults, no tricks), for bench/run.py's jobs (a) sft and (b) cls.

    python bench/legs/plain_train.py JOB.json OUT.json

JOB.json (written by bench/run.py): kind (sft | cls), model (a local folder), data, rows, max_length,
batch_size, lr, lora (r, alpha, dropout, target), seed; sft reads alpaca JSON, cls a TSV with
sentence/label columns. OUT.json gets the BenchTiming figures; with `eval_data` (cls: a TSV like data, its
first `eval_rows` rows) also the accuracy of the trained model on them (bench job f, time to a model)."""

from __future__ import annotations

import csv
import json
import sys
import time

from timing import BenchTiming


def sft_rows(job, tok):
    """Chat-template the alpaca rows; loss on the answer only (the prompt's tokens get -100)."""
    rows = json.load(open(job["data"]))[: job["rows"]]
    out = []
    for r in rows:
        user = f"{r['instruction']}\n{r['input']}" if r.get("input", "").strip() else r["instruction"]
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False
        )
        full = tok.apply_chat_template(
            [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}], tokenize=False
        )
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"][: job["max_length"]]
        out.append(
            {
                "input_ids": ids,
                "attention_mask": [1] * len(ids),
                "labels": [-100] * min(len(p_ids), len(ids)) + ids[len(p_ids) :],
            }
        )
    return out


def cls_rows(job, tok, data=None, rows=None):
    with open(data or job["data"], newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[: rows or job["rows"]]
    return [
        {**tok(r["sentence"], truncation=True, max_length=job["max_length"]), "labels": int(r["label"])} for r in rows
    ]


def main() -> int:
    job, out = json.load(open(sys.argv[1])), sys.argv[2]
    import datasets
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(job["seed"])
    tok = AutoTokenizer.from_pretrained(job["model"])
    if tok.pad_token is None:  # a decoder's tokenizer (job f): its sequence-classification head needs a pad id
        tok.pad_token = tok.eos_token
    if job["kind"] == "sft":
        model = AutoModelForCausalLM.from_pretrained(job["model"])
        data, collator, task = sft_rows(job, tok), DataCollatorForSeq2Seq(tok, padding=True), "CAUSAL_LM"
    else:
        model = AutoModelForSequenceClassification.from_pretrained(job["model"], num_labels=2)
        model.config.pad_token_id = tok.pad_token_id
        data, collator, task = cls_rows(job, tok), DataCollatorWithPadding(tok), "SEQ_CLS"
    lora = job["lora"]
    model = get_peft_model(
        model,
        LoraConfig(
            task_type=task,
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=lora["target"],
        ),
    )
    args = TrainingArguments(
        output_dir=job["scratch"],
        per_device_train_batch_size=job["batch_size"],
        num_train_epochs=1,
        learning_rate=job["lr"],
        seed=job["seed"],
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(data),
        data_collator=collator,
        callbacks=[BenchTiming(out)],
    )
    trainer.train()
    if job.get("eval_data"):
        rows = cls_rows(job, tok, job["eval_data"], job["eval_rows"])
        pred = trainer.predict(datasets.Dataset.from_list(rows))
        right = (pred.predictions.argmax(-1) == pred.label_ids).sum()
        figures = json.load(open(out))
        json.dump({**figures, "accuracy": float(right) / len(rows), "finished_at": time.time()}, open(out, "w"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
