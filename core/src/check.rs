//! `pgops.check()`: is the repository reachable, writable, and ours?

use crate::ownership::{self, ClusterIdentity, Ownership};
use crate::store::Repository;
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn result(check: &'static str, ok: bool, detail: impl Into<String>) -> CheckResult {
    CheckResult { check, ok, detail: detail.into() }
}

/// Runs the store checks in order; a check that cannot run because an earlier one failed
/// says so.
pub async fn check_repository(repo: &Repository, cluster: &ClusterIdentity, probe_name: &str) -> Vec<CheckResult> {
    let location = repo.location("");
    if let Err(e) = repo.list(ownership::METADATA_OBJECT).await {
        let skipped = "not run: the repository is not reachable";
        return vec![
            result("reachable", false, format!("{e}. {}", e.hint())),
            result("writable", false, skipped),
            result("ownership", false, skipped),
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
    results
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(!dir.path().join("pgops-check/t1").exists());
    }

    #[tokio::test]
    async fn missing_directory_fails_every_row_with_a_hint() {
        let repo = Repository::new(Arc::new(LocalStore::new("/nonexistent/pgops")), "");
        let results = check_repository(&repo, &CLUSTER, "t2").await;
        assert!(results.iter().all(|r| !r.ok), "{results:?}");
        assert!(results[0].detail.contains("Create the bucket"), "{}", results[0].detail);
    }
}
