//! The repository ownership guard: the repository root holds `pgops.json`, written on
//! first use, naming the cluster that archives there. A cluster with another system
//! identifier is refused, so two clusters never interleave WAL in one archive.

use crate::pipeline::{self, KeyId, KeyRing};
use crate::store::{Repository, StoreError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

pub const METADATA_OBJECT: &str = "pgops.json";

/// What identifies the cluster that owns a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterIdentity {
    pub system_identifier: u64,
    pub pg_version_num: u32,
    pub wal_segment_size: u32,
}

/// The content of `pgops.json`. The system identifier is a string: it is a u64, beyond
/// what JSON readers in many languages hold exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryMetadata {
    pub system_identifier: String,
    pub pg_version_num: u32,
    pub wal_segment_size: u32,
    pub created_by: String,
    /// Set when the repository's objects are encrypted (absent in plain repositories, as in
    /// those written before encryption existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionRecord>,
}

/// How an encrypted repository's objects are encrypted, and to which keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionRecord {
    pub scheme: EncryptionScheme,
    /// The ids of the keys new objects were encrypted to, oldest first: the last one is
    /// the key of the newest objects. Every one must stay in the key file.
    pub key_ids: Vec<KeyId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncryptionScheme {
    /// The age format; see [`crate::pipeline`].
    #[serde(rename = "age")]
    Age,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The repository was unclaimed; this cluster's metadata was written now.
    Claimed,
    /// The repository already belongs to this cluster.
    Owned,
    /// Unclaimed (only reported by [`inspect`], which writes nothing).
    Unclaimed,
}

#[derive(Debug, Clone)]
pub enum OwnershipError {
    Store(StoreError),
    /// The repository belongs to another cluster.
    Foreign {
        location: String,
        repository_system_identifier: String,
        cluster_system_identifier: u64,
    },
    /// The repository is encrypted and the cluster has no key, or the other way round:
    /// plain and encrypted objects must never mix in one repository.
    Encryption {
        location: String,
        repository_encrypted: bool,
    },
    /// The key ring lacks keys the repository's objects are encrypted to: a wrong key
    /// file, or a rotation that dropped an older key (whose objects would be unreadable).
    WrongKey {
        location: String,
        missing: Vec<KeyId>,
        ring: Vec<KeyId>,
    },
    /// `pgops.json` exists but cannot be read as pgops metadata.
    Unreadable {
        location: String,
        cause: String,
    },
}

impl fmt::Display for OwnershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OwnershipError::Store(e) => e.fmt(f),
            OwnershipError::Foreign { location, repository_system_identifier, cluster_system_identifier } => write!(
                f,
                "repository belongs to another cluster: {location} records system identifier {repository_system_identifier}, this cluster's is {cluster_system_identifier}"
            ),
            OwnershipError::Encryption { location, repository_encrypted: true } => write!(
                f,
                "repository is encrypted ({location} says so) but no encryption key is configured"
            ),
            OwnershipError::Encryption { location, repository_encrypted: false } => write!(
                f,
                "repository is not encrypted ({location} says so) but encryption is configured: plain and encrypted objects must not mix"
            ),
            OwnershipError::WrongKey { location, missing, ring } => write!(
                f,
                "the encryption key file lacks key {}, which objects of the repository are encrypted to ({location} lists it); the key file holds {}",
                ids(missing),
                ids(ring)
            ),
            OwnershipError::Unreadable { location, cause } => write!(f, "repository metadata {location} is unreadable: {cause}"),
        }
    }
}

impl std::error::Error for OwnershipError {}

fn ids(ids: &[KeyId]) -> String {
    ids.iter().map(KeyId::to_string).collect::<Vec<_>>().join(", ")
}

impl OwnershipError {
    /// What to do, for the HINT.
    pub fn hint(&self) -> String {
        match self {
            OwnershipError::Store(e) => e.hint().to_string(),
            OwnershipError::Foreign { .. } | OwnershipError::Unreadable { .. } => {
                "Point pgops.repository at a repository of its own for this cluster (each cluster needs its own prefix).".into()
            }
            OwnershipError::Encryption { repository_encrypted: true, .. } => {
                "Set pgops.encryption = on and pgops.encryption_key_file to the repository's key file. WAL stays in pg_wal until archiving succeeds.".into()
            }
            OwnershipError::WrongKey { .. } => {
                "Check pgops.encryption_key_file: it must hold every key the repository lists. To rotate keys, put the new key first in the key file and keep the previous ones below it.".into()
            }
            OwnershipError::Encryption { repository_encrypted: false, .. } => {
                "A plain repository cannot become encrypted: point pgops.repository at a new prefix for encrypted backups, or set pgops.encryption = off.".into()
            }
        }
    }
}

impl From<StoreError> for OwnershipError {
    fn from(e: StoreError) -> Self {
        OwnershipError::Store(e)
    }
}

async fn read(repo: &Repository) -> Result<Option<RepositoryMetadata>, OwnershipError> {
    let Some(body) = repo.get_as_is(METADATA_OBJECT).await? else { return Ok(None) };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| OwnershipError::Unreadable { location: repo.location(METADATA_OBJECT), cause: e.to_string() })
}

fn compare(
    repo: &Repository,
    found: &RepositoryMetadata,
    cluster: &ClusterIdentity,
) -> Result<Ownership, OwnershipError> {
    if found.system_identifier != cluster.system_identifier.to_string() {
        return Err(OwnershipError::Foreign {
            location: repo.location(METADATA_OBJECT),
            repository_system_identifier: found.system_identifier.clone(),
            cluster_system_identifier: cluster.system_identifier,
        });
    }
    compare_encryption(repo, found)?;
    Ok(Ownership::Owned)
}

/// Whether the repository's encryption (as `found` records it) and the key ring agree:
/// both plain, or encrypted with every key the record lists in the ring.
fn compare_encryption(repo: &Repository, found: &RepositoryMetadata) -> Result<(), OwnershipError> {
    let location = || repo.location(METADATA_OBJECT);
    match (&found.encryption, repo.keys()) {
        (None, None) => {}
        (Some(record), Some(ring)) => {
            let ring: Vec<KeyId> = ring.key_ids().collect();
            let missing: Vec<KeyId> = record.key_ids.iter().filter(|id| !ring.contains(id)).copied().collect();
            if !missing.is_empty() {
                return Err(OwnershipError::WrongKey { location: location(), missing, ring });
            }
        }
        (found, _) => {
            return Err(OwnershipError::Encryption { location: location(), repository_encrypted: found.is_some() })
        }
    }
    Ok(())
}

/// For readers (restore, verify): the key ring given reads what the repository records,
/// all of it, so that nothing is passed over for want of a key. A repository without an
/// ownership record (Barman's) passes.
pub async fn check_keys(repo: &Repository) -> Result<(), OwnershipError> {
    match read(repo).await? {
        Some(found) => compare_encryption(repo, &found),
        None => Ok(()),
    }
}

/// The record of an encrypted repository written with `ring`: `found`'s, with the ring's
/// current key added when it is new (a rotation).
fn record_of(found: Option<&EncryptionRecord>, ring: &KeyRing) -> EncryptionRecord {
    let mut record = found.cloned().unwrap_or(EncryptionRecord { scheme: EncryptionScheme::Age, key_ids: Vec::new() });
    let current = ring.current();
    if record.key_ids.last() != Some(&current) {
        record.key_ids.retain(|id| *id != current);
        record.key_ids.push(current);
    }
    record
}

/// Before the first claim: refuses a prefix that already holds objects in the other
/// format (Barman's plain backups under an encrypted cluster, encrypted objects whose
/// record was lost under a plain one), so the two never mix.
async fn refuse_other_format(repo: &Repository) -> Result<(), OwnershipError> {
    for folder in ["wals/", "base/"] {
        let page = repo.store.list_page(&repo.key(folder), None, 10).await?;
        let Some(object) = page.objects.iter().find(|object| object.size > 0) else { continue };
        let start = repo.store.get_range(&object.key, 0, pipeline::HEADER_PEEK.min(object.size), None).await?;
        let encrypted = !matches!(pipeline::key_of(&start), Ok(None));
        if encrypted != repo.keys().is_some() {
            return Err(OwnershipError::Encryption {
                location: repo.store.location(&object.key),
                repository_encrypted: encrypted,
            });
        }
    }
    Ok(())
}

/// For writers that claim nothing (a keep mark, a FAILED status, retention's marks): the
/// repository must take what they write as a claim would check it, plain from a plain
/// writer and encrypted from one whose ring holds every key the record lists; and the
/// record lists the writer's current key before any object uses it (a rotation, recorded
/// as a claim records it). An encrypting writer needs a claimed repository.
pub async fn admit_writer(repo: &Repository) -> Result<(), OwnershipError> {
    let found = read(repo).await?;
    let (Some(ring), Some(found)) = (repo.keys(), &found) else {
        return match found {
            Some(found) => compare_encryption(repo, &found),
            None if repo.keys().is_some() => Err(OwnershipError::Encryption {
                location: repo.location(METADATA_OBJECT),
                repository_encrypted: false,
            }),
            None => Ok(()),
        };
    };
    compare_encryption(repo, found)?;
    let record = record_of(found.encryption.as_ref(), ring);
    if found.encryption.as_ref() != Some(&record) {
        let updated = RepositoryMetadata { encryption: Some(record), ..found.clone() };
        let body = serde_json::to_vec_pretty(&updated).expect("metadata serializes");
        repo.put_as_is(METADATA_OBJECT, Bytes::from(body)).await?;
    }
    Ok(())
}

/// Claims an unclaimed repository for `cluster`, or checks that it already belongs to it.
pub async fn claim(repo: &Repository, cluster: &ClusterIdentity) -> Result<Ownership, OwnershipError> {
    let (metadata, outcome) = match read(repo).await? {
        Some(found) => {
            compare(repo, &found, cluster)?;
            let Some(ring) = repo.keys() else { return Ok(Ownership::Owned) };
            let record = record_of(found.encryption.as_ref(), ring);
            if found.encryption.as_ref() == Some(&record) {
                return Ok(Ownership::Owned);
            }
            // A rotation: the record names the new key before any object uses it.
            (RepositoryMetadata { encryption: Some(record), ..found }, Ownership::Owned)
        }
        None => {
            refuse_other_format(repo).await?;
            (
                RepositoryMetadata {
                    system_identifier: cluster.system_identifier.to_string(),
                    pg_version_num: cluster.pg_version_num,
                    wal_segment_size: cluster.wal_segment_size,
                    created_by: format!("pgops {}", env!("CARGO_PKG_VERSION")),
                    encryption: repo.keys().map(|ring| record_of(None, ring)),
                },
                Ownership::Claimed,
            )
        }
    };
    let body = serde_json::to_vec_pretty(&metadata).expect("metadata serializes");
    repo.put_as_is(METADATA_OBJECT, Bytes::from(body)).await?;
    // Read back: if another cluster claimed the repository at the same moment, the last
    // writer wins the object and the other one sees a foreign owner here.
    let stored = read(repo).await?.ok_or_else(|| OwnershipError::Unreadable {
        location: repo.location(METADATA_OBJECT),
        cause: "missing right after it was written".into(),
    })?;
    compare(repo, &stored, cluster)?;
    Ok(outcome)
}

/// The metadata of the repository's owner, if it is claimed.
pub async fn owner(repo: &Repository) -> Result<Option<RepositoryMetadata>, OwnershipError> {
    read(repo).await
}

/// Reports ownership without writing anything.
pub async fn inspect(repo: &Repository, cluster: &ClusterIdentity) -> Result<Ownership, OwnershipError> {
    match read(repo).await? {
        Some(found) => compare(repo, &found, cluster),
        None => Ok(Ownership::Unclaimed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;
    use std::sync::Arc;

    fn repo(dir: &std::path::Path) -> Repository {
        Repository::new(Arc::new(LocalStore::new(dir)), "")
    }

    const CLUSTER: ClusterIdentity = ClusterIdentity {
        system_identifier: 7_300_000_000_000_000_001,
        pg_version_num: 150018,
        wal_segment_size: 16 << 20,
    };

    #[tokio::test]
    async fn first_use_claims_then_owner_passes_and_stranger_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        assert_eq!(inspect(&repo, &CLUSTER).await.unwrap(), Ownership::Unclaimed);
        assert_eq!(claim(&repo, &CLUSTER).await.unwrap(), Ownership::Claimed);
        assert_eq!(claim(&repo, &CLUSTER).await.unwrap(), Ownership::Owned);

        let stranger = ClusterIdentity { system_identifier: 42, ..CLUSTER };
        let err = claim(&repo, &stranger).await.unwrap_err().to_string();
        assert!(err.contains("7300000000000000001") && err.contains(" 42"), "{err}");
        assert!(inspect(&repo, &stranger).await.is_err());
    }

    #[tokio::test]
    async fn plain_and_encrypted_never_share_a_repository() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Some(Arc::new(crate::pipeline::cipher::test_ring(dir.path(), "key")));
        let (plain_dir, encrypted_dir) = (dir.path().join("plain"), dir.path().join("encrypted"));
        std::fs::create_dir_all(&plain_dir).unwrap();
        std::fs::create_dir_all(&encrypted_dir).unwrap();
        let plain = repo(&plain_dir);
        assert_eq!(claim(&plain, &CLUSTER).await.unwrap(), Ownership::Claimed);
        let err = claim(&plain.clone().with_keys(keys.clone()), &CLUSTER).await.unwrap_err();
        assert!(matches!(err, OwnershipError::Encryption { repository_encrypted: false, .. }), "{err}");

        let encrypted = repo(&encrypted_dir).with_keys(keys);
        assert_eq!(claim(&encrypted, &CLUSTER).await.unwrap(), Ownership::Claimed);
        let text = std::fs::read_to_string(encrypted_dir.join(METADATA_OBJECT)).unwrap();
        assert!(text.contains("\"scheme\": \"age\""), "the record stays readable without keys: {text}");
        let err = claim(&repo(&encrypted_dir), &CLUSTER).await.unwrap_err();
        assert!(matches!(err, OwnershipError::Encryption { repository_encrypted: true, .. }), "{err}");
        assert!(err.hint().contains("pgops.encryption_key_file"), "{}", err.hint());
    }

    #[tokio::test]
    async fn a_wrong_key_is_refused_and_a_rotation_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let ring_of = |names: &[&str]| {
            let path = dir.path().join(names.join("+"));
            let text: String = names.iter().map(|n| std::fs::read_to_string(dir.path().join(n)).unwrap()).collect();
            std::fs::write(&path, text).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            Some(Arc::new(crate::pipeline::KeyRing::load(&path).unwrap()))
        };
        for name in ["old", "new", "stranger"] {
            crate::pipeline::KeyRing::create_file(&dir.path().join(name)).unwrap();
        }
        let root = dir.path().join("repo");
        std::fs::create_dir_all(&root).unwrap();
        assert_eq!(claim(&repo(&root).with_keys(ring_of(&["old"])), &CLUSTER).await.unwrap(), Ownership::Claimed);
        let err = claim(&repo(&root).with_keys(ring_of(&["stranger"])), &CLUSTER).await.unwrap_err();
        assert!(matches!(err, OwnershipError::WrongKey { .. }), "{err}");
        let err = claim(&repo(&root).with_keys(ring_of(&["new"])), &CLUSTER).await.unwrap_err();
        assert!(err.hint().contains("keep the previous ones"), "a rotation must keep the old key: {err}");

        let rotated = repo(&root).with_keys(ring_of(&["new", "old"]));
        assert_eq!(claim(&rotated, &CLUSTER).await.unwrap(), Ownership::Owned);
        let record = owner(&rotated).await.unwrap().unwrap().encryption.unwrap();
        let ids: Vec<KeyId> = ring_of(&["old", "new"]).unwrap().key_ids().collect();
        assert_eq!(record.key_ids, ids, "oldest first, newest last");
        // After the rotation the old key alone no longer writes.
        assert!(claim(&repo(&root).with_keys(ring_of(&["old"])), &CLUSTER).await.is_err());

        // Writers that claim nothing (keep marks, FAILED statuses, retention's marks) are
        // held to the same: a stranger's ring or a plain writer is refused, and a newer key
        // is recorded before it writes.
        let err = admit_writer(&repo(&root).with_keys(ring_of(&["stranger"]))).await.unwrap_err();
        assert!(matches!(err, OwnershipError::WrongKey { .. }), "{err}");
        assert!(matches!(admit_writer(&repo(&root)).await, Err(OwnershipError::Encryption { .. })));
        crate::pipeline::KeyRing::create_file(&dir.path().join("newest")).unwrap();
        let newest = repo(&root).with_keys(ring_of(&["newest", "new", "old"]));
        admit_writer(&newest).await.unwrap();
        let record = owner(&newest).await.unwrap().unwrap().encryption.unwrap();
        assert_eq!(record.key_ids.last(), Some(&newest.keys().unwrap().current()));
        // An encrypting writer on a repository nobody claimed is refused.
        let unclaimed = dir.path().join("unclaimed");
        std::fs::create_dir_all(&unclaimed).unwrap();
        assert!(admit_writer(&repo(&unclaimed).with_keys(ring_of(&["old"]))).await.is_err());
        admit_writer(&repo(&unclaimed)).await.unwrap();
    }

    #[tokio::test]
    async fn a_first_claim_refuses_a_prefix_holding_the_other_format() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Some(Arc::new(crate::pipeline::cipher::test_ring(dir.path(), "key")));
        let wal = "wals/0000000100000000/000000010000000000000001.zst";
        // Barman's plain WAL, no pgops.json: an encrypted cluster must not move in.
        let barman = dir.path().join("barman");
        std::fs::create_dir_all(&barman).unwrap();
        repo(&barman).put_as_is(wal, Bytes::from_static(b"plain zstd bytes")).await.unwrap();
        let err = claim(&repo(&barman).with_keys(keys.clone()), &CLUSTER).await.unwrap_err();
        assert!(matches!(err, OwnershipError::Encryption { repository_encrypted: false, .. }), "{err}");
        assert!(!barman.join(METADATA_OBJECT).exists(), "nothing written");
        assert_eq!(claim(&repo(&barman), &CLUSTER).await.unwrap(), Ownership::Claimed);
        // Encrypted objects whose record was lost: a plain cluster must not move in.
        let lost = dir.path().join("lost");
        std::fs::create_dir_all(&lost).unwrap();
        let encrypted = repo(&lost).with_keys(keys);
        encrypted.put("base/20261129T000000/backup.info", Bytes::from_static(b"status=DONE")).await.unwrap();
        let err = claim(&repo(&lost), &CLUSTER).await.unwrap_err();
        assert!(matches!(err, OwnershipError::Encryption { repository_encrypted: true, .. }), "{err}");
        assert_eq!(claim(&encrypted, &CLUSTER).await.unwrap(), Ownership::Claimed);
    }

    #[tokio::test]
    async fn garbage_metadata_is_an_error_not_a_claim() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(METADATA_OBJECT), b"{not json").unwrap();
        let err = claim(&repo(dir.path()), &CLUSTER).await.unwrap_err();
        assert!(matches!(err, OwnershipError::Unreadable { .. }), "{err}");
    }
}
