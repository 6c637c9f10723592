"""method_args, the methods asked for by peft's name, LoRA's initialisations and LoRA+ (models/peft_methods.py,
models/lora_init.py). Every catalogue method trains and reloads in tests/test_matrix.py; here, what is checked
before training, and each lora_init end to end on the tiny BERT: one step, then `peftlab eval` of the run
folder predicts what the run did (PiSSA and OLoRA re-derive the base's residual at load). CorDA is refused
with its reason (its converted adapter did not reload), LoftQ where bitsandbytes is missing."""

import json
import re

import pytest

from peftlab.cli import main
from peftlab.config.settings import load_config
from peftlab.errors import UserError
from peftlab.models.methods import METHODS, check_method_settings, method_label
from peftlab.sweep.plan import name_of
from peftlab.training.train import run


def refused(overrides: list[str], pattern: str) -> None:
    with pytest.raises(UserError, match=pattern):
        check_method_settings(load_config(None, overrides).method)


@pytest.mark.parametrize(
    "overrides,pattern",
    [
        (
            ["method=fourierft", "method_args={n_frequncy: 10}"],
            r"method_args\.n_frequncy: FourierFTConfig .*did you mean 'n_frequency'",
        ),
        (["method=vera", "method_args={r: many}"], r"method_args\.r: VeraConfig\.r takes a int \(peft's default 256\)"),
        (["method=verra"], r"unknown method 'verra'.*did you mean 'vera'"),
        (["method=xlora"], r"X-LoRA mixes several LoRA adapters"),
        (["method=trainable_tokens"], r"reloaded predictions differ"),
        (["method=full", "method_args={r: 4}"], r"method_args: method full is not a peft tuner"),
        (["method=ia3", "lora_init=pissa"], r"lora_init: applies to lora, dora and rslora, not to method ia3"),
        (["method=vera", "loraplus_lr_ratio=16"], r"loraplus_lr_ratio: applies to lora, dora and rslora"),
        (["lora_init=pisa"], r"lora_init: unknown initialisation 'pisa'.*did you mean 'pissa'"),
        (["lora_init=orthogonal", "lora_rank=5"], r"orthogonal needs an even lora_rank"),
        (["method=dora", "lora_init=pissa"], r"use it with lora or rslora"),
        (["loraplus_lr_ratio=-1"], r"loraplus_lr_ratio: must be 0 \(off\) or more"),
        (["lora_init=corda"], r"corda is not offered yet: .*did not reload"),
    ],
)
def test_method_settings_are_refused_before_anything_is_read(overrides, pattern):
    refused(overrides, pattern)


def test_method_args_are_typed_and_a_peft_type_is_reachable_by_its_name():
    m = load_config(None, ["method=lora", "method_args={use_rslora: true, lora_bias: false}"]).method
    assert m.method_args == {"use_rslora": True, "lora_bias": False}
    check_method_settings(m)
    assert (
        "shadow" in METHODS
        and "trainable_tokens" not in METHODS
        and METHODS["vera"].catalog
        and not METHODS["lora"].catalog
    )
    from peftlab.models.methods import method_of

    assert method_of("p_tuning") is METHODS["p-tuning"]  # peft's spelling of a named row
    check_method_settings(load_config(None, ["method=prefix_tuning"]).method)


def test_the_method_label_names_init_and_loraplus():
    m = load_config(None, ["lora_init=pissa", "loraplus_lr_ratio=16"]).method
    assert method_label(m) == "lora-r8-pissa-lp16"
    assert name_of({"method": "lora", "lora_rank": 8, "lora_init": "pissa", "loraplus_lr_ratio": 16}) == (
        "lora-r8-pissa-lp16"
    )
    assert method_label(load_config(None, ["method=vera"]).method) == "vera"


def test_an_unknown_peft_type_refuses_unworkable_sizes_before_writing(base_config, tmp_path):
    cfg = load_config(None, base_config + ["method=waveft"])  # n_frequency 2592 > 32 x 32
    with pytest.raises(UserError, match=r"method waveft: peft cannot apply it to .*n_frequency"):
        run(cfg)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("init", ["gaussian", "pissa", "olora", "orthogonal", "eva"])
def test_every_lora_init_trains_and_reloads(init, base_config, tmp_path, capsys):
    ratio = "16" if init == "pissa" else "0"
    cfg = load_config(
        None, base_config + [f"lora_init={init}", f"loraplus_lr_ratio={ratio}", "lora_rank=4", "pooling=mean"]
    )
    result = run(cfg)
    label = f"lora-r4-{init}" + ("-lp16" if init == "pissa" else "")
    assert result["run_name"].endswith(f"-{label}-s42") and result["method_label"] == label
    assert result["lora_init"] == init and result["loraplus_lr_ratio"] == float(ratio)
    run_dir = tmp_path / "runs" / result["run_name"]
    assert main(["eval", str(run_dir), "--out", str(tmp_path / "again")]) == 0
    capsys.readouterr()
    again = json.loads((tmp_path / "again" / "result.json").read_text())["metrics_best"]
    assert again["loss"] == pytest.approx(result["metrics_best"]["loss"], rel=1e-5, abs=1e-5)


def test_loftq_is_refused_without_bitsandbytes():
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed: loftq is offered")
    refused(["lora_init=loftq"], r"loftq quantises the weights with bitsandbytes")


def test_loraplus_gives_b_matrices_their_own_learning_rate(tiny_bert):
    import peft
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from peftlab.models.lora_init import loraplus_optimizer

    model = peft.get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2), peft.LoraConfig(r=4)
    )
    args = TrainingArguments(output_dir="unused", learning_rate=1e-3, weight_decay=0.01, report_to="none")
    opt = loraplus_optimizer(model, args, 16.0)
    rates = {round(g["lr"], 6) for g in opt.param_groups if g["params"]}
    assert rates >= {0.001, 0.016}, rates
    assert re.search("AdamW", type(opt).__name__)


def test_prefix_tuning_still_reaches_the_model():
    """The reproduction in bench/prefix_tuning.py: peft 0.21 passes past_key_values, which transformers 5
    maps onto `cache` only until 5.40.0. The day it stops saying "works", the prefix is dropped or fails:
    check that check_accepts_cache refuses prefix-tuning again (it reads the same decorator)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from prefix_tuning import diagnose, versions

    outcome = diagnose()
    assert outcome == "works", f"prefix tuning {outcome} with {versions()}: peftlab must refuse it (methods.py)"


def test_generate_still_drops_the_prefix():
    """bench/prefix_tuning.py's generate() check: the prefix is dropped there, which is why sft, cls-generate
    and mc-generate refuse prefix-tuning (tasks/sft.py check_settings). The day this says "works", lift that
    refusal: generated answers would then carry the trained prefix."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from prefix_tuning import diagnose_generate, versions

    outcome = diagnose_generate()
    assert outcome == "ignored", f"generate() {outcome} with {versions()}: lift the refusal in tasks/sft.py"
