"""Faults lose nothing: a disk that fills up while the best weights or result.json are written.

The fault is injected where the bytes are written (safetensors' save_file, under each of the names
peft, transformers and peftlab call it by; Path.write_text): the file gets half its bytes, then the
write fails with ENOSPC, as on a full disk. Every way of saving weights is tried: an adapter (peft),
a whole model (transformers: full, freeze) and a head alone (peftlab).
"""

import errno
import json
from pathlib import Path

import pytest

from peftlab.config.settings import load_config
from peftlab.runs import layout
from peftlab.training.train import run


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name or ".old" in p.name]


def full_disk() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


# method -> (extra overrides, the weights folder, the weights file in it). Each saves through another
# writer: peft's save_pretrained (lora), transformers' (full, freeze: the whole model), peftlab's
# save_head (head: the trained parameters alone); all end in safetensors' save_file. Mean pooling: the
# tiny BERT's [CLS] pooler barely depends on the input, so with it no epoch would lower the loss.
SAVES = {
    "lora": (["lora_rank=4"], layout.ADAPTER, "adapter_model.safetensors"),
    "full": (["lr=1e-3"], layout.MODEL, "model.safetensors"),
    "freeze": (["freeze_layers=1", "lr=1e-3"], layout.MODEL, "model.safetensors"),
    "head": ([], layout.HEAD, layout.HEAD_WEIGHTS),
}


@pytest.mark.parametrize("method", list(SAVES))
def test_disk_full_while_saving_better_weights_keeps_the_earlier_best(base_config, tmp_path, monkeypatch, method):
    import peft.peft_model
    import safetensors.torch
    import transformers.modeling_utils

    extra, folder, weights = SAVES[method]
    save_file = safetensors.torch.save_file
    saves = []

    def save_then_fail(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        into = layout.parse_temporary(Path(filename).parent.name)
        if not into or into[0] != folder:  # a resume checkpoint, not the best weights
            return
        saves.append((Path(filename).name, Path(filename).read_bytes()))
        if len(saves) == 2:  # epoch 1 improved on epoch 0: its weights hit the full disk half-way
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
            raise full_disk()

    # every name the writers call safetensors' save_file by (peft and transformers import it as their own)
    monkeypatch.setattr(peft.peft_model, "safe_save_file", save_then_fail)
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_then_fail)
    monkeypatch.setattr(safetensors.torch, "save_file", save_then_fail)
    overrides = [f"method={method}", *extra, "pooling=mean", "epochs=2", "metric_for_best=loss", "run_name=r"]
    with pytest.raises(OSError, match="No space left"):
        run(load_config(None, base_config + overrides))
    run_dir = tmp_path / "runs" / "r"
    assert len(saves) == 2, "the fault was never reached: epoch 1 must improve on epoch 0"
    assert [name for name, _ in saves] == [weights, weights]  # this method's own weights file, twice
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed" and "No space left on device" in result["error"]
    assert (run_dir / folder / weights).read_bytes() == saves[0][1]  # epoch 0's, whole
    assert leftovers(run_dir) == []


def test_disk_full_while_writing_the_result_marks_the_run_failed_and_leaves_no_half_file(
    base_config, tmp_path, monkeypatch
):
    real_write = Path.write_text
    hits = []

    def write_text(self, text, *args, **kwargs):
        if self.name.startswith(".result.json.tmp") and '"status": "completed"' in text:
            hits.append(self)
            real_write(self, text[: len(text) // 2], *args, **kwargs)
            raise full_disk()
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    cfg = load_config(None, base_config + ["method=lora", "lora_rank=4", "run_name=r"])
    with pytest.raises(OSError, match="No space left"):
        run(cfg)
    run_dir = tmp_path / "runs" / "r"
    assert len(hits) == 1
    result = json.loads((run_dir / "result.json").read_text())  # whole JSON, never the half
    assert result["status"] == "failed" and "No space left on device" in result["error"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "predictions_validation.jsonl").is_file()
    assert leftovers(run_dir) == []
