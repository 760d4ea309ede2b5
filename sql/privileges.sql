-- pgops' functions reach the object store with the server's credentials: only superusers
-- (and roles they grant EXECUTE to) may call them.
REVOKE EXECUTE ON FUNCTION @extschema@.check() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.archive_status() FROM PUBLIC;

-- Backups: superusers and members of pgops_operator (created here when missing; roles are
-- cluster-wide, so it outlives DROP EXTENSION).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgops_operator') THEN
        CREATE ROLE pgops_operator NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA @extschema@ TO pgops_operator;
REVOKE EXECUTE ON FUNCTION @extschema@.backup_now(boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.backups_text() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.backups() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.backup_now(boolean) TO pgops_operator;
GRANT EXECUTE ON FUNCTION @extschema@.backups_text() TO pgops_operator;
GRANT EXECUTE ON FUNCTION @extschema@.backups() TO pgops_operator;
GRANT SELECT ON @extschema@.backup_list TO pgops_operator;
