-- pgops' functions reach the object store with the server's credentials: only superusers
-- (and roles they grant EXECUTE to) may call them.
REVOKE EXECUTE ON FUNCTION @extschema@.check() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.archive_status() FROM PUBLIC;
