use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers one request with `response` and returns the request as text.
async fn answer_once(response: &'static str) -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let n = socket.read(&mut buf).await.unwrap();
        socket.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).to_lowercase()
    });
    (endpoint, server)
}

fn options(endpoint: String) -> S3Options {
    S3Options {
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        credentials: Some(("key".into(), "secret".into())),
        sse: None,
    }
}

/// An S3 server whose CompleteMultipartUpload answer the SDK cannot parse (moto's root
/// element): the error says why, not only "HTTP 200".
#[tokio::test]
async fn an_answer_that_cannot_be_parsed_is_reported_with_its_cause() {
    let body =
        "<?xml version=\"1.0\"?><CompleteMultipartUploadResponse><Bucket>b</Bucket></CompleteMultipartUploadResponse>";
    let response: &'static str = Box::leak(
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            .into_boxed_str(),
    );
    let (endpoint, _server) = answer_once(response).await;
    let store = S3Store::new("bucket", &options(endpoint)).await;
    let upload = MultipartUpload { key: "k".into(), upload_id: "u".into() };
    let part = UploadedPart { number: 1, etag: "\"e\"".into(), size: 1 };
    let err = store.complete_multipart(&upload, &[part]).await.unwrap_err();
    assert!(err.cause.starts_with("HTTP 200: "), "{err}");
    assert!(err.cause.len() > "HTTP 200: ".len() + 10, "{err}");
}

#[test]
fn debug_never_shows_the_secret() {
    let options = S3Options { credentials: Some(("AKID".into(), "s3cr3t".into())), ..Default::default() };
    let shown = format!("{options:?}");
    assert!(shown.contains("AKID") && !shown.contains("s3cr3t"), "{shown}");
}

#[test]
fn etags() {
    assert_eq!(etag_md5(Some("\"5d41402abc4b2a76b9719d911017c592\"")), Some(super::super::md5_of(b"hello")));
    assert_eq!(etag_md5(Some("\"5d41402abc4b2a76b9719d911017c592-2\"")), None);
    assert_eq!(etag_md5(None), None);
}

/// Captures the raw request of one PutObject to check what goes over the wire: a
/// Content-MD5 header and a plain body, none of the newer checksum trailers that many
/// S3-compatible servers reject.
#[tokio::test]
async fn put_sends_content_md5_and_no_checksum_trailer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&request).contains("hello world") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before the body arrived");
            request.extend_from_slice(&buf[..n]);
        }
        let response = "HTTP/1.1 200 OK\r\nETag: \"5eb63bbbe01eeed093cb22bb8f5acdc3\"\r\nContent-Length: 0\r\n\r\n";
        socket.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&request).to_lowercase()
    });
    let store = S3Store::new("bucket", &options(endpoint)).await;
    store.put("prefix/object", Bytes::from_static(b"hello world")).await.unwrap();
    let request = server.await.unwrap();
    assert!(request.starts_with("put /bucket/prefix/object"), "path-style addressing: {request}");
    assert!(request.contains("content-md5: xry7u+ae7tctyyk7j1rnww=="), "{request}");
    assert!(!request.contains("x-amz-checksum"), "{request}");
    assert!(!request.contains("x-amz-trailer"), "{request}");
    assert!(!request.contains("aws-chunked"), "{request}");
}

/// The requests a [`serve`] server answered: head (lowercased) and body.
type Requests = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// An S3 endpoint answering every request (on any connection, keep-alive included)
/// with `status` and `body`, recording the requests.
async fn serve(status: &'static str, body: String) -> (String, Requests) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Requests::default();
    let recorded = requests.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (recorded, body) = (recorded.clone(), body.clone());
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let head_end = loop {
                        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&pending[..head_end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .map_or(0, |value| value.trim().parse().unwrap());
                    while pending.len() < head_end + length {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    }
                    let request_body = pending[head_end..head_end + length].to_vec();
                    pending.drain(..head_end + length);
                    recorded.lock().unwrap().push((head, request_body));
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    socket.write_all(response.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (endpoint, requests)
}

/// DeleteObjects carries Content-MD5 of its body (S3 requires an integrity check on it,
/// and servers without the newer CRC checksums ask for this one), no CRC header, at
/// most 1,000 keys a request; the keys the server refuses come back with their cause.
#[tokio::test]
async fn batch_deletes_send_content_md5_in_requests_of_1000_keys_and_report_refused_keys() {
    let answer = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
        <DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Error><Key>wals/x</Key>\
        <Code>AccessDenied</Code><Message>Access Denied</Message></Error></DeleteResult>";
    let (endpoint, requests) = serve("200 OK", answer.into()).await;
    let store = S3Store::new("bucket", &options(endpoint)).await;
    let keys: Vec<String> = (0..1001).map(|i| format!("wals/{i:05}")).collect();
    let refused = store.delete_many(&keys).await.unwrap();
    assert_eq!(refused.len(), 2, "one per request: {refused:?}");
    assert_eq!(refused[0], DeleteFailure { key: "wals/x".into(), cause: "AccessDenied: Access Denied".into() });

    let requests = requests.lock().unwrap();
    assert_eq!(requests.len(), 2);
    let mut listed = 0;
    for (head, body) in requests.iter() {
        assert!(head.starts_with("post /bucket/?delete"), "{head}");
        let md5 = base64::engine::general_purpose::STANDARD.encode(super::super::md5_of(body)).to_lowercase();
        assert!(head.contains(&format!("content-md5: {md5}\r\n")), "{head}");
        assert!(!head.contains("x-amz-checksum") && !head.contains("x-amz-sdk-checksum"), "{head}");
        let body = String::from_utf8_lossy(body);
        assert!(body.contains("<Quiet>true</Quiet>"), "{body}");
        listed += body.matches("<Key>").count();
    }
    assert_eq!(listed, 1001);
    assert_eq!(requests[0].1.windows(6).filter(|w| w == b"<Key>w").count(), 1000);
}

fn list_answer(truncated: bool, token: Option<&str>) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>bucket</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>\
         <IsTruncated>{truncated}</IsTruncated>{}\
         <Contents><Key>p/b</Key><Size>2</Size></Contents><Contents><Key>p/a</Key><Size>1</Size></Contents>\
         </ListBucketResult>",
        token.map_or(String::new(), |t| format!("<NextContinuationToken>{t}</NextContinuationToken>"))
    )
}

#[tokio::test]
async fn listing_pages_follow_the_continuation_token() {
    let (endpoint, requests) = serve("200 OK", list_answer(true, Some("tok-2"))).await;
    let store = S3Store::new("bucket", &options(endpoint)).await;
    let page = store.list_page("p/", None, 2).await.unwrap();
    let keys: Vec<_> = page.objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(keys, [("p/a", 1), ("p/b", 2)], "in key order");
    assert_eq!(page.continuation.as_deref(), Some("tok-2"));
    store.list_page("p/", Some("tok-2"), 2).await.unwrap();
    let heads: Vec<String> = requests.lock().unwrap().iter().map(|(head, _)| head.clone()).collect();
    assert!(heads[0].contains("max-keys=2") && !heads[0].contains("continuation-token"), "{}", heads[0]);
    assert!(heads[1].contains("continuation-token=tok-2"), "{}", heads[1]);

    let (endpoint, _) = serve("200 OK", list_answer(false, None)).await;
    let store = S3Store::new("bucket", &options(endpoint)).await;
    assert_eq!(store.list_page("p/", None, 2).await.unwrap().continuation, None, "the last page");
}

/// A token is followed even on a page that says it is the last; a store that ignores
/// the token (the same page again) is an error, not an endless listing.
#[tokio::test]
async fn a_token_is_followed_and_a_store_ignoring_it_fails_the_listing() {
    let (endpoint, _) = serve("200 OK", list_answer(false, Some("tok-2"))).await;
    let store = S3Store::new("bucket", &options(endpoint)).await;
    assert_eq!(store.list_page("p/", None, 2).await.unwrap().continuation.as_deref(), Some("tok-2"));
    let (endpoint, requests) = serve("200 OK", list_answer(true, Some("tok-2"))).await;
    let store: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(S3Store::new("bucket", &options(endpoint)).await);
    let listed = tokio::time::timeout(std::time::Duration::from_secs(10), store.list("p/")).await;
    let err = listed.expect("the listing ends").unwrap_err();
    assert!(err.cause.contains("does not follow the continuation token"), "{err}");
    let repo = super::super::Repository::new(store, "p");
    let mut listing = repo.listing("");
    listing.next_page().await.unwrap();
    let err = listing.next_page().await.unwrap_err();
    assert!(err.cause.contains("not after the previous page's last key p/b"), "{err}");
    assert!(requests.lock().unwrap().len() >= 4);
}

/// A page that says more follows but gives no token must not pass for the last one:
/// retention would decide on an incomplete listing.
#[tokio::test]
async fn a_truncated_page_without_a_token_is_an_error() {
    let (endpoint, _) = serve("200 OK", list_answer(true, None)).await;
    let store = S3Store::new("bucket", &options(endpoint)).await;
    let err = store.list_page("p/", None, 2).await.unwrap_err();
    assert!(err.cause.contains("no continuation token"), "{err}");
}

/// PutObject and CreateMultipartUpload as they go over the wire with `sse`: the heads
/// of the two requests.
async fn write_requests(sse: Option<ServerSideEncryption>) -> (String, String) {
    let (endpoint, put_requests) = serve("200 OK", String::new()).await;
    let store = S3Store::new("bucket", &S3Options { sse: sse.clone(), ..options(endpoint) }).await;
    store.put("prefix/object", Bytes::from_static(b"hello world")).await.unwrap();
    let created = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><InitiateMultipartUploadResult>\
        <Bucket>bucket</Bucket><Key>prefix/big</Key><UploadId>upload-1</UploadId></InitiateMultipartUploadResult>";
    let (endpoint, create_requests) = serve("200 OK", created.into()).await;
    let store = S3Store::new("bucket", &S3Options { sse, ..options(endpoint) }).await;
    assert_eq!(store.start_multipart("prefix/big").await.unwrap().upload_id, "upload-1");
    let put = put_requests.lock().unwrap()[0].0.clone();
    let create = create_requests.lock().unwrap()[0].0.clone();
    assert!(put.starts_with("put /bucket/prefix/object"), "{put}");
    assert!(create.starts_with("post /bucket/prefix/big?uploads"), "{create}");
    (put, create)
}

/// Every PutObject records the SHA-256 of its body in user metadata, whatever the
/// encryption.
const HELLO_WORLD_SHA256: &str =
    "x-amz-meta-pgops-sha256: b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9\r\n";

#[tokio::test]
async fn sse_s3_is_asked_for_on_put_and_multipart_start() {
    let (put, create) = write_requests(Some(ServerSideEncryption::Aes256)).await;
    for request in [&put, &create] {
        assert!(request.contains("x-amz-server-side-encryption: aes256\r\n"), "{request}");
        assert!(!request.contains("x-amz-server-side-encryption-aws-kms-key-id"), "{request}");
    }
    assert!(put.contains(HELLO_WORLD_SHA256), "{put}");
    assert!(put.contains("content-md5: xry7u+ae7tctyyk7j1rnww=="), "{put}");
}

#[tokio::test]
async fn sse_kms_is_asked_for_with_its_key_on_put_and_multipart_start() {
    let kms = ServerSideEncryption::Kms { key_id: Some("arn:aws:kms:eu-west-1:1:key/k-1".into()) };
    let (put, create) = write_requests(Some(kms)).await;
    for request in [&put, &create] {
        assert!(request.contains("x-amz-server-side-encryption: aws:kms\r\n"), "{request}");
        let key = "x-amz-server-side-encryption-aws-kms-key-id: arn:aws:kms:eu-west-1:1:key/k-1\r\n";
        assert!(request.contains(key), "{request}");
    }
    assert!(put.contains(HELLO_WORLD_SHA256), "{put}");

    let (put, create) = write_requests(Some(ServerSideEncryption::Kms { key_id: None })).await;
    for request in [&put, &create] {
        assert!(request.contains("x-amz-server-side-encryption: aws:kms\r\n"), "{request}");
        assert!(!request.contains("kms-key-id"), "the account's default key: {request}");
    }
}

#[tokio::test]
async fn without_sse_no_encryption_header_is_sent() {
    let (put, create) = write_requests(None).await;
    for request in [&put, &create] {
        assert!(!request.contains("x-amz-server-side-encryption"), "{request}");
    }
    assert!(put.contains(HELLO_WORLD_SHA256), "{put}");
}

/// A HEAD answer for `hello` (5 bytes) with an ETag that is not its MD5, as under
/// SSE-KMS, plus `headers`.
fn head_answer(headers: &str) -> &'static str {
    let sha256 = hex::encode(super::super::sha256_of(b"hello"));
    Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"0f343b0931126a20f133d67c2b018a3b\"\r\n\
             x-amz-meta-pgops-sha256: {sha256}\r\n{headers}\r\n"
        )
        .into_boxed_str(),
    )
}

/// Under SSE-KMS or SSE-C the ETag is not an MD5: head gives none, and the SHA-256
/// from the metadata, which verification then compares ([`super::super::check_stored`]):
/// it passes for what was sent, fails for other content of the same size.
#[tokio::test]
async fn under_sse_kms_or_sse_c_head_gives_no_md5_and_verification_uses_the_sha256() {
    for headers in [
        "x-amz-server-side-encryption: aws:kms\r\nx-amz-server-side-encryption-aws-kms-key-id: k-1\r\n",
        "x-amz-server-side-encryption-customer-algorithm: AES256\r\n",
    ] {
        let (endpoint, _server) = answer_once(head_answer(headers)).await;
        let store = S3Store::new("bucket", &options(endpoint)).await;
        let meta = store.head("k").await.unwrap().unwrap();
        assert_eq!(meta.size, 5);
        assert_eq!(meta.md5, None, "{headers}");
        assert_eq!(meta.sha256, Some(super::super::sha256_of(b"hello")), "{headers}");
        use super::super::{check_stored, SentObject};
        assert_eq!(check_stored(&SentObject::of(b"hello"), &meta), Ok(()), "{headers}");
        let err = check_stored(&SentObject::of(b"jello"), &meta).unwrap_err();
        assert!(err.to_string().contains("SHA-256"), "{err}");
    }
}

/// Without encryption or with SSE-S3 the ETag is the MD5, and a wrong one is caught.
#[tokio::test]
async fn under_sse_s3_the_etag_is_still_an_md5() {
    let (endpoint, _server) = answer_once(head_answer("x-amz-server-side-encryption: AES256\r\n")).await;
    let store = S3Store::new("bucket", &options(endpoint)).await;
    let meta = store.head("k").await.unwrap().unwrap();
    assert_eq!(meta.md5, Some(hex::decode("0f343b0931126a20f133d67c2b018a3b").unwrap().try_into().unwrap()));
    let err = super::super::check_stored(&super::super::SentObject::of(b"hello"), &meta).unwrap_err();
    assert!(err.to_string().contains("MD5"), "{err}");
}

/// A ranged read pinned to a version sends it as If-Match, and the store's 412 (the object
/// was rewritten) is `Changed`, not a transient error.
#[tokio::test]
async fn a_pinned_range_sends_if_match_and_a_rewritten_object_is_changed() {
    let body = "<?xml version=\"1.0\"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>";
    let response: &'static str = Box::leak(
        format!(
            "HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    let (endpoint, server) = answer_once(response).await;
    let store = S3Store::new("bucket", &options(endpoint)).await;
    let err = store.get_range("base/x/data.tar", 0, 8, Some("\"5d41402abc4b2a76b9719d911017c592\"")).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Changed, "{err}");
    let request = server.await.unwrap();
    assert!(request.contains("if-match: \"5d41402abc4b2a76b9719d911017c592\""), "{request}");
    assert!(request.contains("range: bytes=0-7"), "{request}");
}
