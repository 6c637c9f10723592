"""One exception type for bad user input: the CLI prints its message and exits with code 2."""


class UserError(Exception):
    """Bad input (config, data, model spec). The message names the file/key/row and the fix."""

    exit_code = 2


def closest(word: str, choices) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    import difflib

    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


# What a GGUF step (export --gguf, a .gguf evaluation) says when llama.cpp is not installed: `make demo`
# and `make quick` leave it out, as its compilation takes minutes.
INSTALL_HINT = (
    "`make gguf` compiles it once per machine (5-13 minutes on 2 cores), "
    "or: pip install llama-cpp-python==0.3.36 (the same compilation)"
)
