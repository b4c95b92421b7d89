"""Keys from a terminal: cbreak mode, Ctrl-Z, and a decoder for the sequences keys send.

Only input: drawing is rich's. :func:`cbreak` turns off line buffering and
echo (signals still work: Ctrl-C is SIGINT) and restores the terminal's
previous settings when its block ends, whichever way it ends.
:func:`stops_on_ctrl_z` lets a full-screen program give the terminal back
to the shell while it is stopped.
"""

from __future__ import annotations

import codecs
import os
import signal
import termios
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["KeyDecoder", "TerminalMode", "cbreak", "stops_on_ctrl_z"]

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


class TerminalMode:
    """The settings a terminal had before :func:`cbreak`, to give them back for a while."""

    def __init__(self, fd: int, saved: list) -> None:
        self.fd = fd
        self._saved = saved

    def suspend(self) -> None:
        """The terminal's previous settings (as before :func:`cbreak`) until :meth:`resume`."""
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def resume(self) -> None:
        tty.setcbreak(self.fd, termios.TCSANOW)


@contextmanager
def cbreak(fd: int) -> Iterator[TerminalMode]:
    """Terminal ``fd`` in cbreak mode (keys arrive one by one, unechoed) for the block.

    The previous settings come back on every exit from the block, exceptions
    included (SIGINT and SIGTERM end a run by unwinding to here).
    """
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd, termios.TCSANOW)
        yield TerminalMode(fd, saved)
    finally:
        # TCSAFLUSH: keys typed but not read are not left for the shell to run.
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


@contextmanager
def stops_on_ctrl_z(give_back: Callable[[], None], take_again: Callable[[], None]) -> Iterator[None]:
    """Ctrl-Z (SIGTSTP) during the block stops the process as the shell expects.

    ``give_back`` runs first (restore the terminal for the shell), then the
    process stops; once continued (``fg``), ``take_again`` runs. The handler
    runs in the main thread between bytecodes, as every Python signal handler.
    """

    def on_stop(signum: int, frame: object) -> None:
        give_back()
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        try:
            os.kill(os.getpid(), signal.SIGTSTP)  # the default action: stopped here until SIGCONT
        finally:
            signal.signal(signal.SIGTSTP, on_stop)
        take_again()

    previous = signal.signal(signal.SIGTSTP, on_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTSTP, previous)


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
