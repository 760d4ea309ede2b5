//! `pgops.ensure_role()`, `pgops.ensure_database()` and the roles file, on a real
//! PostgreSQL (each supported major) with logins over TCP checked by SCRAM-SHA-256.

use pgops_e2e::*;
use postgres::Client;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn cluster(dir: &Path, conf: &str) -> PgCluster {
    let pg = PgCluster::init(dir, "main");
    pg.require_scram_over_tcp();
    pg.configure(conf);
    pg.start();
    pg.execute("CREATE EXTENSION pgops");
    pg
}

/// `SELECT <call>`'s single text value.
fn call(client: &mut Client, sql: &str) -> String {
    client.query_one(&format!("SELECT {sql}"), &[]).unwrap_or_else(|e| panic!("{sql}: {e:?}")).get(0)
}

/// The error `SELECT <call>` raises: (SQLSTATE, message, detail, hint).
fn call_error(client: &mut Client, sql: &str) -> (String, String, String, String) {
    let error = client.query_one(&format!("SELECT {sql}"), &[]).expect_err(sql);
    let db = error.as_db_error().unwrap_or_else(|| panic!("{sql}: {error}"));
    (
        db.code().code().to_string(),
        db.message().to_string(),
        db.detail().unwrap_or_default().to_string(),
        db.hint().unwrap_or_default().to_string(),
    )
}

fn text(client: &mut Client, sql: &str) -> String {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get::<_, Option<String>>(0)
        .unwrap_or_default()
}

/// A file only the server (user postgres) reads, like a mounted secret.
fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    give_to_postgres(&path);
    path
}

#[test]
fn each_attribute_and_membership_is_created_unchanged_updated_and_dropped() {
    let dir = scratch_dir();
    let pg = cluster(dir.path(), "");
    let mut c = pg.client();
    c.batch_execute("CREATE ROLE readers NOLOGIN; CREATE ROLE writers NOLOGIN").unwrap();
    assert_eq!(call(&mut c, "pgops.ensure_role('app')"), "created");
    assert_eq!(call(&mut c, "pgops.ensure_role('app')"), "unchanged");
    assert_eq!(text(&mut c, "SELECT rolcanlogin::text FROM pg_roles WHERE rolname = 'app'"), "true");

    let state = "SELECT concat_ws(' ', rolcanlogin::text, rolsuper::text, rolcreatedb::text, rolcreaterole::text,
                    rolinherit::text, rolreplication::text, rolbypassrls::text, rolconnlimit, rolvaliduntil AT TIME ZONE 'UTC', shobj_description(oid, 'pg_authid'),
                    (SELECT string_agg(g.rolname, ',' ORDER BY g.rolname) FROM pg_auth_members m
                       JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid), (rolpassword IS NOT NULL)::text)
                   FROM pg_authid r WHERE rolname = 'app'";
    // (argument that changes it, what the catalog then says, argument that changes it back)
    let attributes = [
        ("login => false", "false false false false true false false -1 false", "login => true"),
        ("superuser => true", "true true false false true false false -1 false", "superuser => false"),
        ("createdb => true", "true false true false true false false -1 false", "createdb => false"),
        ("createrole => true", "true false false true true false false -1 false", "createrole => false"),
        ("inherit => false", "true false false false false false false -1 false", "inherit => true"),
        ("replication => true", "true false false false true true false -1 false", "replication => false"),
        ("bypassrls => true", "true false false false true false true -1 false", "bypassrls => false"),
        ("connection_limit => 7", "true false false false true false false 7 false", "connection_limit => -1"),
        (
            "valid_until => '2030-01-02 03:04:05+00'",
            "true false false false true false false -1 2030-01-02 03:04:05 false",
            "valid_until => 'infinity'",
        ),
        (
            "comment => 'the app''s role'",
            "true false false false true false false -1 infinity the app's role false",
            "comment => ''",
        ),
        (
            "in_roles => ARRAY['readers', 'writers']",
            "true false false false true false false -1 infinity readers,writers false",
            "in_roles => ARRAY[]::text[]",
        ),
        ("password => 'pw'", "true false false false true false false -1 infinity true", "password => 'other'"),
    ];
    for (change, expected, back) in attributes {
        assert_eq!(call(&mut c, &format!("pgops.ensure_role('app', {change})")), "updated", "{change}");
        assert_eq!(text(&mut c, state), expected, "{change}");
        assert_eq!(call(&mut c, &format!("pgops.ensure_role('app', {change})")), "unchanged", "{change} again");
        assert_eq!(call(&mut c, &format!("pgops.ensure_role('app', {back})")), "updated", "{back}");
        assert_eq!(call(&mut c, &format!("pgops.ensure_role('app', {back})")), "unchanged", "{back} again");
    }
    // Memberships are made exact: one revoked, one kept.
    call(&mut c, "pgops.ensure_role('app', in_roles => ARRAY['readers', 'writers'])");
    assert_eq!(call(&mut c, "pgops.ensure_role('app', in_roles => ARRAY['writers'])"), "updated");
    assert!(text(&mut c, state).ends_with(" writers true"), "{}", text(&mut c, state));

    // A role that owns something is not dropped; the error names what it owns.
    c.batch_execute("CREATE TABLE owned_by_app (id int); ALTER TABLE owned_by_app OWNER TO app").unwrap();
    let (code, message, detail, hint) = call_error(&mut c, "pgops.ensure_role('app', ensure => 'absent')");
    assert_eq!(code, "2BP01", "{message}");
    assert!(message.contains("cannot be dropped"), "{message}");
    assert!(detail.contains("owner of table owned_by_app"), "{detail}");
    assert!(hint.contains("REASSIGN OWNED BY \"app\""), "{hint}");
    c.batch_execute("DROP TABLE owned_by_app").unwrap();
    assert_eq!(call(&mut c, "pgops.ensure_role('app', ensure => 'absent')"), "dropped");
    assert_eq!(call(&mut c, "pgops.ensure_role('app', ensure => 'absent')"), "unchanged");
    assert_eq!(text(&mut c, "SELECT count(*)::text FROM pg_roles WHERE rolname = 'app'"), "0");
}

#[test]
fn a_password_login_works_over_tcp_with_scram_and_a_nologin_role_cannot() {
    let dir = scratch_dir();
    let pg = cluster(dir.path(), "");
    let mut c = pg.client();
    let secret = "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'";
    assert_eq!(call(&mut c, "pgops.ensure_role('app', password => 'first secret')"), "created");
    let stored = text(&mut c, secret);
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    pg.tcp_login("app", "first secret", "postgres").expect("the declared password logs in");
    assert!(pg.tcp_login("app", "wrong", "postgres").is_err());

    // Compared, not rewritten.
    assert_eq!(call(&mut c, "pgops.ensure_role('app', password => 'first secret')"), "unchanged");
    assert_eq!(text(&mut c, secret), stored);
    // on_create keeps a rotated password; always applies the declared one.
    assert_eq!(
        call(&mut c, "pgops.ensure_role('app', password => 'second', password_update => 'on_create')"),
        "unchanged"
    );
    pg.tcp_login("app", "first secret", "postgres").expect("on_create kept the password");
    assert_eq!(call(&mut c, "pgops.ensure_role('app', password => 'second')"), "updated");
    pg.tcp_login("app", "second", "postgres").expect("the new password logs in");
    assert!(pg.tcp_login("app", "first secret", "postgres").is_err());

    // An MD5 hash of the same password is upgraded to SCRAM (scram-sha-256 in pg_hba.conf
    // cannot check an MD5 hash, so the login proves it).
    c.batch_execute("SET password_encryption = 'md5'; ALTER ROLE app PASSWORD 'legacy'").unwrap();
    assert!(text(&mut c, secret).starts_with("md5"));
    assert!(pg.tcp_login("app", "legacy", "postgres").is_err(), "an MD5 hash cannot pass scram-sha-256");
    assert_eq!(
        call(&mut c, "pgops.ensure_role('app', password => 'legacy', password_update => 'on_create')"),
        "updated"
    );
    assert!(text(&mut c, secret).starts_with("SCRAM-SHA-256$"));
    pg.tcp_login("app", "legacy", "postgres").expect("the upgraded secret logs in");

    assert_eq!(call(&mut c, "pgops.ensure_role('locked', password => 'pw', login => false)"), "created");
    let Err(refused) = pg.tcp_login("locked", "pw", "postgres") else { panic!("a NOLOGIN role logged in") };
    assert!(format!("{refused:?}").contains("not permitted to log in"), "{refused:?}");
}

#[test]
fn plaintext_passwords_reach_neither_the_server_log_nor_pg_stat_statements() {
    let dir = scratch_dir();
    let pg = cluster(
        dir.path(),
        "log_statement = 'all'\nshared_preload_libraries = 'pgops,pg_stat_statements'\n\
         pg_stat_statements.track = 'all'\npg_stat_statements.track_utility = on",
    );
    let mut c = pg.client();
    c.batch_execute("CREATE EXTENSION pg_stat_statements").unwrap();
    let file = secret_file(dir.path(), "app-password", "Plain-Text-One\n");
    let file = file.display();
    assert_eq!(call(&mut c, &format!("pgops.ensure_role('app', password_file => '{file}')")), "created");
    secret_file(dir.path(), "app-password", "Plain-Text-Two\n");
    assert_eq!(call(&mut c, &format!("pgops.ensure_role('app', password_file => '{file}')")), "updated");
    // The error path too: CREATE ROLE fails after the password was read.
    let (_, message, _, _) =
        call_error(&mut c, &format!("pgops.ensure_role('app2', password_file => '{file}', connection_limit => -5)"));
    assert!(message.contains("invalid connection limit"), "{message}");
    pg.tcp_login("app", "Plain-Text-Two", "postgres").expect("the file's password logs in");

    let statements = text(&mut c, "SELECT string_agg(query, E'\\n') FROM pg_stat_statements");
    let log = pg.log();
    assert!(statements.contains("ALTER ROLE \"app\" WITH PASSWORD 'SCRAM-SHA-256$"), "{statements}");
    assert!(
        statements.contains("CREATE ROLE \"app\" WITH LOGIN CONNECTION LIMIT -1 PASSWORD 'SCRAM-SHA-256$"),
        "{statements}"
    );
    assert!(log.contains("password_file =>"), "log_statement = 'all' logged the calls");
    for (place, text) in [("pg_stat_statements", &statements), ("the server log", &log)] {
        assert!(!text.contains("Plain-Text"), "a plaintext password reached {place}:\n{text}");
    }
}

#[test]
fn hostile_names_and_passwords_are_stored_literally_and_harm_nothing() {
    let dir = scratch_dir();
    let pg = cluster(dir.path(), "");
    let mut c = pg.client();
    c.batch_execute("CREATE ROLE victim NOLOGIN; CREATE ROLE \"Group \"\"G\"\" '; DROP ROLE victim; --\" NOLOGIN")
        .unwrap();
    let group = "Group \"G\" '; DROP ROLE victim; --";
    let cases = [
        ("Robert'); DROP ROLE victim; --", "'; DROP ROLE victim; --"),
        ("a\"b", "quote\"and'apostrophe"),
        ("Mixed Case", "back\\slash\\'"),
        ("ünïcødé 🐘", "pässwörd 🐘 $1 %s"),
        ("back\\slash", "E'\\x41'"),
    ];
    for (name, password) in cases {
        let comment = format!("{name} / {password}");
        let row = c
            .query_one(
                "SELECT pgops.ensure_role($1, password => $2, comment => $3, in_roles => ARRAY[$4])",
                &[&name, &password, &comment, &group],
            )
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(row.get::<_, String>(0), "created", "{name}");
        let stored = c
            .query_one(
                "SELECT shobj_description(r.oid, 'pg_authid'), pg_has_role(r.rolname, $2, 'MEMBER')
                   FROM pg_roles r WHERE r.rolname = $1",
                &[&name, &group],
            )
            .unwrap_or_else(|e| panic!("{name} is not stored literally: {e}"));
        assert_eq!(stored.get::<_, String>(0), comment);
        assert!(stored.get::<_, bool>(1), "{name} is a member of {group}");
        pg.tcp_login(name, password, "postgres").unwrap_or_else(|e| panic!("{name} logs in with {password}: {e}"));
        let again = c.query_one("SELECT pgops.ensure_role($1, password => $2)", &[&name, &password]).unwrap();
        assert_eq!(again.get::<_, String>(0), "unchanged", "{name}");
    }
    assert_eq!(text(&mut c, "SELECT count(*)::text FROM pg_roles WHERE rolname = 'victim'"), "1");

    // Names pgops must not manage.
    c.batch_execute("CREATE ROLE admin LOGIN CREATEROLE").unwrap();
    let mut admin = pg.client_as("admin", "postgres");
    for (as_admin, name) in [(false, "pg_monitor"), (false, "postgres"), (false, "public"), (true, "admin")] {
        let client = if as_admin { &mut admin } else { &mut c };
        let (code, message, _, hint) = call_error(client, &format!("pgops.ensure_role('{name}', ensure => 'absent')"));
        assert_eq!(code, "42939", "{name}: {message}");
        assert!(message.contains("is reserved"), "{name}: {message}");
        assert!(!hint.is_empty());
    }
    let (_, message, _, _) = call_error(&mut c, &format!("pgops.ensure_role('{}')", "x".repeat(64)));
    assert!(message.contains("Postgres keeps 63"), "{message}");
}

#[test]
fn a_missing_or_empty_password_file_is_an_error_and_the_password_keeps_working() {
    let dir = scratch_dir();
    let pg = cluster(dir.path(), "");
    let mut c = pg.client();
    assert_eq!(call(&mut c, "pgops.ensure_role('app', password => 'kept')"), "created");
    let missing = dir.path().join("not-mounted");
    let (code, message, detail, _) =
        call_error(&mut c, &format!("pgops.ensure_role('app', password_file => '{}')", missing.display()));
    assert_eq!(code, "58P01", "{message}");
    assert!(message.contains("could not read password file"), "{message}");
    assert!(detail.contains("left as it is"), "{detail}");
    let empty = secret_file(dir.path(), "empty", "\n");
    let (_, message, _, _) =
        call_error(&mut c, &format!("pgops.ensure_role('app', password_file => '{}')", empty.display()));
    assert!(message.contains("is empty"), "{message}");
    pg.tcp_login("app", "kept", "postgres").expect("the password is untouched");

    // Privileges: CREATEROLE to manage roles, superuser for superusers, and reading a
    // password file needs pg_read_server_files.
    let file = secret_file(dir.path(), "password", "from-file");
    c.batch_execute("CREATE ROLE admin LOGIN CREATEROLE; CREATE ROLE nobody LOGIN").unwrap();
    let mut admin = pg.client_as("admin", "postgres");
    assert_eq!(call(&mut admin, "pgops.ensure_role('made_by_admin')"), "created");
    let with_file = format!("pgops.ensure_role('made_by_admin', password_file => '{}')", file.display());
    let (code, message, _, hint) = call_error(&mut admin, &with_file);
    assert_eq!(code, "42501", "{message}");
    assert!(hint.contains("pg_read_server_files"), "{hint}");
    c.batch_execute("GRANT pg_read_server_files TO admin").unwrap();
    assert_eq!(call(&mut admin, &with_file), "updated");
    pg.tcp_login("made_by_admin", "from-file", "postgres").expect("password from the file");
    // A role someone else created: PostgreSQL 15 lets any CREATEROLE role manage it;
    // 16 and later only one holding it WITH ADMIN OPTION (its creator gets that itself).
    c.batch_execute("CREATE ROLE outsider NOLOGIN").unwrap();
    let change = "pgops.ensure_role('outsider', login => false, connection_limit => 3)";
    if server_major() >= 16 {
        let (code, message, _, hint) = call_error(&mut admin, change);
        assert_eq!(code, "42501", "{message}");
        assert!(hint.contains("ADMIN OPTION"), "{hint}");
        assert_eq!(text(&mut c, "SELECT rolconnlimit::text FROM pg_roles WHERE rolname = 'outsider'"), "-1");
        c.batch_execute("GRANT outsider TO admin WITH ADMIN OPTION").unwrap();
    }
    assert_eq!(call(&mut admin, change), "updated");
    assert_eq!(text(&mut c, "SELECT rolconnlimit::text FROM pg_roles WHERE rolname = 'outsider'"), "3");
    let (code, message, _, _) = call_error(&mut admin, "pgops.ensure_role('boss', superuser => true)");
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("superuser role"), "{message}");
    let mut nobody = pg.client_as("nobody", "postgres");
    let (code, _, _, hint) = call_error(&mut nobody, "pgops.ensure_role('x')");
    assert_eq!(code, "42501");
    assert!(hint.contains("CREATEROLE"), "{hint}");
}

#[test]
fn ensure_database_creates_owned_databases_from_a_session_and_inside_a_transaction_block() {
    let dir = scratch_dir();
    let pg = cluster(dir.path(), "");
    let mut c = pg.client();
    let owner = |c: &mut Client, db: &str| {
        c.query_one("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1", &[&db])
            .map(|row| row.get::<_, String>(0))
            .unwrap_or_else(|e| panic!("database {db}: {e}"))
    };
    call(&mut c, "pgops.ensure_role('gitea', password => 'gitea-pw')");
    assert_eq!(call(&mut c, "pgops.ensure_database('gitea', owner => 'gitea')"), "created");
    assert_eq!(owner(&mut c, "gitea"), "gitea");
    assert_eq!(call(&mut c, "pgops.ensure_database('gitea', owner => 'gitea')"), "unchanged");
    let mut app = pg.tcp_login("gitea", "gitea-pw", "gitea").expect("the owner logs into its database");
    app.batch_execute("CREATE TABLE repos (id int)").unwrap();

    // Inside the caller's transaction block.
    c.batch_execute("BEGIN").unwrap();
    assert_eq!(call(&mut c, "pgops.ensure_database('harbor', owner => 'gitea')"), "created");
    c.batch_execute("COMMIT").unwrap();
    assert_eq!(owner(&mut c, "harbor"), "gitea");
    call(&mut c, "pgops.ensure_role('harbor')");
    assert_eq!(call(&mut c, "pgops.ensure_database('harbor', owner => 'harbor')"), "updated");
    assert_eq!(owner(&mut c, "harbor"), "harbor");

    // The worker's error is the caller's; an owner not committed yet is explained.
    let (code, message, _, _) = call_error(&mut c, "pgops.ensure_database('orphan', owner => 'nope')");
    assert_eq!((code.as_str(), message.as_str()), ("42704", "role \"nope\" does not exist"));
    c.batch_execute("BEGIN").unwrap();
    call(&mut c, "pgops.ensure_role('late')");
    let (_, _, _, hint) = call_error(&mut c, "pgops.ensure_database('late', owner => 'late')");
    assert!(hint.contains("not committed yet"), "{hint}");
    c.batch_execute("ROLLBACK").unwrap();

    // The statement runs with the caller's privileges, not the worker's.
    c.batch_execute("CREATE ROLE nobody LOGIN").unwrap();
    let mut nobody = pg.client_as("nobody", "postgres");
    let (code, message, _, _) = call_error(&mut nobody, "pgops.ensure_database('mine')");
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("permission denied to create database"), "{message}");

    // Encoding and locale: set at creation, compared (aliases too), never silently ignored.
    let utf8 = "pgops.ensure_database('enc', template => 'template0', encoding => 'UTF8', locale => 'C')";
    assert_eq!(call(&mut c, utf8), "created");
    assert_eq!(call(&mut c, "pgops.ensure_database('enc', encoding => 'utf-8', locale => 'C')"), "unchanged");
    let (_, message, _, hint) = call_error(&mut c, "pgops.ensure_database('enc', encoding => 'LATIN1')");
    assert!(message.contains("exists with encoding UTF8"), "{message}");
    assert!(hint.contains("fixed when it is created"), "{hint}");
    let (_, message, _, _) = call_error(&mut c, "pgops.ensure_database('enc', encoding => 'klingon')");
    assert!(message.contains("not a valid encoding"), "{message}");

    // A hostile name is a name.
    let hostile = "db'; DROP DATABASE gitea; --";
    let row = c.query_one("SELECT pgops.ensure_database($1, owner => 'gitea')", &[&hostile]).unwrap();
    assert_eq!(row.get::<_, String>(0), "created");
    assert_eq!(owner(&mut c, hostile), "gitea");
    assert_eq!(owner(&mut c, "gitea"), "gitea");

    // absent drops, once; the session's own database is never dropped.
    drop(app);
    assert_eq!(call(&mut c, "pgops.ensure_database('harbor', ensure => 'absent')"), "dropped");
    assert_eq!(call(&mut c, "pgops.ensure_database('harbor', ensure => 'absent')"), "unchanged");
    let (code, _, _, _) = call_error(&mut c, "pgops.ensure_database('postgres', ensure => 'absent')");
    assert_eq!(code, "42939");
}

#[test]
fn a_cancelled_ensure_database_stops_its_worker_and_creates_nothing() {
    let dir = scratch_dir();
    let pg = cluster(dir.path(), "");
    let mut c = pg.client();
    c.batch_execute("CREATE DATABASE tmpl").unwrap();
    // Renaming the template (not committed) holds its lock: CREATE DATABASE … TEMPLATE tmpl waits.
    let mut holder = pg.client();
    holder.batch_execute("BEGIN; ALTER DATABASE tmpl RENAME TO tmpl_renamed").unwrap();
    c.batch_execute("SET statement_timeout = '2s'").unwrap();
    let (code, message, _, _) = call_error(&mut c, "pgops.ensure_database('copy', template => 'tmpl')");
    assert_eq!(code, "57014", "{message}");
    wait_for("the statement worker to be gone", Duration::from_secs(30), || {
        pg.query_text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgops statement'") == "0"
    });
    holder.batch_execute("ROLLBACK").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        pg.query_text("SELECT count(*) FROM pg_database WHERE datname = 'copy'"),
        "0",
        "the cancelled call created it"
    );
    c.batch_execute("RESET statement_timeout").unwrap();
    assert_eq!(call(&mut c, "pgops.ensure_database('copy', template => 'tmpl')"), "created");
}

/// `pgops.role_status` as "kind name state" lines, and the messages.
fn role_status(pg: &PgCluster) -> (Vec<String>, String) {
    let rows = pg
        .client()
        .query("SELECT kind, name, state, coalesce(message, ''), last_attempt IS NOT NULL FROM pgops.role_status", &[])
        .unwrap();
    let states = rows
        .iter()
        .map(|r| format!("{} {} {}", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2)))
        .collect();
    let messages =
        rows.iter().map(|r| format!("{}: {}", r.get::<_, String>(1), r.get::<_, String>(3))).collect::<Vec<_>>();
    (states, messages.join("\n"))
}

#[test]
fn the_roles_file_is_reconciled_at_start_and_after_a_reload_and_a_bad_entry_fails_alone() {
    let dir = scratch_dir();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    give_to_postgres(&secrets);
    for app in ["harbor", "gitea", "semaphore"] {
        secret_file(&secrets, app, &format!("{app}-password\n"));
    }
    let roles_file = dir.path().join("roles.json");
    let declare = |extra_role: &str, extra_database: &str, semaphore_limit: i32| {
        let s = secrets.display();
        std::fs::write(
            &roles_file,
            format!(
                r#"{{
  "roles": [
    {{"name": "harbor", "password_file": "{s}/harbor", "in_roles": ["apps"]}},
    {{"name": "gitea", "password_file": "{s}/gitea", "in_roles": ["apps"]}},
    {{"name": "semaphore", "password_file": "{s}/semaphore", "in_roles": ["apps"], "connection_limit": {semaphore_limit}}},
    {{"name": "apps", "login": false, "comment": "the platform's applications"}}{extra_role}
  ],
  "databases": [
    {{"name": "harbor", "owner": "harbor"}},
    {{"name": "gitea", "owner": "gitea"}},
    {{"name": "semaphore", "owner": "semaphore"}}{extra_database}
  ]
}}"#
            ),
        )
        .unwrap();
        give_to_postgres(&roles_file);
    };
    declare("", "", 10);
    let pg = cluster(dir.path(), &format!("pgops.roles_file = '{}'", roles_file.display()));
    let all_reconciled = |pg: &PgCluster, count: usize| {
        let (states, _) = role_status(pg);
        states.len() == count && states.iter().all(|s| s.ends_with(" reconciled"))
    };
    wait_for("the roles file to be reconciled", Duration::from_secs(60), || all_reconciled(&pg, 8));
    let (states, _) = role_status(&pg);
    assert_eq!(states[0], format!("file {} reconciled", roles_file.display()));
    assert_eq!(states[1], "role apps reconciled", "roles before their members: {states:?}");
    for app in ["harbor", "gitea", "semaphore"] {
        let mut session = pg.tcp_login(app, &format!("{app}-password"), app).unwrap_or_else(|e| panic!("{app}: {e}"));
        let row = session.query_one("SELECT current_user::text, pg_has_role('apps', 'MEMBER')", &[]).unwrap();
        assert_eq!((row.get::<_, String>(0), row.get::<_, bool>(1)), (app.to_string(), true));
    }

    // A change and two bad entries: the change is applied, the bad entry fails alone and
    // what depends on it waits.
    declare(
        r#", {"name": "broken", "password_file": "/run/secrets/not-mounted"}"#,
        r#", {"name": "orphan", "owner": "broken"}"#,
        5,
    );
    pg.execute("SELECT pg_reload_conf()");
    wait_for("the changed file to be reconciled", Duration::from_secs(60), || {
        // orphan is the last entry: once it was attempted, all were.
        role_status(&pg).1.contains("orphan: waits for role \"broken\"")
    });
    let (states, messages) = role_status(&pg);
    assert!(states.contains(&"database orphan pending".to_string()), "{states:?}");
    assert_eq!(states.iter().filter(|s| s.ends_with(" reconciled")).count(), 8, "{states:?}\n{messages}");
    assert!(messages.contains("broken: could not read password file \"/run/secrets/not-mounted\""), "{messages}");
    assert!(messages.contains("orphan: waits for role \"broken\""), "{messages}");
    assert_eq!(pg.query_text("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'semaphore'"), "5");
    assert_eq!(pg.query_text("SELECT count(*) FROM pg_database WHERE datname = 'orphan'"), "0");

    // A syntax error changes nothing and says where it is.
    std::fs::write(&roles_file, "{\"roles\": [\n  {\"name\": \"newcomer\",}\n]}").unwrap();
    pg.execute("SELECT pg_reload_conf()");
    wait_for("the syntax error to be reported", Duration::from_secs(60), || role_status(&pg).0[0].ends_with(" error"));
    let (after, messages) = role_status(&pg);
    assert!(messages.contains("line 2 column"), "{messages}");
    assert_eq!(after[1..], states[1..], "the entries' rows stay as they were");
    assert_eq!(pg.query_text("SELECT count(*) FROM pg_roles WHERE rolname = 'newcomer'"), "0");
}

#[test]
fn a_role_the_caller_may_not_alter_is_refused_before_its_password_is_compared() {
    let dir = scratch_dir();
    let pg = cluster(dir.path(), "");
    let mut c = pg.client();
    // CREATEROLE does not reach replication (or superuser) roles: PostgreSQL 15 refuses it,
    // and pgops keeps that rule on 16+, where a CREATEROLE role holding REPLICATION could.
    c.batch_execute(
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE repl LOGIN REPLICATION PASSWORD 'right-guess'; CREATE ROLE admin LOGIN CREATEROLE",
    )
    .unwrap();
    let mut admin = pg.client_as("admin", "postgres");
    for guess in ["right-guess", "wrong-guess"] {
        let (code, message, _, hint) =
            call_error(&mut admin, &format!("pgops.ensure_role('repl', password => '{guess}')"));
        assert_eq!(code, "42501", "{guess}: {message}");
        assert!(message.contains("permission denied to manage role \"repl\""), "{message}");
        assert!(hint.contains("superuser"), "{hint}");
    }
    pg.tcp_login("repl", "right-guess", "postgres").expect("the password is untouched");

    // A stored secret with a huge iteration count (a role can set its own, ALTER ROLE
    // stalling only its own session) is not computed but replaced: the call returns at once.
    // Written into the catalog directly here, not to stall the test's session.
    let stalling = "SCRAM-SHA-256$2147483647:AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    c.batch_execute(&format!(
        "CREATE ROLE app LOGIN; UPDATE pg_authid SET rolpassword = '{stalling}' WHERE rolname = 'app'"
    ))
    .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(call(&mut c, "pgops.ensure_role('app', password => 'new')"), "updated");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    pg.tcp_login("app", "new", "postgres").expect("the new password");
}
