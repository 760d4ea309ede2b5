//! The WAL service: Archive from `archive_command` (CNPG's `manager wal-archive %p`) and
//! Restore from `restore_command` (`manager wal-restore %f %p`), on the core's archiver
//! and fetcher, with the extension's and the CLI's guarantees.
//!
//! Restore's error semantics. CNPG's `manager wal-restore` exits 1 for any plugin error
//! and Postgres reads exit 1 as "not in the archive" (cloudnative-pg
//! `internal/cmd/manager/walrestore/cmd.go`): on a server that is to become the primary
//! (a bootstrap recovery, or the primary's own crash recovery) an error ends recovery there
//! and the server promotes short. CNPG sets no deadline on the call over the socket. So on
//! a primary the call answers "not found" only when the store listed the WAL folder and the
//! file is under no suffix, and otherwise it does not give up: transient store errors are
//! retried with backoff and anything else (a corrupt or conflicting object, a missing key)
//! is retried every [`HELD_RETRY`] with an ERROR line saying what to fix, until it succeeds
//! or the caller goes away (Postgres stopped). On a replica an error is harmless (Postgres
//! tries streaming next) and is returned after [`REPLICA_PATIENCE`]. A corrupt object is
//! never written to the destination.

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

pub struct WalService {
    data_directory: PathBuf,
    /// This pod's name (`POD_NAME`), to tell a primary from a replica.
    pod_name: Option<String>,
    /// Lives as long as the sidecar, so that read-ahead uploads started by one call serve
    /// the next ones; rebuilt when the parameters change.
    archiver: tokio::sync::Mutex<Option<WalArchiver>>,
}

impl WalService {
    pub fn new(data_directory: PathBuf, pod_name: Option<String>) -> WalService {
        WalService { data_directory, pod_name, archiver: tokio::sync::Mutex::new(None) }
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
        if request.check_empty_wal_archive == Some(true) {
            require_empty_wal_archive(archiver.repository()).await?;
        }
        let archived = archiver.archive(&name, &path).await.map_err(|e| status::archive(&name, &e))?;
        if archived.already_present {
            log(&format!("{name} was already archived with identical content at {}", archived.location));
        }
        Ok(Response::new(WalArchiveResult {}))
    }

    async fn restore(&self, request: Request<WalRestoreRequest>) -> Result<Response<WalRestoreResult>, Status> {
        let request = request.into_inner();
        let cluster = Cluster::decode(&request.cluster_definition)?;
        let config = PluginConfig::from_parameters(cluster.restore_parameters()?, &self.data_directory)?;
        let name = request.source_wal_name.as_str();
        naming::classify(name).map_err(|e| Status::invalid_argument(format!("source_wal_name \"{name}\": {e}")))?;
        let (_, destination) = self.file_in_pg_wal("destination_file_name", &request.destination_file_name)?;
        let rewind = request.mode() == Mode::Rewind;
        let primary = cluster.is_primary(self.pod_name.as_deref());
        let repo = config.open().await?;
        let options = FetchOptions {
            spool: destination.with_file_name("pgops-prefetch"),
            // pg_rewind asks for exactly the files it needs: nothing ahead.
            prefetch: if rewind { 0 } else { config.wal_max_parallel },
            patience: Patience::new(if primary { PRIMARY_ROUND } else { REPLICA_PATIENCE }),
        };
        let mut on_retry = |error: &FetchError, wait: Duration| {
            log(&format!("WARNING: restoring {name}: {error}; trying again in {} ms", wait.as_millis()))
        };
        loop {
            match fetch_wal_prefetching(&repo, name, &destination, &options, &mut on_retry).await {
                Ok(Fetched::Written { .. }) => return Ok(Response::new(WalRestoreResult {})),
                Ok(Fetched::NotFound) => {
                    return Err(Status::not_found(format!(
                        "{name} is not in the repository {}",
                        repo.location("wals/")
                    )))
                }
                Err(error) if !primary => return Err(status::fetch(name, &error)),
                Err(error) => {
                    // Any error would end this server's recovery here: hold the call.
                    log(&format!(
                        "ERROR: restoring {name}: {error}. Recovery waits for it (an error would end recovery short and promote); trying again in {} s",
                        HELD_RETRY.as_secs()
                    ));
                    tokio::time::sleep(HELD_RETRY).await;
                }
            }
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
