"""Instruction data and prompt templates for the generative tasks (sft, classification by generation).

Records in the alpaca, sharegpt or openai layout become one `Conversation` (system text and
(user, assistant) turns); the layout is told per file from the keys. A template renders a
conversation as (prompt, response) text segments, so that the loss can skip the prompts: either
the tokenizer's own chat template or one of the named templates below (LLaMA-Factory's names).
The named templates are written out here because they are plain strings that no installed
library exposes by name (tokenizers carry only their own template).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from peftlab.data.formats import Split
from peftlab.errors import UserError, closest

SFT_FORMATS = ("auto", "alpaca", "sharegpt", "openai")
USER_ROLES = {"human": "user", "user": "user"}
ASSISTANT_ROLES = {"gpt": "assistant", "assistant": "assistant", "model": "assistant"}


@dataclass
class Conversation:
    system: str
    turns: list[tuple[str, str]]  # (user, assistant); the last answer is the reference when evaluating


# ---------------------------------------------------------------- reading records


def detect_format(split: Split, sft_format: str) -> str:
    """The layout of a file: named in the config, or told from its first record's keys."""
    return detect_record(split.records[0], f"{split.source}: row {split.rows[0]}", sft_format)


def detect_record(keys: dict, where: str, sft_format: str) -> str:
    """The layout of one record: named in the config, or told from its keys (so mixed training files
    of different layouts each read as what they are)."""
    if sft_format != "auto":
        if sft_format not in SFT_FORMATS:
            raise UserError(
                f"sft_format: '{sft_format}' is not one of {', '.join(SFT_FORMATS)}{closest(sft_format, SFT_FORMATS)}"
            )
        return sft_format
    if "conversations" in keys:
        return "sharegpt"
    if "messages" in keys:
        return "openai"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    raise UserError(
        f"{where}: cannot tell the instruction format from the keys "
        f"({', '.join(map(str, keys))}); alpaca needs `instruction` and `output`, sharegpt "
        f"`conversations`, openai `messages`; rename the keys or set `sft_format:`"
    )


def text_of(rec: dict, key: str, where: str, required: bool = True) -> str:
    value = "" if rec.get(key) is None else rec[key]
    if not isinstance(value, str):
        raise UserError(f"{where}: key '{key}' must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise UserError(f"{where}: key '{key}' is missing or empty; every record needs it (fix or remove the row)")
    return value


def read_alpaca(rec: dict, where: str) -> Conversation:
    user = text_of(rec, "instruction", where)
    extra = text_of(rec, "input", where, required=False)
    turns = []
    history = rec.get("history") or []
    if not isinstance(history, list):
        raise UserError(f"{where}: key 'history' must be a list of [question, answer] pairs")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise UserError(f"{where}: history[{i}] must be a [question, answer] pair of strings, got {pair!r}")
        turns.append((pair[0], pair[1]))
    turns.append((f"{user}\n{extra}" if extra.strip() else user, text_of(rec, "output", where)))
    return Conversation(text_of(rec, "system", where, required=False), turns)


def check_role(role, where: str) -> None:
    known = ["system", *USER_ROLES, *ASSISTANT_ROLES]
    if role not in known:
        raise UserError(
            f"{where}: {role!r} is not a known role{closest(str(role), known)}; roles are system, "
            f"user (or human) and assistant (or gpt, model); tool and function roles are not supported"
        )


def read_messages(rec: dict, where: str, key: str, role_key: str, text_key: str) -> Conversation:
    """sharegpt (conversations: from/value) and openai (messages: role/content) records."""
    messages = rec.get(key)
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: key '{key}' must be a non-empty list of messages")
    system = text_of(rec, "system", where, required=False)
    turns, user = [], None
    for i, msg in enumerate(messages):
        at = f"{where}: {key}[{i}]"
        if not isinstance(msg, dict) or role_key not in msg or text_key not in msg:
            raise UserError(f"{at}: expected an object with '{role_key}' and '{text_key}', got {msg!r}")
        role, text = msg[role_key], msg[text_key]
        check_role(role, f"{at}.{role_key}")
        if not isinstance(text, str):
            raise UserError(f"{at}.{text_key}: must be a string (multimodal content is not supported)")
        if role == "system" and i == 0:
            system = text
        elif role in USER_ROLES and user is None:
            user = text
        elif role in ASSISTANT_ROLES and user is not None:
            turns.append((user, text))
            user = None
        else:
            expected = "a user message" if user is None else "an assistant message"
            raise UserError(
                f"{at}.{role_key}: '{role}' where {expected} was expected; messages must be "
                f"[system], then user and assistant in turn, ending with assistant "
                f"(tool and function roles are not supported)"
            )
    if user is not None or not turns:
        raise UserError(f"{where}: key '{key}' must end with an assistant message (the answer to learn)")
    return Conversation(system, turns)


def read_conversations(split: Split, sft_format: str) -> list[Conversation]:
    """Every record of a file as a Conversation; errors name the file, row and key. Each file keeps one
    layout (told from its first record); mixed training files are told apart record by record."""
    from peftlab.data.mixing import MIXED_SOURCE

    fmt = detect_format(split, sft_format)
    out = []
    for rec, row in zip(split.records, split.rows):
        where = f"{split.source}: row {row}"
        if split.source == MIXED_SOURCE:
            fmt = detect_record(rec, where, sft_format)
        if fmt == "alpaca":
            out.append(read_alpaca(rec, where))
        elif fmt == "sharegpt":
            out.append(read_messages(rec, where, "conversations", "from", "value"))
        else:
            out.append(read_messages(rec, where, "messages", "role", "content"))
    return out


# ---------------------------------------------------------------- templates


@dataclass(frozen=True)
class Template:
    user: str  # a user turn up to where the answer starts: {content}
    assistant: str  # the answer and the end of the turn: {content}, {eos}
    system: str = ""  # a system block before the first turn: {content}
    merge_system: str = ""  # or: how the system text joins the first user message ({system}, {content})
    default_system: str = ""
    prefix: str = ""  # once at the start
    stop: tuple = ()  # text that ends an answer when generating, besides the tokenizer's EOS


TEMPLATES = {
    "default": Template(
        system="System: {content}\n", user="Human: {content}\nAssistant: ", assistant="{content}{eos}\n"
    ),
    "alpaca": Template(
        system="{content}\n\n",
        user="### Instruction:\n{content}\n\n### Response:\n",
        assistant="{content}{eos}\n\n",
        default_system="Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.",
    ),
    "chatml": Template(
        system="<|im_start|>system\n{content}<|im_end|>\n",
        user="<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n",
        assistant="{content}<|im_end|>\n",
        stop=("<|im_end|>",),
    ),
    "llama2": Template(
        merge_system="<<SYS>>\n{system}\n<</SYS>>\n\n{content}",
        user="<s>[INST] {content} [/INST]",
        assistant=" {content} </s>",
        stop=("</s>",),
    ),
    "llama3": Template(
        prefix="<|begin_of_text|>",
        system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
        user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        assistant="{content}<|eot_id|>",
        stop=("<|eot_id|>",),
    ),
    "gemma": Template(
        prefix="<bos>",
        merge_system="{system}\n\n{content}",
        user="<start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n",
        assistant="{content}<end_of_turn>\n",
        stop=("<end_of_turn>",),
    ),
}
TEMPLATES["qwen"] = Template(
    **{
        **TEMPLATES["chatml"].__dict__,
        "default_system": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    }
)
TEMPLATE_NAMES = ("auto", "chat", *TEMPLATES)


def fill(fmt: str, **values: str) -> str:
    """Replace {content}/{system}/{eos} in one pass, so braces inside the texts are left alone."""
    return re.sub(r"\{(content|system|eos)\}", lambda m: values[m.group(1)], fmt)


def render_named(conv: Conversation, t: Template, eos: str) -> list[tuple[str, str]]:
    """(prompt, response) text per turn; joined they are the whole conversation."""
    system = conv.system or t.default_system
    head = t.prefix + (fill(t.system, content=system) if system and t.system and not t.merge_system else "")
    pairs = []
    for i, (user, answer) in enumerate(conv.turns):
        if i == 0 and system and t.merge_system:
            user = fill(t.merge_system, system=system, content=user)
        pairs.append(
            ((head if i == 0 else "") + fill(t.user, content=user), fill(t.assistant, content=answer, eos=eos))
        )
    return pairs


def render_chat(conv: Conversation, tokenizer) -> list[tuple[str, str]]:
    """The same (prompt, response) segments from the tokenizer's chat template, by rendering prefixes."""
    messages = [{"role": "system", "content": conv.system}] if conv.system else []
    pairs, done = [], ""
    for user, answer in conv.turns:
        messages.append({"role": "user", "content": user})
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        messages.append({"role": "assistant", "content": answer})
        whole = tokenizer.apply_chat_template(messages, tokenize=False)
        if not (prompt.startswith(done) and whole.startswith(prompt)):
            raise UserError(
                "template: the tokenizer's chat template does not render a conversation as a "
                "prefix of its continuation, so prompt and answer cannot be told apart; "
                "set `template:` to a named one (" + ", ".join(TEMPLATES) + ")"
            )
        pairs.append((prompt[len(done) :], whole[len(prompt) :]))
        done = whole
    return pairs


def check_template(name: str) -> None:
    if name not in TEMPLATE_NAMES:
        raise UserError(f"template: '{name}' is not one of {', '.join(TEMPLATE_NAMES)}{closest(name, TEMPLATE_NAMES)}")


def resolve_template(name: str, tokenizer) -> str:
    """'chat' (the tokenizer's own template) or a named template."""
    check_template(name)
    if name == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "default"
    if name == "chat" and not getattr(tokenizer, "chat_template", None):
        raise UserError("template: 'chat' but the tokenizer has no chat template; name one of " + ", ".join(TEMPLATES))
    return name


def render(conv: Conversation, template: str, tokenizer) -> list[tuple[str, str]]:
    if template == "chat":
        return render_chat(conv, tokenizer)
    return render_named(conv, TEMPLATES[template], tokenizer.eos_token or "")


def stop_texts(template: str) -> tuple:
    return () if template == "chat" else TEMPLATES[template].stop
