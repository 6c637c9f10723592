"""task=sft: instruction formats, templates, answer-only labels, truncation, generation metrics, runs."""

import json
import math
import random
from pathlib import Path

import pytest
import sacrebleu
from conftest import FILL, NEG, POS, SAMPLES
from rouge_score import rouge_scorer

from peftlab.config.settings import load_config
from peftlab.data.formats import Split, read_records
from peftlab.errors import UserError
from peftlab.models.methods import METHODS
from peftlab.tasks import chat, sft
from peftlab.tasks.metrics import compute_generation
from peftlab.training.train import run

CHATML_JINJA = (
    "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}"
)
TWO_TURNS = chat.Conversation("Be brief.", [("hi", "hello"), ("bye", "ciao")])


def write(path: Path, rows: list, jsonl: bool = False) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) if jsonl else json.dumps(rows))
    return str(path)


def split_of(rows: list) -> Split:
    return Split(rows, "data.json", list(range(1, len(rows) + 1)))


@pytest.fixture(scope="module")
def tok(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="module")
def instructions(tmp_path_factory) -> dict:
    """alpaca rows whose answer is the sentiment word of the instruction: 24 train, 8 dev."""
    folder = tmp_path_factory.mktemp("sft")
    rng = random.Random(0)
    rows = []
    for i in range(32):
        word = rng.choice(POS if i % 2 else NEG)
        rows.append({"instruction": " ".join(rng.sample(FILL, 3) + [word]), "input": "", "output": f"{word} ."})
    return {
        "train": write(folder / "train.json", rows[:24]),
        "dev": write(folder / "dev.json", rows[24:]),
        "rows": rows,
        "dir": folder,
    }


# ---------------------------------------------------------------- formats


def test_the_three_formats_read_into_the_same_conversation(tmp_path):
    alpaca = {"instruction": "bye", "input": "", "system": "Be brief.", "history": [["hi", "hello"]], "output": "ciao"}
    sharegpt = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "hi"},
            {"from": "gpt", "value": "hello"},
            {"from": "human", "value": "bye"},
            {"from": "gpt", "value": "ciao"},
        ]
    }
    openai = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"},
            {"role": "assistant", "content": "ciao"},
        ]
    }
    for name, rec in (("alpaca", alpaca), ("sharegpt", sharegpt), ("openai", openai)):
        for jsonl in (False, True):
            path = write(tmp_path / f"{name}.json{'l' if jsonl else ''}", [rec, rec], jsonl)
            split = read_records(path, "train_file")
            assert chat.detect_format(split, "auto") == name
            assert chat.read_conversations(split, "auto") == [TWO_TURNS, TWO_TURNS]


def test_alpaca_input_joins_the_instruction():
    conv = chat.read_conversations(split_of([{"instruction": "Translate.", "input": "chat", "output": "cat"}]), "auto")[
        0
    ]
    assert conv == chat.Conversation("", [("Translate.\nchat", "cat")])


@pytest.mark.parametrize(
    "rows, fmt, message",
    [
        (
            [{"prompt": "a", "answer": "b"}],
            "auto",
            r"data.json: row 1: cannot tell .*\(prompt, answer\).*set `sft_format:`",
        ),
        (
            [{"instruction": "a", "output": "b"}, {"instruction": "a", "output": " "}],
            "auto",
            r"data.json: row 2: key 'output' is missing or empty",
        ),
        (
            [{"instruction": "a", "output": "b", "history": [["q"]]}],
            "auto",
            r"row 1: history\[0\] must be a \[question, answer\]",
        ),
        (
            [{"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}],
            "auto",
            r"row 1: conversations\[1\].from: 'human' where an assistant message was expected",
        ),
        (
            [{"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "b"}]}],
            "auto",
            r"conversations\[1\].from: 'function_call'.*tool and function roles are not supported",
        ),
        (
            [{"messages": [{"role": "user", "content": "a"}]}],
            "auto",
            r"row 1: key 'messages' must end with an assistant",
        ),
        (
            [{"messages": [{"role": "user", "text": "a"}]}],
            "auto",
            r"messages\[0\]: expected an object with 'role' and 'content'",
        ),
        ([{"messages": [{"role": "user", "content": "a"}]}], "alpaca", r"row 1: key 'instruction' is missing or empty"),
        (
            [{"instruction": "a", "output": "b"}],
            "alpacca",
            r"sft_format: 'alpacca' is not one of .*did you mean 'alpaca'",
        ),
    ],
)
def test_bad_records_name_file_row_key_and_fix(rows, fmt, message):
    with pytest.raises(UserError, match=message):
        chat.read_conversations(split_of(rows), fmt)


def test_bad_data_is_refused_by_the_cli_before_the_run_folder(tiny_llama, tmp_path):
    from peftlab.cli import main

    bad = write(tmp_path / "bad.json", [{"instruction": "a", "output": "b"}, {"instruction": "c"}])
    code = main(
        [
            "train",
            f"model={tiny_llama}",
            "task=sft",
            f"train_file={bad}",
            f"validation_file={bad}",
            f"output_dir={tmp_path / 'runs'}",
        ]
    )
    assert code == 2 and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- templates

NAMED = {
    "default": ["System: Be brief.\nHuman: hi\nAssistant: ", "hello</s>\n", "Human: bye\nAssistant: ", "ciao</s>\n"],
    "alpaca": [
        "Be brief.\n\n### Instruction:\nhi\n\n### Response:\n",
        "hello</s>\n\n",
        "### Instruction:\nbye\n\n### Response:\n",
        "ciao</s>\n\n",
    ],
    "chatml": [
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        "hello<|im_end|>\n",
        "<|im_start|>user\nbye<|im_end|>\n<|im_start|>assistant\n",
        "ciao<|im_end|>\n",
    ],
    "qwen": [
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        "hello<|im_end|>\n",
        "<|im_start|>user\nbye<|im_end|>\n<|im_start|>assistant\n",
        "ciao<|im_end|>\n",
    ],
    "llama2": [
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nhi [/INST]",
        " hello </s>",
        "<s>[INST] bye [/INST]",
        " ciao </s>",
    ],
    "llama3": [
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "hello<|eot_id|>",
        "<|start_header_id|>user<|end_header_id|>\n\nbye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "ciao<|eot_id|>",
    ],
    "gemma": [
        "<bos><start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n<start_of_turn>model\n",
        "hello<end_of_turn>\n",
        "<start_of_turn>user\nbye<end_of_turn>\n<start_of_turn>model\n",
        "ciao<end_of_turn>\n",
    ],
}


@pytest.mark.parametrize("name", list(NAMED))
def test_named_template_renders_exactly(name, tok):
    pairs = chat.render(TWO_TURNS, name, tok)
    assert [s for pair in pairs for s in pair] == NAMED[name]


def test_default_systems_and_braces_in_text(tok):
    conv = chat.Conversation("", [("use {content} and {eos}", "ok")])
    assert chat.render(conv, "alpaca", tok)[0][0].startswith("Below is an instruction that describes a task.")
    assert chat.render(conv, "qwen", tok)[0][0].startswith("<|im_start|>system\nYou are Qwen, created by Alibaba")
    assert "use {content} and {eos}" in chat.render(conv, "default", tok)[0][0]


def test_tokenizer_chat_template_gives_the_same_segments_as_the_named_one(tok):
    tok = tok.__class__.from_pretrained(tok.name_or_path)
    assert chat.resolve_template("auto", tok) == "default"
    with pytest.raises(UserError, match="has no chat template"):
        chat.resolve_template("chat", tok)
    tok.chat_template = CHATML_JINJA
    assert chat.resolve_template("auto", tok) == "chat"
    assert chat.render(TWO_TURNS, "chat", tok) == chat.render(TWO_TURNS, "chatml", tok)
    with pytest.raises(UserError, match="template: 'chatm' is not one of.*did you mean 'chatml'"):
        chat.resolve_template("chatm", tok)


# ---------------------------------------------------------------- labels and truncation


def config(*extra):
    return load_config(None, ["task=sft", *extra])


def test_labels_cover_exactly_the_answers(tok):
    ds = sft.encode(
        [chat.Conversation("", [("good movie", "fine ."), ("bad film", "sad")])], tok, config("max_length=64")
    )
    ids, labels = ds[0]["input_ids"], ds[0]["labels"]
    assert len(ids) == len(labels) == len(ds[0]["attention_mask"])
    kept = [t for t, l in zip(ids, labels) if l != -100]
    assert kept == [l for l in labels if l != -100]  # labels equal the input ids where they are kept
    assert tok.decode(kept) == "fine . </s> sad </s>"  # both answers with their EOS (the word-level '\n' is no token)
    masked = tok.decode([t for t, l in zip(ids, labels) if l == -100])
    assert masked == "<unk> <unk> good movie <unk> <unk> <unk> <unk> bad film <unk> <unk>"  # Human: / Assistant:
    everything = sft.encode([chat.Conversation("", [("good", "fine")])], tok, config("train_on_prompt=true"))
    assert everything[0]["labels"] == everything[0]["input_ids"]


def test_split_budget_follows_llamafactory():
    assert sft.split_budget(100, 10, 64) == (54, 10)  # short answer kept whole
    assert sft.split_budget(10, 100, 64) == (10, 54)  # short prompt kept whole
    assert sft.split_budget(60, 40, 64) == (39, 25)  # both shrink: int(64 * 40 / 100) = 25
    assert sft.split_budget(3, 2, 64) == (3, 2)


def test_truncation_keeps_the_prompt_end_and_is_counted(tok):
    long = " ".join(FILL)  # 12 words
    convs = sft.Examples(
        [
            chat.Conversation("", [(long, "good")]),
            chat.Conversation("", [("bad", "fine")]),
            chat.Conversation("", [("movie", long)]),
        ],
        "train",
        notes := {},
    )
    ds = sft.encode(convs, tok, config("max_length=12"))  # "Human: x\nAssistant: " is 4 tokens + x
    assert [len(x) for x in ds["input_ids"]] == [12, 7, 12]
    assert notes == {"truncated": {"train": 2}, "answers_cut": {"train": 1}}
    first = tok.decode(ds[0]["input_ids"])
    assert first == "a plot and acting film story quite very <unk> <unk> good </s>"  # prompt cut from the left
    assert len([l for l in ds[2]["labels"] if l != -100]) == 12 - 5  # short prompt kept whole, answer cut


def packing_batches(tiny_llama, tok):
    convs = [
        chat.Conversation("", [("good movie", "fine .")]),
        chat.Conversation("", [("the plot was bad", "sad")]),
        chat.Conversation("", [("a film", "quite very good film story")]),
    ]
    feats = [dict(row) for row in sft.encode(convs, tok, config(f"model={tiny_llama}", "max_length=32"))]
    return feats, [len(f["input_ids"]) for f in feats]


def loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_packing_gives_the_same_loss_and_gradients_as_padding(tiny_llama, tok, monkeypatch):
    """Packed rows attend example by example (models/attention.py): one SDPA call per example and
    layer, no mask, the same loss and gradients as padded rows and as transformers' own block mask."""
    from transformers.integrations import sdpa_attention

    from peftlab.models import attention
    from peftlab.models.loading import resolve_model

    feats, lengths = packing_batches(tiny_llama, tok)
    padded_cfg, packed_cfg = config(f"model={tiny_llama}", "packing=false"), config(f"model={tiny_llama}")
    model, notes = sft.build_model(resolve_model(tiny_llama), None, padded_cfg, tok)
    assert notes["packing"] is False and model.config._attn_implementation == "sdpa"
    padded = loss_and_grads(model, sft.build_collator(tok, padded_cfg)(feats))
    packed_batch = sft.build_collator(tok, config(f"model={tiny_llama}", "packing=true"))(feats)
    assert packed_batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in packed_batch
    one_mask = loss_and_grads(model, packed_batch)  # sdpa: transformers' block-diagonal mask over the row

    model, notes = sft.build_model(resolve_model(tiny_llama), None, packed_cfg, tok)  # packing: auto
    assert notes["packing"] is True and notes["attention"] == attention.NAME == model.config._attn_implementation
    calls = []
    real = sdpa_attention.sdpa_attention_forward

    def spy(module, query, key, value, mask, *args, **kwargs):
        calls.append((query.shape[2], mask is None))
        return real(module, query, key, value, mask, *args, **kwargs)

    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", spy)
    per_example = loss_and_grads(model, sft.build_collator(tok, packed_cfg)(feats))
    assert calls == [(n, True) for n in lengths] * 2  # 2 layers, one unmasked call per example each
    for other in (one_mask, per_example):
        assert other[0] == pytest.approx(padded[0], abs=1e-5)
        assert other[1].keys() == padded[1].keys()
        for name, grad in padded[1].items():
            assert (other[1][name] - grad).abs().max().item() < 1e-5, name


def test_packing_auto_leaves_prompt_methods_and_other_attention_padded(tiny_llama, tok):
    from peftlab.models.loading import resolve_model

    cfg = config(f"model={tiny_llama}", "method=prompt-tuning")
    _, notes = sft.build_model(resolve_model(tiny_llama), None, cfg, tok)
    assert notes["packing"] is False
    assert sft.build_collator(tok, cfg)(packing_batches(tiny_llama, tok)[0])["input_ids"].shape[0] == 3
    from transformers import AutoModelForCausalLM

    from peftlab.models.attention import packs

    assert packs(AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="eager")) is False
    assert packs(AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="sdpa")) is True
    with pytest.raises(UserError, match="packing: expected auto, true or false"):
        sft.check_settings(config("packing=sometimes"))


def test_a_model_switched_to_packed_attention_generates_and_saves_as_before(tiny_llama, tok, tmp_path):
    from transformers import AutoModelForCausalLM

    from peftlab.models import attention
    from peftlab.models.loading import resolve_model

    cfg = config(f"model={tiny_llama}", "max_new_tokens=5", "eval_batch_size=3")
    model, notes = sft.build_model(resolve_model(tiny_llama), None, cfg, tok)
    assert notes["attention"] == attention.NAME
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="sdpa")
    prompts = [tok("the movie was good")["input_ids"], tok("bad")["input_ids"], tok("a plot")["input_ids"]]
    stops = sft.stop_ids(tok, model, "default")
    ours = sft.generate_texts(model, tok, prompts, cfg, stops, ())
    assert ours == sft.generate_texts(plain, tok, prompts, cfg, stops, ())
    model.save_pretrained(tmp_path)
    assert attention.NAME not in (tmp_path / "config.json").read_text()


def test_batched_left_padded_generation_equals_one_by_one(tiny_llama, tok):
    from peftlab.models.loading import resolve_model

    cfg = config(f"model={tiny_llama}", "max_new_tokens=5", "eval_batch_size=3")
    model, _ = sft.build_model(resolve_model(tiny_llama), None, cfg, tok)
    prompts = [tok("the movie was good")["input_ids"], tok("bad")["input_ids"], tok("a plot")["input_ids"]]
    stops = sft.stop_ids(tok, model, "default")
    batched = sft.generate_texts(model, tok, prompts, cfg, stops, ())
    alone = [sft.generate_texts(model, tok, [p], cfg, stops, ())[0] for p in prompts]
    assert batched == alone and all(batched)


# ---------------------------------------------------------------- metrics


def test_generation_metrics_by_hand():
    m = compute_generation(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert m["rouge1"] == pytest.approx(5 / 6)  # 5 shared unigrams of 6
    assert m["rouge2"] == pytest.approx(3 / 5)  # 3 shared bigrams of 5
    assert m["rougeL"] == pytest.approx(5 / 6)  # LCS "the cat sat on mat"
    # n-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths (no brevity penalty)
    assert m["bleu4"] == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-6)
    assert m["exact_match"] == 0
    same = compute_generation(["a  b\n"], [" a b"])
    assert same["exact_match"] == 1 and same["rougeL"] == 1 and same["bleu4"] == pytest.approx(1)


def test_generation_metrics_match_the_reference_implementations():
    preds = ["the movie was good", "a boring plot", "", "it was fine and happy"]
    refs = ["the film was good", "the plot was boring", "nothing", "fine, happy"]
    m = compute_generation(preds, refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    for kind in ("rouge1", "rouge2", "rougeL"):
        assert m[kind] == pytest.approx(sum(scorer.score(r, p)[kind].fmeasure for p, r in zip(preds, refs)) / 4)
    assert m["bleu4"] == pytest.approx(sum(sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(preds, refs)) / 400)
    assert m["bleu4_corpus"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score / 100)
    assert m["exact_match"] == 0


def test_chinese_is_segmented_with_jieba():
    pred, ref = "我爱北京", "我爱北京天安门"
    assert rouge_scorer.RougeScorer(["rouge1"]).score(ref, pred)["rouge1"].fmeasure == 0  # why jieba is needed
    m = compute_generation([pred], [ref])
    assert m["rouge1"] == pytest.approx(6 / 7)  # 我/爱/北京 of 我/爱/北京/天安门: P 1, R 3/4
    assert m["bleu4"] == pytest.approx(sacrebleu.sentence_bleu(pred, [ref], tokenize="zh").score / 100)
    assert m["bleu4"] > 0


# ---------------------------------------------------------------- runs on the tiny llama


def lines_of(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines()]


def test_cli_sft_run_with_extra_eval_file(tiny_llama, instructions, tmp_path):
    from peftlab.cli import main

    # train in sharegpt layout; the extra (retention) file stays alpaca
    share = [
        {"conversations": [{"from": "human", "value": r["instruction"]}, {"from": "gpt", "value": r["output"]}]}
        for r in instructions["rows"][:24]
    ]
    train = write(tmp_path / "train.jsonl", share, jsonl=True)
    out = tmp_path / "runs"
    code = main(
        [
            "train",
            f"model={tiny_llama}",
            "task=sft",
            f"train_file={train}",
            f"validation_file={instructions['dev']}",
            f"extra_eval_file={instructions['train']}",
            "max_eval_samples=6",
            "max_eval_generate=4",
            f"output_dir={out}",
            "run_name=r",
            "epochs=2",
            "batch_size=8",
            "lr=1e-2",
            "method=full",
            "max_length=32",
            "max_new_tokens=4",
        ]
    )
    assert code == 0
    result = json.loads((out / "r" / "result.json").read_text())
    assert result["status"] == "completed" and result["metric_for_best"] == "rougeL" and result["template"] == "default"
    assert result["truncated"] == {"train": 0, "validation": 0, "extra": 0} and result["metric_scale"] == "fraction"
    lines = lines_of(out / "r" / "metrics.jsonl")
    assert [l["epoch"] for l in lines] == [0, 1, 2]
    for line in lines:
        for key in ("loss", "bleu4", "rougeL", "exact_match", "extra_loss", "extra_bleu4", "extra_rougeL"):
            assert math.isfinite(line[key]), key
        assert 0 <= line["rougeL"] <= 1 and 0 <= line["extra_rougeL"] <= 1
    assert lines[-1]["loss"] < lines[0]["loss"] and lines[-1]["extra_loss"] < lines[0]["extra_loss"]
    for split in ("validation", "extra"):
        preds = lines_of(out / "r" / f"predictions_{split}.jsonl")
        assert len(preds) == 4 and set(preds[0]) == {"instruction", "prompt", "reference", "generated"}
    # the validation predictions were made with the best weights: their scores are the best epoch's
    preds = lines_of(out / "r" / "predictions_validation.jsonl")
    best = compute_generation([p["generated"] for p in preds], [p["reference"] for p in preds])
    assert best["rougeL"] == pytest.approx(result["metrics_best"]["rougeL"])


@pytest.mark.parametrize("method", [m for m in METHODS if m != "prefix-tuning" and not METHODS[m].catalog])
def test_every_method_trains_and_generates(method, tiny_llama, instructions, tmp_path):
    cfg = load_config(
        None,
        [
            f"model={tiny_llama}",
            "task=sft",
            f"train_file={instructions['train']}",
            f"validation_file={instructions['dev']}",
            f"output_dir={tmp_path}",
            f"method={method}",
            "max_samples=8",
            "max_eval_samples=4",
            "epochs=1",
            "eval_at_start=false",
            "max_length=24",
            "max_new_tokens=2",
            "lora_rank=4",
            "num_virtual_tokens=4",
            "freeze_layers=1",
            "lr=1e-3",
            f"packing={method in ('full', 'lora')}",
            f"batch_size={2 if method == 'adalora' else 8}",
        ],
    )  # AdaLoRA's schedule needs steps
    result = run(cfg)
    assert result["status"] == "completed" and math.isfinite(result["metrics_best"]["loss"])
    assert 0 < result["trainable_params"] <= result["total_params"]
    assert len(lines_of(tmp_path / result["run_name"] / "predictions_validation.jsonl")) == 4


def test_prefix_tuning_is_refused_for_sft(tiny_llama, instructions, tmp_path):
    # transformers 5 renamed past_key_values to cache: the prefix still reaches a forward pass, but
    # generate() passes its own cache and silently drops the prefix, so generated answers would ignore it
    # (bench/prefix_tuning.py diagnose_generate; tests/test_peft_methods.py fails the day that changes)
    cfg = load_config(
        None,
        [
            f"model={tiny_llama}",
            "task=sft",
            f"train_file={instructions['train']}",
            f"validation_file={instructions['dev']}",
            f"output_dir={tmp_path / 'runs'}",
            "method=prefix-tuning",
        ],
    )
    with pytest.raises(UserError, match="prefix-tuning.*cannot be scored by generating.*use prompt-tuning or p-tuning"):
        run(cfg)
    assert not (tmp_path / "runs").exists()


def test_packing_with_prompt_tuning_is_refused(tiny_llama, instructions, tmp_path):
    cfg = load_config(
        None,
        [
            f"model={tiny_llama}",
            "task=sft",
            f"train_file={instructions['train']}",
            f"output_dir={tmp_path / 'runs'}",
            "method=prompt-tuning",
            "packing=true",
        ],
    )
    with pytest.raises(UserError, match="packing: not with prompt-tuning"):
        run(cfg)


# ---------------------------------------------------------------- real model, real data


def cola_alpaca(path: Path, n: int, offset: int) -> str:
    """CoLA rows (no header: source, label, mark, sentence) as alpaca records answered yes/no; the short
    system text replaces SmolLM2's default one, to keep the prompts short."""
    lines = (SAMPLES / "cola" / "in_domain_train.tsv").read_text().splitlines()[offset : offset + n]
    rows = [
        {
            "system": "Answer yes or no.",
            "instruction": "Is this sentence grammatical?",
            "input": line.split("\t")[3],
            "output": "yes" if line.split("\t")[1] == "1" else "no",
        }
        for line in lines
    ]
    return write(path, rows)


def test_smollm2_lora_sft_on_cola_rows(tmp_path):
    cfg = load_config(
        None,
        [
            "model=smollm2-135m",
            "task=sft",
            f"train_file={cola_alpaca(tmp_path / 't.json', 16, 0)}",
            f"validation_file={cola_alpaca(tmp_path / 'v.json', 16, 4000)}",
            f"output_dir={tmp_path}",
            "method=lora",
            "lora_target=q_proj,v_proj",
            "epochs=1",
            "batch_size=8",
            "lr=2e-3",
            "max_length=64",
            "max_new_tokens=2",
            "eval_batch_size=16",
            "logging_steps=1",
        ],
    )
    result = run(cfg)
    first, last = result["metrics_epoch0"], result["metrics_last"]
    assert result["template"] == "chat" and result["truncated"] == {"train": 0, "validation": 0}
    for line in (first, last):
        assert {"loss", "bleu4", "bleu4_corpus", "rouge1", "rouge2", "rougeL", "exact_match"} <= set(line)
        assert all(0 <= line[k] <= 100 for k in ("bleu4", "bleu4_corpus", "rouge1", "rougeL", "exact_match"))
    assert last["loss"] < 0.8 * first["loss"]
    preds = lines_of(tmp_path / result["run_name"] / "predictions_validation.jsonl")
    assert len(preds) == 16 and {p["reference"] for p in preds} <= {"yes", "no"}
    assert preds[0]["prompt"].startswith("<|im_start|>system\nAnswer yes or no.<|im_end|>\n<|im_start|>user\nIs this")
    # the scores of the written answers are those of the best epoch
    best = compute_generation([p["generated"] for p in preds], [p["reference"] for p in preds])
    assert best["rougeL"] == pytest.approx(result["metrics_best"]["rougeL"])


def test_head_method_trains_a_head_tied_to_the_embeddings(tiny_llama, tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftlab.models.methods import MethodContext, apply_method

    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            tie_word_embeddings=True,
        )
    )
    assert model.lm_head.weight is model.model.embed_tokens.weight
    apply_method(model, config("method=head").method, MethodContext("CAUSAL_LM", 1, tiny_llama))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["model.embed_tokens.weight"]  # the tied lm_head, listed under its first name


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_bf16_lora_sft_trains_and_generates(packing, tiny_llama, instructions, tmp_path, monkeypatch):
    """precision bf16 + LoRA: the answer-token loss under autocast and generation, through a whole run
    (bf16 allowed as on an AVX512-BF16 CPU)."""
    from peftlab import hardware

    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: True)
    cfg = load_config(
        None,
        [
            f"model={tiny_llama}",
            "task=sft",
            f"train_file={instructions['train']}",
            f"validation_file={instructions['dev']}",
            f"output_dir={tmp_path}",
            "method=lora",
            "max_samples=8",
            "max_eval_samples=4",
            "epochs=1",
            "max_length=24",
            "max_new_tokens=2",
            "lora_rank=4",
            "lr=1e-3",
            "precision=bf16",
            f"packing={packing}",
            "run_name=r",
        ],
    )
    result = run(cfg)
    assert result["status"] == "completed" and result["precision"] == "bf16"
    assert result["lm_loss"].startswith("answer tokens only")
    assert math.isfinite(result["metrics_best"]["loss"]) and result["time_to_first_step_s"] > 0
    assert len(lines_of(tmp_path / "r" / "predictions_validation.jsonl")) == 4
