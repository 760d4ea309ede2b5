//! The storage contract: what every [`ObjectStore`] driver must do, as one set of clauses
//! run against each driver (the local directory, and S3 against a real `s3s-fs` process).
//! A new driver (GCS, Azure) is added by giving it a [`Fixture`] and a line in
//! [`contract_tests!`]: the clauses it fails are what it still gets wrong.

use super::{
    md5_of, sha256_of, LocalStore, ObjectMeta, ObjectStore, Repository, S3Options, S3Store, ServerSideEncryption,
    MAX_DELETE_BATCH, MIN_PART_SIZE,
};
use bytes::Bytes;
use pgops_testkit::S3sFs;
use std::sync::Arc;

/// A driver's store for one test, and what it needs kept alive (its directory, its server).
struct Fixture {
    store: Arc<dyn ObjectStore>,
    _server: Option<S3sFs>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn local() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::new(dir.path().join("root")));
        std::fs::create_dir(dir.path().join("root")).unwrap();
        Fixture { store, _server: None, _dir: dir }
    }

    async fn s3() -> Fixture {
        Self::s3_encrypted(None).await
    }

    /// S3, asking for server-side encryption on every write.
    async fn s3_encrypted(sse: Option<ServerSideEncryption>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let server = S3sFs::start(dir.path(), BUCKET, ACCESS_KEY, SECRET_KEY);
        let options = S3Options { sse, ..s3_options(&server) };
        let store = Arc::new(S3Store::new(BUCKET, &options).await);
        Fixture { store, _server: Some(server), _dir: dir }
    }

    async fn s3_sse_aes256() -> Fixture {
        Self::s3_encrypted(Some(ServerSideEncryption::Aes256)).await
    }

    async fn s3_sse_kms() -> Fixture {
        Self::s3_encrypted(Some(ServerSideEncryption::Kms { key_id: Some("pgops-contract-key".into()) })).await
    }
}

/// The contract's S3 server: an `s3s-fs` process serving one empty bucket.
const BUCKET: &str = "contract";
const ACCESS_KEY: &str = "contract-key";
const SECRET_KEY: &str = "contract-secret";

fn s3_options(server: &S3sFs) -> S3Options {
    S3Options {
        endpoint: Some(server.endpoint()),
        region: "us-east-1".into(),
        credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
        sse: None,
    }
}

/// Checks what `head` says of `key` against its expected content: the key, the size, and
/// the digests when the store gives them.
async fn assert_head(store: &dyn ObjectStore, key: &str, content: &[u8]) {
    let meta = store.head(key).await.unwrap().unwrap_or_else(|| panic!("head {key}: no object"));
    assert_eq!((meta.key.as_str(), meta.size), (key, content.len() as u64), "head {key}");
    if let Some(md5) = meta.md5 {
        assert_eq!(md5, md5_of(content), "head {key}: the MD5 is not the content's");
    }
    if let Some(sha256) = meta.sha256 {
        assert_eq!(sha256, sha256_of(content), "head {key}: the SHA-256 is not the content's");
    }
}

async fn keys_under(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    store.list(prefix).await.unwrap().into_iter().map(|o| o.key).collect()
}

/// What was put is what get returns, the empty object included; head tells its size.
async fn put_then_get_returns_the_same_bytes(store: Arc<dyn ObjectStore>) {
    let content = Bytes::from((0..=255u8).cycle().take(70_000).collect::<Vec<u8>>());
    store.put("c/dir/object", content.clone()).await.unwrap();
    store.put("c/empty", Bytes::new()).await.unwrap();
    assert_eq!(store.get("c/dir/object").await.unwrap(), Some(content.clone()));
    assert_eq!(store.get("c/empty").await.unwrap(), Some(Bytes::new()));
    assert_head(store.as_ref(), "c/dir/object", &content).await;
    assert_head(store.as_ref(), "c/empty", b"").await;
    for (key, content) in [("c/dir/object", &content[..]), ("c/empty", b"")] {
        let recorded = store.head(key).await.unwrap().unwrap().sha256;
        assert_eq!(recorded, Some(sha256_of(content)), "head {key} gives the SHA-256 of what was put");
    }
}

/// A put replaces the object there, a longer one by a shorter one included.
async fn put_replaces_an_existing_object(store: Arc<dyn ObjectStore>) {
    store.put("c/object", Bytes::from_static(b"the first, longer content")).await.unwrap();
    store.put("c/object", Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(store.get("c/object").await.unwrap().as_deref(), Some(&b"second"[..]));
    assert_head(store.as_ref(), "c/object", b"second").await;
    assert_eq!(keys_under(store.as_ref(), "c/").await, ["c/object"], "one object, not two");
}

/// A range is the bytes from the offset, fewer at the end of the object.
async fn ranged_get_returns_the_bytes_asked_for(store: Arc<dyn ObjectStore>) {
    store.put("c/object", Bytes::from_static(b"0123456789")).await.unwrap();
    assert_eq!(store.get_range("c/object", 0, 4, None).await.unwrap(), Bytes::from_static(b"0123"));
    assert_eq!(store.get_range("c/object", 3, 4, None).await.unwrap(), Bytes::from_static(b"3456"));
    assert_eq!(store.get_range("c/object", 9, 1, None).await.unwrap(), Bytes::from_static(b"9"));
    assert_eq!(
        store.get_range("c/object", 6, 100, None).await.unwrap(),
        Bytes::from_static(b"6789"),
        "fewer at the end"
    );
}

/// Get and head of a missing key say `None`; deleting one is no error; a prefix without
/// objects lists empty.
async fn missing_objects_are_none_and_deleting_them_is_ok(store: Arc<dyn ObjectStore>) {
    store.put("c/present", Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(store.get("c/missing").await.unwrap(), None);
    assert_eq!(store.head("c/missing").await.unwrap(), None);
    assert_eq!(store.get("nothing/here").await.unwrap(), None, "below a folder that does not exist");
    assert_eq!(store.head("nothing/here").await.unwrap(), None, "below a folder that does not exist");
    store.delete("c/missing").await.unwrap();
    store.delete("nothing/here").await.unwrap();
    assert!(store.list("nothing/").await.unwrap().is_empty());
    assert!(store.list_page("nothing/", None, 5).await.unwrap() == Default::default());
}

/// A deleted object is gone for get, head and listings; its neighbours stay.
async fn delete_removes_only_that_object(store: Arc<dyn ObjectStore>) {
    store.put("c/a", Bytes::from_static(b"a")).await.unwrap();
    store.put("c/b", Bytes::from_static(b"b")).await.unwrap();
    store.delete("c/a").await.unwrap();
    assert_eq!(store.get("c/a").await.unwrap(), None);
    assert_eq!(store.head("c/a").await.unwrap(), None);
    assert_eq!(keys_under(store.as_ref(), "c/").await, ["c/b"]);
    store.delete("c/a").await.unwrap();
}

/// A batch delete removes every key named, skips missing ones without failure, and leaves
/// the others.
async fn delete_many_removes_the_keys_and_skips_missing_ones(store: Arc<dyn ObjectStore>) {
    for key in ["c/a/1", "c/a/2", "c/b/3", "c/keep"] {
        store.put(key, Bytes::from_static(b"x")).await.unwrap();
    }
    let keys: Vec<String> = ["c/a/1", "c/a/2", "c/b/3", "c/missing"].map(String::from).into();
    assert_eq!(store.delete_many(&keys).await.unwrap(), []);
    assert_eq!(keys_under(store.as_ref(), "c/").await, ["c/keep"]);
    assert_eq!(store.delete_many(&[]).await.unwrap(), [], "an empty batch");
}

/// A batch of more keys than one S3 request may name ([`MAX_DELETE_BATCH`]) removes them
/// all.
async fn delete_many_removes_more_keys_than_one_request_takes(store: Arc<dyn ObjectStore>) {
    let keys: Vec<String> = (0..=MAX_DELETE_BATCH).map(|i| format!("c/{i:05}")).collect();
    let mut puts = tokio::task::JoinSet::new();
    for key in keys.clone() {
        let store = store.clone();
        puts.spawn(async move { store.put(&key, Bytes::from_static(b"x")).await });
    }
    while let Some(put) = puts.join_next().await {
        put.unwrap().unwrap();
    }
    store.put("c/keep", Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(store.list("c/").await.unwrap().len(), keys.len() + 1);
    assert_eq!(store.delete_many(&keys).await.unwrap(), []);
    assert_eq!(keys_under(store.as_ref(), "c/").await, ["c/keep"]);
}

/// Parts sent out of order are assembled in number order; the object appears only when
/// the upload is completed, and no part shows in listings before.
async fn multipart_upload_appears_whole_on_completion(store: Arc<dyn ObjectStore>) {
    let parts: Vec<Bytes> = [(b'a', MIN_PART_SIZE), (b'b', MIN_PART_SIZE), (b'c', 1000)]
        .map(|(byte, size)| Bytes::from(vec![byte; size]))
        .into();
    let upload = store.start_multipart("c/big").await.unwrap();
    assert_eq!(upload.key, "c/big");
    let mut uploaded = Vec::new();
    for number in [3u32, 1, 2] {
        let part = store.put_part(&upload, number, parts[number as usize - 1].clone()).await.unwrap();
        assert_eq!((part.number, part.size), (number, parts[number as usize - 1].len() as u64));
        uploaded.push(part);
    }
    assert_eq!(store.head("c/big").await.unwrap(), None, "not before completion");
    assert!(store.list("c/").await.unwrap().is_empty(), "no part is listed");
    uploaded.sort_by_key(|part| part.number);
    store.complete_multipart(&upload, &uploaded).await.unwrap();
    let whole: Vec<u8> = parts.concat();
    assert_eq!(store.get("c/big").await.unwrap().as_deref(), Some(&whole[..]));
    assert_head(store.as_ref(), "c/big", &whole).await;
    let listed: Vec<(String, u64)> = store.list("c/").await.unwrap().into_iter().map(|o| (o.key, o.size)).collect();
    assert_eq!(listed, [("c/big".to_string(), whole.len() as u64)]);
}

/// Completing assembles the parts in number order whatever order the list of uploaded
/// parts is in (as they come back from concurrent uploads): the trait says "in number
/// order" and does not ask the caller to sort (the backup upload sorts them anyway).
async fn multipart_parts_listed_out_of_order_are_assembled_in_number_order(store: Arc<dyn ObjectStore>) {
    let first = Bytes::from(vec![b'1'; MIN_PART_SIZE]);
    let upload = store.start_multipart("c/object").await.unwrap();
    let last = store.put_part(&upload, 2, Bytes::from_static(b"2")).await.unwrap();
    let start = store.put_part(&upload, 1, first.clone()).await.unwrap();
    store.complete_multipart(&upload, &[last, start]).await.unwrap();
    let whole = [&first[..], b"2"].concat();
    assert_eq!(store.get("c/object").await.unwrap().as_deref(), Some(&whole[..]));
}

/// A completed multipart upload replaces an object already there, as a put does.
async fn multipart_upload_replaces_an_existing_object(store: Arc<dyn ObjectStore>) {
    store.put("c/object", Bytes::from_static(b"old")).await.unwrap();
    let upload = store.start_multipart("c/object").await.unwrap();
    let part = store.put_part(&upload, 1, Bytes::from_static(b"new and longer")).await.unwrap();
    assert_eq!(store.get("c/object").await.unwrap().as_deref(), Some(&b"old"[..]), "the old one until completion");
    store.complete_multipart(&upload, &[part]).await.unwrap();
    assert_eq!(store.get("c/object").await.unwrap().as_deref(), Some(&b"new and longer"[..]));
}

/// An aborted upload creates no object, leaves nothing listed, and does not touch an
/// object already under the key.
async fn aborted_multipart_upload_leaves_nothing(store: Arc<dyn ObjectStore>) {
    let upload = store.start_multipart("c/new").await.unwrap();
    store.put_part(&upload, 1, Bytes::from(vec![b'x'; MIN_PART_SIZE])).await.unwrap();
    store.put_part(&upload, 2, Bytes::from_static(b"tail")).await.unwrap();
    store.abort_multipart(&upload).await.unwrap();
    assert_eq!(store.head("c/new").await.unwrap(), None);
    assert_eq!(store.get("c/new").await.unwrap(), None);

    store.put("c/kept", Bytes::from_static(b"kept")).await.unwrap();
    let upload = store.start_multipart("c/kept").await.unwrap();
    store.put_part(&upload, 1, Bytes::from_static(b"discarded")).await.unwrap();
    store.abort_multipart(&upload).await.unwrap();
    assert_eq!(store.get("c/kept").await.unwrap().as_deref(), Some(&b"kept"[..]));
    assert_eq!(keys_under(store.as_ref(), "c/").await, ["c/kept"]);
}

/// Keys under `r/`, in S3's order (by the keys' bytes: `ab.x` before `ab/…`), for the
/// listing clauses.
const LISTED_KEYS: [&str; 8] = ["r/ab.x", "r/ab/1", "r/ab/2", "r/ab/c/3", "r/abc", "r/b", "r/c/d/e/f", "r/z"];

/// Pages of `max_keys` list every key under the prefix once, in key order, and say where
/// the next page starts until the last; `list` and [`Repository::listing`] agree.
async fn listings_come_in_pages_in_key_order(store: Arc<dyn ObjectStore>) {
    for key in LISTED_KEYS.iter().rev().chain(&["s/other", "r.other"]) {
        store.put(key, Bytes::from(key.to_string())).await.unwrap();
    }
    let mut listed: Vec<ObjectMeta> = Vec::new();
    let mut continuation = None;
    let mut pages = 0;
    loop {
        let page = store.list_page("r/", continuation.as_deref(), 3).await.unwrap();
        assert!(page.objects.len() <= 3, "page {pages}: {} objects", page.objects.len());
        pages += 1;
        listed.extend(page.objects);
        match page.continuation {
            Some(next) => continuation = Some(next),
            None => break,
        }
        assert!(pages < 10, "the listing does not end");
    }
    assert!(pages >= 3, "{pages} pages of 3 for 8 keys");
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, LISTED_KEYS);
    for object in &listed {
        assert_eq!(object.size, object.key.len() as u64, "{}", object.key);
        if let Some(md5) = object.md5 {
            assert_eq!(md5, md5_of(object.key.as_bytes()), "{}", object.key);
        }
    }

    assert_eq!(keys_under(store.as_ref(), "r/").await, LISTED_KEYS);
    assert_eq!(keys_under(store.as_ref(), "r/ab").await, LISTED_KEYS[..5], "a prefix is not a folder");
    assert_eq!(keys_under(store.as_ref(), "r/c/d/").await, ["r/c/d/e/f"]);
    let repository = Repository::new(store.clone(), "r");
    let mut listing = repository.listing("");
    let mut paged = Vec::new();
    while let Some(page) = listing.next_page().await.unwrap() {
        paged.extend(page.into_iter().map(|o| o.key));
    }
    assert_eq!(paged, LISTED_KEYS);
}

/// A page size of one still lists everything, one key a page.
async fn listings_of_one_key_a_page_are_complete(store: Arc<dyn ObjectStore>) {
    for key in LISTED_KEYS {
        store.put(key, Bytes::from_static(b"x")).await.unwrap();
    }
    let mut keys = Vec::new();
    let mut continuation = None;
    loop {
        let page = store.list_page("r/", continuation.as_deref(), 1).await.unwrap();
        assert!(page.objects.len() <= 1, "{:?}", page.objects);
        keys.extend(page.objects.into_iter().map(|o| o.key));
        match page.continuation {
            Some(next) => continuation = Some(next),
            None => break,
        }
        assert!(keys.len() <= LISTED_KEYS.len(), "the listing does not end: {keys:?}");
    }
    assert_eq!(keys, LISTED_KEYS);
}

/// A key that is also the folder of other keys (`k` and `k/x`, made in either order;
/// pgops never makes such keys) is stored as S3 stores it, as a second object, or refused:
/// a driver or server that keeps objects as files may fail the put with an error naming
/// the key. Either way the object already there stays whole, and a refused key is no
/// object (get and head give no content, listings do not show it).
async fn a_key_that_is_also_a_folder_is_stored_or_refused_without_loss(store: Arc<dyn ObjectStore>) {
    store.put("c/file-first", Bytes::from_static(b"existing")).await.unwrap();
    store.put("c/folder-first/below", Bytes::from_static(b"existing")).await.unwrap();
    let mut expected = vec!["c/file-first", "c/folder-first/below"];
    for (existing, key) in [("c/file-first", "c/file-first/below"), ("c/folder-first/below", "c/folder-first")] {
        match store.put(key, Bytes::from_static(b"new")).await {
            Ok(()) => {
                assert_eq!(store.get(key).await.unwrap().as_deref(), Some(&b"new"[..]), "{key}");
                expected.push(key);
            }
            Err(refused) => {
                assert!(refused.location.contains(key), "the error names the key: {refused}");
                // s3s-fs answers a read of a directory with InternalError.
                let read = store.get(key).await;
                assert!(matches!(read, Ok(None) | Err(_)), "refused {key} ({refused}) reads as {read:?}");
                let head = store.head(key).await;
                assert!(matches!(head, Ok(None) | Err(_)), "refused {key} ({refused}) heads as {head:?}");
            }
        }
        assert_eq!(store.get(existing).await.unwrap().as_deref(), Some(&b"existing"[..]), "{existing} kept");
        assert_head(store.as_ref(), existing, b"existing").await;
    }
    expected.sort();
    assert_eq!(keys_under(store.as_ref(), "c/").await, expected);
}

/// Keys with spaces, URL metacharacters and non-ASCII letters round-trip through put, get,
/// head, ranged get, listing, multipart and delete unchanged.
async fn keys_with_unusual_characters_round_trip(store: Arc<dyn ObjectStore>) {
    let keys = [
        "u/with space/and  two",
        "u/plus+equals=amp&percent%20question?hash#",
        "u/semi;colon:comma,at@bang!quote'(paren)*star~tilde",
        "u/ünïcödé/ключ/鍵",
        "u/dollar$caret^brace{}bracket[]pipe|backtick`",
    ];
    for key in keys {
        store.put(key, Bytes::from(key.to_string())).await.unwrap();
    }
    for key in keys {
        assert_eq!(store.get(key).await.unwrap().as_deref(), Some(key.as_bytes()), "{key}");
        assert_head(store.as_ref(), key, key.as_bytes()).await;
        assert_eq!(store.get_range(key, 2, 3, None).await.unwrap(), key.as_bytes()[2..5], "{key}");
    }
    let mut sorted = keys.map(String::from).to_vec();
    sorted.sort();
    assert_eq!(keys_under(store.as_ref(), "u/").await, sorted);

    let multipart_key = "u/multi part+ü=%.bin";
    let upload = store.start_multipart(multipart_key).await.unwrap();
    let part = store.put_part(&upload, 1, Bytes::from_static(b"parts")).await.unwrap();
    store.complete_multipart(&upload, &[part]).await.unwrap();
    assert_eq!(store.get(multipart_key).await.unwrap().as_deref(), Some(&b"parts"[..]));

    store.delete(keys[0]).await.unwrap();
    assert_eq!(store.get(keys[0]).await.unwrap(), None);
    let rest: Vec<String> = keys[1..].iter().map(|k| k.to_string()).chain([multipart_key.to_string()]).collect();
    assert_eq!(store.delete_many(&rest).await.unwrap(), []);
    assert!(store.list("u/").await.unwrap().is_empty());
}

/// One `#[tokio::test]` per clause for a driver, in a module named after it.
macro_rules! contract_tests {
    ($driver:ident, $fixture:expr, [$($clause:ident),* $(,)?]) => {
        mod $driver {
            $(
                #[tokio::test]
                async fn $clause() {
                    let fixture = ($fixture)().await;
                    super::$clause(fixture.store.clone()).await;
                }
            )*
        }
    };
}

/// Every clause, for a driver.
macro_rules! every_clause {
    ($driver:ident, $fixture:expr) => {
        contract_tests!(
            $driver,
            $fixture,
            [
                put_then_get_returns_the_same_bytes,
                put_replaces_an_existing_object,
                ranged_get_returns_the_bytes_asked_for,
                missing_objects_are_none_and_deleting_them_is_ok,
                delete_removes_only_that_object,
                delete_many_removes_the_keys_and_skips_missing_ones,
                delete_many_removes_more_keys_than_one_request_takes,
                multipart_upload_appears_whole_on_completion,
                multipart_upload_replaces_an_existing_object,
                aborted_multipart_upload_leaves_nothing,
                listings_come_in_pages_in_key_order,
                listings_of_one_key_a_page_are_complete,
                keys_with_unusual_characters_round_trip,
                multipart_parts_listed_out_of_order_are_assembled_in_number_order,
                a_key_that_is_also_a_folder_is_stored_or_refused_without_loss,
            ]
        );
    };
}

every_clause!(local, super::Fixture::local);
every_clause!(s3, super::Fixture::s3);
// The S3 server accepts server-side encryption settings on every write, and the objects
// read back the same (s3s-fs accepts the headers and stores the objects as they are).
every_clause!(s3_sse_aes256, super::Fixture::s3_sse_aes256);
every_clause!(s3_sse_kms, super::Fixture::s3_sse_kms);
