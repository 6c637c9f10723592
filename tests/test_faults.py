"""Faults lose nothing: a disk that fills up while the best weights or result.json are written.

The fault is injected where the bytes are written (safetensors' save_file, Path.write_text): the file
gets half its bytes, then the write fails with ENOSPC, as on a full disk.
"""

import errno
import json
from pathlib import Path

import pytest

from peftlab.config.settings import load_config
from peftlab.training.train import run


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name or ".old" in p.name]


def full_disk() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_saving_better_weights_keeps_the_earlier_best(base_config, tmp_path, monkeypatch):
    import peft.peft_model
    from safetensors.torch import save_file

    saves = []

    def save_then_fail(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        saves.append(Path(filename).read_bytes())
        if len(saves) == 2:  # epoch 1 improved on epoch 0: its weights hit the full disk half-way
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
            raise full_disk()

    monkeypatch.setattr(peft.peft_model, "safe_save_file", save_then_fail)
    cfg = load_config(
        None, base_config + ["method=lora", "lora_rank=4", "epochs=2", "metric_for_best=loss", "run_name=r"]
    )
    with pytest.raises(OSError, match="No space left"):
        run(cfg)
    run_dir = tmp_path / "runs" / "r"
    assert len(saves) == 2, "the fault was never reached: epoch 1 must improve on epoch 0"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed" and "No space left on device" in result["error"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").read_bytes() == saves[0]  # epoch 0's, whole
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
