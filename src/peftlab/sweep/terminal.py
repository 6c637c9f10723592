"""Terminal output made into log text: what a child process's progress bars leave on a screen, as lines.

tqdm redraws a bar in place with `\\r` and draws a nested bar (the evaluation bar inside the training
bar) one row down, going back up with the cursor code `ESC[A`; a leave=False bar is cleared with
spaces when it closes. A console shows the end state of all that; a log file that copied the bytes
would hold every redraw. ScreenLines keeps a few rows as a terminal would, so each row is logged
once, in its last state, with no control codes.
"""

from __future__ import annotations

import re

# A CSI sequence (ESC [ parameters, intermediates, final byte: cursor moves, colours, erase) or a
# two-character ESC sequence. tqdm's nested bars leave `ESC[A` behind.
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")
PARTIAL_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*)?\Z")  # an escape sequence a chunk boundary cut short
CONTROL = re.compile(f"(\r|\n|{ANSI.pattern})")  # what moves the cursor or is dropped, kept by split()


class ScreenLines:
    """Text written to a terminal (in chunks cut anywhere) -> the lines it leaves on the screen.

    feed() returns the lines no redraw can reach any more, each ending in a newline; finish() the
    rest. Understood: `\\r`, `\\n`, cursor up/down (`ESC[nA`, `ESC[nB`) and erase in line (`ESC[K`,
    `ESC[2K`); every other escape sequence is dropped. A row is held back while the cursor may come
    back to it: a plain line is given out as soon as the cursor has left it downwards, a row that was
    redrawn (a progress bar) once `reach` rows lie below it, or at the end. A redrawn row left blank (a
    cleared bar) is no line."""

    def __init__(self, reach: int = 8):
        self.reach = reach
        self.rows: list[list] = [["", False]]  # [text, redrawn] of the rows not given out yet
        self.row, self.col = 0, 0  # the cursor, within self.rows
        self.pending = ""  # the start of an escape sequence cut off by the chunk's end
        self.after_cr = False  # the last thing written was a carriage return

    def feed(self, text: str) -> str:
        text, self.pending = self.pending + text, ""
        if cut := PARTIAL_ANSI.search(text):
            text, self.pending = text[: cut.start()], text[cut.start() :]
        for part in CONTROL.split(text):
            if part:
                self._apply(part)
        return self._give_out(final=False)

    def finish(self) -> str:
        self.pending = ""  # an escape sequence never completed is no text
        return self._give_out(final=True)

    def _apply(self, part: str) -> None:
        if part == "\r":
            self.col, self.after_cr = 0, True
            return
        if part == "\n":
            self.row, self.col = self.row + 1, 0
            if self.row == len(self.rows):
                self.rows.append(["", False])
        elif part[0] == "\x1b":
            self._escape(part)
        else:
            part = part.replace("\x1b", "")  # an ESC that starts no sequence
            row = self.rows[self.row]
            if self.after_cr or self.col < len(row[0]):
                row[1] = True  # drawn after a carriage return, or over what the row held
            text = row[0].ljust(self.col)
            row[0] = text[: self.col] + part + text[self.col + len(part) :]
            self.col += len(part)
        self.after_cr = False

    def _escape(self, code: str) -> None:
        if not code.startswith("\x1b["):
            return
        final, params = code[-1], code[2:-1]
        row = self.rows[self.row]
        if final == "A":
            self.row = max(0, self.row - (int(params) if params.isdigit() else 1))  # rows given out are out of reach
            self.rows[self.row][1] = True
        elif final == "B":
            self.row += int(params) if params.isdigit() else 1
            self.rows += [["", False] for _ in range(self.row + 1 - len(self.rows))]
        elif final == "K":  # erase in line: to its end (0), from its start (1), all of it (2)
            text = row[0]
            row[0] = {"1": " " * self.col + text[self.col :], "2": ""}.get(params, text[: self.col])
            row[1] = True

    def _give_out(self, final: bool) -> str:
        """Lines for the rows above the cursor that no redraw can reach (all rows when final)."""
        done = 0
        for i, (_text, redrawn) in enumerate(self.rows):
            if not final and not (i < self.row and (not redrawn or self.row - i >= self.reach)):
                break
            done = i + 1
        if final and self.rows[-1] == ["", False]:  # the cursor at the start of an empty last line
            done = len(self.rows) - 1
        out = [text.rstrip() + "\n" for text, redrawn in self.rows[:done] if text.strip() or not redrawn]
        if final:
            self.rows, self.row, self.col = [["", False]], 0, 0
        elif done:
            self.rows, self.row = self.rows[done:], self.row - done
        return "".join(out)
