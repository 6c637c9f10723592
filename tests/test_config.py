import dataclasses

import pytest

from peftlab.config.settings import SECTIONS, help_text, load_config
from peftlab.errors import UserError


def test_flat_sectioned_aliases_and_overrides(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("model: minilm-l6\nfinetuning_type: dora\nlora_r: 4\ncutoff_len: 96\nlearning_rate: 1e-4\n")
    cfg = load_config(flat, ["train.epochs=5", "lora_target=query,value"])
    assert (cfg.method.method, cfg.method.lora_rank, cfg.task.max_length) == ("dora", 4, 96)
    assert cfg.train.lr == pytest.approx(1e-4) and cfg.train.epochs == 5
    assert cfg.method.lora_target == "query,value"
    sectioned = tmp_path / "sec.yaml"
    sectioned.write_text(
        "model: {model: x, pooling: mean}\nmethod:\n  method: lora\n  lora_rank: 16\n"
        "data: {columns: [a, b], validation_ratio: 0.2}\n"
    )
    cfg = load_config(sectioned)
    assert (cfg.model.model, cfg.model.pooling, cfg.method.lora_rank) == ("x", "mean", 16)
    assert cfg.data.columns == ["a", "b"] and cfg.data.validation_ratio == 0.2


def test_unknown_key_suggests_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lora_rnak: 8\n")
    with pytest.raises(UserError, match=r"unknown key 'lora_rnak'.*did you mean 'lora_rank'"):
        load_config(path)
    with pytest.raises(UserError, match=r"did you mean 'epochs'"):
        load_config(None, ["epocs=3"])


def test_wrong_section_and_type_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lora_rank: 8\n")
    with pytest.raises(UserError, match="belongs in section 'method'"):
        load_config(path)
    with pytest.raises(UserError, match="expected int for 'epochs'"):
        load_config(None, ["epochs=many"])
    with pytest.raises(UserError, match="expected key=value"):
        load_config(None, ["epochs"])


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: a\nmethod: [lora\n")
    with pytest.raises(UserError, match=r"bad.yaml line \d+: invalid YAML"):
        load_config(path)


def test_help_documents_every_field():
    text = help_text()
    for cls in SECTIONS.values():
        for f in dataclasses.fields(cls):
            assert f.metadata["help"], f.name
            assert f"  {f.name} " in text


# -- values mean what the user wrote (YAML 1.1 would turn no into False, 007 into 7, dates into dates) --

TRAPS_YAML = """\
task:
  label_words: [no, yes]
  instruction: "Answer: yes"
  train_on_prompt: yes
method: {lora_target: on, layers_to_transform: [0, 1]}
train: {run_name: 007, lr: 1e-4, weight_decay: 1.0e-4, seed: 7}
data:
  text_column: 2026-01-01
  label_column: null
  text_pair_column: ~
  label_names: [on, off, 007, 2026-01-01]
  validation_ratio: .5
eval: {do_sample: off, eval_at_start: no}
"""


def check_traps(cfg):
    assert cfg.task.label_words == ["no", "yes"]
    assert cfg.task.instruction == "Answer: yes"
    assert cfg.method.lora_target == "on" and cfg.method.layers_to_transform == [0, 1]
    assert cfg.train.run_name == "007"
    assert cfg.train.lr == cfg.train.weight_decay == 1e-4  # 1e-4 and 1.0e-4 alike (YAML 1.1: '1e-4' is a string)
    assert (cfg.data.text_column, cfg.data.label_column, cfg.data.text_pair_column) == ("2026-01-01", "null", "~")
    assert cfg.data.label_names == ["on", "off", "007", "2026-01-01"]
    assert cfg.data.validation_ratio == 0.5
    assert cfg.task.train_on_prompt is True and cfg.eval.do_sample is False and cfg.eval.eval_at_start is False


def test_yaml_values_keep_the_users_text(tmp_path):
    path = tmp_path / "traps.yaml"
    path.write_text(TRAPS_YAML)
    check_traps(load_config(path))


def test_override_values_keep_the_users_text():
    cfg = load_config(
        None,
        [
            "label_words=[no,yes]",
            "instruction=Answer: yes",
            "train_on_prompt=yes",
            "lora_target=on",
            "layers_to_transform=0,1",
            "run_name=007",
            "lr=1e-4",
            "train.weight_decay=1.0e-4",
            "text_column=2026-01-01",
            "label_column=null",
            "text_pair_column=~",
            "label_names=[on, off, 007, 2026-01-01]",
            "validation_ratio=.5",
            "do_sample=off",
            "eval_at_start=no",
        ],
    )
    check_traps(cfg)
    assert load_config(None, ["instruction={a: b}, [c]"]).task.instruction == "{a: b}, [c]"  # text, as typed
    assert load_config(None, ["label_words=no|unacceptable,yes"]).task.label_words == ["no|unacceptable", "yes"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("lora_rank: abc", r"key 'lora_rank': expected int for 'lora_rank'.*got 'abc'"),
        ("epochs: 1.5", r"expected int for 'epochs'.*got '1.5'"),
        ("epochs: 2.0", r"expected int for 'epochs'"),
        ("epochs: 007", r"expected int for 'epochs' \(a whole number without leading zeros"),
        ("lr: fast", r"expected float for 'lr'"),
        ("lr: .inf", r"expected float for 'lr'"),
        ("train_on_prompt: maybe", r"expected bool for 'train_on_prompt' \(true or false\)"),
        ("train_on_prompt: 1", r"expected bool for 'train_on_prompt'"),
        ("instruction: {Answer: yes}", r"key 'instruction': 'instruction' takes one str, got a mapping"),
        ("task: {instruction: [a, b]}", r"task.instruction: 'instruction' takes one str, got a list"),
        ("layers_to_transform: [0, x]", r"expected int for 'layers_to_transform item'.*got 'x'"),
        ("label_words: [[no], yes]", r"'label_words item' takes one str, got a list"),
        ("instruction: Answer: yes", r"c.yaml line 1: invalid YAML"),  # unquoted ': ' is YAML syntax: quote it
    ],
)
def test_values_that_cannot_be_what_the_key_means_are_refused(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(UserError, match=message):
        load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("lora_rank=abc", r"override 'lora_rank=abc': expected int"),
        ("epochs=1.5", r"expected int for 'epochs'"),
        ("max_samples=010", r"without leading zeros"),
        ("train_on_prompt=2", r"expected bool for 'train_on_prompt'"),
        ("label_words=[no, yes", r"label_words=\[no, yes': not a YAML list"),
    ],
)
def test_bad_override_values_are_refused(override, message):
    with pytest.raises(UserError, match=message):
        load_config(None, [override])


def test_empty_values_are_empty_and_null_is_text(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_name:\nlabel_names:\ninstruction: ''\nprompt_init_text: null\n")
    cfg = load_config(path)
    assert (cfg.train.run_name, cfg.data.label_names, cfg.task.instruction) == ("", [], "")
    assert cfg.method.prompt_init_text == "null"  # a string key keeps the word; leave the value empty for ""


def test_saved_config_round_trips_exactly(tmp_path):
    """config.yaml as a run folder writes it reads back to the same Config (what --resume compares)."""
    from peftlab.config.settings import TextLoader, config_diff
    from peftlab.runs.rundir import write_yaml

    path = tmp_path / "traps.yaml"
    path.write_text(TRAPS_YAML)
    cfg = load_config(path)
    write_yaml(tmp_path / "config.yaml", cfg.to_dict())
    assert load_config(tmp_path / "config.yaml") == cfg
    import yaml

    saved = yaml.load((tmp_path / "config.yaml").read_text(), TextLoader)
    assert config_diff(saved, cfg) == []


def test_config_diff_names_keys_and_treats_absent_keys_by_default():
    import yaml

    from peftlab.config.settings import TextLoader, config_diff

    cfg = load_config(None, ["lr=1e-3", "label_words=[no, yes]"])
    saved = yaml.load(yaml.safe_dump(cfg.to_dict()), TextLoader)
    saved["train"]["lr"] = "0.0002"
    saved["task"]["label_words"] = ["false", "true"]  # what YAML 1.1 made of [no, yes] in older peftlab
    del saved["task"]["packing"]  # absent, and the new value is the default: the same run
    del saved["method"]["lora_rank"]
    saved["eval"]["old_key"] = "1"
    assert config_diff(saved, cfg) == [
        "task.label_words: ['false', 'true'] -> ['no', 'yes']",
        "train.lr: 0.0002 -> 0.001",
        "eval.old_key: '1' -> (no longer a peftlab key)",
    ]
    cfg.method.lora_rank = 16  # absent in the saved file, and no longer the default: a change
    assert "method.lora_rank: (not in the saved config) -> 16" in config_diff(saved, cfg)
    saved["train"]["output_dir"] = "elsewhere"  # where the folder lives is not a setting of the run
    assert not [d for d in config_diff(saved, cfg) if "output_dir" in d]


def test_data_convert_label_words_keep_their_text():
    from peftlab.data.convert import label_map, parse_keys

    _, templates = parse_keys(["label_words={0: no, 1: yes}", "delimiter=;", "text_column=007"])
    assert label_map(templates["label_words"]) == {"0": "no", "1": "yes"}
    data, _ = parse_keys(["delimiter=;", "text_column=007", "columns=[on, off]"])
    assert (data.delimiter, data.text_column, data.columns) == (";", "007", ["on", "off"])
    _, templates = parse_keys(["label_words=0=no,1=yes"])
    assert label_map(templates["label_words"]) == {"0": "no", "1": "yes"}


def test_a_wholly_quoted_override_loses_its_quotes_only():
    cfg = load_config(None, ["header='false'", 'prompt_template="{text} is it {labels}?"', "instruction='yes' or no"])
    assert cfg.data.header == "false" and cfg.task.prompt_template == "{text} is it {labels}?"
    assert cfg.task.instruction == "'yes' or no"  # not wholly quoted: the text as typed
