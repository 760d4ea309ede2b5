//! Settings are validated when set, secrets stay hidden, and `pgops.check()` says what to
//! fix on a misconfigured repository (real Postgres, real S3 server).

use pgops_e2e::*;

fn db_error(pg: &PgCluster, sql: &str) -> (String, String) {
    let err = pg.client().batch_execute(sql).expect_err(sql);
    let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
    (db.message().to_string(), db.hint().unwrap_or_default().to_string())
}

#[test]
fn bad_values_are_rejected_when_set_with_a_hint() {
    let dir = scratch_dir();
    let pg = PgCluster::init(dir.path(), "main");
    pg.start();
    let cases = [
        ("SET pgops.repository = 'gs://bucket/x'", "unsupported scheme \"gs\"", "s3://bucket/prefix"),
        ("SET pgops.repository = 'file://relative'", "must be absolute", "file:///"),
        ("SET pgops.repository = 's3://Bad_Bucket/x'", "bucket names", "s3://"),
        ("SET pgops.s3_endpoint = 'localhost:9000'", "scheme must be http or https", "http://"),
        ("SET pgops.s3_endpoint = 'http://h:9000/bucket'", "must not have a path", "pgops.repository"),
        (
            "SET pgops.wal_compression = 'brotli'",
            "invalid value for parameter \"pgops.wal_compression\"",
            "zstd, gzip, lz4, snappy, none",
        ),
        ("SET pgops.wal_compression = 'gzip'; SET pgops.compression_level = 12", "out of range for gzip", "1 to 9"),
        (
            "SET pgops.wal_compression = 'lz4'; SET pgops.compression_level = 3",
            "does not apply to lz4",
            "Set pgops.compression_level to 0",
        ),
        ("SET pgops.s3_region = ''", "invalid S3 region", "us-east-1"),
        ("SET pgops.roles_file = 'roles.json'", "must be an absolute path", "/etc/pgops/roles.json"),
    ];
    for (sql, message, hint) in cases {
        let (got_message, got_hint) = db_error(&pg, sql);
        assert!(got_message.contains(message), "{sql}: message {got_message:?}");
        assert!(got_hint.contains(hint), "{sql}: hint {got_hint:?}");
    }
    // ALTER SYSTEM validates too, so a bad value never reaches postgresql.auto.conf.
    let (message, _) = db_error(&pg, "ALTER SYSTEM SET pgops.repository = 'ftp://x'");
    assert!(message.contains("unsupported scheme"), "{message}");
    pg.execute("SET pgops.repository = 's3://good-bucket/prefix'; SET pgops.compression_level = 19");
}

#[test]
fn credentials_are_superuser_only_and_hidden() {
    let dir = scratch_dir();
    let pg = PgCluster::init(dir.path(), "main");
    pg.configure("pgops.s3_access_key_id = 'AKIDSECRETVALUE'\npgops.s3_secret_access_key = 'VERYSECRETVALUE'");
    pg.start();
    let all = pg.client().simple_query("SHOW ALL").unwrap();
    let shown = format!(
        "{:?}",
        all.iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => r.get(1).map(str::to_string),
                _ => None,
            })
            .collect::<Vec<_>>()
    );
    assert!(!shown.contains("SECRETVALUE"), "SHOW ALL shows a credential");
    pg.execute("CREATE ROLE app LOGIN; CREATE EXTENSION pgops");
    let mut app =
        postgres::Client::connect(&pg.connstr().replace("user=postgres", "user=app"), postgres::NoTls).unwrap();
    for sql in [
        "SHOW pgops.s3_secret_access_key",
        "SHOW pgops.s3_access_key_id",
        "SET pgops.s3_secret_access_key = 'x'",
        "SET pgops.repository = 's3://bkt/x'",
        "SELECT * FROM pgops.check()",
    ] {
        let err = app.batch_execute(sql).expect_err(sql);
        let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
        assert!(message.contains("permission denied") || message.contains("must be superuser"), "{sql}: {message}");
    }
    let visible: i64 =
        app.query_one("SELECT count(*) FROM pg_settings WHERE name LIKE 'pgops.s3_%access%'", &[]).unwrap().get(0);
    assert_eq!(visible, 0);
}

fn check_rows(pg: &PgCluster, settings: &str) -> Vec<(String, bool, String)> {
    let mut client = pg.client();
    client.batch_execute(settings).unwrap();
    client.query("SELECT * FROM pgops.check()", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

fn row<'a>(rows: &'a [(String, bool, String)], check: &str) -> &'a (String, bool, String) {
    rows.iter().find(|r| r.0 == check).unwrap_or_else(|| panic!("no {check} row in {rows:?}"))
}

#[test]
fn check_says_what_to_fix_on_a_misconfigured_repository() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = pgops_cluster(dir.path(), &s3, "main");

    let healthy = check_rows(&pg, "SELECT 1");
    for check in ["settings", "reachable", "writable", "ownership"] {
        assert!(row(&healthy, check).1, "{healthy:?}");
    }
    // archive_library is not set on this cluster: check() says so.
    assert!(!row(&healthy, "archiving").1 && row(&healthy, "archiving").2.contains("archive_library = 'pgops'"));

    let dead_port = free_port();
    let unreachable = check_rows(&pg, &format!("SET pgops.s3_endpoint = 'http://127.0.0.1:{dead_port}'"));
    let reachable = row(&unreachable, "reachable");
    assert!(
        !reachable.1
            && reachable.2.contains(&format!("127.0.0.1:{dead_port}"))
            && reachable.2.contains("pgops.s3_endpoint"),
        "{reachable:?}"
    );
    assert!(!row(&unreachable, "writable").1);

    let wrong_key = check_rows(&pg, "SET pgops.s3_secret_access_key = 'wrong'");
    let reachable = row(&wrong_key, "reachable");
    assert!(
        !reachable.1 && reachable.2.contains("pgops.s3_secret_access_key") && reachable.2.contains("HTTP 403"),
        "{reachable:?}"
    );

    let no_bucket = check_rows(&pg, "SET pgops.repository = 's3://no-such-bucket/x'");
    let reachable = row(&no_bucket, "reachable");
    assert!(
        !reachable.1 && reachable.2.contains("NoSuchBucket") && reachable.2.contains("Create the bucket"),
        "{reachable:?}"
    );

    let half_credentials = check_rows(&pg, "SET pgops.s3_access_key_id = ''");
    let settings = row(&half_credentials, "settings");
    assert!(
        !settings.1 && settings.2.contains("pgops.s3_secret_access_key is set but pgops.s3_access_key_id is not"),
        "{settings:?}"
    );

    // The backend survived all of it.
    assert_eq!(pg.query_text("SELECT 1"), "1");
}
