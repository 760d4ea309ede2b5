//! The Backup service: a CNPG `Backup` with `method: plugin` becomes one pgops base backup,
//! taken by the core's backup code exactly as the extension's worker takes it
//! (`pg_backup_start`/`pg_backup_stop` in one session, the data directory read from the
//! volume shared with the postgres container, Barman's layout, a PostgreSQL manifest),
//! on a primary or a hot standby. The session is libpq's, to the local server: `PGHOST`
//! (default CNPG's socket directory `/controller/run`), `PGPORT`, `PGUSER` (default
//! `postgres`).

use crate::cluster::Cluster;
use crate::config::PluginConfig;
use crate::proto::backup::backup_capability::rpc::Type as RpcType;
use crate::proto::backup::backup_capability::{Rpc, Type as CapabilityType};
use crate::proto::backup::backup_server::Backup;
use crate::proto::backup::*;
use chrono::{DateTime, Utc};
use pgops_core::backup::info::{BackupInfo, Tablespace};
use pgops_core::backup::owner::{self, BackupOwner};
use pgops_core::backup::upload::UploadSettings;
use pgops_core::backup::BackupId;
use pgops_core::backup::{self, queries, BackupHost, BackupJob, BackupStop, HostError, Phase, Progress, WalPosition};
use pgops_core::retention::{self, ExpireReport, PlanRequest, Policy, DEFAULT_INCOMPLETE_GRACE};
use pgops_core::store::Repository;
use pgops_core::timeline::TimelineHistory;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How long the backup's last WAL segment may take to reach the repository. Longer than
/// CNPG's default `archive_timeout` (5 min): on a standby the primary archives that
/// segment, only once it is full or switched.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(600);

pub struct BackupService {
    data_directory: PathBuf,
    pod_name: Option<String>,
    /// One backup at a time per instance: set while a backup thread runs (which may
    /// outlive its call, until it notices the cancel).
    running: Arc<AtomicBool>,
}

impl BackupService {
    pub fn new(data_directory: PathBuf, pod_name: Option<String>) -> BackupService {
        BackupService { data_directory, pod_name, running: Arc::new(AtomicBool::new(false)) }
    }
}

/// Clears the running flag when the backup thread ends.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The Backup object's name (its `spec.online*` fields are CNPG's for volume snapshots).
fn backup_name(backup_definition: &[u8]) -> Result<String, Status> {
    let backup: serde_json::Value = serde_json::from_slice(backup_definition)
        .map_err(|e| Status::invalid_argument(format!("backup_definition is not a Backup in JSON: {e}")))?;
    Ok(backup["metadata"]["name"].as_str().unwrap_or_default().to_string())
}

/// libpq's environment, with CNPG's defaults.
fn connect() -> Result<postgres::Client, String> {
    let var = |name: &str, default: &str| std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or(default.into());
    let host = var("PGHOST", "/controller/run");
    let port: u16 = var("PGPORT", "5432").parse().map_err(|_| "PGPORT is not a port number".to_string())?;
    let mut config = postgres::Config::new();
    if host.starts_with('/') {
        config.host_path(&host);
    } else {
        config.host(&host);
    }
    config
        .port(port)
        .user(&var("PGUSER", "postgres"))
        .dbname(&var("PGDATABASE", "postgres"))
        .application_name("pgops backup")
        .connect_timeout(Duration::from_secs(30));
    config.connect(postgres::NoTls).map_err(|e| format!("could not connect to PostgreSQL at {host} port {port}: {e}"))
}

/// The backup's session, as [`BackupHost`] wants it.
struct SessionHost {
    client: postgres::Client,
    segment_size: u64,
    fast_checkpoint: bool,
    /// Set when the caller went away: the backup stops at its next step.
    cancelled: Arc<AtomicBool>,
}

/// The first column of the first row `query` returns, as text.
fn query_text(client: &mut postgres::Client, query: &str) -> Result<String, String> {
    let rows = client.simple_query(query).map_err(|e| e.to_string())?;
    rows.iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| format!("no result from: {query}"))
}

impl SessionHost {
    fn query_text(&mut self, query: &str) -> Result<String, String> {
        query_text(&mut self.client, query)
    }
}

impl BackupHost for SessionHost {
    fn start_backup(&mut self, label: &str) -> Result<WalPosition, HostError> {
        let text = self.query_text(&queries::start(label, self.fast_checkpoint)).map_err(HostError::Failed)?;
        Ok(queries::started(&text, self.segment_size)?)
    }

    fn tablespaces(&mut self) -> Result<Vec<Tablespace>, HostError> {
        Ok(queries::tablespaces(&self.query_text(queries::TABLESPACES).map_err(HostError::Failed)?)?)
    }

    fn stop_backup(&mut self) -> Result<BackupStop, HostError> {
        let text = self.query_text(&queries::stop()).map_err(HostError::Failed)?;
        let end_snapshot = self.query_text(queries::END_SNAPSHOT).ok();
        Ok(queries::stopped(&text, self.segment_size, end_snapshot)?)
    }

    fn abort_backup(&mut self) {
        if let Err(e) = self.client.simple_query(queries::ABORT) {
            eprintln!("pgops cnpg: could not end the failed backup: {e}");
        }
    }

    fn progress(&mut self, _: Phase, _: Progress) {}

    fn wait(&mut self) -> Result<(), HostError> {
        std::thread::sleep(Duration::from_millis(200));
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(HostError::Stop("the Backup call was cancelled (CNPG went away)".into()));
        }
        Ok(())
    }
}

/// Sets the flag when dropped: the gRPC call's future is dropped when the caller goes.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Takes the backup on this (blocking) thread.
fn take(
    config: &PluginConfig,
    data_directory: PathBuf,
    runtime: tokio::runtime::Handle,
    cancelled: Arc<AtomicBool>,
) -> Result<(BackupInfo, String), Status> {
    let failed = |e: String| Status::unavailable(format!("backup failed: {e}"));
    let mut client = connect()
        .map_err(|e| Status::unavailable(format!("{e}. Check PGHOST/PGPORT/PGUSER in the sidecar's environment.")))?;
    let (cluster, state) = queries::cluster(&query_text(&mut client, queries::CLUSTER).map_err(failed)?)
        .map_err(|e| failed(e.to_string()))?;
    let system_identifier = cluster.system_identifier;
    let same_directory = cluster.data_directory.canonicalize().ok() == data_directory.canonicalize().ok();
    if !same_directory {
        return Err(Status::failed_precondition(format!(
            "the server's data directory is {} but PGDATA here is {}: mount the postgres container's data volume at the same path",
            cluster.data_directory.display(),
            data_directory.display()
        )));
    }
    let instance_id = owner::instance_id(&data_directory, &owner::host_name())
        .map_err(|e| failed(format!("could not keep this instance's id in {}: {e}", data_directory.display())))?;
    // An immediate checkpoint, as CNPG's Backup asks for a backup now.
    let mut host = SessionHost { client, segment_size: cluster.segment_size, fast_checkpoint: true, cancelled };
    let timeline: u32 = host
        .query_text("SELECT timeline_id::text FROM pg_control_checkpoint()")
        .map_err(failed)?
        .parse()
        .map_err(|_| failed("the checkpoint's timeline is not a number".into()))?;
    let repo = runtime.block_on(config.open())?;
    let level = config.backup_compression.effective_level(0).expect("0 is every codec's default level");
    let job = BackupJob {
        backup_id: backup::backup_id(Utc::now()),
        server_name: config.repository.server_name(),
        cluster,
        upload: UploadSettings::new(config.backup_compression, level),
        owner: BackupOwner { instance_id: instance_id.clone(), timeline },
        archive_timeout: ARCHIVE_TIMEOUT,
        runtime,
        thread_start: || {},
    };
    let info = backup::run_backup(&mut host, &repo, &job).map_err(|failure| {
        // The FAILED status did not reach the store: once more, or the backup stays listed
        // STARTED until retention finds its heartbeat stale.
        if let Some(info) = failure.unrecorded {
            if let Err(e) = backup::record(&repo, &job.runtime, &job.backup_id, &info) {
                eprintln!(
                    "pgops cnpg: WARNING: backup {} FAILED, but its status could not be written: {e}",
                    job.backup_id
                );
            }
        }
        crate::status::backup(&failure.error)
    })?;
    // Retention after a DONE backup, as the extension's worker does; on the primary only,
    // whose timeline is the cluster's. Its failure does not undo the backup.
    if let (Some(_), true) = (config.retention_policy, state.in_recovery) {
        eprintln!(
            "pgops cnpg: retention is not applied after a backup on a standby: take one on the primary (target: primary) or run pgops expire"
        );
    }
    if let (Some(policy), false) = (config.retention_policy, state.in_recovery) {
        let expired = expire(
            &repo,
            &job.runtime,
            policy,
            config.minimum_redundancy,
            system_identifier,
            &data_directory,
            &instance_id,
            timeline,
        );
        match expired {
            Ok(report) => eprintln!("pgops cnpg: retention {policy:?}: {report}"),
            Err(e) => eprintln!("pgops cnpg: WARNING: retention after backup {} did not run: {e}", job.backup_id),
        }
    }
    Ok((info, job.backup_id))
}

/// Applies `policy` to the repository as this primary (timeline `timeline`) sees it.
#[allow(clippy::too_many_arguments)]
fn expire(
    repo: &Repository,
    runtime: &tokio::runtime::Handle,
    policy: Policy,
    minimum_redundancy: u32,
    system_identifier: u64,
    data_directory: &Path,
    instance_id: &str,
    timeline: u32,
) -> Result<ExpireReport, String> {
    let lineage =
        TimelineHistory::of_server(data_directory, timeline).map_err(|(message, hint)| format!("{message}. {hint}"))?;
    let started_is_live =
        |id: &BackupId, owner: Option<&BackupOwner>| owner::started_is_live(None, Some(instance_id), id, owner);
    let request = PlanRequest {
        policy: Some(policy),
        minimum_redundancy,
        now: Utc::now(),
        started_is_live: &started_is_live,
        system_identifier: Some(system_identifier),
        lineage: Some(lineage),
        incomplete_grace: DEFAULT_INCOMPLETE_GRACE,
    };
    runtime.block_on(async {
        let plan = retention::plan(repo, &request).await.map_err(|e| format!("{e}. {}", e.hint()))?;
        retention::execute(repo, &plan).await.map_err(|f| format!("{f}. {}", f.error.hint()))
    })
}

/// Barman's `begin_time`/`end_time` as Unix seconds.
fn unix_seconds(barman_time: &str) -> i64 {
    DateTime::parse_from_str(barman_time, "%Y-%m-%d %H:%M:%S%.f%:z").map_or(0, |t| t.timestamp())
}

/// The `tablespace_map` of the backup (`<oid> <location>` lines).
fn tablespace_map(tablespaces: &[Tablespace]) -> String {
    tablespaces.iter().map(|t| format!("{} {}\n", t.oid, t.location)).collect()
}

#[tonic::async_trait]
impl Backup for BackupService {
    async fn get_capabilities(
        &self,
        _: Request<BackupCapabilitiesRequest>,
    ) -> Result<Response<BackupCapabilitiesResult>, Status> {
        let capability = BackupCapability { r#type: Some(CapabilityType::Rpc(Rpc { r#type: RpcType::Backup as i32 })) };
        Ok(Response::new(BackupCapabilitiesResult { capabilities: vec![capability] }))
    }

    async fn backup(&self, request: Request<BackupRequest>) -> Result<Response<BackupResult>, Status> {
        let request = request.into_inner();
        let cluster = Cluster::decode(&request.cluster_definition)?;
        let config = PluginConfig::from_parameters(cluster.own_parameters()?, &self.data_directory)?;
        let backup_name = backup_name(&request.backup_definition)?;
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(Status::aborted("a backup of this instance is already running: try again once it has ended"));
        }
        let running = Running(self.running.clone());
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancelled.clone());
        let (data_directory, runtime) = (self.data_directory.clone(), tokio::runtime::Handle::current());
        // libpq's client and the core's backup block: a thread of their own, which holds
        // the running flag until it ends.
        let (info, backup_id) = tokio::task::spawn_blocking(move || {
            let _running = running;
            take(&config, data_directory, runtime, cancelled)
        })
        .await
        .map_err(|e| Status::internal(format!("the backup thread failed: {e}")))??;
        eprintln!("pgops cnpg: backup {backup_id} ({backup_name}) DONE");
        Ok(Response::new(BackupResult {
            backup_id,
            backup_name,
            started_at: unix_seconds(&info.begin_time),
            stopped_at: info.end_time.as_deref().map_or(0, unix_seconds),
            begin_wal: info.begin_wal.clone(),
            end_wal: info.end_wal.clone().unwrap_or_default(),
            begin_lsn: info.begin_xlog.clone(),
            end_lsn: info.end_xlog.clone().unwrap_or_default(),
            backup_label_file: info.backup_label.clone().unwrap_or_default().into_bytes(),
            tablespace_map_file: tablespace_map(&info.tablespaces).into_bytes(),
            instance_id: self.pod_name.clone().unwrap_or_default(),
            online: true,
            metadata: [("timeline".to_string(), info.timeline.to_string())].into(),
        }))
    }
}
