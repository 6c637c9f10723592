"""Scoring a fixed set of answer options per example: shared by multiple choice and by LLM
classification through label likelihood (classify_by: likelihood).

Every example is a `Choice`: a prompt and 2+ option texts, one of them right. Two ways to score:
  likelihood  a causal LM's log-likelihood of each option given the prompt (summed over the option's
              tokens, optionally divided by its token or character count). When every option is a
              single distinct token, one forward pass over the prompt alone suffices: the scores are
              the next-token log-probabilities of those tokens.
  classifier  a learnt linear score of each (prompt, option) sequence: transformers'
              *ForMultipleChoice for encoders, a one-output last-token score head for decoders.
Either way the model returns logits of shape (batch, options) and the cross-entropy over them, so
the Trainer, the metrics and every peft method see a plain classifier, and training teaches the model
to rank the right option first.

The scoring forward is added to the loaded transformers model by swapping in a subclass of its own
class (`with_scoring`) rather than by wrapping it in another module: peft then targets the model it
knows (LoRA defaults per architecture, the `score`/`classifier` head kept trainable), the Trainer
checkpoints only the adapter, and a saved adapter or model loads on the plain transformers class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from peftlab.errors import UserError
from peftlab.models.methods import method_of

NORMS = ("none", "tokens", "chars")


@dataclass
class Choice:
    prompt: str  # what precedes every option
    options: list[str]  # option texts, in display order
    answer: int  # index of the right option
    labels: list[str]  # option labels shown in predictions (A, B, ... or the data's own)
    meta: dict = field(default_factory=dict)  # display fields for the predictions file


def fill_template(template: str, fields: dict, source: str) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(
            f"prompt_template: {template!r} cannot be filled ({type(e).__name__}: {e}); "
            f"placeholders available for {source}: {', '.join('{' + k + '}' for k in fields)}"
        ) from None


# ---------------------------------------------------------------- encoding


def single_token_ids(words: list[str], tokenizer) -> list[int] | None:
    """Token ids when every option (after a space) is one distinct token, else None."""
    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in words]
    if all(len(i) == 1 for i in ids) and len({i[0] for i in ids}) == len(ids):
        return [i[0] for i in ids]
    return None


def encode_option(tokenizer, prompt: str, option: str, max_length: int, norm: str) -> dict:
    """prompt ids + ' option' ids, kept apart so the option's tokens are known exactly (tokenizing
    the joined text could merge tokens across the boundary). Too long: the prompt loses its start."""
    ctx = tokenizer(prompt)["input_ids"]
    cont = tokenizer(" " + option, add_special_tokens=False)["input_ids"][: max_length - 1]
    keep = max(1, max_length - len(cont))
    ids = ctx[-keep:] + cont
    div = {"none": 1.0, "tokens": float(len(cont)), "chars": float(max(1, len(option)))}[norm]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "n_target": len(cont), "score_div": div}


def encode_pair(tokenizer, prompt: str, option: str, max_len: int):
    """(prompt, option) as a text pair: the prompt gives way when too long (only_first), unless the
    option alone leaves it no room; then both are cut (longest_first) instead of the tokenizer
    raising (a science-exam option can run to 150 tokens)."""
    n_option = len(tokenizer(" " + option, add_special_tokens=False)["input_ids"])
    room = max_len - n_option - tokenizer.num_special_tokens_to_add(pair=True)
    how = "only_first" if room >= 1 else "longest_first"
    return tokenizer(prompt, " " + option, truncation=how, max_length=max_len)


def encode_choices(examples: list[Choice], tokenizer, max_len: int, pairs: bool, norm: str = "none"):
    """One row per example holding one sequence per option, options padded to the split's maximum
    with empty sequences (n_target 0) that the model scores as impossible. `pairs`: encode
    (prompt, option) as a tokenizer text pair, as encoders' multiple-choice heads expect."""
    import datasets

    tokenizer.padding_side = "right"  # the scorers find option tokens from the end of the mask
    width = max(len(c.options) for c in examples)
    rows = []
    for c in examples:
        if pairs:
            per = [encode_pair(tokenizer, c.prompt, option, max_len) for option in c.options]
            per = [
                {k: e[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in e}
                | {"n_target": 1, "score_div": 1.0}
                for e in per
            ]
        else:
            per = [encode_option(tokenizer, c.prompt, option, max_len, norm) for option in c.options]
        blank = {k: [] if isinstance(v, list) else type(v)(0) for k, v in per[0].items()}
        per += [blank] * (width - len(per))
        rows.append({k: [p[k] for p in per] for k in per[0]} | {"labels": c.answer})
    return datasets.Dataset.from_list(rows)


def encode_prompts(examples: list[Choice], tokenizer, max_len: int):
    """Single-token options: one sequence per example, the prompt alone (truncated from the left)."""
    import datasets

    tokenizer.padding_side = "right"
    ids = [tokenizer(c.prompt)["input_ids"][-max_len:] for c in examples]
    return datasets.Dataset.from_dict(
        {"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids], "labels": [c.answer for c in examples]}
    )


def collate(tokenizer):
    """Pads prompt-only rows like any classification batch and option rows with transformers'
    multiple-choice collator (its extra per-option fields come back as (batch, options, 1))."""
    from transformers import DataCollatorForMultipleChoice, DataCollatorWithPadding

    flat, nested = DataCollatorWithPadding(tokenizer), DataCollatorForMultipleChoice(tokenizer)

    def collator(features):
        if not isinstance(features[0]["input_ids"][0], list):
            return flat(features)
        batch = nested(features)
        for key in ("n_target", "score_div"):
            batch[key] = batch[key].squeeze(-1)
        return batch

    return collator


# ---------------------------------------------------------------- scoring models


def check_method(cfg, three_d: bool, head: bool) -> None:
    """Methods that cannot work here, refused before the run starts."""
    method = cfg.method.method
    if method_of(method).head_only and not head:
        raise UserError(
            "method: 'head' trains only a task head, and likelihood scoring has none; "
            "use lora (or another adapter), freeze or full"
        )
    if method_of(method).prompt and three_d:
        raise UserError(
            f"method: '{method}' prepends virtual tokens to 2-D inputs, but each example here is "
            f"one sequence per option; use lora (or another adapter), freeze or full"
        )


class ScoreOptions:
    """Mixin: forward over (batch, options, length) -> option scores (batch, options) and their
    cross-entropy. Only real options (n_target > 0) are run through the model."""

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        n_target=None,
        score_div=None,
        labels=None,
        inputs_embeds=None,
        **kwargs,
    ):
        if input_ids is not None and input_ids.dim() == 2 or inputs_embeds is not None and inputs_embeds.dim() == 3:
            scores = self.score_prompts(input_ids, attention_mask, inputs_embeds)
        else:
            valid = n_target > 0
            rows = self.score_rows(
                input_ids[valid],
                attention_mask[valid],
                None if token_type_ids is None else token_type_ids[valid],
                n_target[valid],
            )
            if score_div is not None:
                rows = rows / score_div[valid].to(rows.dtype)
            scores = torch.full(valid.shape, torch.finfo(rows.dtype).min, dtype=rows.dtype, device=rows.device)
            scores = scores.masked_scatter(valid, rows)
        loss = F.cross_entropy(scores.float(), labels) if labels is not None else None
        return {"loss": loss, "logits": scores} if loss is not None else {"logits": scores}


class LikelihoodScores(ScoreOptions):
    """Causal LM: sum of the option tokens' log-probabilities; or next-token log-probabilities of
    `option_token_ids` (single-token options) after a prompt-only sequence."""

    option_token_ids: list[int] | None = None

    def hidden(self, input_ids, attention_mask, inputs_embeds=None):
        out = self.base_model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)
        return out.last_hidden_state

    def score_prompts(self, input_ids, attention_mask, inputs_embeds):
        h = self.hidden(input_ids, attention_mask, inputs_embeds)
        last = attention_mask.long().sum(-1) - 1  # right padding; prompt-tuning's virtual tokens come first
        logits = self.get_output_embeddings()(h[torch.arange(len(h), device=h.device), last])
        return F.log_softmax(logits.float(), -1)[:, self.option_token_ids]

    def score_rows(self, input_ids, attention_mask, token_type_ids, n_target):
        h = self.hidden(input_ids, attention_mask)
        filled = attention_mask.cumsum(-1)
        target = attention_mask.bool() & (filled > (attention_mask.sum(-1) - n_target)[:, None])
        pred = target[:, 1:]  # the position before each option token predicts it
        logits = self.get_output_embeddings()(h[:, :-1][pred])  # only those positions: saves vocab x length
        logp = F.log_softmax(logits.float(), -1).gather(-1, input_ids[:, 1:][pred][:, None])[:, 0]
        row = torch.arange(len(input_ids), device=h.device)[:, None].expand_as(pred)[pred]
        return torch.zeros(len(input_ids), device=h.device).index_add(0, row, logp)


class ClassifierScores(ScoreOptions):
    """The model's own one-output head over each (prompt, option) sequence."""

    per_choice_axis = False  # *ForMultipleChoice models want (rows, 1, length)

    def score_rows(self, input_ids, attention_mask, token_type_ids, n_target):
        add_axis = (lambda t: None if t is None else t[:, None]) if self.per_choice_axis else (lambda t: t)
        out = super(ScoreOptions, self).forward(
            input_ids=add_axis(input_ids),
            attention_mask=add_axis(attention_mask),
            token_type_ids=add_axis(token_type_ids),
        )
        return out.logits.reshape(-1)


def with_scoring(model, mixin, **attrs):
    """Give a loaded transformers model the mixin's forward; the class keeps its name so that
    save_pretrained writes the plain architecture into config.json."""
    base = type(model)
    model.__class__ = type(base.__name__, (mixin, base), {"__module__": base.__module__, **attrs})
    return model


def load_pretrained(auto_cls, resolved, cfg, what: str):
    """auto_cls.from_pretrained with the run's dtype; failures become UserErrors."""
    from peftlab.models.loading import load_pretrained as load

    return load(auto_cls, resolved, cfg.model.dtype, cfg.model.trust_remote_code, what)


def load_likelihood_model(resolved, cfg, option_token_ids=None):
    from peftlab.models.loading import load_causal_lm

    model = load_causal_lm(resolved, cfg.model.dtype, cfg.model.trust_remote_code, "likelihood scoring")
    return with_scoring(model, LikelihoodScores, option_token_ids=option_token_ids)


def load_classifier_model(resolved, cfg, tokenizer):
    """*ForMultipleChoice where the architecture has one (encoders), else a one-output last-token
    sequence-classification head. Returns (model, pooling)."""
    from transformers import AutoConfig, AutoModelForMultipleChoice
    from transformers.models.auto.modeling_auto import MODEL_FOR_MULTIPLE_CHOICE_MAPPING

    from peftlab.models.loading import apply_pooling, load_for_classification

    config = AutoConfig.from_pretrained(resolved.path, trust_remote_code=cfg.model.trust_remote_code)
    if type(config) not in MODEL_FOR_MULTIPLE_CHOICE_MAPPING:
        model, pooling = load_for_classification(
            resolved, ["score"], cfg.model.pooling, cfg.model.dtype, tokenizer.pad_token_id, cfg.model.trust_remote_code
        )
        return with_scoring(model, ClassifierScores), pooling
    model = load_pretrained(AutoModelForMultipleChoice, resolved, cfg, "no multiple-choice head")
    pooling = apply_pooling(model, resolved.pooling if cfg.model.pooling == "auto" else cfg.model.pooling)
    return with_scoring(model, ClassifierScores, per_choice_axis=True), pooling


def softmax(scores):
    import numpy as np

    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
