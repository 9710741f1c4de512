"""What the role of a PostgreSQL workspace may do: the privileges each action needs, checked up front.

Every action a user can take on a workspace (``"run"``, ``"pause"``, ``"delete"``, ...) is listed in
:data:`ACTIONS` with the PostgreSQL privileges it needs. :meth:`PgPrivileges.require` checks them
all in one query (``has_table_privilege``, ``has_column_privilege``, ``has_sequence_privilege``,
``has_schema_privilege``, ``pg_has_role`` for the per-sync tables a run alters or drops) before the
action changes anything, and raises :class:`~dfsync.errors.PermissionDenied` naming the action and
each privilege missing. :meth:`PgPrivileges.capabilities` is the set of actions the role may take
(the widgets grey out the others). The roles that grant them (viewer, operator, admin) and their
SQL are in ``docs/SECURITY.md``; a DuckDB file workspace belongs to its owner, who may do all.

Opening is read-only for a role that may not write: no migration is attempted when the schema is
up to date, and dead owners' runs are left for a role that may move them. A "permission denied"
that still comes from the server (SQLSTATE 42501) becomes ``PermissionDenied`` too (:func:`denied`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError, PermissionDenied, redact

__all__ = ["ACTIONS", "ALL_ACTIONS", "MAX_NAME", "ROLE_OF", "PER_SYNC_TABLE", "PgPrivileges", "denied", "role_name"]

#: (kind, object, privilege); kind: schema, table, column ("table.column"), sequence, owner
#: (membership of the role owning the table: altering or dropping it). ``state_*``/``rec_*``: the
#: per-sync tables (of the sync acted on; of every sync when none is named), checked if they exist.
Need = tuple[str, str, str]

_VIEW: tuple[Need, ...] = (("schema", "", "USAGE"), ("table", "syncs", "SELECT"), ("table", "runs", "SELECT"),
                           ("table", "events", "SELECT"), ("table", "batches", "SELECT"),
                           ("column", "checks.check_name", "SELECT"))
_EVENTS: tuple[Need, ...] = (("table", "events", "INSERT"), ("sequence", "dfsync_event_ids", "USAGE"))
_STATE: tuple[Need, ...] = (("owner", "state_*", ""), ("owner", "rec_*", ""))
_RUN: tuple[Need, ...] = (*_VIEW, *_EVENTS, ("table", "runs", "INSERT"), ("table", "runs", "UPDATE"),
                          ("sequence", "dfsync_run_ids", "USAGE"), ("table", "workspace_meta", "SELECT"),
                          ("column", "syncs.status", "UPDATE"), ("column", "syncs.cursor_value", "UPDATE"),
                          ("column", "syncs.next_run_at", "UPDATE"), ("table", "batches", "INSERT"),
                          ("table", "batches", "UPDATE"), ("table", "checks", "INSERT"),
                          ("table", "buckets", "INSERT"), ("table", "buckets", "UPDATE"), ("table", "buckets", "DELETE"),
                          ("table", "checks", "DELETE"), ("sequence", "checks_rowid_seq", "USAGE"),
                          ("schema", "", "CREATE"), *_STATE)

#: action -> the privileges it needs
ACTIONS: dict[str, tuple[Need, ...]] = {
    "view": _VIEW,
    # records, and the example failing values of check results (record values too)
    "records": (*_VIEW, ("table", "rec_*", "SELECT"), ("column", "checks.partial_unexpected_list", "SELECT")),
    "preview": (*_VIEW, ("table", "state_*", "SELECT"), ("table", "rec_*", "SELECT")),
    "run": _RUN,
    "resume": _RUN,
    "abort": _RUN,  # aborting a paused run settles its batches as a run would
    "pause": (*_VIEW, ("table", "runs", "UPDATE")),
    "enable": (*_VIEW, *_EVENTS, ("column", "syncs.status", "UPDATE")),
    "disable": (*_VIEW, *_EVENTS, ("column", "syncs.status", "UPDATE"), ("table", "runs", "UPDATE")),
    "reset": (*_VIEW, *_EVENTS, ("column", "syncs.cursor_value", "UPDATE"), ("owner", "state_*", "")),
    "create": (*_VIEW, *_EVENTS, ("table", "syncs", "INSERT"), ("sequence", "dfsync_sync_ids", "USAGE")),
    "change": (*_VIEW, *_EVENTS, ("column", "syncs.definition", "UPDATE"), ("owner", "state_*", "")),
    "delete": (*_VIEW, *(("table", t, "DELETE") for t in ("syncs", "runs", "events", "batches", "checks",
                                                           "buckets")),
               *_STATE),
    "recover": (*_VIEW, *_EVENTS, ("table", "runs", "UPDATE")),  # moving dead owners' runs on open
    "purge": (*_VIEW, ("owner", "rec_*", "")),
    # an erasure request: records and state rows deleted, the keys redacted from events, run and
    # bucket errors and the example values of check results
    "forget": (*_VIEW, ("table", "events", "UPDATE"), ("table", "runs", "UPDATE"), ("table", "buckets", "UPDATE"),
               ("table", "checks", "SELECT"), ("table", "checks", "UPDATE"), *_STATE),
}
ALL_ACTIONS: frozenset[str] = frozenset(ACTIONS)

#: the least role of docs/SECURITY.md that may take the action
ROLE_OF = {"view": "viewer", "records": "operator", "preview": "operator", "run": "operator",
           "resume": "operator", "abort": "operator", "pause": "operator", "enable": "operator",
           "disable": "operator", "reset": "operator", "recover": "operator", "create": "admin",
           "change": "admin", "delete": "admin", "purge": "operator", "forget": "admin"}

_WHAT = {"view": "read the workspace", "records": "read records", "preview": "preview a sync",
         "run": "run a sync", "resume": "resume a paused run", "abort": "abort a run", "pause": "pause a run",
         "enable": "enable a sync", "disable": "disable a sync", "reset": "reset a sync's delivered state",
         "create": "create a sync", "change": "change a sync's definition", "delete": "delete a sync",
         "recover": "move runs whose process died", "purge": "purge old records",
         "forget": "forget keys (erase their every trace)"}

#: the tables a sync gets on its first run: delivered state, records (``log_`` from old versions)
PER_SYNC_TABLE = re.compile(r"^(state|rec|log)_[0-9]+$")


#: PostgreSQL's longest name, in bytes (NAMEDATALEN - 1): a longer one is cut short silently
MAX_NAME = 63


def role_name(schema: str, role: str) -> str:
    """The name of a workspace role of docs/SECURITY.md: ``<schema>_<role>`` (viewer, operator,
    admin); a ``ConfigError`` naming the schema when that is longer than PostgreSQL takes.

    >>> role_name("dfsync", "operator")
    'dfsync_operator'
    """
    name = f"{schema}_{role}"
    if len(name.encode()) > MAX_NAME:
        raise ConfigError(f"the workspace schema {schema!r} is too long for its role names: {role!r} would be "
                          f"{name!r}, {len(name.encode())} bytes, and PostgreSQL names are at most {MAX_NAME} bytes "
                          f"(a longer one is cut short). Give a workspace shared through roles a schema of at most "
                          f"{MAX_NAME - len('_operator')} bytes (docs/SECURITY.md)")
    return name


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _describe(need: Need, schema: str) -> str:
    kind, obj, priv = need
    if kind == "schema":
        return f"{priv} on schema {schema}"
    if kind == "owner":
        return f"ownership of table {obj} (membership of the role owning it)"
    return f"{priv} on {kind} {obj}"


def denied(where: str, exc: BaseException) -> PermissionDenied:
    """The server's own "permission denied" (a privilege no check foresaw), as dfsync's error."""
    first = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return PermissionDenied(
        f"permission denied on the PostgreSQL workspace {where}: {first}. This call's changes were not "
        f"committed; the roles and the privileges they need are in docs/SECURITY.md")


class PgPrivileges:
    """Mixed in first into :class:`~dfsync.store._postgres.PostgresStore`."""

    target: Any

    def _per_sync(self, con: Any, sync_id: int | None) -> list[str]:
        if sync_id is not None:
            return [f"state_{int(sync_id)}", f"rec_{int(sync_id)}"]
        names = con.execute("SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname = ? AND c.relkind IN ('r', 'p')", [self.target.schema]).fetchall()
        return sorted(r[0] for r in names if PER_SYNC_TABLE.match(r[0]))

    def _missing(self, actions: Iterable[str], sync_id: int | None = None) -> dict[str, list[str]]:
        """action -> the privileges it needs that this role lacks (one query for all of them)."""
        actions = list(actions)
        schema = self.target.schema
        with self.connect() as con:  # type: ignore[attr-defined]
            tables = self._per_sync(con, sync_id)
            needs: dict[Need, int] = {}
            per_action: dict[str, list[Need]] = {}
            for action in actions:
                expanded: list[Need] = []
                for kind, obj, priv in ACTIONS[action]:
                    if obj.endswith("_*"):
                        expanded += [(kind, t, priv) for t in tables if t.startswith(obj[:-1])]
                    else:
                        expanded.append((kind, obj, priv))
                per_action[action] = expanded
                for need in expanded:
                    needs.setdefault(need, len(needs))
            exprs, params = [], []
            for kind, obj, priv in needs:
                optional = "true" if PER_SYNC_TABLE.match(obj.split(".")[0]) else "false"
                qualified = f"{_q(schema)}.{_q(obj.split('.')[0])}"
                if kind == "schema":
                    exprs.append(f"has_schema_privilege(CAST(? AS text), '{priv}')")
                    params.append(schema)
                elif kind == "table":
                    exprs.append(f"coalesce(has_table_privilege(to_regclass(CAST(? AS text)), '{priv}'), {optional})")
                    params.append(qualified)
                elif kind == "column":
                    exprs.append(f"coalesce(has_column_privilege(to_regclass(CAST(? AS text)), CAST(? AS text), '{priv}'), false)")
                    params += [qualified, obj.split(".", 1)[1]]
                elif kind == "sequence":
                    exprs.append(f"coalesce(has_sequence_privilege(to_regclass(CAST(? AS text)), '{priv}'), {optional})")
                    params.append(qualified)
                else:  # owner
                    exprs.append("coalesce(pg_has_role((SELECT relowner FROM pg_class WHERE oid = to_regclass(CAST(? AS text))), "
                                 f"'USAGE'), {optional})")
                    params.append(qualified)
            got = con.execute(f"SELECT {', '.join(exprs)}", params).fetchall()[0] if exprs else ()
        ok = dict(zip(needs, got, strict=True))
        return {a: [_describe(n, schema) for n in per_action[a] if not ok[n]] for a in actions}

    def capabilities(self, sync_id: int | None = None) -> frozenset[str]:
        """The actions this role may take (on ``sync_id``; None: on every sync)."""
        return frozenset(a for a, missing in self._missing(ACTIONS, sync_id).items() if not missing)

    def require(self, action: str, sync_id: int | None = None) -> None:
        """Raise ``PermissionDenied`` unless this role may take ``action`` (on ``sync_id``)."""
        missing = self._missing([action], sync_id)[action]
        if not missing:
            return
        with self.connect() as con:  # type: ignore[attr-defined]
            user = con.execute("SELECT current_user::text").fetchall()[0][0]
        try:
            grant = f"The {ROLE_OF[action]} role has it: GRANT {_q(role_name(self.target.schema, ROLE_OF[action]))} " \
                    f"TO {_q(user)} (see docs/SECURITY.md)"
        except ConfigError as exc:
            grant = f"No role of docs/SECURITY.md can grant it here: {exc}"
        raise PermissionDenied(
            f"permission denied: the role {user!r} may not {_WHAT[action]} on the PostgreSQL workspace "
            f"{self.target.where}; that needs {', '.join(missing)}. Nothing was changed. {grant}",
            action, tuple(missing))

    # ------------------------------------------------------------------ opening read-only
    def _migrate(self, con: Any, create: bool = True) -> None:
        """Creating or migrating the schema is for its owner: another role is told so."""
        from ._migrations import SCHEMA_VERSION

        try:
            super()._migrate(con, create)  # type: ignore[misc]
        except Exception as exc:
            if getattr(exc, "sqlstate", None) != "42501":
                raise
            raise PermissionDenied(
                f"permission denied: the PostgreSQL workspace {self.target.where} needs creating or migrating "
                f"to this dfsync's schema (version {SCHEMA_VERSION}), which only its owner may do; nothing was "
                f"changed. Open it once as the owner of the schema, then with this role "
                f"(see docs/SECURITY.md)", "migrate") from None

    def _check_examples(self) -> str:
        """A role that may not read records sees check results without their example values."""
        if self._missing(["records"])["records"]:
            return "CAST(NULL AS text) AS partial_unexpected_list, CAST(NULL AS text) AS result"
        return super()._check_examples()  # type: ignore[misc]

    def recover_orphans(self, is_alive: Any) -> list[tuple[int, str, str]]:
        """Dead owners' runs are moved only by a role that may (a viewer's open writes nothing)."""
        if self._missing(["recover"])["recover"]:
            return []
        return super().recover_orphans(is_alive)  # type: ignore[misc]

    def _share_table(self, con: Any, table: str) -> None:
        """A per-sync table just created belongs to the workspace's operator role (if it has one), so
        every operator and admin may write, alter and drop it, and no viewer reads it."""
        try:
            role = role_name(self.target.schema, "operator")
        except ConfigError:  # no such role can exist (the recipe refuses the schema): the table stays the creator's
            return
        hand_over = con.execute(
            "SELECT 1 FROM pg_roles r WHERE r.rolname = CAST(? AS text) AND pg_has_role(current_user, r.oid, 'MEMBER') "
            "AND (SELECT relowner FROM pg_class WHERE oid = to_regclass(CAST(? AS text))) <> r.oid",
            [role, f"{_q(self.target.schema)}.{_q(table)}"]).fetchall()
        if hand_over:
            con.execute(f"ALTER TABLE {_q(table)} OWNER TO {_q(role)}")
