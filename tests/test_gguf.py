"""GGUF, closed loop: export with llama.cpp's converter and quantizer, evaluate through llama.cpp, and
agree with the transformers path (tolerances stated per type)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES

from peftlab.cli import main
from peftlab.errors import UserError
from peftlab.export.gguf import export_gguf
from peftlab.inference.llamacpp import LlamaScorer, open_llama

COLA = SAMPLES / "cola"


@pytest.fixture(scope="module")
def smollm2_folder() -> str:
    from peftlab.models.loading import resolve_model

    return resolve_model("smollm2-135m").path  # dequantized once and cached


@pytest.fixture(scope="module")
def tiny_llama_bpe(tmp_path_factory, smollm2_folder) -> Path:
    """A 2-layer, hidden-32 random llama with SmolLM2's tokenizer: llama.cpp's converter knows that
    tokenizer (a word-level test tokenizer has no llama.cpp pre-tokenizer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama-bpe")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (Path(smollm2_folder) / name).is_file():
            shutil.copy(Path(smollm2_folder) / name, folder / name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the init's: log-probabilities far from uniform
        for p in model.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    model.save_pretrained(folder)
    return folder


def whole_sequence(tok, prompt: str, option: str) -> tuple[list[int], int]:
    """(prompt + option token ids, the option's token count), as the transformers path encodes them."""
    from peftlab.tasks.choices import encode_options

    enc = encode_options(tok, prompt, [option], 128, "none")
    return enc["prompt_ids"] + enc["input_ids"][0], enc["n_target"][0]


def hf_continuation_logprobs(folder, pairs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    out = []
    for prompt, option in pairs:
        seq, n = whole_sequence(tok, prompt, option)
        ids = torch.tensor([seq])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        out.append(float(sum(logp[p - 1, ids[0, p]] for p in range(ids.shape[1] - n, ids.shape[1]))))
    return tok, out


PAIRS = [
    ("The movie was", "great"),
    ("The movie was", "terrible and long"),
    ("Is it raining? Answer:", "yes"),
    ("Is it raining? Answer:", "no"),
    ("2 + 2 =", "4"),
]


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama_bpe, tmp_path_factory) -> dict:
    """f16 / q8_0 / q4_0 files of the tiny llama, exported once for the tests below."""
    out = tmp_path_factory.mktemp("tiny-gguf")
    files = export_gguf(tiny_llama_bpe, out, ["f16", "q8_0", "q4_0"])
    assert not list(out.glob(".*tmp*")) and not list(out.glob(".*intermediate*"))
    return files


def test_tiny_llama_gguf_types_agree_with_transformers(tiny_llama_bpe, tiny_gguf):
    files = tiny_gguf
    assert sorted(files) == ["f16", "q4_0", "q8_0"] and all(p.is_file() for p in files.values())
    sizes = {k: p.stat().st_size for k, p in files.items()}
    assert sizes["q4_0"] < sizes["q8_0"] < sizes["f16"]
    tok, expected = hf_continuation_logprobs(tiny_llama_bpe, PAIRS)
    # f16 weights round the fp32 ones to ~3 significant digits; q8_0 and q4_0 quantize further
    for kind, tol in (("f16", 0.05), ("q8_0", 0.3), ("q4_0", 2.0)):
        scorer = LlamaScorer(open_llama(files[kind], n_ctx=256))
        got = []
        for prompt, option in PAIRS:
            got.append(scorer.continuation(*whole_sequence(tok, prompt, option)))
        assert np.allclose(got, expected, atol=tol), (kind, got, expected)
    assert scorer.evaluated < sum(len(whole_sequence(tok, p, o)[0]) for p, o in PAIRS)


def test_tiny_llama_f16_greedy_generation_matches_transformers(tiny_llama_bpe, tiny_gguf):
    """The backend's greedy generator (the eval/predict hook) gives transformers' greedy tokens on f16."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftlab.inference.llamacpp import generator

    tok = AutoTokenizer.from_pretrained(tiny_llama_bpe)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_bpe, dtype=torch.float32).eval()
    prompts = [tok(p)["input_ids"] for p in ("The movie was", "Is it raining? Answer:", "Once upon a time")]
    cfg = SimpleNamespace(eval=SimpleNamespace(max_new_tokens=8))
    got = generator(open_llama(tiny_gguf["f16"], n_ctx=256), cfg, stops=[])(prompts, tok)
    for ids, new in zip(prompts, got):
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]), max_new_tokens=8, do_sample=False, min_new_tokens=8, pad_token_id=tok.eos_token_id
            )
        assert new == out[0, len(ids) :].tolist(), (tok.decode(ids), new)


def test_packaged_q4_1_gguf_scores_like_its_dequantized_weights(smollm2_folder):
    """The GGUF file the smollm2 package ships (Q4_1) loads in the llama.cpp backend and scores the
    continuations as transformers scores the same weights dequantized (llama.cpp multiplies them
    against 8-bit-quantized activations, hence the tolerance)."""
    from peftlab.models.loading import NAMED_MODELS, locate_package_file

    tok, expected = hf_continuation_logprobs(smollm2_folder, PAIRS)
    scorer = LlamaScorer(open_llama(locate_package_file("smollm2-135m", NAMED_MODELS["smollm2-135m"]), n_ctx=256))
    got = [scorer.continuation(*whole_sequence(tok, p, o)) for p, o in PAIRS]
    assert all(g < 0 for g in got) and np.allclose(got, expected, atol=0.3), (got, expected)
    yes, no = scorer.next_token(
        tok("Is it raining? Answer:")["input_ids"], [tok(" yes")["input_ids"][0], tok(" no")["input_ids"][0]]
    )
    assert yes < 0 and no < 0


def cola_args(tmp_path, *extra):
    return [
        "classify_by=likelihood",
        "model=smollm2-135m",
        f"train_file={COLA / 'in_domain_train.tsv'}",
        f"validation_file={COLA / 'in_domain_dev.tsv'}",
        "header='false'",
        "columns=[source,label,mark,sentence]",
        "text_column=sentence",
        "label_words=[no,yes]",
        "max_eval_samples=40",
        "max_samples=40",
        "max_length=64",
        f"output_dir={tmp_path / 'runs'}",
        *extra,
    ]


@pytest.mark.real
def test_smollm2_closed_loop_lora_merge_gguf_eval_through_llamacpp(tmp_path, capsys):
    """LoRA on 40 CoLA rows -> merge -> f16 / q8_0 GGUF -> llama.cpp: label-scored predictions agree."""
    assert (
        main(
            [
                "train",
                *cola_args(
                    tmp_path,
                    "epochs=1",
                    "batch_size=8",
                    "lr=3e-4",
                    "lora_rank=4",
                    "lora_target=q_proj,v_proj",
                    "run_name=lora",
                ),
            ]
        )
        == 0
    )
    run_dir = tmp_path / "runs" / "lora"
    assert main(["export", str(run_dir), "--merge", "--gguf", "f16,q8_0", "--out", str(tmp_path / "m")]) == 0
    assert main(["eval", str(tmp_path / "m"), "--out", str(tmp_path / "hf")]) == 0
    hf = json.loads((tmp_path / "hf" / "result.json").read_text())
    hf_preds = [json.loads(l)["prediction"] for l in (tmp_path / "hf" / "predictions_validation.jsonl").open()]
    trained = json.loads((run_dir / "result.json").read_text())["metrics_best"]
    assert hf["metrics_best"]["accuracy"] == pytest.approx(trained["accuracy"])
    for kind, max_flips in (("f16", 1), ("q8_0", 3)):  # of 40 predictions
        out = tmp_path / f"ev-{kind}"
        assert main(["eval", str(tmp_path / "m" / f"model-{kind}.gguf"), "--out", str(out)]) == 0
        result = json.loads((out / "result.json").read_text())
        assert result["source"]["backend"] == "llamacpp" and result["size_on_disk_mb"] > 50
        preds = [json.loads(l)["prediction"] for l in (out / "predictions_validation.jsonl").open()]
        assert sum(a != b for a, b in zip(preds, hf_preds)) <= max_flips, kind
        assert abs(result["metrics_best"]["accuracy"] - hf["metrics_best"]["accuracy"]) <= max_flips / 40


def row_agreement(hf_rows: list[dict], cpp_rows: list[dict], max_flips: int, atol: float) -> None:
    """Two backends agree row by row, not only overall: the same texts in the same order, at most
    `max_flips` predictions changed and each label probability within `atol` (two backends that swap
    answers on many rows can still tie on accuracy)."""
    assert [r["text"] for r in cpp_rows] == [r["text"] for r in hf_rows]
    flips = [i for i, (a, b) in enumerate(zip(hf_rows, cpp_rows)) if a["prediction"] != b["prediction"]]
    assert len(flips) <= max_flips, flips
    for i, (a, b) in enumerate(zip(hf_rows, cpp_rows)):
        assert a["probabilities"].keys() == b["probabilities"].keys()
        worst = max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"])
        assert worst <= atol, (i, a["probabilities"], b["probabilities"])


@pytest.mark.real
def test_packaged_q4_1_gguf_through_llamacpp_and_transformers(tmp_path):
    assert main(["eval", *cola_args(tmp_path), "--out", str(tmp_path / "hf")]) == 0
    assert main(["eval", *cola_args(tmp_path, "backend=llamacpp"), "--out", str(tmp_path / "cpp")]) == 0
    hf, cpp = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("hf", "cpp"))
    rows = {d: [json.loads(l) for l in (tmp_path / d / "predictions_validation.jsonl").open()] for d in ("hf", "cpp")}
    assert len(rows["hf"]) == 40
    # the same Q4_1 weights: dequantized by transformers, or run quantized by llama.cpp (q8 activations)
    row_agreement(rows["hf"], rows["cpp"], max_flips=2, atol=0.1)
    assert abs(hf["metrics_best"]["accuracy"] - cpp["metrics_best"]["accuracy"]) <= 2 / 40
    assert cpp["size_on_disk_mb"] < 120 < hf["size_on_disk_mb"]


def test_gguf_errors_are_clear(tmp_path, capsys):
    with pytest.raises(UserError, match="unknown type q3.*choose from f16"):
        export_gguf(tmp_path, tmp_path, ["q3"])
    with pytest.raises(UserError, match="no config.json"):
        export_gguf(tmp_path, tmp_path, ["f16"])
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "config.json").write_text(json.dumps({"architectures": ["FooForCausalLM"]}))
    with pytest.raises(UserError, match="converter failed.*FooForCausalLM"):
        export_gguf(tmp_path / "weird", tmp_path / "weird", ["f16"])
    assert not list((tmp_path / "weird").glob("*.gguf*"))
    (tmp_path / "bare.gguf").write_bytes(b"GGUF")
    assert main(["eval", str(tmp_path / "bare.gguf")]) == 2
    assert "says nothing about the task" in capsys.readouterr().err
    with pytest.raises(UserError, match="cannot load"):
        open_llama(tmp_path / "bare.gguf", 64)


def test_gguf_missing_tools_are_clear(tiny_llama_bpe, tmp_path, monkeypatch):
    """No converter, or no llama-cpp-python: a UserError naming `make gguf`, and no file left behind."""
    import sys

    monkeypatch.setenv("PEFTLAB_LLAMACPP_TOOLS", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="converter is not in .*nowhere.*make gguf"):
        export_gguf(tiny_llama_bpe, tmp_path / "a", ["f16"])
    monkeypatch.delenv("PEFTLAB_LLAMACPP_TOOLS")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` raises ImportError
    with pytest.raises(UserError, match="llama-cpp-python is not installed.*make gguf"):
        export_gguf(tiny_llama_bpe, tmp_path / "b", ["q8_0"])
    assert not (tmp_path / "b").exists()  # refused before the f16 conversion: nothing made
    with pytest.raises(UserError, match="llama-cpp-python is not installed.*make gguf"):
        open_llama(tmp_path / "x.gguf", 64)


def test_gguf_conversion_cache_hashes_once_shares_one_conversion_and_rebuilds_a_damaged_entry(
    tiny_gguf, tmp_path, monkeypatch, capsys
):
    import subprocess
    import sys

    from peftlab.models import loading as models

    gguf, cache, gate = Path(tiny_gguf["f16"]), tmp_path / "cache", tmp_path / "gate"
    gate.mkdir()
    # Both processes import everything first, then wait at a gate until both are there, and call
    # convert_gguf within milliseconds of each other: without the lock both would find no cache entry
    # and both convert (started plainly, one process's imports outlast the other's conversion).
    script = tmp_path / "convert.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "import transformers\n"
        "from peftlab.models.loading import convert_gguf\n"
        f"gate = Path({str(gate)!r})\n"
        "(gate / sys.argv[1]).touch()\n"
        "deadline = time.monotonic() + 240\n"
        "while len(list(gate.iterdir())) < 2:\n"
        "    assert time.monotonic() < deadline, 'the other process never reached the gate'\n"
        "    time.sleep(0.001)\n"
        f"print(convert_gguf(Path({str(gguf)!r}), Path({str(cache)!r})))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert sum("dequantizing" in out for out, _ in outs) == 1, outs  # the second waited on the lock, then reused it
    target = Path(outs[0][0].strip().splitlines()[-1])
    assert Path(outs[1][0].strip().splitlines()[-1]) == target and not list(target.parent.glob(".*tmp*"))

    hashed = []  # a later run reads the file's hash from the index: the GGUF is not read again
    monkeypatch.setattr(models, "sha256_of", lambda path, *a: hashed.append(path) or "0" * 64)
    assert models.convert_gguf(gguf, cache) == target and hashed == []
    monkeypatch.undo()

    weights = target / "model.safetensors"
    good = weights.read_bytes()
    damage = {
        "truncated": lambda: weights.write_bytes(good[: len(good) // 2]),
        "garbage header": lambda: weights.write_bytes(b"\xff" * 8 + good[8:]),
        "no manifest": lambda: (target / models.MANIFEST).unlink(),
    }
    reasons = {
        "truncated": "model.safetensors is missing or not",
        "garbage header": "model.safetensors does not parse",
        "no manifest": f"no readable {models.MANIFEST}",
    }
    for kind, hurt in damage.items():
        capsys.readouterr()
        hurt()
        assert models.convert_gguf(gguf, cache) == target
        out = capsys.readouterr().out
        assert "is damaged" in out and reasons[kind] in out and "dequantizing" in out, kind
        assert weights.read_bytes() == good and models.cache_problem(target) == ""


def test_multiple_choice_by_generation_through_llamacpp_agrees_with_transformers(tiny_llama_bpe, tiny_gguf, tmp_path):
    """mc_head generate on f16 through llama.cpp: the same greedy answers, the same letter ranking (the
    first-token log-probabilities from the generation's own logits) as transformers on the fp32 weights."""
    from test_multiple_choice import polarity_questions

    data = polarity_questions(tmp_path / "q.jsonl", 12, 0)
    args = [
        "task=multiple_choice",
        "mc_head=generate",
        f"train_file={data}",
        f"validation_file={data}",
        "max_new_tokens=3",
        "max_length=96",
    ]
    assert main(["eval", f"model={tiny_llama_bpe}", *args, "--out", str(tmp_path / "hf")]) == 0
    assert main(["eval", f"model={tiny_gguf['f16']}", *args, "--out", str(tmp_path / "cpp")]) == 0
    rows = {k: [json.loads(l) for l in (tmp_path / k / "predictions_validation.jsonl").open()] for k in ("hf", "cpp")}
    assert [r["generated"] for r in rows["cpp"]] == [r["generated"] for r in rows["hf"]]
    for a, b in zip(rows["hf"], rows["cpp"]):
        assert np.allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=0.01)
    cpp = json.loads((tmp_path / "cpp" / "result.json").read_text())
    assert cpp["source"]["backend"] == "llamacpp" and set(cpp["metrics_best"]) >= {"map@3", "generated_accuracy"}
