//! Stands in for CNPG's instance manager in the end-to-end tests: `cnpg-manager
//! wal-archive %p` as `archive_command` and `cnpg-manager wal-restore %f %p` as
//! `restore_command`, and `cnpg-manager backup NAME` as CNPG's Backup with `method: plugin`
//! (it prints the BackupResult as JSON) and `cnpg-manager restore` as the recovery Job's
//! `manager instance restore` (it prints the restore_config), calling the plugin over its unix socket the way CNPG does
//! (cloudnative-pg `internal/cnpi/plugin/connection/connection.go`, `client/wal.go`,
//! `internal/cmd/manager/walarchive`, `walrestore`): a fresh connection per call;
//! GetPluginMetadata, GetPluginCapabilities, the WAL service's GetCapabilities, Probe; then
//! Archive or Restore with the Cluster as JSON and absolute paths. Exit status as CNPG's:
//! 0 done, 1 for any error (the plugin's status is printed).
//!
//! Environment: `PGOPS_CNPG_CLUSTER` (a file holding the Cluster as JSON), `PGDATA`,
//! `PLUGIN_SOCKET_DIR` (CNPG's name for it; default `/plugins`), and `PGOPS_CNPG_REWIND`
//! set for `wal-restore --rewind`'s mode.

use hyper_util::rt::TokioIo;
use pgops_cnpg::proto::backup::backup_capability::rpc::Type as BackupRpcType;
use pgops_cnpg::proto::backup::backup_capability::Type as BackupCapabilityType;
use pgops_cnpg::proto::backup::backup_client::BackupClient;
use pgops_cnpg::proto::backup::{BackupCapabilitiesRequest, BackupRequest, BackupResult};
use pgops_cnpg::proto::identity::identity_client::IdentityClient;
use pgops_cnpg::proto::identity::plugin_capability::service::Type as ServiceType;
use pgops_cnpg::proto::identity::plugin_capability::Type as CapabilityType;
use pgops_cnpg::proto::identity::{GetPluginCapabilitiesRequest, GetPluginMetadataRequest, ProbeRequest};
use pgops_cnpg::proto::wal::restore_job_hooks_capability::Kind;
use pgops_cnpg::proto::wal::restore_job_hooks_client::RestoreJobHooksClient;
use pgops_cnpg::proto::wal::wal_capability::rpc::Type as RpcType;
use pgops_cnpg::proto::wal::wal_capability::Type as WalCapabilityType;
use pgops_cnpg::proto::wal::wal_client::WalClient;
use pgops_cnpg::proto::wal::wal_restore_request::Mode;
use pgops_cnpg::proto::wal::{
    RestoreJobHooksCapabilitiesRequest, RestoreRequest, WalArchiveRequest, WalCapabilitiesRequest, WalRestoreRequest,
};
use pgops_cnpg::PLUGIN_NAME;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tonic::transport::{Channel, Endpoint};

/// CNPG's `BuildWALPath`: a relative path is taken from PGDATA.
fn build_wal_path(pgdata: &Path, path: &str) -> String {
    if Path::new(path).is_absolute() {
        path.to_string()
    } else {
        pgdata.join(path).display().to_string()
    }
}

async fn connect(socket: PathBuf) -> Result<Channel, String> {
    Endpoint::try_from("http://[::]:50051")
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| format!("could not connect: {e}"))
}

/// What the plugin offers, as CNPG learns it.
struct Offered {
    wal: Vec<RpcType>,
    backup: bool,
    restore_job: bool,
}

/// The calls CNPG makes on every new connection, with its checks: the services'
/// GetCapabilities in CNPG's order (WAL before Backup), Probe last.
async fn load_plugin(channel: &Channel) -> Result<Offered, String> {
    let mut identity = IdentityClient::new(channel.clone());
    let metadata = identity.get_plugin_metadata(GetPluginMetadataRequest {}).await.map_err(|e| e.to_string())?;
    if metadata.get_ref().name != PLUGIN_NAME {
        return Err(format!("the socket's plugin calls itself {:?}", metadata.get_ref().name));
    }
    let capabilities =
        identity.get_plugin_capabilities(GetPluginCapabilitiesRequest {}).await.map_err(|e| e.to_string())?;
    let services: Vec<i32> = capabilities
        .into_inner()
        .capabilities
        .into_iter()
        .filter_map(|c| c.r#type.map(|CapabilityType::Service(service)| service.r#type))
        .collect();
    let mut offered = Offered { wal: vec![], backup: false, restore_job: false };
    if services.contains(&(ServiceType::WalService as i32)) {
        let wal = WalClient::new(channel.clone())
            .get_capabilities(WalCapabilitiesRequest {})
            .await
            .map_err(|e| e.to_string())?;
        offered.wal = wal
            .into_inner()
            .capabilities
            .into_iter()
            .filter_map(|c| c.r#type.and_then(|WalCapabilityType::Rpc(rpc)| RpcType::try_from(rpc.r#type).ok()))
            .collect();
    }
    if services.contains(&(ServiceType::BackupService as i32)) {
        let backup = BackupClient::new(channel.clone())
            .get_capabilities(BackupCapabilitiesRequest {})
            .await
            .map_err(|e| e.to_string())?;
        offered.backup = backup.into_inner().capabilities.iter().any(
            |c| matches!(c.r#type, Some(BackupCapabilityType::Rpc(rpc)) if rpc.r#type == BackupRpcType::Backup as i32),
        );
    }
    if services.contains(&(ServiceType::RestoreJob as i32)) {
        let hooks = RestoreJobHooksClient::new(channel.clone())
            .get_capabilities(RestoreJobHooksCapabilitiesRequest {})
            .await
            .map_err(|e| e.to_string())?;
        offered.restore_job = hooks.into_inner().capabilities.iter().any(|c| c.kind == Kind::Restore as i32);
    }
    identity.probe(ProbeRequest {}).await.map_err(|e| e.to_string())?;
    Ok(offered)
}

/// CNPG's IsEmptyWalArchiveCheckEnabled: the Cluster does not skip it by annotation.
fn empty_wal_archive_check_enabled(cluster: &serde_json::Value) -> bool {
    cluster["metadata"]["annotations"]["cnpg.io/skipEmptyWalArchiveCheck"] != "enabled"
}

/// CNPG's shouldCheckEmptyWalArchive: enabled, and PGDATA still holds the first-archive
/// marker.
fn check_empty_wal_archive(cluster: &serde_json::Value, pgdata: &Path) -> bool {
    empty_wal_archive_check_enabled(cluster) && pgdata.join(".check-empty-wal-archive").exists()
}

async fn run(args: &[String]) -> Result<(), String> {
    let pgdata = PathBuf::from(std::env::var("PGDATA").map_err(|_| "PGDATA is not set")?);
    let cluster_file = std::env::var("PGOPS_CNPG_CLUSTER").map_err(|_| "PGOPS_CNPG_CLUSTER is not set")?;
    let definition = std::fs::read(&cluster_file).map_err(|e| format!("{cluster_file}: {e}"))?;
    let cluster: serde_json::Value = serde_json::from_slice(&definition).map_err(|e| e.to_string())?;
    let socket_dir = std::env::var("PLUGIN_SOCKET_DIR").unwrap_or_else(|_| "/plugins".into());
    let channel = connect(Path::new(&socket_dir).join(PLUGIN_NAME)).await?;
    let offered = load_plugin(&channel).await?;
    // CNPG's restore_command carries its log destination before %f %p.
    let args: Vec<String> = match args {
        [command, flag, _, rest @ ..] if command == "wal-restore" && flag == "--log-destination" => {
            std::iter::once(command.clone()).chain(rest.iter().cloned()).collect()
        }
        _ => args.to_vec(),
    };
    let status = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
    let mut wal = WalClient::new(channel.clone());
    match args.as_slice() {
        [command] if command == "restore" && offered.restore_job => {
            let check = Some(empty_wal_archive_check_enabled(&cluster));
            let request = RestoreRequest { cluster_definition: definition, check_empty_wal_archive: check };
            let answer = RestoreJobHooksClient::new(channel).restore(request).await.map_err(status)?.into_inner();
            print!("{}", answer.restore_config);
            Ok(())
        }
        [command, name] if command == "backup" && offered.backup => {
            let request = BackupRequest {
                cluster_definition: definition,
                backup_definition: serde_json::to_vec(&serde_json::json!({
                    "apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup",
                    "metadata": {"name": name},
                    "spec": {"method": "plugin", "pluginConfiguration": {"name": PLUGIN_NAME}}
                }))
                .expect("JSON"),
                parameters: Default::default(),
            };
            let result = BackupClient::new(channel).backup(request).await.map_err(status)?.into_inner();
            println!("{}", backup_result_json(&result));
            Ok(())
        }
        [command, path] if command == "wal-archive" && offered.wal.contains(&RpcType::ArchiveWal) => {
            let request = WalArchiveRequest {
                cluster_definition: definition,
                source_file_name: build_wal_path(&pgdata, path),
                parameters: Default::default(),
                check_empty_wal_archive: Some(check_empty_wal_archive(&cluster, &pgdata)),
            };
            wal.archive(request).await.map(drop).map_err(status)
        }
        [command, name, destination] if command == "wal-restore" && offered.wal.contains(&RpcType::RestoreWal) => {
            let mode = if std::env::var_os("PGOPS_CNPG_REWIND").is_some() { Mode::Rewind } else { Mode::Recovery };
            let request = WalRestoreRequest {
                cluster_definition: definition,
                source_wal_name: name.clone(),
                destination_file_name: build_wal_path(&pgdata, destination),
                parameters: Default::default(),
                mode: mode as i32,
            };
            wal.restore(request).await.map(drop).map_err(status)
        }
        _ => Err(format!(
            "usage: cnpg-manager wal-archive PATH | wal-restore NAME PATH | backup NAME | restore (got {args:?}; the plugin offers WAL {:?}, backup {}, restore {})",
            offered.wal, offered.backup, offered.restore_job
        )),
    }
}

/// The BackupResult as CNPG copies it into the Backup's status, for the test to read.
fn backup_result_json(result: &BackupResult) -> serde_json::Value {
    serde_json::json!({
        "backupId": result.backup_id,
        "backupName": result.backup_name,
        "startedAt": result.started_at,
        "stoppedAt": result.stopped_at,
        "beginWal": result.begin_wal,
        "endWal": result.end_wal,
        "beginLSN": result.begin_lsn,
        "endLSN": result.end_lsn,
        "backupLabelFile": String::from_utf8_lossy(&result.backup_label_file),
        "tablespaceMapFile": String::from_utf8_lossy(&result.tablespace_map_file),
        "instanceID": result.instance_id,
        "online": result.online,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cnpg-manager {}: {e}", args.join(" "));
            ExitCode::from(1)
        }
    }
}
