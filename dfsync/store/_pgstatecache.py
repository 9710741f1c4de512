"""A local copy of a PostgreSQL workspace's delivered state, used only when provably current.

Reading 10M delivered keys and fingerprints from the server costs seconds (about 300 ns a row
for the server's COPY alone), so the host that runs a sync keeps what it read, and what its own
batches changed, in files under ``~/.cache/dfsync/state/<workspace id>/<sync id>/``, and uses
them instead of the server's rows only when they are the server's rows:

* **The generation.** ``state_gens`` holds, per state table, a random ``gen`` (a UUID) that
  changes in the same transaction as every change of what a read of the state returns. The
  changes are caught where every writer passes, on the server: a statement trigger on each
  ``state_<id>`` table (any INSERT, UPDATE, DELETE or TRUNCATE, by any process, version or
  role, ``ENABLE ALWAYS`` so replication roles fire it too) and a row trigger on ``batches``
  (a batch's status decides whether its rows count). A table without the trigger (created by an
  older version) has no generation, and is always read from the server.
* **Files named by generation.** ``base-<gen>.arrow`` is the delivered state as of ``gen``: it is
  written from a server read of the rows and the generation in ONE snapshot (REPEATABLE READ).
  ``delta-<g0>-<g1>.arrow`` is what one transaction of this process changed, from ``g0`` to
  ``g1``: the transaction locked the generation's row first (no other writer can change the
  state until it commits), so nobody else's change lies between ``g0`` and ``g1``, and it
  records exactly what its statements removed (their ``RETURNING`` rows) and added (the rows it
  wrote ahead that became delivered). Files are written once (a temporary name, then renamed)
  and never changed.
* **A read** takes the server's generation in its snapshot and uses the files only when a base
  and an unbroken chain of deltas end at exactly that generation; otherwise it reads the server
  (and keeps that as the new base). A generation is random and changes with every statement,
  so no chain can end at it by accident: a transaction that failed, a process that died before
  writing its delta, another host's run, ``sync.forget``, a reset, an operator's ``DELETE``: each
  leaves the server at a generation no local file leads to.

What a change by hand must respect: writing a state table with its trigger disabled
(``ALTER TABLE ... DISABLE TRIGGER``, which the read checks) or dropping the trigger makes the
server's rows the truth again only after the cache directory is removed; docs/CONCURRENCY.md says so.

The copies stay bounded (removed with their sync, when unused, least recently used first beyond a
size), never while a process uses them: :mod:`dfsync.store._statecachegc`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ._statecachegc import limits, prune, touch

__all__ = ["GEN_MIGRATION", "StateCache", "cacheable", "gen_trigger_ddl", "workspace_dir"]

#: staged key types whose values read back from the state exactly as they were written
_EXACT = {"BOOLEAN", "TINYINT", "SMALLINT", "UTINYINT", "INTEGER", "USMALLINT", "BIGINT", "UINTEGER",
          "VARCHAR", "DATE", "BLOB"}

#: the trigger function's name (the read checks that the table still has it, enabled ALWAYS)
TRIGGER = "dfsync_state_gen"

GEN_MIGRATION = [
    "CREATE TABLE IF NOT EXISTS state_gens (relid oid PRIMARY KEY, gen uuid NOT NULL)",
    # every statement changing a state table gives it a new generation (SECURITY DEFINER: a
    # role that may write the state need not be granted state_gens)
    "CREATE OR REPLACE FUNCTION dfsync_state_changed() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
    "SET search_path FROM CURRENT AS $$ BEGIN "
    "INSERT INTO state_gens AS g (relid, gen) VALUES (TG_RELID, gen_random_uuid()) "
    "ON CONFLICT (relid) DO UPDATE SET gen = excluded.gen; RETURN NULL; END $$",
    # a batch's status decides whether its rows count: a change of a batch row is a change of its sync's state
    "CREATE OR REPLACE FUNCTION dfsync_batch_changed() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
    "SET search_path FROM CURRENT AS $$ DECLARE sid bigint; rel regclass; BEGIN "
    "IF TG_OP = 'TRUNCATE' OR (TG_OP = 'UPDATE' AND OLD.run_id IS DISTINCT FROM NEW.run_id) THEN "
    "UPDATE state_gens SET gen = gen_random_uuid(); RETURN NULL; END IF; "
    "SELECT r.sync_id INTO sid FROM runs r WHERE r.id = (CASE WHEN TG_OP = 'DELETE' THEN OLD.run_id "
    "ELSE NEW.run_id END) LIMIT 1; "
    "IF sid IS NULL THEN UPDATE state_gens SET gen = gen_random_uuid(); RETURN NULL; END IF; "
    "rel := to_regclass(format('%I.%I', TG_TABLE_SCHEMA, 'state_' || sid)); "
    "IF rel IS NOT NULL THEN UPDATE state_gens SET gen = gen_random_uuid() WHERE relid = rel; END IF; "
    "RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS dfsync_batch_gen ON batches",
    "CREATE TRIGGER dfsync_batch_gen AFTER INSERT OR UPDATE OR DELETE ON batches FOR EACH ROW "
    "EXECUTE FUNCTION dfsync_batch_changed()",
    "DROP TRIGGER IF EXISTS dfsync_batch_gen_truncate ON batches",
    "CREATE TRIGGER dfsync_batch_gen_truncate AFTER TRUNCATE ON batches FOR EACH STATEMENT "
    "EXECUTE FUNCTION dfsync_batch_changed()",
    "ALTER TABLE batches ENABLE ALWAYS TRIGGER dfsync_batch_gen",
    "ALTER TABLE batches ENABLE ALWAYS TRIGGER dfsync_batch_gen_truncate",
    # the generation of a state table: 'get' it, 'lock' its row until the transaction ends (a
    # writer that records its change; NULL, without waiting, while another transaction holds it:
    # that writer's change is simply not recorded), or start a 'new' one (a table just created);
    # NULL when the table lacks its trigger (or the batches' triggers), enabled ALWAYS. Only a
    # role that may write the state table may lock or renew it.
    "CREATE OR REPLACE FUNCTION dfsync_state_gen(rel regclass, how text) RETURNS uuid LANGUAGE plpgsql "
    "SECURITY DEFINER SET search_path FROM CURRENT AS $$ DECLARE g uuid; BEGIN "
    "IF how <> 'get' AND NOT has_table_privilege(session_user, rel, 'UPDATE') THEN RETURN NULL; END IF; "
    "IF how = 'new' THEN INSERT INTO state_gens AS s (relid, gen) VALUES (rel, gen_random_uuid()) "
    "ON CONFLICT (relid) DO UPDATE SET gen = excluded.gen RETURNING s.gen INTO g; "
    "ELSIF how = 'lock' THEN SELECT s.gen INTO g FROM state_gens s WHERE s.relid = rel FOR UPDATE SKIP LOCKED; "
    "ELSE SELECT s.gen INTO g FROM state_gens s WHERE s.relid = rel; END IF; "
    "IF (SELECT count(*) FROM pg_trigger t WHERE t.tgenabled = 'A' AND ((t.tgrelid = rel AND t.tgname = "
    "'dfsync_state_gen') OR (t.tgrelid = to_regclass('batches') AND t.tgname IN "
    "('dfsync_batch_gen', 'dfsync_batch_gen_truncate')))) <> 3 THEN RETURN NULL; END IF; "
    "RETURN g; END $$",
]


def gen_trigger_ddl(st: str) -> list[str]:
    """The statements giving a new state table its generation trigger (and a first generation)."""
    return [f"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {st} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION dfsync_state_changed()",
            f"ALTER TABLE {st} ENABLE ALWAYS TRIGGER {TRIGGER}"]


def cacheable(key: Sequence[str], types: dict[str, str] | None) -> bool:
    """Do the key's values read back from the state exactly as staging wrote them?"""
    return bool(types) and all(types.get(k, "").upper() in _EXACT for k in key)


def gen(con: Any, st: str, how: str) -> str | None:
    """The state table's generation (see :data:`GEN_MIGRATION`), as text; None: none kept."""
    row = con.execute("SELECT CAST(dfsync_state_gen(to_regclass(CAST(? AS text)), CAST(? AS text)) AS text)",
                      [st, how]).fetchall()
    return row[0][0] if row and row[0][0] else None


def _private(path: str) -> Any:
    """A new file only this OS user may read (created ``0600``), as an Arrow output stream."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return pa.OSFile(path, "wb")


def workspace_dir(workspace_id: str) -> str:
    """The directory name of a workspace's copies (its id, made safe for a file name)."""
    return "".join(c for c in workspace_id if c.isalnum() or c in "-_") or "ws"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _uuid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


class StateCache:
    """The files of one sync's delivered state on this host (see the module docstring)."""

    def __init__(self, root: str, workspace_id: str, sync_id: int, key: Sequence[str]) -> None:
        self.root = root
        self.dir = os.path.join(root, workspace_dir(workspace_id), str(int(sync_id)))
        self.key = list(key)

    # ------------------------------------------------------------------ files
    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def mkdir(self) -> None:
        """The directory, and those made for it, only for this OS user (the files hold key values)."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)

    def _write(self, name: str, table: pa.Table) -> None:
        self.mkdir()
        tmp = self._path(f".{name}.{uuid.uuid4().hex}.tmp")
        try:
            with _private(tmp) as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)
            os.replace(tmp, self._path(name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise

    def _files(self) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
        """(gen -> base file, from gen -> (to gen, delta file))."""
        bases: dict[str, str] = {}
        deltas: dict[str, tuple[str, str]] = {}
        try:
            names = os.listdir(self.dir)
        except OSError:
            return bases, deltas
        for n in names:
            if not n.endswith(".arrow"):
                continue
            stem = n[:-len(".arrow")]
            if stem.startswith("base-") and _uuid(stem[5:]):
                bases[stem[5:]] = n
            elif stem.startswith("delta-") and len(stem) == 6 + 36 + 1 + 36:
                g0, g1 = stem[6:42], stem[43:]
                if _uuid(g0) and _uuid(g1):
                    deltas[g0] = (g1, n)
        return bases, deltas

    def _read(self, name: str) -> pa.Table:
        with pa.memory_map(self._path(name)) as src:
            return pa.ipc.open_file(src).read_all()

    # ------------------------------------------------------------------ what a read uses
    def open(self, gen: str, schema: pa.Schema) -> pa.RecordBatchReader | None:
        """The delivered state as of ``gen`` (rows in ``schema``), if a base and an unbroken chain of
        deltas lead there; else None."""
        bases, deltas = self._files()
        touch(self.dir)  # used now (the least recently used copies go first)
        try:
            if gen in bases:
                table = self._read(bases[gen])
                return pa.RecordBatchReader.from_batches(schema, table.to_batches()) \
                    if table.schema.equals(schema) else None
            for start, name in bases.items():
                chain, at = [], start
                while at in deltas and at != gen and len(chain) <= len(deltas):
                    at, dname = deltas[at]
                    chain.append(dname)
                if at == gen:
                    base = self._read(name)
                    if not base.schema.equals(schema):
                        return None
                    return self._replay(base, [self._read(d) for d in chain], gen)
        except (OSError, pa.ArrowException, ValueError):
            return None
        return None

    def _replay(self, base: pa.Table, deltas: list[pa.Table], gen: str) -> pa.RecordBatchReader:
        """``base`` changed by each delta in turn: its removed keys (``_op`` 0) taken out, its added
        rows (``_op`` 1) put in. Kept as the base of ``gen`` once the deltas have grown (a tenth of
        the base, or a hundred of them), else the chain stays as it is."""
        import pyarrow.compute as pc

        removed: list[pa.Table] = []  # every key taken out of the base
        added: list[pa.Table] = []  # rows put in, less those a later delta took out again
        for d in deltas:
            op = d.column("_op")
            out = d.filter(pc.equal(op, 0)).select(self.key).cast(pa.schema([base.schema.field(k) for k in self.key]))
            if out.num_rows:
                removed.append(out)
                added = [a.filter(pc.invert(self.has_key(a, out))) for a in added]
            put = d.filter(pc.equal(op, 1)).select([*self.key, "_fp"]).cast(base.schema)
            if put.num_rows:
                added.append(put)
        rewrite = sum(d.num_rows for d in deltas) > base.num_rows // 10 or len(deltas) > 100
        con = None
        if removed:
            import duckdb

            con = duckdb.connect()
            con.register("b", base)
            con.register("r", pa.concat_tables(removed))
            kept = con.sql(f"SELECT b.* FROM b ANTI JOIN r USING ({', '.join(_q(k) for k in self.key)})"
                           ).to_arrow_reader(122880)
        else:
            kept = pa.RecordBatchReader.from_batches(base.schema, base.to_batches())
        keep = self.base_writer(gen, base.schema) if rewrite else None
        schema = base.schema

        def batches() -> Any:
            try:
                for part in (kept, *[a.to_batches() for a in added]):
                    for b in part:
                        if b.num_rows:
                            b = b.cast(schema) if not b.schema.equals(schema) else b
                            if keep is not None:
                                keep.write(b)
                            yield b
                if keep is not None:
                    keep.commit()
            finally:
                if keep is not None:
                    keep.abort()
                if con is not None:
                    con.close()

        return pa.RecordBatchReader.from_batches(schema, batches())

    def has_key(self, table: pa.Table, keys: pa.Table) -> pa.ChunkedArray:
        """A mask: does the row's key occur in ``keys``? (for the small tables of a delta)"""
        import pyarrow.compute as pc

        if len(self.key) == 1:
            k = self.key[0]
            return pc.fill_null(pc.is_in(table.column(k), value_set=keys.column(k).cast(table.schema.field(k).type)),
                                False)
        import duckdb
        import numpy as np

        con = duckdb.connect()
        try:
            con.register("t", table.select(self.key).append_column("_i", pa.array(range(table.num_rows), pa.int64())))
            con.register("k", keys.select(self.key))
            on = " AND ".join(f"t.{_q(c)} = k.{_q(c)}" for c in self.key)
            hit = con.sql(f"SELECT t._i FROM t SEMI JOIN k ON {on}").to_arrow_table().column(0)
        finally:
            con.close()
        arr = np.zeros(table.num_rows, dtype=bool)
        if len(hit):
            arr[hit.to_numpy()] = True
        return pa.chunked_array([pa.array(arr)])

    # ------------------------------------------------------------------ what writers record
    def keep_base(self, gen: str, table: pa.Table) -> None:
        """The state as of ``gen``, read from the server in the snapshot that gave ``gen``."""
        self._write(f"base-{gen}.arrow", table)
        self._prune(keep=f"base-{gen}.arrow")

    def base_writer(self, gen: str, schema: pa.Schema) -> _BaseWriter:
        """Keeps the rows of a server read as ``base-<gen>`` once all were written (``commit``)."""
        return _BaseWriter(self, gen, schema)

    def keep_delta(self, g0: str, g1: str, schema: pa.Schema, removed: pa.Table | None,
                   added: pa.Table | None) -> None:
        """One transaction's change (its generation's row locked from ``g0`` to ``g1``): the keys
        it took out of the delivered state and the rows it put in, as a read returns them (``schema``)."""
        if g0 == g1:
            return
        keys = pa.schema([schema.field(k) for k in self.key])
        out = pa.schema([*keys, schema.field("_fp"), pa.field("_op", pa.int8())])
        tables = [pa.Table.from_batches([], out)]
        if removed is not None and removed.num_rows:
            r = removed.select(self.key).cast(keys)
            tables.append(r.append_column("_fp", pa.nulls(r.num_rows, schema.field("_fp").type))
                          .append_column("_op", pa.array([0] * r.num_rows, pa.int8())))
        if added is not None and added.num_rows:
            a = added.select([*self.key, "_fp"]).cast(pa.schema([*keys, schema.field("_fp")]))
            tables.append(a.append_column("_op", pa.array([1] * a.num_rows, pa.int8())))
        self._write(f"delta-{g0}-{g1}.arrow", pa.concat_tables(tables))

    def _prune(self, keep: str) -> None:
        """Everything but ``keep`` and the deltas that may follow it (best effort: another process
        may be writing the next delta); then, as the cache has grown, the copies of other syncs
        beyond the cache's bounds (:func:`dfsync.store._statecachegc.prune`)."""
        bases, deltas = self._files()
        follows: set[str] = set()
        at = keep[5:-6]
        while at in deltas and deltas[at][1] not in follows:
            follows.add(deltas[at][1])
            at = deltas[at][0]
        for name in [*bases.values(), *(d[1] for d in deltas.values())]:
            if name != keep and name not in follows:
                with contextlib.suppress(OSError):
                    os.remove(self._path(name))
        max_bytes, max_age = limits()
        prune(self.root, keep=self.dir, max_bytes=max_bytes, max_age=max_age)

    def clear(self) -> None:
        """Every file of this sync's copy (written ones and any left half-written)."""
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        for name in names:
            if name.endswith((".arrow", ".tmp")):
                with contextlib.suppress(OSError):
                    os.remove(self._path(name))


class _BaseWriter:
    """A base written batch by batch while a read streams; renamed into place only when complete."""

    def __init__(self, cache: StateCache, gen: str, schema: pa.Schema) -> None:
        self.cache, self.gen, self.schema = cache, gen, schema
        self._tmp: str | None = None
        self._sink: Any = None
        self._w: Any = None
        try:
            cache.mkdir()
            self._tmp = cache._path(f".base-{gen}.{uuid.uuid4().hex}.tmp")
            self._sink = _private(self._tmp)
            self._w = pa.ipc.new_file(self._sink, schema)
        except (OSError, pa.ArrowException):
            self.abort()

    def write(self, batch: pa.RecordBatch) -> None:
        if self._w is None:
            return
        try:
            self._w.write_batch(batch)
        except (OSError, pa.ArrowException):
            self.abort()

    def commit(self) -> None:
        if self._w is None:
            return
        try:
            self._w.close()
            self._sink.close()
            os.replace(self._tmp, self.cache._path(f"base-{self.gen}.arrow"))
            self._w = self._sink = self._tmp = None
            self.cache._prune(keep=f"base-{self.gen}.arrow")
        except (OSError, pa.ArrowException):
            self.abort()

    def abort(self) -> None:
        for closing in (self._w, self._sink):
            if closing is not None:
                with contextlib.suppress(Exception):
                    closing.close()
        self._w = self._sink = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(self._tmp)
            self._tmp = None
