"""Offline fixtures: tiny random models (2 layers, hidden 32) with a locally built tokenizer,
and a small sentiment data set whose labels follow from its words (so training can learn)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

POS = ["good", "great", "fine", "lovely", "superb", "happy"]
NEG = ["bad", "awful", "poor", "sad", "terrible", "boring"]
FILL = ["the", "movie", "was", "really", "a", "plot", "and", "acting", "film", "story", "quite", "very"]
# Small samples of public data sets (each folder's SOURCE.md: origin, licence, how it was drawn): those the
# package ships, and research-only ones kept with the tests. The recipes' named sets (data:NAME/PATH) resolve
# to them, never to bigger copies a PEFTLAB_DATA_DIR of the environment may name, so every run reads the same.
SAMPLES = Path(__file__).resolve().parents[1] / "src" / "peftlab" / "samples"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "datasets"
os.environ["PEFTLAB_DATA_DIR"] = os.pathsep.join([str(FIXTURES), str(SAMPLES)])


def make_tokenizer(folder: Path, kind: str, extra: tuple = ()):
    """Word-level tokenizer over the fixture vocabulary (and `extra` words): BERT-style ([CLS] x [SEP])
    or llama-style."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] if kind == "bert" else ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + POS + NEG + FILL + [".", ","] + list(extra))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[1]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
        )
    else:
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
        )
    fast.save_pretrained(folder)
    return len(vocab)


def save_tiny_model(folder: Path, kind: str, extra: tuple = ()) -> str:
    """A 2-layer, hidden-32 random model of the given family, saved with its tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    vocab = make_tokenizer(folder, kind, extra)
    size = dict(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    if kind == "bert":
        BertModel(BertConfig(**size)).save_pretrained(folder)
    else:
        LlamaForCausalLM(LlamaConfig(num_key_value_heads=1, bos_token_id=2, eos_token_id=3, **size)).save_pretrained(
            folder
        )
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


def sentence(rng: random.Random, label: int) -> str:
    words = rng.sample(FILL, 4) + [rng.choice(POS if label else NEG)]
    rng.shuffle(words)
    return " ".join(words) + " ."


@pytest.fixture(scope="session")
def sentiment(tmp_path_factory) -> dict:
    """train.tsv (96 rows) and dev.tsv (32 rows) with header `sentence<TAB>label`, labels pos/neg."""
    folder = tmp_path_factory.mktemp("sentiment")
    rng = random.Random(0)
    for name, n in (("train", 96), ("dev", 32)):
        rows = ["sentence\tlabel"] + [f"{sentence(rng, i % 2)}\t{'pos' if i % 2 else 'neg'}" for i in range(n)]
        (folder / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    return {"train": str(folder / "train.tsv"), "dev": str(folder / "dev.tsv"), "dir": folder}


@pytest.fixture
def base_config(tiny_bert, sentiment, tmp_path):
    """Overrides for a fast run on the tiny BERT; tests add their own."""
    return [
        f"model={tiny_bert}",
        f"train_file={sentiment['train']}",
        f"validation_file={sentiment['dev']}",
        f"output_dir={tmp_path / 'runs'}",
        "epochs=1",
        "batch_size=16",
        "lr=5e-3",
        "max_length=16",
        "logging_steps=2",
        "save_steps=3",
    ]


@pytest.fixture
def executed(monkeypatch):
    """A sweep without child processes: runner.execute replaced, recording (run, mode) and marking the run
    completed (tests/test_sweep.py, tests/test_sweep_trust.py)."""
    import peftlab.sweep.runner as runner

    calls = []

    def fake_execute(sweep, run, progress, mode, *warm_start):
        calls.append((run.name, mode))
        return run.entry("completed")

    monkeypatch.setattr(runner, "execute", fake_execute)
    return calls
