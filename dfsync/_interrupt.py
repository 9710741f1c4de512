"""Ctrl-C while DuckDB runs a statement.

Two things went wrong when Ctrl-C (or a notebook's interrupt button) came while a run's main
thread was inside a DuckDB statement (its source read into staging, its checks: minutes on a
large source; a workspace statement mid-transfer):

* DuckDB's Python client catches the KeyboardInterrupt that Python's SIGINT handler raises and
  raises ``RuntimeError('Query interrupted')`` instead: the run failed as an internal error (also
  mid-transfer, where an interruption pauses the run) and ``sync.run()`` returned, so the script
  or notebook cell went on as if nothing had been pressed;
* it looks for signals only now and then, so a long statement often ran to its end first.

Within :func:`interruptible` a Ctrl-C is a KeyboardInterrupt again, whatever DuckDB (or a reader)
made of it, and a thread woken by the signal interrupts the DuckDB connections the caller names
at once (``con.interrupt()`` is safe from another thread).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any


@contextlib.contextmanager
def interruptible(holders: Callable[[], Iterable[Any]] = tuple) -> Iterator[None]:
    """Within the block, Ctrl-C ends it in KeyboardInterrupt (the error DuckDB raised instead
    becomes its cause) and interrupts the statement running on the ``.con`` of each object
    ``holders()`` gives (e.g. a run's staging). Only on the main thread and while Python's own
    SIGINT handler is in place; elsewhere (a nested block too) it runs as is."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    pressed: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        pressed.append(signum)
        raise KeyboardInterrupt  # as Python's own handler does; DuckDB turns it into an error

    wake = _watch(holders)
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        if pressed:  # e.g. RuntimeError('Query interrupted'), or a SourceError a reader made of it
            raise KeyboardInterrupt from exc
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        wake()
    if pressed:  # pressed as DuckDB finished a statement, which dropped it: stop here
        raise KeyboardInterrupt


def _watch(holders: Callable[[], Iterable[Any]]) -> Callable[[], None]:
    """A thread woken by every signal (``signal.set_wakeup_fd``) that interrupts the holders'
    connections on SIGINT; returns what ends it and gives the previous wakeup fd back."""
    try:
        r, w = os.pipe()
    except OSError:
        return lambda: None
    try:
        os.set_blocking(w, False)
        previous = signal.set_wakeup_fd(w)
    except (OSError, ValueError):
        os.close(r)
        os.close(w)
        return lambda: None

    def run() -> None:
        try:
            while data := os.read(r, 64):
                if signal.SIGINT in data:
                    for holder in holders():
                        con = getattr(holder, "con", None)
                        if con is not None:
                            with contextlib.suppress(Exception):
                                con.interrupt()
                if previous != -1:  # whoever listened before (an event loop) still hears of it
                    with contextlib.suppress(OSError):
                        os.write(previous, data)
        except OSError:
            pass
        finally:
            os.close(r)

    threading.Thread(target=run, name="dfsync-ctrl-c", daemon=True).start()

    def end() -> None:
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(previous)
        os.close(w)  # the thread reads the end of the pipe and stops

    return end
