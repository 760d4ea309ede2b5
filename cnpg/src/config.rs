//! The plugin's parameters (`spec.plugins[name=pgops.io].parameters`, or an external
//! cluster's `plugin.parameters`) turned into the core's settings. Every refusal is an
//! `InvalidArgument` status naming the parameter and saying what to write; a parameter
//! pgops does not know is refused too, so that a misspelt one is never silently ignored.

use pgops_core::archive::ArchiveSettings;
use pgops_core::credentials;
use pgops_core::pipeline::{Compression, KeyRing};
use pgops_core::repository::RepositoryUrl;
use pgops_core::retention::Policy;
use pgops_core::setting::{validate_endpoint, validate_region};
use pgops_core::store::{Repository, S3Options, ServerSideEncryption};
use pgops_core::InvalidSetting;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::Status;

/// Every parameter pgops reads, in the order the README documents them.
pub const PARAMETERS: [&str; 12] = [
    "repository",
    "endpoint",
    "region",
    "credentialsFile",
    "walCompression",
    "walMaxParallel",
    "backupCompression",
    "encryptionKeyFile",
    "sse",
    "sseKmsKeyId",
    "retentionPolicy",
    "minimumRedundancy",
];

/// The parameters, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    pub repository: RepositoryUrl,
    pub s3: S3Options,
    pub wal_compression: Compression,
    /// WAL files in flight at once: uploads when archiving, downloads when restoring.
    pub wal_max_parallel: usize,
    pub backup_compression: Compression,
    pub encryption_key_file: Option<PathBuf>,
    pub retention_policy: Option<Policy>,
    pub minimum_redundancy: u32,
}

/// The refusal of `parameter`: what is wrong and what to write.
fn bad(parameter: &str, invalid: InvalidSetting) -> Status {
    Status::invalid_argument(format!("parameter {parameter}: {}. {}", invalid.message, invalid.hint))
}

impl PluginConfig {
    /// Reads `parameters`; `data_directory` is where secrets must not be (it is in every
    /// base backup).
    pub fn from_parameters(
        parameters: &BTreeMap<String, String>,
        data_directory: &Path,
    ) -> Result<PluginConfig, Status> {
        if let Some(unknown) = parameters.keys().find(|k| !PARAMETERS.contains(&k.as_str())) {
            return Err(bad(
                unknown,
                InvalidSetting::new("pgops does not know it", format!("Use only: {}.", PARAMETERS.join(", "))),
            ));
        }
        let get = |name: &str| parameters.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let repository = get("repository")
            .ok_or_else(|| {
                bad(
                    "repository",
                    InvalidSetting::new(
                        "missing",
                        "Write the repository folder, such as s3://backups/cluster-example.",
                    ),
                )
            })?
            .parse::<RepositoryUrl>()
            .map_err(|e| bad("repository", e))?;
        let endpoint = get("endpoint").map(str::to_string);
        if let Some(endpoint) = &endpoint {
            validate_endpoint(endpoint).map_err(|e| bad("endpoint", e))?;
        }
        let region = get("region").unwrap_or("us-east-1").to_string();
        validate_region(&region).map_err(|e| bad("region", e))?;
        let credentials = get("credentialsFile")
            .map(|path| read_credentials(path, data_directory))
            .transpose()
            .map_err(|e| bad("credentialsFile", e))?;
        let sse = sse(get("sse"), get("sseKmsKeyId"))?;
        let compression = |name: &str, default: Compression| {
            get(name).map_or(Ok(default), |value| Compression::from_name(value).map_err(|e| bad(name, e)))
        };
        let wal_max_parallel = count(get("walMaxParallel"), "walMaxParallel", 1, 64)?.unwrap_or(1) as usize;
        let encryption_key_file = get("encryptionKeyFile").map(PathBuf::from);
        if let Some(path) = &encryption_key_file {
            credentials::validate_secret_path("encryptionKeyFile", &path.to_string_lossy(), Some(data_directory))
                .map_err(|e| bad("encryptionKeyFile", e))?;
        }
        Ok(PluginConfig {
            repository,
            s3: S3Options { endpoint, region, credentials, sse },
            wal_compression: compression("walCompression", Compression::Zstd)?,
            wal_max_parallel,
            backup_compression: compression("backupCompression", Compression::Zstd)?,
            encryption_key_file,
            retention_policy: Policy::parse(get("retentionPolicy").unwrap_or_default())
                .map_err(|e| bad("retentionPolicy", e))?,
            minimum_redundancy: count(get("minimumRedundancy"), "minimumRedundancy", 1, u32::MAX)?.unwrap_or(1),
        })
    }

    /// The key ring of an encrypted repository, read on every call: a rotated key needs
    /// no restart.
    pub fn keys(&self) -> Result<Option<Arc<KeyRing>>, Status> {
        self.encryption_key_file
            .as_deref()
            .map(|path| {
                KeyRing::load(path)
                    .map(Arc::new)
                    .map_err(|e| bad("encryptionKeyFile", InvalidSetting::new(e.to_string(), e.hint())))
            })
            .transpose()
    }

    pub async fn open(&self) -> Result<Repository, Status> {
        Ok(Repository::open(&self.repository, &self.s3).await.with_keys(self.keys()?))
    }

    pub fn archive_settings(&self) -> Result<ArchiveSettings, Status> {
        let level = self.wal_compression.effective_level(0).expect("0 is every codec's default level");
        Ok(ArchiveSettings {
            repository: self.repository.clone(),
            s3: self.s3.clone(),
            compression: self.wal_compression,
            level,
            parallel: self.wal_max_parallel,
            encryption: self.keys()?,
        })
    }
}

/// A whole number in `min..=max`, `None` when not given.
fn count(value: Option<&str>, parameter: &str, min: u32, max: u32) -> Result<Option<u32>, Status> {
    value
        .map(|v| {
            v.parse::<u32>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
                bad(
                    parameter,
                    InvalidSetting::new(
                        format!("\"{v}\" is not a whole number from {min} to {max}"),
                        "Write a number such as 4.",
                    ),
                )
            })
        })
        .transpose()
}

fn sse(sse: Option<&str>, kms_key_id: Option<&str>) -> Result<Option<ServerSideEncryption>, Status> {
    match (sse, kms_key_id) {
        (Some("aws:kms"), key_id) => Ok(Some(ServerSideEncryption::Kms { key_id: key_id.map(str::to_string) })),
        (_, Some(_)) => Err(bad(
            "sseKmsKeyId",
            InvalidSetting::new(
                "set without sse: aws:kms",
                "Set sse to aws:kms to use that KMS key, or remove sseKmsKeyId.",
            ),
        )),
        (Some("AES256"), None) => Ok(Some(ServerSideEncryption::Aes256)),
        (None, None) => Ok(None),
        (Some(other), None) => Err(bad(
            "sse",
            InvalidSetting::new(
                format!("\"{other}\" is not a server-side encryption"),
                "Write AES256 or aws:kms, or leave it out.",
            ),
        )),
    }
}

/// The credentials in the mounted secret file `path` (AWS credentials-file format).
fn read_credentials(path: &str, data_directory: &Path) -> Result<(String, String), InvalidSetting> {
    credentials::validate_file_path(path, Some(data_directory))?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        InvalidSetting::new(
            format!("could not read \"{path}\": {e}"),
            "Mount the Secret at that path, readable by the sidecar's user.",
        )
    })?;
    let parsed = credentials::parse(&text, Path::new(path))?;
    Ok((parsed.access_key_id, parsed.secret_access_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<PluginConfig, Status> {
        let parameters = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        PluginConfig::from_parameters(&parameters, Path::new("/var/lib/postgresql/data/pgdata"))
    }

    #[test]
    fn defaults_and_values() {
        let c =
            config(&[("repository", "s3://backups/db"), ("walMaxParallel", "4"), ("walCompression", "lz4")]).unwrap();
        assert_eq!(c.repository.server_name(), "db");
        assert_eq!(
            (c.wal_max_parallel, c.wal_compression, c.backup_compression),
            (4, Compression::Lz4, Compression::Zstd)
        );
        assert_eq!((c.s3.region.as_str(), c.minimum_redundancy, c.retention_policy), ("us-east-1", 1, None));
    }

    #[test]
    fn every_refusal_names_its_parameter() {
        for (pairs, parameter, says) in [
            (vec![], "repository", "missing"),
            (vec![("repository", "http://x")], "repository", "unsupported scheme"),
            (vec![("repository", "s3://b1b/x"), ("walCompresion", "lz4")], "walCompresion", "does not know"),
            (vec![("repository", "s3://b1b/x"), ("walCompression", "brotli")], "walCompression", "unknown compression"),
            (vec![("repository", "s3://b1b/x"), ("walMaxParallel", "0")], "walMaxParallel", "from 1 to 64"),
            (vec![("repository", "s3://b1b/x"), ("sse", "yes")], "sse", "AES256 or aws:kms"),
            (
                vec![("repository", "s3://b1b/x"), ("retentionPolicy", "keep forever")],
                "retentionPolicy",
                "not a policy",
            ),
            (
                vec![("repository", "s3://b1b/x"), ("credentialsFile", "/nowhere/creds")],
                "credentialsFile",
                "could not read",
            ),
            (
                vec![("repository", "s3://b1b/x"), ("encryptionKeyFile", "/var/lib/postgresql/data/pgdata/key")],
                "encryptionKeyFile",
                "data directory",
            ),
        ] {
            let status = config(&pairs).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            let message = status.message();
            assert!(message.starts_with(&format!("parameter {parameter}: ")) && message.contains(says), "{message}");
        }
    }
}
