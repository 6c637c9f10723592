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

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import DynamicCache

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


def encode_options(tokenizer, prompt: str, options: list[str], max_length: int, norm: str) -> dict:
    """The prompt's ids once and each ' option''s ids, kept apart so the option's tokens are known exactly
    (tokenizing the joined text could merge tokens across the boundary) and so the prompt runs once for all
    options (LikelihoodScores.score_after). Too long: the prompt loses its start, keeping its last
    max_length - (longest option) tokens, the same for every option. Options used to be cut one by one (each
    kept max_length - its own length of prompt), which differs only where prompt + option overflowed: a
    shorter option then saw more of the prompt than it does now."""
    conts = [tokenizer(" " + option, add_special_tokens=False)["input_ids"][: max_length - 1] for option in options]
    keep = max(1, max_length - max(map(len, conts)))
    return {
        "prompt_ids": tokenizer(prompt)["input_ids"][-keep:],
        "input_ids": conts,
        "attention_mask": [[1] * len(c) for c in conts],
        "n_target": [len(c) for c in conts],
        "score_div": [divisor(norm, len(c), o) for c, o in zip(conts, options)],
    }


def divisor(norm: str, n_tokens: int, option: str) -> float:
    """What an option's summed log-probability is divided by (length_norm)."""
    return {"none": 1.0, "tokens": float(n_tokens), "chars": float(max(1, len(option)))}[norm]


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
    (prompt, option) as a tokenizer text pair, as encoders' multiple-choice heads expect; otherwise the
    row holds the prompt once (prompt_ids) and each option's own tokens (encode_options)."""
    import datasets

    tokenizer.padding_side = "right"  # the scorers find option tokens from the mask (collate left-pads prompt_ids)
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
            row = {k: [p[k] for p in per] for k in per[0]}
        else:
            row = encode_options(tokenizer, c.prompt, c.options, max_len, norm)
        for key, per_option in row.items():
            if key != "prompt_ids":
                blank = [] if isinstance(per_option[0], list) else type(per_option[0])(0)
                per_option += [blank] * (width - len(per_option))
        rows.append(row | {"labels": c.answer})
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
    multiple-choice collator (its extra per-option fields come back as (batch, options, 1)); a shared
    prompt becomes prompt_ids and prompt_mask, padded on the left (LikelihoodScores.score_after says why)."""
    from transformers import DataCollatorForMultipleChoice, DataCollatorWithPadding

    flat, nested = DataCollatorWithPadding(tokenizer), DataCollatorForMultipleChoice(tokenizer)

    def collator(features):
        if not isinstance(features[0]["input_ids"][0], list):
            return flat(features)
        batch = nested([{k: v for k, v in f.items() if k != "prompt_ids"} for f in features])
        for key in ("n_target", "score_div"):
            batch[key] = batch[key].squeeze(-1)
        if "prompt_ids" in features[0]:
            prompts = [f["prompt_ids"] for f in features]
            padded = tokenizer.pad({"input_ids": prompts}, padding_side="left", return_tensors="pt")
            batch["prompt_ids"], batch["prompt_mask"] = padded["input_ids"], padded["attention_mask"]
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
        prompt_ids=None,
        prompt_mask=None,
        labels=None,
        inputs_embeds=None,
        **kwargs,
    ):
        if input_ids is not None and input_ids.dim() == 2 or inputs_embeds is not None and inputs_embeds.dim() == 3:
            scores = self.score_prompts(input_ids, attention_mask, inputs_embeds)
        else:
            valid = n_target > 0
            if prompt_ids is not None:  # likelihood: the options' own tokens after a shared prompt
                rows = self.score_after(prompt_ids, prompt_mask, input_ids, attention_mask, valid)
            else:
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
    whole_sequences: str | None = None  # why this model re-reads the prompt for each option; None: it runs once

    def head(self, h):
        """The model's logits of hidden states h: its LM head, then what the model does to the head's output
        (logit_transform; load_likelihood_model checked this against the model's own forward)."""
        return logit_transform(self.config, self.get_output_embeddings()(h))

    def hidden(self, input_ids, attention_mask, inputs_embeds=None):
        out = self.base_model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)
        return out.last_hidden_state

    def score_prompts(self, input_ids, attention_mask, inputs_embeds):
        h = self.hidden(input_ids, attention_mask, inputs_embeds)
        last = attention_mask.long().sum(-1) - 1  # right padding; prompt-tuning's virtual tokens come first
        logits = self.head(h[torch.arange(len(h), device=h.device), last])
        return F.log_softmax(logits.float(), -1)[:, self.option_token_ids]

    def score_after(self, prompt_ids, prompt_mask, option_ids, option_mask, valid):
        """Summed log-probabilities of the real options' tokens, each after its example's prompt.

        The prompt runs once; each real option continues from its own copy of the prompt's keys and values
        (OptionsAfterPrompt), at positions counted from the prompt's real tokens, so every token sees what it
        sees in the option's whole sequence. Prompts come left-padded (collate): all end
        at the last column, whose states predict every option's first token, and an option's tokens follow
        its prompt's last token in the cache with no pads between. Distances in the cache are then those of
        the whole sequence, which is what sliding-window layers count in (their mask, and their cache that
        keeps only the last window of tokens: right-padded, a short prompt's end would fall out of it)."""
        rows = valid.nonzero()[:, 0]  # each real option's example
        ids, mask = option_ids[valid], option_mask[valid]
        gradient_checkpointing = self.training and torch.is_grad_enabled() and self.is_gradient_checkpointing
        if self.whole_sequences or gradient_checkpointing:  # (checkpointed layers drop the cache they are given)
            whole_ids, whole_mask = joined(prompt_ids[rows], prompt_mask[rows], ids, mask)
            return self.score_rows(whole_ids, whole_mask, None, mask.sum(-1))
        cache = DynamicCache(config=self.config)
        last = self.base_model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
            cache=cache,
        ).last_hidden_state[:, -1]
        if fault := cache_fault(cache, prompt_ids.shape[1], self.config):  # prompt_cache_refusal passed at load
            raise RuntimeError(f"likelihood scoring: the prompt's cache cannot be reused: {fault}")
        h = self.base_model(
            input_ids=ids,
            attention_mask=torch.cat([prompt_mask[rows], mask], -1),
            position_ids=prompt_mask.sum(-1)[rows, None] + torch.arange(ids.shape[1], device=ids.device),
            cache=OptionsAfterPrompt(cache, rows),
        ).last_hidden_state
        target = mask.bool()
        before = torch.cat([last[rows, None], h[:, :-1]], 1)[target]  # the states that predict each option token
        logits = self.head(before)
        logp = F.log_softmax(logits.float(), -1).gather(-1, ids[target][:, None])[:, 0]
        row = torch.arange(len(ids), device=ids.device)[:, None].expand_as(target)[target]
        return torch.zeros(len(ids), device=ids.device).index_add(0, row, logp)

    def score_rows(self, input_ids, attention_mask, token_type_ids, n_target):
        """Whole right-padded sequences: the last n_target real tokens of each are scored."""
        h = self.hidden(input_ids, attention_mask)
        filled = attention_mask.cumsum(-1)
        target = attention_mask.bool() & (filled > (attention_mask.sum(-1) - n_target)[:, None])
        pred = target[:, 1:]  # the position before each option token predicts it
        logits = self.head(h[:, :-1][pred])  # only those positions: saves vocab x length
        logp = F.log_softmax(logits.float(), -1).gather(-1, input_ids[:, 1:][pred][:, None])[:, 0]
        row = torch.arange(len(input_ids), device=h.device)[:, None].expand_as(pred)[pred]
        return torch.zeros(len(input_ids), device=h.device).index_add(0, row, logp)


class OptionsAfterPrompt(DynamicCache):
    """The prompts' cache as the options read it: option i attends to a copy of prompt rows[i]'s keys and
    values. Each layer's copies are made when the layer attends (its update, on a shallow copy of the prompt's
    cache layer, so plain and sliding-window layers keep their own rules) and not kept: without gradients, one
    layer's copies exist at a time instead of every layer's (batch_select_indices on the whole cache), and
    the prompt's cache stays as it is, its sizes giving the options' masks."""

    def __init__(self, prompt: DynamicCache, rows: torch.Tensor):
        super().__init__()
        self.layers, self.layer_class_to_replicate, self.rows = prompt.layers, None, rows

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        layer = copy.copy(self.layers[layer_idx])
        layer.batch_select_indices(self.rows)
        return layer.update(key_states, value_states, *args, **kwargs)


def joined(prompt_ids, prompt_mask, option_ids, option_mask):
    """Each option as one right-padded whole sequence, its prompt's real tokens then its own: what the
    model reads when the prompt is not cached."""
    ids, mask = torch.cat([prompt_ids, option_ids], -1), torch.cat([prompt_mask, option_mask], -1)
    order = torch.argsort((mask == 0).int(), dim=-1, stable=True)  # real tokens first, in their order
    width = int(mask.sum(-1).max())
    return ids.gather(-1, order)[:, :width], mask.gather(-1, order)[:, :width]


def cache_fault(cache, length: int, config) -> str | None:
    """What keeps `cache`, just filled by a prompt of `length` columns, from being copied per option (None:
    nothing): every layer must hold the prompt in a plain or sliding-window DynamicCache layer, the kinds
    whose batch_select_indices copies them whole."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    known = (DynamicLayer, DynamicSlidingWindowLayer)
    if kinds := sorted({type(layer).__name__ for layer in cache.layers if type(layer) not in known}):
        return f"cache layers of kind {', '.join(kinds)}"
    n_layers = config.get_text_config(decoder=True).num_hidden_layers
    if len(cache.layers) != n_layers or any(layer.get_seq_length() != length for layer in cache.layers):
        return f"the model did not fill the cache it was given ({length} tokens in each of {n_layers} layers)"
    return None


def prompt_cache_refusal(model) -> str | None:
    """Why `model` cannot score options after a cached prompt (None: it can). Its layers must be full or
    sliding-window attention (chunked attention's mask, recurrent and convolution states read the sequence
    otherwise than by distances between real tokens), its forward must take cache= and position_ids=, and a
    2-token prompt must fill a DynamicCache that cache_fault accepts."""
    import inspect

    types = set(getattr(model.config.get_text_config(decoder=True), "layer_types", None) or ())
    if other := sorted(types - {"full_attention", "sliding_attention"}):
        return f"layer types {', '.join(other)}"
    if not {"cache", "position_ids"} <= inspect.signature(model.base_model.forward).parameters.keys():
        return f"{type(model.base_model).__name__}.forward takes no cache= and position_ids="
    cache = DynamicCache(config=model.config)
    ids = torch.zeros((1, 2), dtype=torch.long, device=model.device)
    with torch.no_grad():
        model.base_model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(2, device=model.device)[None],
            cache=cache,
        )
    return cache_fault(cache, 2, model.config)


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


def logit_transform(config, logits):
    """What causal LMs do to their LM head's output before the softmax, where transformers has it in the model's
    forward rather than in the head (Gemma 2's soft-capping, Cohere's and Granite's scales). Written out here
    because likelihood scoring projects only the positions it scores, not the whole sequence as forward() does;
    head_fault checks the result against the model's own logits at load."""
    text = config.get_text_config()
    if cap := getattr(text, "final_logit_softcapping", None):
        logits = torch.tanh(logits / cap) * cap
    if (scale := getattr(text, "logit_scale", None)) is not None and type(scale) in (int, float):
        logits = logits * scale  # Cohere
    if (scale := getattr(text, "logits_scaling", None)) is not None:
        logits = logits / scale  # Granite
    return logits


def head_fault(model) -> str | None:
    """None when LikelihoodScores.head gives the model's own logits (its forward's, on a 3-token input), else
    what differs: a model whose forward changes the logits in a way logit_transform does not know would be
    scored with the wrong probabilities, silently."""
    ids = torch.tensor([[0, 1, 2]], device=model.device)
    with torch.no_grad():
        own = model(input_ids=ids).logits.float()
        h = model.base_model(input_ids=ids).last_hidden_state
        ours = logit_transform(model.config, model.get_output_embeddings()(h)).float()
    if own.shape == ours.shape and torch.allclose(own, ours, rtol=1e-3, atol=1e-3 * own.abs().max().item()):
        return None
    return (
        f"{type(model).__name__}'s forward changes its LM head's logits in a way peftlab does not reproduce "
        f"(largest difference {(own - ours).abs().max().item():.3g} over logits up to {own.abs().max().item():.3g})"
    )


def load_likelihood_model(resolved, cfg, option_token_ids=None):
    """The causal LM with LikelihoodScores' forward. Multi-token options are scored after the prompt's
    cache where the model allows it; where not, as whole sequences, and the reason is printed."""
    from peftlab.models.loading import load_causal_lm

    model = load_causal_lm(resolved, cfg.model.dtype, cfg.model.trust_remote_code, "likelihood scoring")
    if fault := head_fault(model):
        raise UserError(
            f"likelihood scoring of {resolved}: {fault}. Score with the model's own forward instead: "
            "classify_by: generate (classification) or mc_head: generate (multiple choice)"
        )
    why = None if option_token_ids else prompt_cache_refusal(model)
    if why:
        print(f"peftlab: each option is scored with its whole prompt re-read: {why}", flush=True)
    return with_scoring(model, LikelihoodScores, option_token_ids=option_token_ids, whole_sequences=why)


def option_scoring(model, cfg) -> str:
    """How multi-token options are scored, for result.json."""
    if model.whole_sequences:
        return f"whole sequences per option ({model.whole_sequences})"
    if cfg.train.gradient_checkpointing:
        return "prompt once, options from its KV cache; in training whole sequences (gradient checkpointing)"
    return "prompt once, options from its KV cache"


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
