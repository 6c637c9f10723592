"""Likelihood scoring runs each prompt once and scores its options from the prompt's KV cache
(choices.LikelihoodScores.score_after): the same scores and the same LoRA gradients as scoring every
option as a whole sequence, on the tiny llama and on a tiny Gemma 3 (sliding-window layers); an
architecture the cache cannot serve falls back to whole sequences and says why."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FILL, make_tokenizer

from peftlab.config.settings import load_config
from peftlab.models.loading import load_tokenizer, resolve_model
from peftlab.tasks.choices import (
    NORMS,
    Choice,
    collate,
    encode_choices,
    encode_options,
    load_likelihood_model,
    option_scoring,
)

MAX_LENGTH = 24
EXAMPLES = [
    Choice("the movie was", ["really good", "bad"], 0, list("AB")),  # 2 of 4 option slots are padding
    Choice("the plot and the acting", ["great", "sad .", "very poor film", "fine"], 2, list("ABCD")),
    Choice("a film", ["the story was quite boring , really", "lovely"], 1, list("AB")),
    Choice(" ".join(FILL * 2), ["superb", "awful and very boring"], 0, list("AB")),  # the prompt is cut
]


def tiny_decoder(folder: Path, kind: str) -> str:
    """A random 3-layer Gemma 3 (sliding window 4 on its first and last layer), Gemma 2 or LFM2 (two convolution
    layers around one attention layer), with the fixtures' llama-style tokenizer."""
    import torch
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        Lfm2Config,
        Lfm2ForCausalLM,
    )

    vocab = make_tokenizer(folder, "llama")
    size = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2)
    size |= dict(num_key_value_heads=1, max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    if kind == "gemma3":
        config = Gemma3TextConfig(
            head_dim=16,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            **size,
        )
        Gemma3ForCausalLM(config).save_pretrained(folder)
    elif kind == "gemma2":  # soft-capped logits (cap 30 in the real model; 0.05 here, where it changes them)
        config = Gemma2Config(head_dim=16, sliding_window=4, final_logit_softcapping=0.05, **size)
        Gemma2ForCausalLM(config).save_pretrained(folder)
    else:
        Lfm2ForCausalLM(Lfm2Config(layer_types=["conv", "full_attention", "conv"], **size)).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def decoders(tiny_llama, tmp_path_factory) -> dict:
    return {"llama": tiny_llama} | {
        kind: tiny_decoder(tmp_path_factory.mktemp(f"tiny-{kind}"), kind) for kind in ("gemma3", "gemma2", "lfm2")
    }


def batch_of(folder: str, norm: str):
    tok = load_tokenizer(folder)
    ds = encode_choices(EXAMPLES, tok, MAX_LENGTH, pairs=False, norm=norm)
    return tok, collate(tok)([ds[i] for i in range(len(ds))])


def by_hand(folder: str, tok, norm: str) -> list[list[float]]:
    """Each option's summed log-probability from the plain model, one unpadded sequence at a time."""
    import torch
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    out = []
    for c in EXAMPLES:
        enc, row = encode_options(tok, c.prompt, c.options, MAX_LENGTH, norm), []
        for ids, div in zip(enc["input_ids"], enc["score_div"]):
            seq = enc["prompt_ids"] + ids
            with torch.no_grad():
                logp = torch.log_softmax(plain(torch.tensor([seq])).logits[0].float(), -1)
            start = len(enc["prompt_ids"])
            row.append(sum(logp[start + i - 1, t].item() for i, t in enumerate(ids)) / div)
        out.append(row)
    return out


@pytest.mark.parametrize("kind", ["llama", "gemma3", "gemma2"])
@pytest.mark.parametrize("norm", NORMS)
def test_cached_prompt_scores_equal_whole_sequence_scores(kind, norm, decoders):
    import torch

    folder = decoders[kind]
    tok, batch = batch_of(folder, norm)
    cut = encode_options(tok, EXAMPLES[3].prompt, EXAMPLES[3].options, MAX_LENGTH, norm)
    assert len(tok(EXAMPLES[3].prompt)["input_ids"]) > len(cut["prompt_ids"]) == MAX_LENGTH - max(cut["n_target"])
    model = load_likelihood_model(resolve_model(folder), load_config(None, [f"model={folder}"])).eval()
    assert model.whole_sequences is None
    with torch.no_grad():
        cached = model(**batch)["logits"]
        model.whole_sequences = "compared"
        whole = model(**batch)["logits"]
    expected = by_hand(folder, tok, norm)
    for row, (c, scores) in enumerate(zip(EXAMPLES, expected)):
        n = len(c.options)
        assert cached[row, :n].tolist() == pytest.approx(scores, abs=1e-4), row
        assert whole[row, :n].tolist() == pytest.approx(scores, abs=1e-4), row
        assert (cached[row, n:] == torch.finfo(cached.dtype).min).all()  # padded option slots: impossible


def test_a_training_step_through_the_cache_gives_the_whole_sequence_lora_gradients(tiny_llama):
    import torch

    from peftlab.models.method_types import MethodContext
    from peftlab.models.methods import apply_method

    tok, batch = batch_of(tiny_llama, "tokens")
    cfg = load_config(None, [f"model={tiny_llama}", "lora_target=q_proj,v_proj", "lora_rank=4", "lora_dropout=0"])
    model = apply_method(
        load_likelihood_model(resolve_model(tiny_llama), cfg), cfg.method, MethodContext("SEQ_CLS", 1, tiny_llama)
    )
    torch.manual_seed(0)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}
    assert len(lora) == 2 * 2 * 2  # A and B of q_proj and v_proj in 2 layers
    for name, p in lora.items():
        if "lora_B" in name:  # peft starts B at zero, which would leave every A gradient zero
            torch.nn.init.normal_(p, std=0.1)
    grads = {}
    for whole_sequences in (None, "compared"):
        model.get_base_model().whole_sequences = whole_sequences
        model.zero_grad()
        model.train()(**batch)["loss"].backward()
        grads[whole_sequences] = {n: p.grad.clone() for n, p in lora.items()}
    for name in lora:
        assert grads[None][name].abs().sum() > 0, name
        torch.testing.assert_close(grads[None][name], grads["compared"][name], atol=1e-5, rtol=1e-4)


def test_convolution_layers_fall_back_to_whole_sequences_and_say_so(decoders, capsys):
    import torch

    folder = decoders["lfm2"]
    cfg = load_config(None, [f"model={folder}", "task=multiple_choice"])
    model = load_likelihood_model(resolve_model(folder), cfg).eval()
    assert model.whole_sequences == "layer types conv"
    assert "scored with its whole prompt re-read: layer types conv" in capsys.readouterr().out
    assert option_scoring(model, cfg) == "whole sequences per option (layer types conv)"
    tok, batch = batch_of(folder, "none")
    with torch.no_grad():
        got = model(**batch)["logits"]
    for row, (c, scores) in enumerate(zip(EXAMPLES, by_hand(folder, tok, "none"))):
        assert got[row, : len(c.options)].tolist() == pytest.approx(scores, abs=1e-4), row


def test_gradient_checkpointing_trains_on_whole_sequences(tiny_llama):
    """Checkpointed layers drop the cache they are given (transformers' GradientCheckpointingLayer), so
    training with gradient_checkpointing scores whole sequences: the same scores, not options without a prompt."""
    import torch

    tok, batch = batch_of(tiny_llama, "tokens")
    cfg = load_config(None, [f"model={tiny_llama}", "gradient_checkpointing=true"])
    model = load_likelihood_model(resolve_model(tiny_llama), cfg)
    assert option_scoring(model, cfg).endswith("in training whole sequences (gradient checkpointing)")
    with torch.no_grad():
        cached = model.eval()(**batch)["logits"]
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trained = model.train()(**batch)["logits"]
    torch.testing.assert_close(trained.detach(), cached, atol=1e-4, rtol=0)


def test_a_head_whose_logits_the_model_changes_unknowingly_is_refused(tiny_llama):
    """head_fault compares the scorer's logits with the model's own forward: a model that changes its head's
    output in a way logit_transform does not know is refused at load, not scored with wrong probabilities."""
    import torch

    from peftlab.models.loading import load_causal_lm
    from peftlab.tasks.choices import head_fault, logit_transform

    model = load_causal_lm(resolve_model(tiny_llama), "float32", False, "a test").eval()
    assert head_fault(model) is None
    plain = model.forward
    model.forward = lambda **kw: type(plain(**kw))(logits=plain(**kw).logits * 3)  # an unknown scale
    assert "forward changes its LM head's logits" in head_fault(model)
    model.config.logits_scaling = 1 / 3  # Granite's scale, known: the scorer's logits are the model's again
    assert head_fault(model) is None
    assert torch.equal(logit_transform(model.config, torch.ones(2)), torch.full((2,), 3.0))
