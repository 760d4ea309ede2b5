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
REVOKE EXECUTE ON FUNCTION @extschema@.backup_now(boolean, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.backups_text() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.backups() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.backup_now(boolean, boolean) TO pgops_operator;
GRANT EXECUTE ON FUNCTION @extschema@.backups_text() TO pgops_operator;
GRANT EXECUTE ON FUNCTION @extschema@.backups() TO pgops_operator;
GRANT SELECT ON @extschema@.backup_list TO pgops_operator;
-- Retention: a dry run reads the store with the server's credentials, a real run deletes.
REVOKE EXECUTE ON FUNCTION @extschema@.expire(boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.keep_backup(text, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.recoverability() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.expire(boolean) TO pgops_operator;
GRANT EXECUTE ON FUNCTION @extschema@.keep_backup(text, boolean) TO pgops_operator;
GRANT EXECUTE ON FUNCTION @extschema@.recoverability() TO pgops_operator;
-- Roles file status: superusers and pgops_operator. ensure_role() and ensure_database()
-- stay executable by PUBLIC: they run their statements with the caller's privileges
-- (CREATEROLE, CREATEDB) and check them first.
REVOKE EXECUTE ON FUNCTION @extschema@.role_status_rows() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.role_status_rows() TO pgops_operator;
GRANT SELECT ON @extschema@.role_status TO pgops_operator;
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;
