-- The backup catalog with SQL types. Times are Barman's (UTC offsets included).
-- kept_by_policy: whether pgops.retention_policy keeps the backup (NULL when the catalog
-- cannot be read completely; pgops.expire() says why).
CREATE FUNCTION @extschema@.backups()
RETURNS TABLE (
    id text,
    status text,
    started_at timestamptz,
    finished_at timestamptz,
    begin_lsn pg_lsn,
    end_lsn pg_lsn,
    begin_wal text,
    end_wal text,
    timeline integer,
    size_bytes bigint,
    stored_bytes bigint,
    compression text,
    error text,
    kept_by_policy boolean
)
LANGUAGE sql VOLATILE
AS $$
    SELECT id, status, started_at::timestamptz, finished_at::timestamptz, begin_lsn::pg_lsn, end_lsn::pg_lsn,
           begin_wal, end_wal, timeline, size_bytes, stored_bytes, compression, error, kept_by_policy
      FROM @extschema@.backups_text()
     ORDER BY id
$$;

CREATE VIEW @extschema@.backup_list AS SELECT * FROM @extschema@.backups();

-- The roles file's reconciliation by the pgops worker (pgops.roles_file).
CREATE VIEW @extschema@.role_status AS SELECT * FROM @extschema@.role_status_rows();
