//! The parts of a CNPG `Cluster` (the JSON every request carries) that the plugin reads.
//! Decoded leniently, as CNPG's own plugins do: unknown fields are ignored, `apiVersion`
//! and `kind` are not required.

use crate::PLUGIN_NAME;
use serde::Deserialize;
use std::collections::BTreeMap;
use tonic::Status;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Cluster {
    pub metadata: Metadata,
    pub spec: Spec,
    pub status: ClusterStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Metadata {
    pub name: String,
    pub namespace: String,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Spec {
    pub plugins: Vec<PluginEntry>,
    pub bootstrap: Option<Bootstrap>,
    pub replica: Option<Replica>,
    pub external_clusters: Vec<ExternalCluster>,
    /// `walStorage`: pg_wal on a volume of its own (only its presence matters here).
    pub wal_storage: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PluginEntry {
    pub name: String,
    /// Absent means enabled (CNPG's default).
    pub enabled: Option<bool>,
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Bootstrap {
    pub recovery: Option<Recovery>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Recovery {
    pub source: String,
    pub recovery_target: Option<RecoveryTarget>,
}

/// `spec.bootstrap.recovery.recoveryTarget`, CNPG's field names.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RecoveryTarget {
    #[serde(rename = "backupID")]
    pub backup_id: String,
    #[serde(rename = "targetTLI")]
    pub target_tli: String,
    #[serde(rename = "targetXID")]
    pub target_xid: String,
    pub target_name: String,
    #[serde(rename = "targetLSN")]
    pub target_lsn: String,
    pub target_time: String,
    pub target_immediate: Option<bool>,
    // `exclusive` is not read: it becomes recovery_target_inclusive, which CNPG writes.
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Replica {
    pub enabled: Option<bool>,
    pub source: String,
    /// Distributed topology: the cluster that is primary, and this one's name in it.
    pub primary: String,
    #[serde(rename = "self")]
    pub this: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExternalCluster {
    pub name: String,
    pub plugin: Option<PluginEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClusterStatus {
    pub current_primary: String,
    pub target_primary: String,
}

impl Cluster {
    /// Decodes `cluster_definition`; a request without one is refused.
    pub fn decode(definition: &[u8]) -> Result<Cluster, Status> {
        if definition.is_empty() {
            return Err(Status::invalid_argument(
                "cluster_definition is empty: the request must carry the Cluster as JSON",
            ));
        }
        serde_json::from_slice(definition)
            .map_err(|e| Status::invalid_argument(format!("cluster_definition is not a Cluster in JSON: {e}")))
    }

    /// The parameters of this cluster's own `pgops.io` entry in `spec.plugins`: where its
    /// WAL and backups are written.
    pub fn own_parameters(&self) -> Result<&BTreeMap<String, String>, Status> {
        self.spec
            .plugins
            .iter()
            .find(|p| p.name == PLUGIN_NAME && p.enabled != Some(false))
            .map(|p| &p.parameters)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "Cluster \"{}\" has no enabled plugin \"{PLUGIN_NAME}\" in spec.plugins: add one with its parameters (repository, ...)",
                    self.metadata.name
                ))
            })
    }

    /// The parameters of external cluster `source`'s `pgops.io` plugin entry.
    fn source_parameters(&self, source: &str, field: &str) -> Result<&BTreeMap<String, String>, Status> {
        let external = self.spec.external_clusters.iter().find(|e| e.name == source).ok_or_else(|| {
            Status::failed_precondition(format!(
                "{field} names \"{source}\", which is not in spec.externalClusters: add it with plugin.name {PLUGIN_NAME}"
            ))
        })?;
        external.plugin.as_ref().filter(|p| p.name == PLUGIN_NAME).map(|p| &p.parameters).ok_or_else(|| {
            Status::failed_precondition(format!(
                "spec.externalClusters[name={source}] has no plugin \"{PLUGIN_NAME}\": give it plugin.name {PLUGIN_NAME} and its parameters"
            ))
        })
    }

    /// The repository WAL is read from, as plugin-barman-cloud decides it
    /// (plugin-barman-cloud `internal/cnpgi/common/wal.go`, resolveRestoreObjectStore): a cluster still in
    /// its bootstrap (no current primary yet) reads its recovery source; a replica cluster
    /// reads its replica source; any other reads its own repository.
    pub fn restore_parameters(&self) -> Result<&BTreeMap<String, String>, Status> {
        let recovery = self.spec.bootstrap.as_ref().and_then(|b| b.recovery.as_ref()).filter(|r| !r.source.is_empty());
        let replica = self.spec.replica.as_ref().filter(|r| self.is_replica_cluster() && !r.source.is_empty());
        match (recovery, replica) {
            (Some(recovery), _) if self.status.current_primary.is_empty() => {
                self.source_parameters(&recovery.source, "spec.bootstrap.recovery.source")
            }
            (_, Some(replica)) => self.source_parameters(&replica.source, "spec.replica.source"),
            _ => self.own_parameters(),
        }
    }

    /// `spec.bootstrap.recovery`, when the Cluster is bootstrapped by a recovery.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.spec.bootstrap.as_ref().and_then(|b| b.recovery.as_ref())
    }

    /// CNPG's `IsReplica` (api/v1/cluster_funcs.go): `enabled` when given, else whether
    /// this cluster is not the one `primary` names (distributed topology).
    pub fn is_replica_cluster(&self) -> bool {
        let Some(replica) = &self.spec.replica else { return false };
        if let Some(enabled) = replica.enabled {
            return enabled;
        }
        let this = if replica.this.is_empty() { &self.metadata.name } else { &replica.this };
        *this != replica.primary
    }

    /// CNPG's annotation that turns the empty-archive check off.
    pub fn skips_empty_wal_archive_check(&self) -> bool {
        self.metadata.annotations.get("cnpg.io/skipEmptyWalArchiveCheck").map(String::as_str) == Some("enabled")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(json: serde_json::Value) -> Cluster {
        Cluster::decode(&serde_json::to_vec(&json).unwrap()).unwrap()
    }

    #[test]
    fn finds_the_own_and_the_recovery_parameters() {
        let c = cluster(serde_json::json!({
            "metadata": {"name": "db"},
            "spec": {
                "plugins": [{"name": "other"}, {"name": "pgops.io", "parameters": {"repository": "s3://b/db"}}],
                "bootstrap": {"recovery": {"source": "old"}},
                "externalClusters": [{"name": "old", "plugin": {"name": "pgops.io", "parameters": {"repository": "s3://b/old"}}}]
            }
        }));
        assert_eq!(c.own_parameters().unwrap()["repository"], "s3://b/db");
        assert_eq!(c.restore_parameters().unwrap()["repository"], "s3://b/old");
        let running = Cluster { status: ClusterStatus { current_primary: "db-1".into(), ..Default::default() }, ..c };
        assert_eq!(running.restore_parameters().unwrap()["repository"], "s3://b/db");
        assert!(!running.is_replica_cluster());
    }

    #[test]
    fn replica_clusters_as_cnpg_tells_them() {
        let of = |replica: serde_json::Value| {
            cluster(serde_json::json!({"metadata": {"name": "b"}, "spec": {"replica": replica}}))
        };
        assert!(of(serde_json::json!({"enabled": true, "source": "a"})).is_replica_cluster());
        assert!(!of(serde_json::json!({"enabled": false, "source": "a"})).is_replica_cluster());
        assert!(of(serde_json::json!({"primary": "a", "source": "a"})).is_replica_cluster());
        assert!(!of(serde_json::json!({"primary": "b", "source": "a"})).is_replica_cluster());
        assert!(!of(serde_json::json!({"primary": "b", "self": "b"})).is_replica_cluster());
        assert!(!cluster(serde_json::json!({})).is_replica_cluster());
    }

    #[test]
    fn says_what_is_missing() {
        let c = cluster(
            serde_json::json!({"metadata": {"name": "db"}, "spec": {"plugins": [{"name": "pgops.io", "enabled": false}]}}),
        );
        assert!(c.own_parameters().unwrap_err().message().contains("no enabled plugin \"pgops.io\""));
        let c = cluster(serde_json::json!({"spec": {"bootstrap": {"recovery": {"source": "gone"}}}}));
        assert!(c
            .restore_parameters()
            .unwrap_err()
            .message()
            .contains("\"gone\", which is not in spec.externalClusters"));
        assert!(Cluster::decode(b"").unwrap_err().message().contains("empty"));
        assert!(Cluster::decode(b"[1]").unwrap_err().message().contains("not a Cluster"));
    }
}
