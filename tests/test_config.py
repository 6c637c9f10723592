import dataclasses

import pytest

from peftlab.config import SECTIONS, help_text, load_config
from peftlab.errors import UserError


def test_flat_sectioned_aliases_and_overrides(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("model: minilm-l6\nfinetuning_type: dora\nlora_r: 4\ncutoff_len: 96\nlearning_rate: 1e-4\n")
    cfg = load_config(flat, ["train.epochs=5", "lora_target=query,value"])
    assert (cfg.method.method, cfg.method.lora_rank, cfg.task.max_length) == ("dora", 4, 96)
    assert cfg.train.lr == pytest.approx(1e-4) and cfg.train.epochs == 5
    assert cfg.method.lora_target == "query,value"
    sectioned = tmp_path / "sec.yaml"
    sectioned.write_text("model: {model: x, pooling: mean}\nmethod:\n  method: lora\n  lora_rank: 16\n"
                         "data: {columns: [a, b], validation_ratio: 0.2}\n")
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
