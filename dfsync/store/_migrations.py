"""The DuckDB workspace schema and its add-only migrations."""

from __future__ import annotations

from ._common import COUNTERS

SCHEMA_VERSION = 7

# Add-only: a migration may create tables or add columns, never drop or rename.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE SEQUENCE IF NOT EXISTS dfsync_sync_ids START 1",
        "CREATE SEQUENCE IF NOT EXISTS dfsync_run_ids START 1",
        "CREATE SEQUENCE IF NOT EXISTS dfsync_event_ids START 1",
        """CREATE TABLE IF NOT EXISTS syncs (
            id BIGINT, name VARCHAR, status VARCHAR, definition JSON,
            definition_version INTEGER, state_key VARCHAR, fp_algo VARCHAR,
            key_types JSON, cursor_value JSON, schedule VARCHAR,
            next_run_at TIMESTAMPTZ, session_only BOOLEAN,
            created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ)""",
        f"""CREATE TABLE IF NOT EXISTS runs (
            id BIGINT, sync_id BIGINT, status VARCHAR, definition_version INTEGER,
            trigger VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ,
            updated_at TIMESTAMPTZ, owner_pid INTEGER, owner_host VARCHAR,
            owner_token VARCHAR, request VARCHAR, error VARCHAR, error_kind VARCHAR,
            cursor_max JSON, batches INTEGER DEFAULT 0,
            {", ".join(f"{c} BIGINT DEFAULT 0" for c in COUNTERS)})""",
        """CREATE TABLE IF NOT EXISTS events (
            id BIGINT, ts TIMESTAMPTZ, sync_id BIGINT, run_id BIGINT, kind VARCHAR,
            from_status VARCHAR, to_status VARCHAR, detail VARCHAR)""",
        """CREATE TABLE IF NOT EXISTS batches (
            run_id BIGINT, batch_no INTEGER, status VARCHAR, rows BIGINT,
            failed BIGINT, sent_at TIMESTAMPTZ, committed_at TIMESTAMPTZ)""",
        """CREATE TABLE IF NOT EXISTS checks (
            run_id BIGINT, check_name VARCHAR, kind VARCHAR, column_name VARCHAR,
            level VARCHAR, success BOOLEAN, element_count BIGINT, unexpected_count BIGINT,
            unexpected_percent DOUBLE, partial_unexpected_list JSON, result JSON)""",
    ],
    # what the source looked like (files: paths, sizes, mtimes) when a run last delivered all of it
    2: ["ALTER TABLE syncs ADD COLUMN IF NOT EXISTS source_snapshot VARCHAR"],
    # this workspace's own id, part of every run's key in destination ledgers: two workspaces
    # (or one deleted and made anew) syncing into one table must not read each other's ledger
    # rows as their own. Runs that began before this migration keep their key without it.
    3: [
        "CREATE TABLE IF NOT EXISTS workspace_meta (key VARCHAR, value VARCHAR)",
        "INSERT INTO workspace_meta SELECT 'id', replace(gen_random_uuid()::VARCHAR, '-', '')",
        "INSERT INTO workspace_meta SELECT 'ledger_id_from_run', (SELECT coalesce(max(id), 0) + 1 FROM runs)::VARCHAR",
    ],
    # the fields a sync delivered (dfsync._schema): what the next run's records are compared with
    4: ["ALTER TABLE syncs ADD COLUMN IF NOT EXISTS dest_schema JSON"],
    # what each check result covered: 'rows' (the rows about to be sent) or 'dataset' (every row read)
    5: ["ALTER TABLE checks ADD COLUMN IF NOT EXISTS scope VARCHAR"],
    # a partitioned run's buckets (dfsync/store/_buckets.py): state, attempts, counters, last error
    6: ["""CREATE TABLE IF NOT EXISTS buckets (
            run_id BIGINT, bucket INTEGER, state VARCHAR, attempts INTEGER DEFAULT 0,
            sent BIGINT DEFAULT 0, succeeded BIGINT DEFAULT 0, failed BIGINT DEFAULT 0,
            skipped BIGINT DEFAULT 0, batches BIGINT DEFAULT 0, error VARCHAR, updated_at TIMESTAMPTZ)"""],
    # a uniqueness check's proof: the digest of the hashes it proved distinct, for the next run to
    # skip their sort when its hashes digest the same (dfsync/_checks_sql.py, DistinctTest)
    7: ["ALTER TABLE checks ADD COLUMN IF NOT EXISTS proof JSON"],
}
