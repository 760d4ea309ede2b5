//! The S3 driver, for AWS S3 and S3-compatible servers (RustFS, MinIO, Ceph, s3s).
//!
//! Compatibility choices:
//! - path-style addressing whenever a custom endpoint is set (RustFS and MinIO need it);
//! - the SDK's newer default request checksums (CRC32 trailers in aws-chunked bodies) are
//!   only sent when an operation requires them, because many S3-compatible servers reject
//!   or mis-store such bodies; integrity comes from Content-MD5 instead, which every S3
//!   implementation checks on receipt.
//!
//! Every PutObject also records the body's SHA-256 in user metadata
//! ([`super::SHA256_METADATA`]), which HeadObject gives back: under SSE-KMS or SSE-C the
//! ETag is not the MD5 of the content, and verification compares that digest instead.

use super::{
    DeleteFailure, ListPage, MultipartUpload, ObjectMeta, ObjectStore, StoreError, StoreErrorKind, StoreResult,
    UploadedPart, MAX_DELETE_BATCH, SHA256_METADATA,
};
use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption as SseHeader;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use base64::Engine;
use bytes::Bytes;
use std::time::Duration;

/// Connection settings shared by every repository on S3. Its `Debug` shows the access key
/// id, never the secret.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct S3Options {
    /// A custom endpoint (`http://host:port`); `None` means AWS S3.
    pub endpoint: Option<String>,
    pub region: String,
    /// Static credentials; `None` means the AWS default chain (environment, profile, web
    /// identity).
    pub credentials: Option<(String, String)>,
    /// Server-side encryption asked for on every object written; `None` leaves it to the
    /// bucket's default.
    pub sse: Option<ServerSideEncryption>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.credentials.as_ref().map(|(id, _)| id))
            .field("sse", &self.sse)
            .finish_non_exhaustive()
    }
}

/// Server-side encryption: the store encrypts what it writes to its disks with a key it
/// holds (`x-amz-server-side-encryption` on PutObject and CreateMultipartUpload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSideEncryption {
    /// SSE-S3 (`AES256`): keys managed by the store.
    Aes256,
    /// SSE-KMS (`aws:kms`): keys in the key management service, the given key or the
    /// account's default one (`None`).
    Kms { key_id: Option<String> },
}

impl std::fmt::Display for ServerSideEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerSideEncryption::Aes256 => f.write_str("AES256"),
            ServerSideEncryption::Kms { key_id: None } => f.write_str("aws:kms"),
            ServerSideEncryption::Kms { key_id: Some(key_id) } => write!(f, "aws:kms key {key_id}"),
        }
    }
}

impl ServerSideEncryption {
    /// The values of `x-amz-server-side-encryption` and
    /// `x-amz-server-side-encryption-aws-kms-key-id`.
    fn headers(sse: Option<&ServerSideEncryption>) -> (Option<SseHeader>, Option<String>) {
        match sse {
            None => (None, None),
            Some(ServerSideEncryption::Aes256) => (Some(SseHeader::Aes256), None),
            Some(ServerSideEncryption::Kms { key_id }) => (Some(SseHeader::AwsKms), key_id.clone()),
        }
    }
}

#[derive(Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: String,
    sse: Option<ServerSideEncryption>,
}

impl S3Store {
    pub async fn new(bucket: &str, options: &S3Options) -> S3Store {
        // Every request is bounded, so that a store which accepts connections and never
        // answers (frozen, overloaded) cannot hold an archiver, a worker or a backend: a
        // silent store is noticed after READ_TIMEOUT, and one operation with the SDK's
        // retries (MAX_ATTEMPTS, backoff) never takes longer than OPERATION_TIMEOUT.
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(options.region.clone()))
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(INITIAL_BACKOFF),
            )
            .timeout_config(timeouts);
        if let Some((key_id, secret)) = &options.credentials {
            loader = loader.credentials_provider(Credentials::new(key_id, secret, None, None, "pgops"));
        }
        if let Some(endpoint) = &options.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(options.endpoint.is_some())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        S3Store {
            client: Client::from_conf(config),
            bucket: bucket.to_string(),
            endpoint: options.endpoint.clone().unwrap_or_else(|| format!("AWS S3 ({})", options.region)),
            sse: options.sse.clone(),
        }
    }

    fn error<E>(
        &self,
        operation: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        let kind = match (code.as_deref(), status) {
            (_, _) if matches!(err, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) => {
                StoreErrorKind::Unreachable
            }
            (Some("NoSuchBucket"), _) => StoreErrorKind::NoSuchBucket,
            (Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken"), _)
            | (_, Some(401 | 403)) => StoreErrorKind::AccessDenied,
            (Some("BadDigest" | "InvalidDigest"), _) => StoreErrorKind::Integrity,
            (Some("PreconditionFailed"), _) | (_, Some(412)) => StoreErrorKind::Changed,
            _ => StoreErrorKind::Other,
        };
        let cause = match (code, status) {
            (Some(code), Some(status)) => match err.message() {
                Some(message) => format!("{code} (HTTP {status}): {message}"),
                None => format!("{code} (HTTP {status})"),
            },
            // No S3 error code: the answer itself was the problem (a body the SDK could not
            // parse, say); its status alone ("HTTP 200") would say nothing.
            (None, Some(status)) => format!("HTTP {status}: {}", error_chain(&err)),
            _ => error_chain(&err),
        };
        StoreError { operation, location: self.location(key), kind, cause }
    }

    /// The whole body of a GetObject response.
    /// The body, refused once it passes `limit` bytes (a server may send no length first).
    async fn read_body(&self, key: &str, mut body: ByteStream, limit: u64) -> StoreResult<Bytes> {
        let mut data = bytes::BytesMut::new();
        while let Some(chunk) = body.try_next().await.map_err(|e| StoreError {
            operation: "GetObject",
            location: self.location(key),
            kind: StoreErrorKind::Unreachable,
            cause: format!("reading the response body: {e}"),
        })? {
            if (data.len() + chunk.len()) as u64 > limit {
                return Err(super::too_large_to_read_whole(
                    self.location(key),
                    (data.len() + chunk.len()) as u64,
                    limit,
                ));
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data.freeze())
    }

    fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool {
        err.raw_response().is_some_and(|r| r.status().as_u16() == 404) && err.code() != Some("NoSuchBucket")
    }
}

/// Attempts per request, with the SDK's exponential backoff between them: a store that
/// throttles or drops a few requests in a row must not fail a backup of many parts.
const MAX_ATTEMPTS: u32 = 5;
/// The first wait between attempts (doubling, with jitter): at most about 3 s in all, so
/// that callers with retries of their own (wal-fetch) hear of the error and say it.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting for the first byte of an answer, or between two reads of one.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// One attempt, a 5 MiB part or a 16 MiB segment included, on a slow link.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(300);

/// "dispatch failure: io error: … Connection refused (os error 111)": each cause once.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// An S3 timestamp (`LastModified`) as a UTC time.
fn utc(at: &aws_sdk_s3::primitives::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(at.secs(), at.subsec_nanos())
}

/// An ETag that is a plain MD5 (single-part upload without SSE-KMS or SSE-C), decoded.
fn etag_md5(etag: Option<&str>) -> Option<[u8; 16]> {
    let hex_digest = etag?.trim_matches('"');
    let mut md5 = [0u8; 16];
    hex::decode_to_slice(hex_digest, &mut md5).ok()?;
    Some(md5)
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(super::md5_of(&body));
        let sha256 = hex::encode(super::sha256_of(&body));
        let (sse, kms_key_id) = ServerSideEncryption::headers(self.sse.as_ref());
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_md5(md5)
            .metadata(SHA256_METADATA, sha256)
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key_id)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.error("PutObject", key, e))?;
        Ok(())
    }

    async fn get_at_most(&self, key: &str, limit: u64) -> StoreResult<Option<Bytes>> {
        let response = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(response) => response,
            Err(e) if Self::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.error("GetObject", key, e)),
        };
        let size = response.content_length().unwrap_or(0).max(0) as u64;
        if size > limit {
            return Err(super::too_large_to_read_whole(self.location(key), size, limit));
        }
        self.read_body(key, response.body, limit).await.map(Some)
    }

    async fn get_range(&self, key: &str, offset: u64, length: u64, version: Option<&str>) -> StoreResult<Bytes> {
        let range = format!("bytes={offset}-{}", offset + length.max(1) - 1);
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(range)
            .set_if_match(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.error("GetObject", key, e))?;
        // More than the range asked for: a server or proxy that ignored Range, not damage.
        self.read_body(key, response.body, length.max(1)).await.map_err(|e| match e.kind {
            StoreErrorKind::Undecodable(_) => StoreError {
                kind: StoreErrorKind::Other,
                cause: format!("the store sent more than the {} bytes of the range asked for", length.max(1)),
                ..e
            },
            _ => e,
        })
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) => {
                // Only with no encryption or SSE-S3 is the ETag of a single-part upload the
                // MD5 of the content; SSE-KMS and SSE-C make it something else.
                let etag_is_md5 = matches!(head.server_side_encryption(), None | Some(SseHeader::Aes256))
                    && head.sse_customer_algorithm().is_none();
                let sha256 =
                    head.metadata().and_then(|metadata| metadata.get(SHA256_METADATA)).and_then(|hex_digest| {
                        let mut sha256 = [0u8; 32];
                        hex::decode_to_slice(hex_digest, &mut sha256).ok().map(|()| sha256)
                    });
                Ok(Some(ObjectMeta {
                    key: key.to_string(),
                    size: head.content_length().unwrap_or(0) as u64,
                    md5: if etag_is_md5 { etag_md5(head.e_tag()) } else { None },
                    sha256,
                    modified: head.last_modified().and_then(utc),
                    version: head.e_tag().map(str::to_string),
                }))
            }
            Err(e) if Self::is_not_found(&e) => Ok(None),
            Err(e) => Err(self.error("HeadObject", key, e)),
        }
    }

    async fn list_page(&self, prefix: &str, continuation: Option<&str>, max_keys: usize) -> StoreResult<ListPage> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(i32::try_from(max_keys).unwrap_or(i32::MAX))
            .set_continuation_token(continuation.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.error("ListObjectsV2", prefix, e))?;
        let mut objects: Vec<ObjectMeta> = page
            .contents()
            .iter()
            .filter_map(|o| {
                // A listing does not say how each object is encrypted, so its ETag cannot be
                // taken for an MD5.
                Some(ObjectMeta {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0) as u64,
                    md5: None,
                    sha256: None,
                    modified: o.last_modified().and_then(utc),
                    version: None,
                })
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let continuation = match (page.is_truncated(), page.next_continuation_token()) {
            // A token means more may follow, whatever IsTruncated says (stores disagree).
            (_, Some(token)) => Some(token.to_string()),
            // Taking such a page for the last would make an incomplete listing look
            // complete (and retention decide on it).
            (Some(true), None) => {
                return Err(StoreError {
                    operation: "ListObjectsV2",
                    location: self.location(prefix),
                    kind: StoreErrorKind::Other,
                    cause: "the answer says the listing goes on but has no continuation token".into(),
                })
            }
            _ => None,
        };
        Ok(ListPage { objects, continuation })
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", key, e))?;
        Ok(())
    }

    async fn delete_many(&self, keys: &[String]) -> StoreResult<Vec<DeleteFailure>> {
        let mut failures = Vec::new();
        for batch in keys.chunks(MAX_DELETE_BATCH) {
            let request_error = |cause: String| StoreError {
                operation: "DeleteObjects",
                location: self.location(&batch[0]),
                kind: StoreErrorKind::Other,
                cause,
            };
            let objects = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| request_error(e.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| request_error(e.to_string()))?;
            let answer = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .customize()
                .mutate_request(|request| {
                    // S3 requires an integrity check on DeleteObjects. Content-MD5 is the one
                    // every S3 implementation checks; the SDK's default CRC32 header is
                    // dropped, as for every other request (see the module's comment).
                    let md5 = request
                        .body()
                        .bytes()
                        .map(|body| base64::engine::general_purpose::STANDARD.encode(super::md5_of(body)));
                    let checksum_headers: Vec<String> = request
                        .headers()
                        .iter()
                        .map(|(name, _)| name.to_ascii_lowercase())
                        .filter(|name| name.starts_with("x-amz-checksum-") || name == "x-amz-sdk-checksum-algorithm")
                        .collect();
                    for name in checksum_headers {
                        request.headers_mut().remove(name.as_str());
                    }
                    if let Some(md5) = md5 {
                        request.headers_mut().insert("content-md5", md5);
                    }
                })
                .send()
                .await
                .map_err(|e| self.error("DeleteObjects", &batch[0], e))?;
            failures.extend(answer.errors().iter().map(|error| DeleteFailure {
                key: error.key().unwrap_or_default().to_string(),
                cause: format!(
                    "{}: {}",
                    error.code().unwrap_or("no error code"),
                    error.message().unwrap_or("no message")
                ),
            }));
        }
        Ok(failures)
    }

    async fn start_multipart(&self, key: &str) -> StoreResult<MultipartUpload> {
        let (sse, kms_key_id) = ServerSideEncryption::headers(self.sse.as_ref());
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key_id)
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", key, e))?;
        let upload_id = created.upload_id().ok_or_else(|| StoreError {
            operation: "CreateMultipartUpload",
            location: self.location(key),
            kind: StoreErrorKind::Other,
            cause: "the response has no UploadId".into(),
        })?;
        Ok(MultipartUpload { key: key.to_string(), upload_id: upload_id.to_string() })
    }

    async fn put_part(&self, upload: &MultipartUpload, number: u32, body: Bytes) -> StoreResult<UploadedPart> {
        let size = body.len() as u64;
        let md5 = base64::engine::general_purpose::STANDARD.encode(super::md5_of(&body));
        let response = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .part_number(number as i32)
            .content_md5(md5)
            .content_length(size as i64)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.error("UploadPart", &upload.key, e))?;
        let etag = response.e_tag().unwrap_or_default().to_string();
        Ok(UploadedPart { number, etag, size })
    }

    async fn complete_multipart(&self, upload: &MultipartUpload, parts: &[UploadedPart]) -> StoreResult<()> {
        // S3 requires the parts in ascending order.
        let mut in_order: Vec<&UploadedPart> = parts.iter().collect();
        in_order.sort_by_key(|part| part.number);
        let completed = in_order
            .into_iter()
            .map(|p| CompletedPart::builder().part_number(p.number as i32).e_tag(&p.etag).build())
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .send()
            .await
            .map_err(|e| self.error("CompleteMultipartUpload", &upload.key, e))?;
        Ok(())
    }

    async fn abort_multipart(&self, upload: &MultipartUpload) -> StoreResult<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .send()
            .await
            .map_err(|e| self.error("AbortMultipartUpload", &upload.key, e))?;
        Ok(())
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key} at {}", self.bucket, self.endpoint)
    }
}

#[cfg(test)]
mod tests;
