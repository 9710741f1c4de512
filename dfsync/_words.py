"""Counts in messages, reprs and panels: ``1 row``, ``2 rows``, never ``1 rows``."""

from __future__ import annotations

_IRREGULAR = {"batch": "batches", "try": "tries", "process": "processes", "query": "queries", "entry": "entries"}


def plural(n: object, noun: str, many: str | None = None, *, sep: bool = False) -> str:
    """``n`` and ``noun``, the noun in the plural unless ``n`` is one (``1 row``, ``0 rows``, ``2 batches``).

    ``many`` is the plural when adding an s is wrong; ``sep=True`` writes thousands with commas
    (``1,000 rows``). ``n`` may be any number or a text such as ``"?"``.
    """
    try:
        one = float(n) == 1  # type: ignore[arg-type]
    except (TypeError, ValueError):
        one = False
    if many is None:
        head, _, last = noun.rpartition(" ")
        many = (head + " " if head else "") + _IRREGULAR.get(last, last + "s")
    shown = f"{n:,}" if sep and isinstance(n, int) else str(n)
    return f"{shown} {noun if one else many}"
