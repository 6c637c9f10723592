"""The llama.cpp backend of `peftlab eval` / `predict`: real quantized inference of a .gguf file.

Only the model call changes. The task prepares its examples as always (prompts, label words, few-shot
demonstrations); the token ids come from the same HF tokenizer and the same encode functions as
on the transformers path (choices.encode_options / encode_prompts, sft's prompt ids), so both backends
score identical token sequences; llama.cpp returns the log-probabilities; the task's own
build_compute_metrics and write_predictions turn them into metrics and rows. Scoring the options of
one prompt reuses the prompt's KV cache (llama.cpp keeps it; only the option tokens are evaluated).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from peftlab.errors import INSTALL_HINT, UserError
from peftlab.hardware import physical_cores
from peftlab.tasks import choices
from peftlab.tasks.choices import Choice


def gguf_file_of(spec: str) -> Path:
    """The .gguf path of a model spec: a file, or a named model that a package ships as GGUF."""
    from peftlab.models.loading import NAMED_MODELS, locate_package_file

    if spec in NAMED_MODELS:
        return locate_package_file(spec, NAMED_MODELS[spec])
    return Path(spec)


def extra_buffer_types() -> bool:
    """Whether llama.cpp may repack quantized weights into its extra buffer types (AMX, CPU_REPACK).
    Not on CPUs with AMX: there the llama.cpp that llama-cpp-python 0.3.36 vendors, built for the
    machine, crashes (SIGSEGV) in the first multi-token llama_decode of every quantized file tried
    (SmolLM2 Q4_1, Gemma 3 Q4_K_M, peftlab's q8_0 exports; measured 2026-12-03 on an Intel Xeon with
    AMX-INT8), and runs with them off. Machines without AMX (the AMD EPYC of earlier sessions) keep
    the repacked kernels. llama.cpp's CLI calls this --no-repack."""
    from peftlab.hardware import cpu_has_amx

    return not cpu_has_amx()


def llama_with(use_extra_bufts: bool, **kwargs):
    """llama_cpp.Llama with llama_model_params.use_extra_bufts set: Llama() has no argument for it and
    builds its params from llama_model_default_params(), so that function is wrapped for the call."""
    import llama_cpp.llama_cpp as lib
    from llama_cpp import Llama

    default = lib.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = use_extra_bufts
        return p

    lib.llama_model_default_params = params
    try:
        return Llama(**kwargs)
    finally:
        lib.llama_model_default_params = default


def open_llama(path: Path, n_ctx: int, n_threads: int | None = None):
    """n_threads: physical cores by default; fewer when other processes hold cores (llama.cpp's threads
    spin at barriers, so one that waits for a busy core stalls them all)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise UserError(f"backend llamacpp: llama-cpp-python is not installed; {INSTALL_HINT}") from None
    if not path.is_file():
        raise UserError(f"backend llamacpp: GGUF file not found: {path}")
    try:
        return llama_with(
            extra_buffer_types(),
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=min(512, n_ctx),
            n_threads=n_threads or physical_cores(),
            logits_all=True,
            verbose=False,
        )
    except (ValueError, RuntimeError) as e:
        raise UserError(
            f"backend llamacpp: llama.cpp cannot load {path} ({e}); is it a GGUF file of an "
            f"architecture llama.cpp knows?"
        ) from None


class LlamaScorer:
    """Log-probabilities of token sequences on a llama.cpp model, reusing the cached prefix."""

    def __init__(self, llm):
        self.llm = llm
        self.evaluated = 0  # tokens actually run through the model (after prefix reuse)

    def feed(self, ids: list[int]) -> None:
        """Make the context hold exactly `ids`, evaluating only what differs from what it holds."""
        llm = self.llm
        held = list(llm.input_ids[: llm.n_tokens])
        same = 0
        for a, b in zip(held, ids[:-1]):  # keep one token to evaluate: its logits are needed
            if a != b:
                break
            same += 1
        llm.n_tokens = same  # eval() drops the KV cache past n_tokens
        llm.eval(ids[same:])
        self.evaluated += len(ids) - same

    def logprobs_at(self, position: int) -> np.ndarray:
        """log-softmax of the logits at `position` (they predict the token after it)."""
        row = np.asarray(self.llm.scores[position], dtype=np.float64)
        row = row - row.max()
        return row - np.log(np.exp(row).sum())

    def continuation(self, ids: list[int], n_target: int) -> float:
        """Summed log-probability of the last n_target tokens of ids, given the ones before."""
        self.feed(ids)
        start = len(ids) - n_target
        return float(sum(self.logprobs_at(p - 1)[ids[p]] for p in range(start, len(ids))))

    def next_token(self, ids: list[int], token_ids: list[int]) -> np.ndarray:
        self.feed(ids)
        return self.logprobs_at(len(ids) - 1)[token_ids]


def choice_scores(
    scorer: LlamaScorer, examples: list[Choice], tokenizer, cfg, single: list[int] | None, norm: str
) -> np.ndarray:
    """(examples, options) scores as the transformers path computes them (choices.LikelihoodScores)."""
    width = max(len(c.options) for c in examples)
    out = np.full((len(examples), width), np.finfo(np.float32).min, dtype=np.float64)
    for i, c in enumerate(examples):
        if single is not None:  # one forward pass over the prompt: next-token log-probabilities
            ids = tokenizer(c.prompt)["input_ids"][-cfg.task.max_length :]
            out[i, : len(c.options)] = scorer.next_token(ids, single)
            continue
        enc = choices.encode_options(tokenizer, c.prompt, c.options, cfg.task.max_length, norm)
        for j, (ids, n, div) in enumerate(zip(enc["input_ids"], enc["n_target"], enc["score_div"])):
            out[i, j] = scorer.continuation(enc["prompt_ids"] + ids, n) / div
    return out


def generator(llm, cfg, stops: list[int]):
    """A batch-of-prompts -> answers function for sft.generate_split: greedy, up to max_new_tokens.
    With first_token_ids, each answer is (ids, log-probabilities of those tokens as its first token),
    read from the logits the generation computed at the prompt's last position."""
    scorer = LlamaScorer(llm)

    def generate(prompts: list[list[int]], tokenizer, first_token_ids: list[int] | None = None) -> list:
        answers = []
        for ids in prompts:
            new = []
            for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
                if token in stops or len(new) >= cfg.eval.max_new_tokens:
                    break
                new.append(token)
            if first_token_ids is None:
                answers.append(new)
            else:  # the prompt's last row of logits (logits_all) is still held after generating
                answers.append((new, scorer.logprobs_at(len(ids) - 1)[first_token_ids].tolist()))
        return answers

    return generate


def score_split_llamacpp(session, split: str):
    """(metrics, predictions) of one split through llama.cpp, with the task's own metrics."""
    from transformers import EvalPrediction

    cfg, prepared, tokenizer = session.cfg, session.prepared, session.tokenizer
    examples = prepared.examples[split]
    from peftlab.inference.tokens import sequences

    longest = max(len(x) for x in sequences(session.encoded[split]))
    llm = open_llama(gguf_file_of(cfg.model.model), n_ctx=max(512, longest + cfg.eval.max_new_tokens + 8))
    if examples and isinstance(examples[0], Choice):
        ids = choices.single_token_ids(examples[0].options, tokenizer) if cfg.task.task == "classification" else None
        norm = cfg.task.length_norm if cfg.task.task == "multiple_choice" else "none"
        scores = choice_scores(LlamaScorer(llm), examples, tokenizer, cfg, ids, norm)
        labels = np.array([c.answer for c in examples])
        compute = session.task.build_compute_metrics(prepared, split, session.env)
        return compute(EvalPrediction(predictions=scores, label_ids=labels)), scores
    if cfg.task.task == "sft" or cfg.task.classify_by == "generate" or cfg.task.mc_head == "generate":
        from peftlab.tasks.chat import resolve_template
        from peftlab.tasks.sft import stop_ids

        template = resolve_template(cfg.task.template, tokenizer)
        session.env.generate = generator(llm, cfg, stop_ids(tokenizer, None, template))
        compute = session.task.build_compute_metrics(prepared, split, session.env)
        return compute(None), None
    raise UserError(
        f"backend llamacpp: task {cfg.task.task} (classify_by {cfg.task.classify_by}) needs a trained "
        f"head that a GGUF file does not carry; llama.cpp scores label likelihood, multiple-choice "
        f"likelihood and generation (classify_by generate, mc_head generate, sft)"
    )
