"""Great Expectations checkpoint actions attached to a sync (private; see :mod:`dfsync.gx`).

A GX Checkpoint (or bare ValidationActions) given in ``checks=`` contributes its suites'
expectations as ordinary checks, plus one :class:`CheckpointActions` entry. That entry is
not evaluated: after dfsync has evaluated the checks of a run, it turns their results into
a real ``CheckpointResult`` and runs the actions the way ``Checkpoint.run`` does (Data Docs
first, one shared ``ActionContext``, each action told the Data Context it runs against).

Persisted with the sync: the importable class and GX's JSON of each action (literal
secrets withheld: the sync is then session-only), the suites' check names, and the root of
a file Data Context so another process reopens it. ``great_expectations`` is imported only
when a checkpoint is given or its actions run.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from dfsync._callbacks import module_allowed, not_allowed_message
from dfsync._check import ACTIONS, Check
from dfsync._checks_sql import jsonable
from dfsync._gx_context import batch_definition, ephemeral_context, file_context, import_gx
from dfsync.errors import ConfigError, register_secret

# action fields holding credentials; a literal value there is kept in memory only
_SECRET_FIELD = re.compile(r"webhook|token|password|secret|api_?key|routing_key|credential", re.I)
_REDACTED = "***"

# dfsync built-in check kind -> the GX expectation type it mirrors (what actions and Data Docs show)
_GX_TYPE = {
    "not_null": "expect_column_values_to_not_be_null",
    "between": "expect_column_values_to_be_between",
    "in_set": "expect_column_values_to_be_in_set",
    "matches": "expect_column_values_to_match_regex",
    "length_between": "expect_column_value_lengths_to_be_between",
    "row_count_between": "expect_table_row_count_to_be_between",
}


class CheckpointActions(Check):
    """Great Expectations checkpoint actions attached to a sync: run after each run's checks.

    Built by :func:`dfsync.checks.normalize_checks` from a ``gx.Checkpoint`` (its actions see
    one validation result per validation definition, from that suite's checks) or from bare
    ``ValidationAction`` objects in the checks list (they see one result per suite given, plus
    one named ``dfsync`` for the other checks).
    """

    def __init__(self, *, checkpoint_name: str | None, validations: list[dict] | None, actions: list | None = None,
                 action_configs: list[dict] | None = None, checkpoint: Any = None, checkpoint_id: str | None = None,
                 result_format: Any = None, context: Any = None, context_root: str | None = None,
                 name: str | None = None) -> None:
        self.checkpoint_name = checkpoint_name
        self.validations = validations
        self.checkpoint = checkpoint  # the user's live gx.Checkpoint (same process only)
        self.checkpoint_id = checkpoint_id
        self.result_format = result_format
        self.context = context  # the live Data Context the actions run against
        self.context_root = context_root  # ... or where to reopen it (a file context)
        self.actions = list(actions) if actions is not None else None
        self.action_configs = action_configs if action_configs is not None else [_action_config(a) for a in actions or []]
        super().__init__("gx:checkpoint", None, name=name, level=ACTIONS)

    def default_name(self) -> str:
        return f"gx checkpoint {self.checkpoint_name}" if self.checkpoint_name else "gx actions"

    @property
    def session_only(self) -> bool:
        """True when an action cannot be rebuilt by another process (literal secret, class in __main__)."""
        return any(a.get("session_only") for a in self.action_configs)

    def sql_form(self, types: dict[str, str]) -> Check | None:
        return None

    def config(self) -> dict:
        vals = [{**v, "checks": [c.name if isinstance(c, Check) else c for c in v["checks"]]}
                for v in self.validations or []]
        stored = [{k: v for k, v in a.items() if k != "session_only"} for a in self.action_configs]
        return {"kind": self.kind, "name": self.name, "checkpoint": jsonable({
            "name": self.checkpoint_name, "id": self.checkpoint_id, "validations": vals, "actions": stored,
            "result_format": _plain(self.result_format), "context_root": self.context_root})}

    @classmethod
    def from_config(cls, conf: dict) -> CheckpointActions:
        cp = conf["checkpoint"]
        configs = [dict(a) for a in cp.get("actions") or []]
        for a in configs:  # a literal secret was not stored: this process cannot run the action
            a["session_only"] = a.get("config") is None or _REDACTED in _secret_values(a.get("config") or {})
        return cls(checkpoint_name=cp["name"], validations=cp.get("validations") or [], action_configs=configs,
                   checkpoint_id=cp.get("id"), result_format=cp.get("result_format"),
                   context_root=cp.get("context_root"), name=conf["name"])

    def __repr__(self) -> str:
        names = [a.get("name") for a in self.action_configs]
        return f"<dfsync GX checkpoint {self.checkpoint_name!r} actions={names}>"

    # .............................................................. running
    def live_actions(self) -> list:
        """The action objects: the user's own, or rebuilt from their stored JSON."""
        if self.actions is None:
            import_gx()
            from great_expectations.checkpoint.actions import _VALIDATION_ACTION_REGISTRY

            built = []
            for a in self.action_configs:
                if a.get("session_only"):
                    raise ConfigError(
                        f"GX action {a.get('name')!r} can only run in the Python session that created the sync "
                        "(its class is defined in __main__, it is not JSON-serialisable, or it holds a literal "
                        "secret). Define the class in an importable module and write secrets as ${ENV_VAR}.")
                module = a["module"]
                if module.split(".")[0] != "great_expectations" and not module_allowed(module):
                    raise ConfigError(not_allowed_message(f"{module}:{a.get('name')}", "GX action"))
                importlib.import_module(module)  # defining the class registers its `type` with GX
                conf = a["config"]
                built.append(_VALIDATION_ACTION_REGISTRY.get(conf["type"])(**conf))
            self.actions = built
        return self.actions

    def live_context(self) -> Any:
        if self.context is None:
            self.context = file_context(self.context_root) if self.context_root else ephemeral_context()
        return self.context

    def run(self, checks: list[Check], results: list[dict], *, sync_name: str, run_id: int,
            note: Callable[[str], Any]) -> None:
        """Build the CheckpointResult of this run's checks and run each action as Checkpoint.run does."""
        gx = import_gx()
        from great_expectations.checkpoint.actions import ActionContext, UpdateDataDocsAction
        from great_expectations.checkpoint.checkpoint import CheckpointResult
        from great_expectations.core.run_identifier import RunIdentifier

        actions = self.live_actions()
        context = self.live_context()
        by_name = {c.name: c for c in checks}
        by_result = {r["check_name"]: r for r in results}
        rid = RunIdentifier(run_name=f"dfsync-run-{run_id}", run_time=datetime.now(timezone.utc))
        batch_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"dfsync-{sync_name}")
        checkpoint = self.checkpoint or self._synthetic_checkpoint(gx, actions, by_name, sync_name)
        run_results = {}
        for v in self.validations or []:
            names = [c.name if isinstance(c, Check) else c for c in v["checks"]]
            key, res = _suite_result(v, [by_name[n] for n in names if n in by_result],
                                     [by_result[n] for n in names if n in by_result],
                                     rid, batch_id, checkpoint.id, sync_name, run_id)
            store = getattr(context, "validation_results_store", None)
            if store is not None and not store.cloud_mode:  # as ValidationDefinition.run does
                try:
                    store.store_validation_results(suite_validation_result=res, suite_validation_result_identifier=key,
                                                   expectation_suite_identifier=key.expectation_suite_identifier)
                except Exception as exc:  # the actions still run; Data Docs may then miss this result
                    note(f"GX checkpoint {self.checkpoint_name!r}: could not store the validation result: "
                         f"{type(exc).__name__}: {exc}")
            run_results[key] = res
        result = CheckpointResult(run_id=rid, run_results=run_results, checkpoint_config=checkpoint)
        action_context = ActionContext()
        # Checkpoint._sort_actions: Data Docs first, since other actions link to the pages
        ordered = [a for a in actions if isinstance(a, UpdateDataDocsAction)] + \
                  [a for a in actions if not isinstance(a, UpdateDataDocsAction)]
        for action in ordered:
            action._data_context = context
            try:
                out = action.run(checkpoint_result=result, action_context=action_context)
            except Exception as exc:  # an action never changes the run's outcome
                note(f"GX action {action.name!r} ({action.type}) raised {type(exc).__name__}: {exc}")
                continue
            action_context.update(action=action, action_result=out)
        ran = [a.name for a, _ in action_context.data]
        note(f"GX checkpoint {checkpoint.name!r} (validation success={result.success}): ran {len(ran)} of "
             f"{len(ordered)} actions" + (f": {', '.join(ran)}" if ran else ""))

    def _synthetic_checkpoint(self, gx: Any, actions: list, by_name: dict[str, Check], sync_name: str) -> Any:
        """A gx.Checkpoint describing this sync's checks (actions read its name and suites)."""
        bd = batch_definition()
        vds = []
        for v in self.validations or []:
            names = [c.name if isinstance(c, Check) else c for c in v["checks"]]
            suite = gx.ExpectationSuite(name=v["suite_name"], id=v.get("suite_id"),
                                        expectations=[expectation_config(by_name[n]) for n in names if n in by_name])
            vds.append(gx.ValidationDefinition(name=v["name"], data=bd, suite=suite, id=v.get("id")))
        kw = {"result_format": self.result_format} if self.result_format else {}
        return gx.Checkpoint(name=self.checkpoint_name or f"dfsync {sync_name}", validation_definitions=vds, actions=actions, id=self.checkpoint_id, **kw)


def _suite_result(v: dict, checks: list[Check], results: list[dict], rid: Any, batch_id: str,
                  checkpoint_id: str | None, sync_name: str, run_id: int) -> tuple[Any, Any]:
    """One ExpectationSuiteValidationResult, shaped as ValidationDefinition.run makes it."""
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    evrs = [ExpectationValidationResult(success=bool(r["success"]), result=dict(r["result"]),
                                        expectation_config=ExpectationConfiguration(**expectation_config(c)))
            for c, r in zip(checks, results, strict=True)]
    ok = sum(1 for e in evrs if e.success)
    stats = {"evaluated_expectations": len(evrs), "successful_expectations": ok,
             "unsuccessful_expectations": len(evrs) - ok,
             "success_percent": ok / len(evrs) * 100 if evrs else None}
    meta = {"great_expectations_version": gx.__version__, "run_id": rid, "validation_time": rid.run_time,
            "validation_id": v.get("id"), "checkpoint_id": checkpoint_id, "batch_parameters": None,
            "batch_spec": {"dfsync_sync": sync_name, "dfsync_run_id": run_id},
            "active_batch_definition": {"datasource_name": "dfsync", "data_asset_name": sync_name,
                                        "batch_definition_name": f"run {run_id}"}}
    res = ExpectationSuiteValidationResult(success=ok == len(evrs), results=evrs, suite_name=v["suite_name"],
                                           statistics=stats, meta=meta, batch_id=batch_id)
    key = ValidationResultIdentifier(expectation_suite_identifier=ExpectationSuiteIdentifier(name=v["suite_name"]),
                                     run_id=rid, batch_identifier=batch_id)
    return key, res


def expectation_config(check: Check) -> dict:
    """The GX expectation configuration (type, kwargs, meta) a dfsync check stands for.

    >>> expectation_config(Check("not_null", "email"))["type"]
    'expect_column_values_to_not_be_null'
    """
    meta = {"dfsync_check": check.name}
    gx_config = getattr(check, "gx_config", None)  # a dfsync.gx.GXCheck: its own expectation
    if gx_config is not None:
        return {**gx_config, "meta": {**gx_config.get("meta", {}), **meta}}
    p = check.params
    kw: dict[str, Any] = {"column": check.column} if check.column is not None else {}
    if check.kind in ("between", "length_between", "row_count_between"):
        kw.update(min_value=p.get("min"), max_value=p.get("max"), strict_min=bool(p.get("strict_min")),
                  strict_max=bool(p.get("strict_max")))
    elif check.kind == "in_set":
        kw["value_set"] = list(p["values"])
    elif check.kind == "matches":
        kw["regex"] = p["regex"]
    if check.mostly != 1.0:
        kw["mostly"] = check.mostly
    etype = _GX_TYPE.get(check.kind)
    if check.kind == "unique":
        etype = "expect_column_values_to_be_unique" if check.column else "expect_compound_columns_to_be_unique"
        if not check.column:
            kw["column_list"] = check.columns()
    if etype is None:  # sql / polars expression: GX's "rows that must not exist" expectation
        what = f"WHERE NOT ({p['predicate']})" if check.kind == "sql" else \
            f"-- rows where this polars expression is not true (evaluated by dfsync): {getattr(check, 'expr', '')}"
        return {"type": "unexpected_rows_expectation", "meta": meta,
                "kwargs": {"unexpected_rows_query": f"SELECT * FROM {{batch}} {what}", "description": check.name}}
    return {"type": etype, "kwargs": kw, "meta": meta}


def checks_from_checkpoint(cp: Any, suite_checks: Callable[[Any], list[Check]]) -> list[Check]:
    """A gx.Checkpoint's suites as checks (``suite_checks``: :func:`dfsync.gx.from_gx`),
    followed by the entry that runs its actions."""
    if not cp.validation_definitions:
        raise ConfigError(f"GX checkpoint {cp.name!r} has no validation definitions, so its actions would "
                          "have no results to act on; give it validation definitions with suites")
    out: list[Check] = []
    vals = []
    for vd in cp.validation_definitions:
        mine = suite_checks(vd.suite)
        out.extend(mine)
        vals.append({"name": vd.name, "id": vd.id, "suite_name": vd.suite.name, "suite_id": vd.suite.id,
                     "checks": mine})
    try:
        context = cp._resolve_context().context  # what Checkpoint._run_actions hands its actions
    except Exception:  # no Data Context at all: the actions get dfsync's own ephemeral one
        context = None
    out.append(CheckpointActions(checkpoint_name=cp.name, validations=vals, actions=cp.actions, checkpoint=cp,
                                 checkpoint_id=cp.id, result_format=cp.result_format, context=context,
                                 context_root=_context_root(context) if context is not None else None))
    return out


def bind(checks: list[Check]) -> list[Check]:
    """Merge the bare ValidationActions of a checks list into one entry reporting on every check."""
    bare = [c for c in checks if isinstance(c, CheckpointActions) and c.validations is None]
    if not bare:
        return checks
    plain = [c for c in checks if not isinstance(c, CheckpointActions)]
    if not plain:
        raise ConfigError("GX actions given in checks= need checks to report on: add an ExpectationSuite or checks")
    groups: dict[str, list[Check]] = {}
    for c in plain:
        groups.setdefault(getattr(c, "gx_suite", None) or "dfsync", []).append(c)
    merged = bare[0]
    for other in bare[1:]:
        merged.actions = [*(merged.actions or []), *(other.actions or [])]
        merged.action_configs += other.action_configs
    merged.validations = [{"name": n, "id": None, "suite_name": n, "checks": cs} for n, cs in groups.items()]
    return [c for c in checks if not any(c is b for b in bare)] + [merged]


def bare_action(action: Any) -> CheckpointActions:
    from great_expectations.data_context.data_context.context_factory import project_manager

    try:  # bare actions run against the current Data Context, as GX resolves them
        context = project_manager.get_current_project()
    except Exception:
        context = None
    return CheckpointActions(checkpoint_name=None, validations=None, actions=[action], context=context,
                             context_root=_context_root(context) if context is not None else None)


def _context_root(context: Any) -> str | None:
    """Where another process can reopen this Data Context (file contexts only)."""
    root = getattr(context, "root_directory", None)
    return str(root) if root and getattr(context, "mode", None) == "file" else None


def _action_config(action: Any) -> dict:
    """How an action is stored: its importable class and GX's JSON for it, secrets withheld."""
    cls = type(action)
    out: dict[str, Any] = {"module": cls.__module__, "class": cls.__qualname__, "name": action.name,
                           "config": None, "session_only": cls.__module__ == "__main__" or "<locals>" in cls.__qualname__}
    try:
        conf = json.loads(action.json())
    except Exception:  # a field GX cannot serialise: the action lives in this process only
        out["session_only"] = True
        return out
    for k, v in list(conf.items()):
        if _SECRET_FIELD.search(k) and isinstance(v, str) and v and "${" not in v:
            register_secret(v)  # literal secret: kept out of storage, errors and events
            conf[k] = _REDACTED
            out["session_only"] = True
    out["config"] = conf
    return out


def _secret_values(conf: dict) -> list:
    return [v for k, v in conf.items() if _SECRET_FIELD.search(k)]


def _plain(value: Any) -> Any:
    """A result_format (enum or dict) as JSON."""
    return getattr(value, "value", value)
