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


# What a message tells the user to do, as the Python API says it (how every message is written),
# and as the command line says it: the one table the `dfsync` command rewrites what it shows
# through (its errors, a run's error, a preview's problems), so a terminal is never told to call
# run.abort(). Most specific first; {name} is the sync the command names.
_FOR_CLI: tuple[tuple[str, str], ...] = (
    (r"\bsync\.(reset|enable)\(\) \((?:from the command line: )?dfsync \1 [^)]*\)", r"`dfsync \1 {name}`"),
    (r"\bcall sync\.enable\(\)", "run `dfsync enable {name}`"),
    (r"\b(?:run|ws\.run\([0-9]+\))\.abort\(\)", "`dfsync abort {name}`"),
    (r"\b(the next )?sync\.run\(\) resumes", r"\1`dfsync run {name}` resumes"),
    (r"\bwait for it \(run\.wait\(\)\)", "wait for it to end (`dfsync status {name}` shows it)"),
    (r"\bsync\.(reset|enable|disable|run)\(\)", r"`dfsync \1 {name}`"),
    (r"\brun\.validation\(\) has the details", "`dfsync status {name}` lists them"),
    # a run's kept records: the run's id when the message is a run's (its sync's last run may be another)
    (r"\brun\.records\(status=['\"](\w+)['\"]\)", r"`dfsync records {run} --status \1`"),
    # the options the commands take, as the keyword arguments they are given to
    (r"\b(?:Sync\.runs|SyncRun\.records)\(limit=(-?[0-9]+)\): limit is a whole number of rows >= 0, or None for all",
     r"--limit \1: give a whole number of rows >= 0 (0: all)"),
    (r"\bolder_than=('[^']*')", r"--older-than \1"),
)


def for_cli(text: str, name: str | None = None, run_id: int | None = None) -> str:
    """``text`` with each Python call it tells the user to make written as the ``dfsync`` command
    that does it, for sync ``name`` (``NAME`` when the command names no sync) and, when the text is
    run ``run_id``'s, that run (else the sync's last run).

    >>> for_cli("finish it (sync.run() resumes it) or abort it (run.abort())", "orders")
    'finish it (`dfsync run orders` resumes it) or abort it (`dfsync abort orders`)'
    >>> for_cli("sync.reset() (dfsync reset NAME) makes the next run a first load", "orders")
    '`dfsync reset orders` makes the next run a first load'
    >>> for_cli("see run.records(status='failed') for the errors", "orders", 7)
    'see `dfsync records 7 --status failed` for the errors'
    """
    import re
    import shlex

    if not text:
        return text
    shown = (shlex.quote(name) if name else "NAME").replace("\\", "\\\\")  # a name with a space is one argument
    run = str(run_id) if run_id is not None else shown
    for pattern, cli in _FOR_CLI:
        text = re.sub(pattern, cli.replace("{name}", shown).replace("{run}", run), text)
    return text
