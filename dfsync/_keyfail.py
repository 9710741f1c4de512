"""A run whose source has null or repeated primary keys under ``on_invalid='fail'`` (private).

It fails before anything is sent, but first runs its checks on the other rows, as
``sync.preview()`` does: the run records every row it could not send as ``invalid`` (a preview
said 7 invalid rows where the failed run recorded 6, the one failing a check counted as an
update), and its error names the failing checks beside the keys, so one fix covers both.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import InvalidRecordsError, ValidationFailed


def keys_and_checks(keys: InvalidRecordsError, count: Callable[[], None], validate: Callable[[], str],
                    keep_records: Callable[[], None]) -> InvalidRecordsError:
    """The error to raise for a run that fails on its keys, once ``count`` (the run's counters),
    ``validate`` (its checks, which under 'fail' quarantine the failing rows, keep the invalid
    records and raise) and ``keep_records`` (the invalid records) have recorded what it found."""
    count()
    try:
        validate()
    except ValidationFailed as checks:
        failing = str(checks).split(". Nothing was sent")[0]
        return InvalidRecordsError(f"{keys} The checks failed too: {failing}.")
    keep_records()
    return keys
