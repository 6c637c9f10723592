"""A sweep's logs/<run>.log holds the lines a child's output leaves on a screen: each progress bar once,
in its last state, no carriage-return redraws or cursor codes; the console gets the bytes unchanged."""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from peftlab.sweep import process as sweep
from peftlab.sweep.terminal import ScreenLines

BAR = "|##########| 4/4 [00:02<00:00, 2.00it/s]"
STREAM = (
    "peftlab: run: 10 of 100 parameters trainable\n"
    "\r  0%|          | 0/4 [00:00<?, ?it/s]"
    "\r 50%|#####     | 2/4 [00:01<00:01, 2.00it/s]"
    # the evaluation bar one row down (tqdm position 1), back up with ESC[A, cleared when it closes
    "\n\r  0%|          | 0/2 [00:00<?, ?it/s]\x1b[A"
    "\n\r100%|##########| 2/2 [00:00<00:00, 9.00it/s]\x1b[A"
    "\n\r                                              \x1b[A"
    "\r 75%|#######5  | 3/4 [00:01<00:00, 2.00it/s]"
    f"\r100%{BAR}\n"
    "\x1b[32mepoch 1:\x1b[0m loss 0.6931 accuracy 0.5000\n"
    "\n"
    "café crème, written with \\r\\n\r\n"
    "the last line, without a newline"
)
LOG = (
    "peftlab: run: 10 of 100 parameters trainable\n"
    f"100%{BAR}\n"
    "epoch 1: loss 0.6931 accuracy 0.5000\n"
    "\n"
    "café crème, written with \\r\\n\n"
    "the last line, without a newline\n"
)


class Chunks:
    """Stands in for the os module in pump(): os.read gives the stream's bytes `size` at a time."""

    def __init__(self, data: bytes, size: int):
        self.parts = [data[i : i + size] for i in range(0, len(data), size)]

    def read(self, fd, n):
        return self.parts.pop(0) if self.parts else b""


class Stream:
    def fileno(self):
        return -1


# size 1 cuts every escape sequence, line and the two-byte é; 5 and 7 cut them at other places
@pytest.mark.parametrize("size", [1, 5, 7, 4096])
def test_the_log_gets_each_line_once_in_its_last_state_and_the_console_every_byte(monkeypatch, size):
    monkeypatch.setattr(sweep, "os", Chunks(STREAM.encode(), size))
    console, log, tail, lines = io.StringIO(), io.StringIO(), [], []
    sweep.pump(Stream(), console, log, tail, lines.append)
    assert log.getvalue() == LOG
    assert console.getvalue() == STREAM and STREAM.endswith("".join(tail))
    assert "\x1b[32mepoch 1:\x1b[0m loss 0.6931 accuracy 0.5000" in lines  # on_line: the raw lines, as before


def test_real_tqdm_nested_bars_leave_one_line():
    out = io.StringIO()
    outer = tqdm(total=4, file=out, mininterval=0, ncols=60)
    for step in range(4):
        outer.update(1)
        if step == 1:  # an evaluation in the middle of the epoch, as transformers' ProgressCallback draws it
            for _ in tqdm(range(3), file=out, mininterval=0, ncols=60, leave=False):
                pass
    outer.close()
    print("epoch 1: done", file=out)
    raw = out.getvalue()
    assert raw.count("\r") > 8 and "\x1b[A" in raw
    screen = ScreenLines()
    lines = (screen.feed(raw) + screen.finish()).splitlines()
    assert len(lines) == 2 and lines[0].startswith("100%|") and "4/4" in lines[0] and lines[1] == "epoch 1: done"


def test_a_row_far_above_the_cursor_is_given_out_before_the_end():
    screen = ScreenLines(reach=3)
    assert screen.feed("plain\n") == "plain\n"  # a plain line: at once
    assert screen.feed("\r 10%|bar") == ""  # a bar: the cursor may come back to it
    assert screen.feed("\r100%|bar\nbelow\n") == ""  # held, and the line below it with it (order)
    assert screen.feed("next\n") == "100%|bar\nbelow\nnext\n"  # three rows down: out of reach
    assert screen.finish() == ""
