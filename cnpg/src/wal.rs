//! The WAL service: Archive from `archive_command` (CNPG's `manager wal-archive %p`) and
//! Restore from `restore_command` (`manager wal-restore %f %p`), on the core's archiver
//! and fetcher, with the extension's and the CLI's guarantees.
//!
//! Restore's error semantics. CNPG's `manager wal-restore` exits 1 for any plugin error
//! and Postgres reads exit 1 as "not in the archive" (cloudnative-pg
//! `internal/cmd/manager/walrestore/cmd.go`): on a server that is to become the primary
//! by ending its archive recovery (CNPG's recovery Job) an error ends recovery there and the server promotes short. CNPG sets no deadline on the
//! call over the socket. So there (Postgres in archive recovery: `recovery.signal`, no
//! `standby.signal`) the call answers "not found" only when the store listed
//! the WAL folder and the file is under no suffix, and otherwise it does not give up
//! (whatever failed: the store, a corrupt or conflicting object, a missing key, even a bad
//! request): it is retried every [`HELD_RETRY`] with an ERROR line saying what to fix,
//! until it succeeds or the caller goes away (Postgres stopped). Everywhere else (replicas,
//! a standby being promoted, a replica cluster's designated primary) an error is harmless:
//! Postgres tries streaming or its source next; it is returned after
//! [`REPLICA_PATIENCE`]. A corrupt object is never written to the destination.

use crate::cluster::Cluster;
use crate::config::PluginConfig;
use crate::proto::wal::wal_capability::rpc::Type as RpcType;
use crate::proto::wal::wal_capability::{Rpc, Type as CapabilityType};
use crate::proto::wal::wal_restore_request::Mode;
use crate::proto::wal::wal_server::Wal;
use crate::proto::wal::*;
use crate::status;
use pgops_core::archive::WalArchiver;
use pgops_core::naming;
use pgops_core::wal_fetch::{fetch_wal_prefetching, FetchError, FetchOptions, Fetched, Patience};
use pgops_core::{control_file, store::Repository};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How long a replica's Restore retries a failing store before answering with the error.
pub const REPLICA_PATIENCE: Duration = Duration::from_secs(30);
/// How long one round of transient-error retries lasts on a primary before it is logged as
/// an ERROR and started again.
const PRIMARY_ROUND: Duration = Duration::from_secs(300);
/// The pause between rounds on a primary when the failure is not transient.
pub const HELD_RETRY: Duration = Duration::from_secs(15);

/// CNPG's first-archive marker in PGDATA (cloudnative-pg
/// `pkg/management/postgres/constants`, CheckEmptyWalArchiveFile).
pub const CHECK_EMPTY_MARKER: &str = ".check-empty-wal-archive";

pub struct WalService {
    data_directory: PathBuf,
    /// Lives as long as the sidecar, so that read-ahead uploads started by one call serve
    /// the next ones; rebuilt when the parameters change.
    archiver: tokio::sync::Mutex<Option<WalArchiver>>,
}

impl WalService {
    pub fn new(data_directory: PathBuf) -> WalService {
        WalService { data_directory, archiver: tokio::sync::Mutex::new(None) }
    }

    /// `path` (request field `field`) as a file directly in this data directory's
    /// `pg_wal`, which may be a link to the WAL volume: its name and canonical path.
    fn file_in_pg_wal(&self, field: &str, path: &str) -> Result<(String, PathBuf), Status> {
        let pg_wal = self.data_directory.join("pg_wal");
        let refused = |why: &str| {
            Status::invalid_argument(format!("{field} \"{path}\" {why}: it must be a file in {}", pg_wal.display()))
        };
        let path = Path::new(path);
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| refused("has no file name"))?;
        let parent = path.parent().filter(|p| p.is_absolute()).ok_or_else(|| refused("is not an absolute path"))?;
        let pg_wal = pg_wal.canonicalize().map_err(|e| refused(&format!("cannot be checked ({e})")))?;
        if parent.canonicalize().ok().as_deref() != Some(pg_wal.as_path()) {
            return Err(refused("is outside pg_wal"));
        }
        Ok((name.to_string(), pg_wal.join(name)))
    }
}

/// Refuses to archive into a repository that already holds WAL, when CNPG asks for that
/// check (a new cluster's first archive: `.check-empty-wal-archive`), as
/// `barman-cloud-check-wal-archive` does for plugin-barman-cloud.
pub async fn require_empty_wal_archive(repo: &Repository) -> Result<(), Status> {
    let first_page = repo.listing("wals/").next_page().await.map_err(|e| status::store(&e))?;
    match first_page.unwrap_or_default().first() {
        None => Ok(()),
        Some(object) => Err(Status::failed_precondition(format!(
            "the repository {} already holds WAL ({}) and this new cluster asks for an empty WAL archive: point the parameter repository at a new folder or, if that WAL is this cluster's own, annotate the Cluster cnpg.io/skipEmptyWalArchiveCheck=enabled",
            repo.location(""),
            repo.store.location(&object.key)
        ))),
    }
}

/// Why a Restore attempt did not write the file.
enum Restored {
    NotFound(Status),
    Failed(Status),
}

impl From<Status> for Restored {
    fn from(status: Status) -> Restored {
        Restored::Failed(status)
    }
}

impl WalService {
    /// Whether an error answered to `restore_command` would end this server's recovery
    /// short, as Postgres decides it: archive recovery (`recovery.signal`), not standby
    /// mode (`standby.signal`, which falls back to streaming on an error). The recovery
    /// Job and a cluster's first instance after it are in archive recovery; replicas, a
    /// standby being promoted and a replica cluster's designated primary are standbys.
    fn ends_recovery_on_error(&self) -> bool {
        self.data_directory.join("recovery.signal").exists() && !self.data_directory.join("standby.signal").exists()
    }

    /// One Restore attempt; transient store errors are retried inside it, for
    /// [`PRIMARY_ROUND`] when `holds`, else [`REPLICA_PATIENCE`].
    async fn restore_once(&self, request: &WalRestoreRequest, holds: bool) -> Result<(), Restored> {
        let cluster = Cluster::decode(&request.cluster_definition)?;
        let config = PluginConfig::from_parameters(cluster.restore_parameters()?, &self.data_directory)?;
        let name = request.source_wal_name.as_str();
        naming::classify(name).map_err(|e| Status::invalid_argument(format!("source_wal_name \"{name}\": {e}")))?;
        let (file, destination) = self.file_in_pg_wal("destination_file_name", &request.destination_file_name)?;
        // Recovery writes only its own temporary names (RECOVERYXLOG, RECOVERYHISTORY);
        // pg_rewind writes the WAL file under its own name, with MODE_REWIND or (CNPG
        // before `wal-restore --rewind`) no mode.
        let own_name = file == name && request.mode() != Mode::Recovery;
        if !own_name && !file.starts_with("RECOVERY") {
            return Err(Status::invalid_argument(format!(
                "destination_file_name \"{}\": recovery restores into pg_wal/RECOVERYXLOG or RECOVERYHISTORY, and pg_rewind into the file's own name, not over {file}",
                request.destination_file_name
            ))
            .into());
        }
        let rewind = request.mode() == Mode::Rewind || own_name;
        let repo = config.open().await?;
        let options = FetchOptions {
            spool: destination.with_file_name("pgops-prefetch"),
            // pg_rewind asks for exactly the files it needs: nothing ahead.
            prefetch: if rewind { 0 } else { config.wal_max_parallel },
            patience: Patience::new(if holds { PRIMARY_ROUND } else { REPLICA_PATIENCE }),
        };
        let mut on_retry = |error: &FetchError, wait: Duration| {
            log(&format!("WARNING: restoring {name}: {error}; trying again in {} ms", wait.as_millis()))
        };
        match fetch_wal_prefetching(&repo, name, &destination, &options, &mut on_retry).await {
            Ok(Fetched::Written { .. }) => Ok(()),
            Ok(Fetched::NotFound) => Err(Restored::NotFound(Status::not_found(format!(
                "{name} is not in the repository {}",
                repo.location("wals/")
            )))),
            Err(error) => Err(status::fetch(name, &error).into()),
        }
    }
}

fn log(line: &str) {
    eprintln!("pgops cnpg: {line}");
}

#[tonic::async_trait]
impl Wal for WalService {
    async fn get_capabilities(
        &self,
        _: Request<WalCapabilitiesRequest>,
    ) -> Result<Response<WalCapabilitiesResult>, Status> {
        let capabilities = [RpcType::ArchiveWal, RpcType::RestoreWal]
            .into_iter()
            .map(|rpc| WalCapability { r#type: Some(CapabilityType::Rpc(Rpc { r#type: rpc as i32 })) })
            .collect();
        Ok(Response::new(WalCapabilitiesResult { capabilities }))
    }

    async fn archive(&self, request: Request<WalArchiveRequest>) -> Result<Response<WalArchiveResult>, Status> {
        let request = request.into_inner();
        let cluster = Cluster::decode(&request.cluster_definition)?;
        let config = PluginConfig::from_parameters(cluster.own_parameters()?, &self.data_directory)?;
        let (name, path) = self.file_in_pg_wal("source_file_name", &request.source_file_name)?;
        naming::classify(&name)
            .map_err(|e| Status::invalid_argument(format!("source_file_name \"{}\": {e}", request.source_file_name)))?;
        let settings = config.archive_settings()?;
        let mut archiver = self.archiver.lock().await;
        if archiver.as_ref().is_none_or(|a| a.settings() != &settings) {
            let identity =
                control_file::cluster_identity(&self.data_directory).map_err(|e| status::control_file(&e))?;
            *archiver = Some(WalArchiver::open(settings, identity).await);
        }
        let archiver = archiver.as_mut().expect("set above");
        let marker = self.data_directory.join(CHECK_EMPTY_MARKER);
        // CNPG leaves the flag unset when its operator does not decide: then its own rule
        // (the annotation, and the marker still there), as plugin-barman-cloud falls back.
        let check_empty = request
            .check_empty_wal_archive
            .unwrap_or_else(|| !cluster.skips_empty_wal_archive_check() && marker.exists());
        if check_empty {
            require_empty_wal_archive(archiver.repository()).await?;
            // The check is done: the marker goes now, before anything is uploaded (as
            // barman-cloud's archiver removes it), or a later call would find this
            // cluster's own WAL (a read-ahead upload, or one whose answer was lost) and be
            // refused for good.
            match std::fs::remove_file(&marker) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log(&format!("WARNING: could not remove {}: {e}", marker.display())),
            }
        }
        let archived = archiver.archive(&name, &path).await.map_err(|e| status::archive(&name, &e))?;
        if archived.already_present {
            log(&format!("{name} was already archived with identical content at {}", archived.location));
        }
        Ok(Response::new(WalArchiveResult {}))
    }

    async fn restore(&self, request: Request<WalRestoreRequest>) -> Result<Response<WalRestoreResult>, Status> {
        let request = request.into_inner();
        let name = request.source_wal_name.as_str();
        let holds = self.ends_recovery_on_error();
        loop {
            let failure = match self.restore_once(&request, holds).await {
                Ok(()) => return Ok(Response::new(WalRestoreResult {})),
                Err(Restored::NotFound(status)) => return Err(status),
                Err(Restored::Failed(status)) if !holds => return Err(status),
                Err(Restored::Failed(status)) => status,
            };
            log(&format!(
                "ERROR: restoring {name}: {}. Recovery waits for it (an error would end recovery short and promote); trying again in {} s",
                failure.message(),
                HELD_RETRY.as_secs()
            ));
            tokio::time::sleep(HELD_RETRY).await;
        }
    }
    async fn status(&self, _: Request<WalStatusRequest>) -> Result<Response<WalStatusResult>, Status> {
        Err(Status::unimplemented("pgops does not advertise WAL Status"))
    }

    async fn set_first_required(
        &self,
        _: Request<SetFirstRequiredRequest>,
    ) -> Result<Response<SetFirstRequiredResult>, Status> {
        Err(Status::unimplemented("pgops does not advertise WAL SetFirstRequired"))
    }
}
