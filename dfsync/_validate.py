"""``sync.validate()``: every check of a sync over the whole current source (private).

Nothing is sent and no state changes: the source is read into a throw-away staging as if
nothing had been delivered yet, so row-level checks judge every row (not only the ones a
run would send) and dataset-level checks the whole data set. It is the way to see which
already-delivered rows a newly added check would reject.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from . import checks as checks_mod
from ._arrow import to_polars
from ._check import results_frame
from ._sensitive import mask_frame, protect_results, store_key
from ._settings import setting
from ._words import plural
from .staging import Staging

if TYPE_CHECKING:
    from .workspace import Sync


class ValidationResult:
    """What :meth:`Sync.validate` found.

    ``ok``: every check passed and no primary key is null or repeated; ``checks``: one row per
    check (success, scope ``rows`` / ``dataset``, counts, GX-shaped result as JSON text);
    ``invalid``: the failing rows with the record's columns and ``_checks`` (which checks
    each failed); ``problems``: primary-key problems in words.
    """

    def __init__(self, sync_name: str, checks: pl.DataFrame, invalid: pl.DataFrame, rows: int,
                 problems: list[str]) -> None:
        self.sync_name = sync_name
        self.checks = checks
        self.invalid = invalid
        self.rows = rows
        self.problems = problems

    @property
    def ok(self) -> bool:
        return not self.problems and (self.checks.is_empty() or bool(self.checks["success"].all()))

    def __repr__(self) -> str:
        failed = [] if self.checks.is_empty() else self.checks.filter(~pl.col("success"))["check_name"].to_list()
        what = "all checks passed" if self.ok else f"failed: {', '.join(failed + self.problems)}"
        return (f"<dfsync.ValidationResult of {self.sync_name!r} over {plural(self.rows, 'row')}: {what}; "
                f"{plural(self.invalid.height, 'invalid row')}>")

    def _repr_html_(self) -> str:
        """In a notebook: the verdict, each check with its scope and failing rows, the key problems
        and the first failing rows (``result.invalid``)."""
        from ._html import badge, box, esc, table

        title = (f"validate <code>{esc(self.sync_name)}</code> {badge('success' if self.ok else 'failed')} "
                 f'<span style="font-weight:normal">over {plural(self.rows, "row", sep=True)}, nothing sent; '
                 f"{plural(self.invalid.height, 'invalid row', sep=True)}</span>")
        body = ""
        if not self.checks.is_empty():
            rows = [{"check": r["check_name"], "scope": r.get("level"), "result": "passed" if r["success"] else "FAILED",
                     "failing rows": r.get("unexpected_count")} for r in self.checks.iter_rows(named=True)]
            body += table(rows, ["check", "scope", "result", "failing rows"], raw=(), numeric=("failing rows",))
        body += "".join(f"<div>{esc(p)}</div>" for p in self.problems)
        if self.invalid.height:
            body += ('<div style="margin-top:4px">first failing rows (result.invalid):</div>'
                     + table(self.invalid.head(10).to_dicts(), self.invalid.columns, raw=(), fill=True))
        return box(title, body, cls="dfsync dfsync-validation")


def validate(sync: Sync) -> ValidationResult:
    sensitive = sync.spec.sensitive
    staging = Staging(memory_limit=setting("staging_memory", sync.workspace.settings))
    try:
        result = staging.load(sync.source, sync.mapping, sync.primary_key, cursor=None, detect_deletes=False,
                              state=None, quarantine_keys=True)
        checks: pl.DataFrame = results_frame([])
        if sync.checks:
            evaluation = checks_mod.evaluate_staged(staging, sync.checks)
            staging.add_invalid(evaluation.failures_table, evaluation.dataset_failures)
            if evaluation.results:
                checks = results_frame(protect_results(evaluation.results, sensitive, sync.workspace.store))
        invalid: Any = to_polars(staging.invalid_records())
        invalid = invalid.drop([c for c in ("_action", "_status", "_batch", "_error", "_fingerprint")
                                if c in invalid.columns])
        if sensitive:  # shown as run.records() show them, never in plain
            invalid = mask_frame(invalid, sensitive, store_key(sync.workspace.store))
        return ValidationResult(sync.name, checks, invalid, result.queried, list(result.key_problems))
    finally:
        staging.close()  # removes its own directory
