//! Server-side encryption: with `pgops.s3_sse` set, every object pgops writes asks the
//! store to encrypt it (seen on the wire between Postgres and a real S3 server), and
//! settings that cannot work are refused with a hint.

use pgops_core::store::sha256_of;
use pgops_e2e::*;

/// The S3 operation a request head is, by its request line: PutObject, CreateMultipartUpload
/// or something else (reads, listings, UploadPart, CompleteMultipartUpload).
fn write_operation(head: &str) -> Option<&'static str> {
    let request_line = head.lines().next().unwrap_or_default();
    let target = request_line.split(' ').nth(1).unwrap_or_default();
    let query = target.split_once('?').map_or("", |(_, query)| query);
    let has_param = |name: &str| query.split('&').any(|param| param.split('=').next() == Some(name));
    if request_line.starts_with("PUT ") && !has_param("partNumber") {
        Some("PutObject")
    } else if request_line.starts_with("POST ") && has_param("uploads") {
        Some("CreateMultipartUpload")
    } else {
        None
    }
}

#[test]
fn with_s3_sse_every_put_and_multipart_upload_asks_for_encryption() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let proxy = FaultProxy::start(s3.port);
    // Uncompressed, the base backup is larger than a part: it goes up as a multipart upload.
    let pg = proxied_backing_up_cluster(
        dir.path(),
        &s3,
        &proxy,
        "main",
        "pgops.backup_fast_checkpoint = on\npgops.backup_compression = 'none'\npgops.s3_sse = 'AES256'",
    );
    let segment = pg.write_and_switch();
    pg.wait_archived(&segment);
    let id = pg.query_text("SELECT pgops.backup_now()");
    let status = pg.query_text(&format!("SELECT status FROM pgops.backup_list WHERE id = '{id}'"));
    assert_eq!(status, "DONE", "{}", pg.log());

    let heads = proxy.request_heads();
    let writes: Vec<(&str, &String)> =
        heads.iter().filter_map(|head| write_operation(head).map(|operation| (operation, head))).collect();
    let wal_put = format!("PUT /{BUCKET}/main/wals/{}/{segment}", &segment[..16]);
    assert!(writes.iter().any(|(_, head)| head.starts_with(&wal_put)), "the WAL segment was put: {writes:#?}");
    assert!(
        writes.iter().any(|(_, head)| head.starts_with(&format!("PUT /{BUCKET}/main/base/{id}/backup.info"))),
        "backup.info was put: {writes:#?}"
    );
    assert!(
        writes.iter().any(|(operation, head)| *operation == "CreateMultipartUpload"
            && head.starts_with(&format!("POST /{BUCKET}/main/base/{id}/data.tar?"))),
        "data.tar went up in parts: {writes:#?}"
    );
    for (operation, head) in &writes {
        assert!(
            head.to_ascii_lowercase().contains("\r\nx-amz-server-side-encryption: aes256\r\n"),
            "{operation} without the SSE header:\n{head}"
        );
    }

    // The server kept the SHA-256 pgops recorded, and it is the stored content's.
    let repo = s3.repository("main");
    let relative = format!("wals/{}/{segment}.zst", &segment[..16]);
    let stored = block_on(repo.head(&relative)).unwrap().expect("the archived segment");
    let body = block_on(repo.get(&relative)).unwrap().unwrap();
    assert_eq!(stored.sha256, Some(sha256_of(&body)));
}

fn check_row(pg: &PgCluster, settings: &str, check: &str) -> (bool, String) {
    let mut client = pg.client();
    client.batch_execute(settings).unwrap();
    let rows = client.query("SELECT ok, detail FROM pgops.check() WHERE \"check\" = $1", &[&check]).unwrap();
    (rows[0].get(0), rows[0].get(1))
}

#[test]
fn sse_settings_that_cannot_work_are_refused_with_a_hint() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = pgops_cluster(dir.path(), &s3, "main");

    let err = pg.client().batch_execute("SET pgops.s3_sse = 'kms'").unwrap_err();
    let db = err.as_db_error().unwrap();
    assert!(db.message().contains("invalid value for parameter \"pgops.s3_sse\""), "{}", db.message());
    assert!(db.hint().unwrap_or_default().contains("off, AES256, aws:kms"), "{:?}", db.hint());

    let (ok, detail) = check_row(&pg, "SET pgops.s3_sse_kms_key_id = 'alias/pgops'", "settings");
    assert!(!ok, "{detail}");
    assert!(detail.contains("pgops.s3_sse_kms_key_id is set but pgops.s3_sse is not 'aws:kms'"), "{detail}");
    assert!(detail.contains("Set pgops.s3_sse = 'aws:kms'"), "{detail}");

    // With aws:kms the key is used; s3s-fs accepts the headers, so the test write passes.
    for check in ["settings", "writable"] {
        let (ok, detail) = check_row(&pg, "SET pgops.s3_sse = 'aws:kms'", check);
        assert!(ok, "{check}: {detail}");
    }
}
