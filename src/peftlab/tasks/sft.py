"""Instruction tuning (SFT) of a causal LM, scored by generating answers.

Data: alpaca / sharegpt / openai records (see chat.py), rendered with the tokenizer's chat template
or a named template. The loss covers the answer tokens only (`train_on_prompt` adds the prompts).
Examples longer than `max_length` are cut turn by turn as LLaMA-Factory does (each turn's prompt
and answer share the budget; a prompt keeps its end, next to the answer); the cuts are counted in
result.json. `packing` flattens each batch into one row with position ids restarting per example
(transformers' DataCollatorWithFlattening) and attention runs example by example (models/attention.py),
so packing changes no score.

Evaluation: the usual eval loss, then greedy (or sampled) generation on the split's first
`max_eval_generate` examples, batched and left-padded, scored by metrics.compute_generation
(BLEU-4, ROUGE-1/2/L, exact match; jieba for Chinese).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peftlab.config.settings import BOOL_WORDS
from peftlab.errors import UserError
from peftlab.models.attention import packs, use_packed_attention
from peftlab.models.loading import load_causal_lm
from peftlab.models.methods import method_of
from peftlab.runs.rundir import write_jsonl
from peftlab.tasks.chat import (
    Conversation,
    check_template,
    read_conversations,
    render,
    resolve_template,
    stop_texts,
)
from peftlab.tasks.metrics import compute_generation

TASK_TYPE = "CAUSAL_LM"
TOKEN_LEVEL_LOSS = True  # the model returns a token-level LM loss; the Trainer normalises it by token counts
LM_LOSS = True  # next-token loss over `labels`: peftlab.loss computes it from the answer tokens (train.chunked_loss)
DEFAULT_METRIC = "rougeL"
METRICS = ("rougeL", "rouge1", "rouge2", "bleu4", "bleu4_corpus", "exact_match", "loss")


class Examples(list):
    """One split's examples. They carry the split name and the run's notes, because encode() gets only
    this list and is where truncation (which needs the tokenizer) is counted."""

    def __init__(self, items, split: str, notes: dict):
        super().__init__(items)
        self.split, self.notes = split, notes


@dataclass
class Prepared:
    examples: dict[str, Examples]  # split -> Conversations
    notes: dict  # merged into result.json (truncation counts)
    generated: dict = field(default_factory=dict)  # split -> rows of its latest generation


def check_settings(cfg) -> None:
    check_template(cfg.task.template)
    if cfg.eval.max_new_tokens < 1:
        raise UserError(f"max_new_tokens: must be at least 1, got {cfg.eval.max_new_tokens}")
    method = method_of(cfg.method.method)
    if method.prompt and not method.prepends_tokens:  # prefix tuning: its prefix is a cache, not tokens
        raise UserError(
            f"method: '{cfg.method.method}' cannot be scored by generating: peft 0.21 feeds the prefix as "
            "past_key_values, and generate() (transformers 5) passes a cache of its own, so the prefix is dropped "
            "and every generated answer would be the untuned model's (bench/prefix_tuning.py shows it); use "
            "prompt-tuning or p-tuning"
        )
    packing = packing_choice(cfg)
    if packing not in ("auto", "true", "false"):
        raise UserError(f"packing: expected auto, true or false, got {cfg.task.packing!r}")
    if packing == "true" and method.prompt:
        raise UserError(
            f"packing: not with {cfg.method.method} (its virtual tokens go before each row, and a "
            f"packed row holds several examples); set packing: false"
        )


def prepare(splits, cfg) -> Prepared:
    check_settings(cfg)
    notes: dict = {}
    return Prepared(
        {name: Examples(read_conversations(split, cfg.data.sft_format), name, notes) for name, split in splits.items()},
        notes,
    )


# ---------------------------------------------------------------- tokens


def token_pairs(conv: Conversation, template: str, tokenizer) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) per turn; the template text carries any special tokens."""
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    return [(ids(p), ids(r)) for p, r in render(conv, template, tokenizer)]


def split_budget(source: int, target: int, budget: int) -> tuple[int, int]:
    """How many prompt and answer tokens of one turn fit in `budget` (LLaMA-Factory's infer_seqlen):
    a short answer is kept whole, a short prompt is kept whole, else both shrink in proportion."""
    if target * 2 < budget:
        max_target = budget
    elif source * 2 < budget:
        max_target = budget - source
    else:
        max_target = int(budget * target / (source + target))
    new_target = min(max_target, target)
    return min(max(budget - new_target, 0), source), new_target


def fit(pairs: list[tuple[list[int], list[int]]], cutoff: int) -> list[tuple[list[int], list[int]]]:
    """Cut a conversation to `cutoff` tokens turn by turn; turns past the budget are dropped."""
    out, budget = [], cutoff
    for prompt, answer in pairs:
        if budget <= 0:
            break
        s, t = split_budget(len(prompt), len(answer), budget)
        out.append((prompt[len(prompt) - s :], answer[:t]))  # the prompt keeps its end: the answer header
        budget -= s + t
    return out


def encode(examples, tokenizer, cfg):
    """input_ids / attention_mask / labels (-100 on prompt tokens unless train_on_prompt)."""
    import datasets

    template = resolve_template(cfg.task.template, tokenizer)
    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    truncated = answers_cut = 0
    for conv in examples:
        pairs = token_pairs(conv, template, tokenizer)
        kept = fit(pairs, cfg.task.max_length)
        truncated += sum(len(p) + len(r) for p, r in pairs) > cfg.task.max_length
        answers_cut += sum(len(r) for _, r in kept) < sum(len(r) for _, r in pairs)
        ids = [t for p, r in kept for t in p + r]
        labels = [t for p, r in kept for t in (p if cfg.task.train_on_prompt else [-100] * len(p)) + r]
        rows["input_ids"].append(ids)
        rows["attention_mask"].append([1] * len(ids))
        rows["labels"].append(labels)
    if isinstance(examples, Examples):
        examples.notes.setdefault("truncated", {})[examples.split] = truncated
        examples.notes.setdefault("answers_cut", {})[examples.split] = answers_cut
    return datasets.Dataset.from_dict(rows)


def build_model(resolved, prepared, cfg, tokenizer):
    model = load_causal_lm(resolved, cfg.model.dtype, cfg.model.trust_remote_code)
    # Training needs no KV cache (and packed rows must not get one: their masks are built without it).
    model.config.use_cache = False
    packing = packing_choice(cfg)
    on = packing == "true" or (packing == "auto" and not method_of(cfg.method.method).prompt and packs(model))
    cfg.task._packing_on = on  # `auto` resolved where the model is known, for build_collator (not a setting)
    notes = {"template": resolve_template(cfg.task.template, tokenizer), "packing": on}
    if on:  # packed rows attend example by example (models/attention.py), not under one mask
        notes["attention"] = use_packed_attention(model)
    return model, notes


def packing_choice(cfg) -> str:
    """auto | true | false (or the text typed, when it is none of them); yes/no and on/off as for a bool key."""
    text = str(cfg.task.packing).lower()
    word = BOOL_WORDS.get(text)
    return text if word is None else str(word).lower()


def packed(cfg) -> bool:
    """`packing` as build_model resolved it (`auto` needs the model); before that, only `true` packs."""
    return getattr(cfg.task, "_packing_on", packing_choice(cfg) == "true")


def build_collator(tokenizer, cfg):
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packed(cfg):  # the example boundaries go to the attention as cu_seq_lens_q (models/attention.py)
        return DataCollatorWithFlattening(return_flash_attn_kwargs=True)
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def preprocess_logits(logits, labels):
    """Scores come from generation: keep one number per row instead of vocabulary-sized logits."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    return logits.new_zeros(logits.shape[0])


# ---------------------------------------------------------------- generation


def stop_ids(tokenizer, model, template: str) -> list[int]:
    """Token ids that end an answer: the tokenizer's and the model's EOS, and the template's end of turn."""
    ids = {tokenizer.eos_token_id}
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    for text in stop_texts(template):
        tid = tokenizer.convert_tokens_to_ids(text)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def generate_texts(
    model,
    tokenizer,
    prompts: list[list[int]],
    cfg,
    stops: list[int],
    stop_text: tuple,
    first_token_ids: list[int] | None = None,
) -> list:
    """Answers to tokenized prompts: batched, left-padded, cut at the first stop text. With
    `first_token_ids`, each answer is (text, log-probabilities of those tokens as the answer's first
    token), read from the model's raw next-token distribution after the prompt in the same pass."""
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    training = model.training
    model.eval()
    out = []
    bar = tqdm(total=len(prompts), unit="row", desc="generating", leave=False, disable=None)  # None: off without a tty
    for i in range(0, len(prompts), cfg.eval.eval_batch_size):
        batch = tokenizer.pad(
            {"input_ids": prompts[i : i + cfg.eval.eval_batch_size]}, padding_side="left", return_tensors="pt"
        ).to(device)
        with torch.no_grad():
            gen = model.generate(
                **batch,
                max_new_tokens=cfg.eval.max_new_tokens,
                do_sample=cfg.eval.do_sample,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                use_cache=True,
                return_dict_in_generate=True,
                output_logits=first_token_ids is not None,
            )
        texts = [
            cut_answer(text, stop_text)
            for text in tokenizer.batch_decode(
                gen.sequences[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
            )
        ]
        if first_token_ids is None:
            out += texts
        else:
            logp = torch.log_softmax(gen.logits[0].float(), -1)[:, first_token_ids]
            out += list(zip(texts, logp.tolist()))
        bar.update(len(texts))
    bar.close()
    model.train(training)
    return out


def cut_answer(text: str, stop_text: tuple) -> str:
    for stop in stop_text:
        text = text.split(stop)[0]
    return text.strip()


def generate_split(prepared, split: str, env, first_token_ids: list[int] | None = None) -> list[dict]:
    """Generate answers for the split's first max_eval_generate examples: rows of prompt, reference,
    generated (and `first_logprobs` of `first_token_ids`, see generate_texts)."""
    cfg, tokenizer = env.cfg, env.tokenizer
    convs = prepared.examples[split][: cfg.eval.max_eval_generate or None]
    template = resolve_template(cfg.task.template, tokenizer)
    prompts = []
    for conv in convs:
        pairs = token_pairs(conv, template, tokenizer)
        ids = [t for p, r in pairs[:-1] for t in p + r] + pairs[-1][0]
        prompts.append(ids[-cfg.task.max_length :])
    if env.generate is not None:  # another backend (llama.cpp): token ids in, answer ids out
        decode = lambda ids: cut_answer(tokenizer.decode(ids, skip_special_tokens=True), stop_texts(template))
        answers = env.generate(prompts, tokenizer, first_token_ids)
        texts = [decode(a) for a in answers] if first_token_ids is None else [(decode(a), lp) for a, lp in answers]
    else:
        texts = sharded(
            prompts,
            lambda part: generate_texts(
                env.model,
                tokenizer,
                part,
                cfg,
                stop_ids(tokenizer, env.model, template),
                stop_texts(template),
                first_token_ids,
            ),
        )
    rows = []
    for conv, ids, answer in zip(convs, prompts, texts):
        text, logp = answer if first_token_ids is not None else (answer, None)
        rows.append(
            {
                "instruction": conv.turns[-1][0],
                "prompt": tokenizer.decode(ids),
                "reference": conv.turns[-1][1],
                "generated": text,
                **({"first_logprobs": logp} if logp is not None else {}),
            }
        )
    return rows


def sharded(items: list, work) -> list:
    """work(items) under DDP: each rank does every world-th item, the results are gathered back into
    the items' order on every rank (so each computes the same metrics), instead of every rank
    generating the whole split. One process: work(items)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return work(items)
    rank, world = dist.get_rank(), dist.get_world_size()
    parts = [None] * world
    dist.all_gather_object(parts, work(items[rank::world]))
    out = [None] * len(items)
    for r, part in enumerate(parts):
        out[r::world] = part
    return out


def build_compute_metrics(prepared: Prepared, split: str, env):
    def compute_metrics(eval_pred):
        rows = prepared.generated[split] = generate_split(prepared, split, env)
        return compute_generation([r["generated"] for r in rows], [r["reference"] for r in rows])

    return compute_metrics


def write_predictions(path, prepared, split: str, predictions, env) -> None:
    """The rows generated by the split's last evaluation (run just before, with the best weights)."""
    write_jsonl(path, prepared.generated.get(split, []))
