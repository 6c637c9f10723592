"""GGUF files from a merged HF folder, with llama.cpp's own tools: its converter
(convert_hf_to_gguf.py, run as a subprocess with llama.cpp's gguf-py) writes f16/bf16, and
llama-cpp-python's `llama_model_quantize` writes the quantized types from that. peftlab writes no
GGUF itself: llama.cpp's converter is the reference for its own format.

Where the tools come from: llama-cpp-python's source distribution vendors llama.cpp, converter
included; `make gguf` builds the library once per machine and copies the converter, its
`conversion/` package and `gguf-py/` to .venv/llama.cpp-tools (or $PEFTLAB_LLAMACPP_TOOLS).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from peftlab.errors import INSTALL_HINT, UserError
from peftlab.runs import layout

FTYPES = {"f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2, "q4_k_m": 15}  # llama.cpp's llama_ftype values
CONVERTED = ("f16", "bf16")  # written by the converter itself; the rest are quantized from f16


def check_types(types: list[str]) -> None:
    """Known types, and llama.cpp's tools there to make them: said before a merge or a conversion starts."""
    bad = [t for t in types if t not in FTYPES]
    if bad:
        raise UserError(f"--gguf: unknown type {', '.join(bad)}; choose from {', '.join(FTYPES)}")
    if types:
        tools_dir()
    if any(t not in CONVERTED for t in types):
        llama_cpp_module()


def llama_cpp_module():
    try:
        import llama_cpp
    except ImportError:
        raise UserError(f"GGUF export: llama-cpp-python is not installed; {INSTALL_HINT}") from None
    return llama_cpp


def gguf_path(folder: Path, kind: str) -> Path:
    return Path(folder) / layout.gguf_file(kind)


def tools_dir() -> Path:
    folder = Path(os.environ.get("PEFTLAB_LLAMACPP_TOOLS") or Path(sys.prefix) / "llama.cpp-tools")
    if not (folder / "convert_hf_to_gguf.py").is_file():
        raise UserError(
            f"GGUF export: llama.cpp's converter is not in {folder}; `make gguf` puts it there "
            f"(from llama-cpp-python's source distribution, once per machine), or set PEFTLAB_LLAMACPP_TOOLS"
        )
    return folder


def convert(hf_dir: Path, target: Path, outtype: str) -> None:
    """convert_hf_to_gguf.py HF_DIR --outtype f16|bf16, into a temporary name renamed when complete."""
    tools = tools_dir()
    tmp = layout.temporary(target)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tools / "gguf-py"), str(tools)]), "NO_LOCAL_GGUF": ""}
    cmd = [
        sys.executable,
        str(tools / "convert_hf_to_gguf.py"),
        str(hf_dir),
        "--outfile",
        str(tmp),
        "--outtype",
        outtype,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise UserError(f"GGUF export of {hf_dir}: llama.cpp's converter failed: {converter_error(done.stderr)}")
    os.replace(tmp, target)


def converter_error(stderr: str) -> str:
    """The converter's reason in one line (it logs a traceback): unknown architectures and tokenizers named."""
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    arch = next((l for l in lines if "not supported" in l or "Model " in l and "not" in l), None)
    if arch:
        return f"{arch[-300:]} (llama.cpp does not know this architecture; a decoder such as llama converts)"
    pre = next((l for l in lines if "BPE pre-tokenizer was not recognized" in l or "chkhsh" in l), None)
    if pre:
        return "its tokenizer's pre-tokenizer is unknown to llama.cpp's converter (tokenizer.ggml.pre)"
    errors = [l for l in lines if re.match(r"^\w*(Error|Exception)\b", l)]
    return (errors or lines or ["no output"])[-1][-400:]


def quantize(source: Path, target: Path, kind: str) -> None:
    """llama_model_quantize(f16 file -> kind), into a temporary name renamed when complete."""
    llama_cpp = llama_cpp_module()
    from peftlab.hardware import physical_cores

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    params.nthread = physical_cores()
    tmp = layout.temporary(target)
    # llama.cpp logs through llama-cpp-python's logger, which prints everything until a Llama(verbose=
    # False) quiets it: a quantize would print ~300 lines (metadata, every tensor). Warnings and errors
    # still come through (q4_k_m says which tensors fell back to another type).
    log = logging.getLogger("llama-cpp-python")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
    finally:
        log.setLevel(level)
    if code != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise UserError(f"GGUF export: llama.cpp could not quantize {source} to {kind} (code {code})")
    os.replace(tmp, target)


def export_gguf(hf_dir: Path, out_dir: Path, types: list[str]) -> dict[str, Path]:
    """GGUF files of `types` from a merged HF folder; returns {type: path}. f16 is converted once and
    the quantized types are made from it (kept only when asked for)."""
    check_types(types)
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if not (hf_dir / "config.json").is_file():
        raise UserError(
            f"GGUF export: {hf_dir} has no config.json; give a merged folder (`peftlab export RUN --merge`)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for kind in [t for t in types if t in CONVERTED]:
        files[kind] = gguf_path(out_dir, kind)
        convert(hf_dir, files[kind], kind)
    quantized = [t for t in types if t not in CONVERTED]
    if quantized:
        f16 = files.get("f16") or layout.temporary(gguf_path(out_dir, "f16"))  # kept only if asked for
        if "f16" not in files:
            convert(hf_dir, f16, "f16")
        try:
            for kind in quantized:
                files[kind] = gguf_path(out_dir, kind)
                quantize(f16, files[kind], kind)
        finally:
            if "f16" not in types:
                f16.unlink(missing_ok=True)
    return {t: files[t] for t in types}
