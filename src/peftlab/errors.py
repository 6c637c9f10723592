"""One exception type for bad user input: the CLI prints its message and exits with code 2."""


class UserError(Exception):
    """Bad input (config, data, model spec). The message names the file/key/row and the fix."""

    exit_code = 2


def closest(word: str, choices) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    import difflib

    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""
