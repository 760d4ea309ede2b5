//! `pgops.check()`: is the repository reachable, writable, and ours, and does this server's
//! key file read what it holds?

use crate::ownership::{self, ClusterIdentity, Ownership, OwnershipError, RepositoryMetadata};
use crate::pipeline::KeyId;
use crate::store::Repository;
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The detail of a check that did not run because an earlier one failed.
const NOT_RUN: &str = "not run: ";

impl CheckResult {
    /// Whether the check did not run (an earlier one failed).
    pub fn skipped(&self) -> bool {
        self.detail.starts_with(NOT_RUN)
    }
}

fn result(check: &'static str, ok: bool, detail: impl Into<String>) -> CheckResult {
    CheckResult { check, ok, detail: detail.into() }
}

/// Runs the store checks in order; a check that cannot run because an earlier one failed
/// says so.
pub async fn check_repository(repo: &Repository, cluster: &ClusterIdentity, probe_name: &str) -> Vec<CheckResult> {
    let location = repo.location("");
    if let Err(e) = repo.list(ownership::METADATA_OBJECT).await {
        let skipped = format!("{NOT_RUN}the repository is not reachable");
        return vec![
            result("reachable", false, format!("{e}. {}", e.hint())),
            result("writable", false, skipped.clone()),
            result("ownership", false, skipped.clone()),
            result("keys", false, skipped),
        ];
    }
    let mut results = vec![result("reachable", true, format!("listed {location}"))];

    let probe = format!("pgops-check/{probe_name}");
    let payload = Bytes::from(format!("pgops write probe {probe_name}"));
    let written = async {
        repo.put(&probe, payload.clone()).await?;
        let read_back = repo.get(&probe).await?;
        repo.delete(&probe).await?;
        Ok::<_, crate::store::StoreError>(read_back)
    }
    .await;
    results.push(match written {
        Ok(Some(read_back)) if read_back == payload => {
            result("writable", true, format!("wrote, read back and deleted {}", repo.location(&probe)))
        }
        Ok(_) => result("writable", false, format!("{} did not read back what was written", repo.location(&probe))),
        Err(e) => result("writable", false, format!("{e}. {}", e.hint())),
    });

    results.push(match ownership::inspect(repo, cluster).await {
        Ok(Ownership::Owned | Ownership::Claimed) => result(
            "ownership",
            true,
            format!("owned by this cluster (system identifier {})", cluster.system_identifier),
        ),
        Ok(Ownership::Unclaimed) => {
            result("ownership", true, "unclaimed: the first archived WAL file claims it for this cluster")
        }
        Err(e) => result("ownership", false, e.to_string()),
    });
    results.push(keys_row(repo, ownership::owner(repo).await));
    results
}

fn ids(ids: &[KeyId]) -> String {
    ids.iter().map(KeyId::to_string).collect::<Vec<_>>().join(", ")
}

/// Whether this server's key ring reads what the repository's record lists, above all its
/// newest key: the one the primary encrypts new WAL and backups to since its last rotation.
/// A reader without it (a standby whose `restore_command` is `pgops wal-fetch`, a restore
/// host) cannot read what the primary writes next: its wal-fetch stops recovery.
fn keys_row(repo: &Repository, record: Result<Option<RepositoryMetadata>, OwnershipError>) -> CheckResult {
    let location = repo.location(ownership::METADATA_OBJECT);
    let found = match record {
        Ok(found) => found,
        Err(e) => return result("keys", false, format!("{e}. {}", e.hint())),
    };
    let Some(found) = found else {
        let detail = match repo.keys() {
            Some(ring) => format!("unclaimed: the first object written records key {}", ring.current()),
            None => "unclaimed: nothing is encrypted yet".to_string(),
        };
        return result("keys", true, detail);
    };
    match (found.encryption, repo.keys()) {
        (None, None) => result("keys", true, "plain repository: no key needed"),
        (None, Some(_)) => result(
            "keys",
            false,
            format!("the repository is plain ({location} records no encryption) but pgops.encryption is on"),
        ),
        (Some(record), None) => result(
            "keys",
            false,
            format!(
                "the repository is encrypted to keys {} ({location}) and this server has no key file: it cannot read the repository's WAL or backups",
                ids(&record.key_ids)
            ),
        ),
        (Some(record), Some(ring)) => {
            let held: Vec<KeyId> = ring.key_ids().collect();
            let newest = record.key_ids.last().copied();
            let missing: Vec<KeyId> = record.key_ids.iter().filter(|id| !held.contains(id)).copied().collect();
            match newest {
                Some(newest) if missing.contains(&newest) => result(
                    "keys",
                    false,
                    format!(
                        "the key file ({}) lacks key {newest}, the repository's newest ({location} lists it last): WAL and backups written since the rotation to it are encrypted to it, and this server cannot read them; a standby's wal-fetch stops recovery at the first of them (exit 255). Give every reader the primary's key file, the new key first and the older ones below it; the key file holds {}",
                        ring.source().display(),
                        ids(&held)
                    ),
                ),
                _ if !missing.is_empty() => result(
                    "keys",
                    false,
                    format!(
                        "the key file ({}) lacks older key {} ({location} lists it): the objects encrypted to it cannot be read. Keep every key in the key file, the newest first",
                        ring.source().display(),
                        ids(&missing)
                    ),
                ),
                _ => {
                    let mut detail = format!(
                        "the key file holds every key the repository lists ({}), its newest {} included",
                        ids(&record.key_ids),
                        newest.map_or_else(String::new, |id| id.to_string())
                    );
                    if newest != Some(ring.current()) {
                        detail.push_str(&format!(
                            "; its first key {} is not the repository's newest: what this server writes is encrypted to it, and every reader needs it first",
                            ring.current()
                        ));
                    }
                    result("keys", true, detail)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::KeyRing;
    use crate::store::LocalStore;
    use std::sync::Arc;

    const CLUSTER: ClusterIdentity =
        ClusterIdentity { system_identifier: 5, pg_version_num: 150000, wal_segment_size: 1 << 24 };

    #[tokio::test]
    async fn healthy_local_repository() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::new(Arc::new(LocalStore::new(dir.path())), "");
        let results = check_repository(&repo, &CLUSTER, "t1").await;
        assert!(results.iter().all(|r| r.ok), "{results:?}");
        assert!(results[2].detail.contains("unclaimed"));
        assert_eq!(results[3].check, "keys");
        assert!(!dir.path().join("pgops-check/t1").exists());
    }

    /// A ring of the key files `names` (made by KeyRing::create_file in `dir`), first first.
    fn ring_of(dir: &std::path::Path, names: &[&str]) -> Option<Arc<KeyRing>> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(names.join("+"));
        let text: String = names.iter().map(|n| std::fs::read_to_string(dir.join(n)).unwrap()).collect();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Some(Arc::new(KeyRing::load(&path).unwrap()))
    }

    fn keys_result(results: &[CheckResult]) -> &CheckResult {
        results.iter().find(|r| r.check == "keys").unwrap_or_else(|| panic!("no keys row: {results:?}"))
    }

    #[tokio::test]
    async fn a_reader_without_the_newest_key_is_told_before_it_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let (old, _) = KeyRing::create_file(&dir.path().join("old")).unwrap();
        let (new, _) = KeyRing::create_file(&dir.path().join("new")).unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir_all(&root).unwrap();
        let repo = |names: &[&str]| {
            Repository::new(Arc::new(LocalStore::new(&root)), "").with_keys(ring_of(dir.path(), names))
        };

        // Written with the old key, then rotated: the record lists old, new.
        ownership::claim(&repo(&["old"]), &CLUSTER).await.unwrap();
        let before = check_repository(&repo(&["old"]), &CLUSTER, "k1").await;
        assert!(keys_result(&before).ok, "{before:?}");
        // A reader given the new ring first (readers before the primary): told it writes
        // with a key the repository does not list as newest yet, and passes.
        let early = check_repository(&repo(&["new", "old"]), &CLUSTER, "k2").await;
        assert!(keys_result(&early).ok && keys_result(&early).detail.contains(&new.to_string()), "{early:?}");
        ownership::claim(&repo(&["new", "old"]), &CLUSTER).await.unwrap();

        // A standby still on the old ring: the keys row fails, naming the newest key and
        // what it stops.
        let stale = check_repository(&repo(&["old"]), &CLUSTER, "k3").await;
        let row = keys_result(&stale);
        assert!(!row.ok, "{stale:?}");
        assert!(row.detail.contains(&format!("lacks key {new}, the repository's newest")), "{}", row.detail);
        assert!(row.detail.contains("wal-fetch stops recovery"), "{}", row.detail);
        assert!(row.detail.contains(&format!("holds {old}")), "{}", row.detail);

        // The rotated ring passes; one that dropped the old key fails on it.
        let rotated = check_repository(&repo(&["new", "old"]), &CLUSTER, "k4").await;
        assert!(rotated.iter().all(|r| r.ok), "{rotated:?}");
        assert!(keys_result(&rotated).detail.contains(&format!("its newest {new} included")), "{rotated:?}");
        let dropped = check_repository(&repo(&["new"]), &CLUSTER, "k5").await;
        let row = keys_result(&dropped);
        assert!(!row.ok && row.detail.contains(&format!("lacks older key {old}")), "{dropped:?}");

        // No key file at all against the encrypted repository.
        let plain = check_repository(&Repository::new(Arc::new(LocalStore::new(&root)), ""), &CLUSTER, "k6").await;
        assert!(!keys_result(&plain).ok && keys_result(&plain).detail.contains("no key file"), "{plain:?}");
    }

    #[tokio::test]
    async fn missing_directory_fails_every_row_with_a_hint() {
        let repo = Repository::new(Arc::new(LocalStore::new("/nonexistent/pgops")), "");
        let results = check_repository(&repo, &CLUSTER, "t2").await;
        assert!(results.iter().all(|r| !r.ok), "{results:?}");
        assert!(results[0].detail.contains("Create the bucket"), "{}", results[0].detail);
    }
}
