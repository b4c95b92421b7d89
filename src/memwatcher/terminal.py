"""Keys from a terminal: cbreak mode and a decoder for the sequences keys send.

Only input: drawing is rich's. :func:`cbreak` turns off line buffering and
echo (signals still work: Ctrl-C is SIGINT) and restores the terminal's
previous settings when its block ends, whichever way it ends.
"""

from __future__ import annotations

import codecs
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["KeyDecoder", "cbreak"]

# Named keys, as :meth:`KeyDecoder.feed` returns them; any other key is its character.
UP, DOWN, PAGE_UP, PAGE_DOWN, HOME, END = "up", "down", "pgup", "pgdn", "home", "end"
ESCAPE, ENTER, TAB, BACKSPACE = "esc", "enter", "tab", "backspace"

# CSI (ESC [) and SS3 (ESC O) sequences of xterm, the Linux console, screen and tmux.
_SEQUENCES = {
    "[A": UP,
    "[B": DOWN,
    "OA": UP,
    "OB": DOWN,
    "[5~": PAGE_UP,
    "[6~": PAGE_DOWN,
    "[H": HOME,
    "[F": END,
    "OH": HOME,
    "OF": END,
    "[1~": HOME,
    "[4~": END,
    "[7~": HOME,
    "[8~": END,
}
_CONTROL = {"\r": ENTER, "\n": ENTER, "\t": TAB, "\x7f": BACKSPACE, "\x08": BACKSPACE}


@contextmanager
def cbreak(fd: int) -> Iterator[int]:
    """Terminal ``fd`` in cbreak mode (keys arrive one by one, unechoed) for the block; yields ``fd``.

    The previous settings come back on every exit from the block, exceptions
    included (SIGINT and SIGTERM end a run by unwinding to here).
    """
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd, termios.TCSANOW)
        yield fd
    finally:
        # TCSAFLUSH: keys typed but not read are not left for the shell to run.
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


class KeyDecoder:
    """Turns the bytes a terminal sends into keys: characters, or the names above.

    A lone ESC is the Escape key only once no sequence can follow it: the
    caller calls :meth:`flush` when no more bytes came within a short wait.
    Unknown sequences are dropped whole.
    """

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: bytes) -> list[str]:
        self._pending += self._text.decode(data)
        keys: list[str] = []
        while self._pending:
            ch = self._pending[0]
            if ch != "\x1b":
                keys.append(_CONTROL.get(ch, ch))
                self._pending = self._pending[1:]
                continue
            rest = self._pending[1:]
            if not rest:
                break  # maybe the start of a sequence: wait for flush()
            if rest[0] not in "[O":
                keys.append(ESCAPE)
                self._pending = rest
                continue
            end = _sequence_end(rest)
            if end is None:
                break  # incomplete
            keys += [_SEQUENCES[rest[:end]]] if rest[:end] in _SEQUENCES else []
            self._pending = rest[end:]
        return keys

    @property
    def waiting(self) -> bool:
        """Whether bytes are held back, waiting to see if they start a sequence."""
        return bool(self._pending)

    def flush(self) -> list[str]:
        """What is held back, as keys: no more bytes came, so a lone ESC was the Escape key."""
        pending, self._pending = self._pending, ""
        return [ESCAPE] if pending == "\x1b" else []


def _sequence_end(rest: str) -> int | None:
    """Length of the sequence after ESC in ``rest`` (which starts with [ or O), None if incomplete."""
    if rest[0] == "O":
        return 2 if len(rest) >= 2 else None
    for i in range(1, len(rest)):
        if "\x40" <= rest[i] <= "\x7e":  # a CSI sequence ends with its final byte
            return i + 1
    return None
