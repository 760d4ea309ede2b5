//! `pgops cnpg instance`, the sidecar of each CNPG instance pod, serving Identity, WAL,
//! Backup and the gRPC health service, and `pgops cnpg restore`, the sidecar of the
//! recovery Job, serving RestoreJobHooks instead of Backup, on `<plugin path>/pgops.io`, where CNPG's instance manager
//! finds it (cloudnative-pg `internal/cnpi/plugin/repository/setup.go`: every socket in
//! `/plugins` is a plugin named after its file).

use crate::backup::BackupService;
use crate::identity::PluginIdentity;
use crate::proto::backup::backup_server::BackupServer;
use crate::proto::identity::identity_server::IdentityServer;
use crate::proto::identity::plugin_capability::service::Type as ServiceType;
use crate::proto::wal::restore_job_hooks_server::RestoreJobHooksServer;
use crate::proto::wal::wal_server::WalServer;
use crate::restore_job::RestoreJobService;
use crate::wal::WalService;
use crate::PLUGIN_NAME;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// Which sidecar this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Of an instance pod: WAL archive and restore, backups.
    Instance,
    /// Of the recovery Job: the restore itself (RestoreJobHooks), then WAL restore.
    Restore,
}

/// How long calls in flight may go on once the sidecar is asked to stop. Kubernetes stops
/// a native sidecar after the postgres container has exited, so nothing waits on them.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

pub struct InstanceOptions {
    pub role: Role,
    /// The directory shared with the postgres container (`/plugins`).
    pub plugin_path: PathBuf,
    /// The data directory (`PGDATA`) on the volume shared with the postgres container.
    pub data_directory: PathBuf,
    /// This pod's name (`POD_NAME`), reported with its backups.
    pub pod_name: Option<String>,
    /// Where the recovery Job puts pg_wal when the Cluster has `walStorage`
    /// (`/var/lib/postgresql/wal/pg_wal` in CNPG's pods).
    pub wal_directory: PathBuf,
}

#[derive(Debug)]
pub struct ServeError(pub String);

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Binds `<plugin path>/pgops.io`, replacing a socket a previous run left behind (a live
/// socket, or a file of another kind there, is refused, never removed).
pub fn bind(plugin_path: &Path) -> Result<(UnixListener, PathBuf), ServeError> {
    let socket = plugin_path.join(PLUGIN_NAME);
    let failed = |what: &str, e: std::io::Error| ServeError(format!("could not {what} {}: {e}", socket.display()));
    std::fs::create_dir_all(plugin_path).map_err(|e| failed("create the directory of", e))?;
    match std::fs::symlink_metadata(&socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A socket someone answers on belongs to a running sidecar: never taken over.
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Err(ServeError(format!(
                    "{} is served by another process (a sidecar already running?): stop it, or give another --plugin-path",
                    socket.display()
                )));
            }
            std::fs::remove_file(&socket).map_err(|e| failed("replace", e))?
        }
        Ok(_) => {
            return Err(ServeError(format!(
                "{} exists and is not a socket: remove it, or give another --plugin-path",
                socket.display()
            )))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(&socket).map_err(|e| failed("listen on", e))?;
    // The instance manager in the postgres container may run as another user of the
    // pod's group.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| failed("set the mode of", e))?;
    Ok((listener, socket))
}

/// Serves until `shutdown` completes.
pub async fn serve(options: InstanceOptions, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let (listener, socket) = bind(&options.plugin_path)?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<IdentityServer<PluginIdentity>>().await;
    health.set_serving::<WalServer<WalService>>().await;
    let wal = WalServer::new(WalService::new(options.data_directory.clone()));
    let router = tonic::transport::Server::builder().add_service(health_service).add_service(wal);
    let router = match options.role {
        Role::Instance => {
            health.set_serving::<BackupServer<BackupService>>().await;
            let identity = PluginIdentity { services: vec![ServiceType::WalService, ServiceType::BackupService] };
            router
                .add_service(IdentityServer::new(identity))
                .add_service(BackupServer::new(BackupService::new(options.data_directory, options.pod_name)))
        }
        Role::Restore => {
            health.set_serving::<RestoreJobHooksServer<RestoreJobService>>().await;
            let identity = PluginIdentity { services: vec![ServiceType::WalService, ServiceType::RestoreJob] };
            router.add_service(IdentityServer::new(identity)).add_service(RestoreJobHooksServer::new(
                RestoreJobService::new(options.data_directory, options.wal_directory),
            ))
        }
    };
    eprintln!("pgops cnpg: serving {PLUGIN_NAME} ({:?}) on {}", options.role, socket.display());
    // Stopping, calls in flight get SHUTDOWN_GRACE to end; a Restore holding out for the
    // store, or a backup, is then cut off (its caller sees the connection close, and the
    // backup stops at its next step).
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
        let _ = stopped.await;
    });
    tokio::pin!(server);
    let served = tokio::select! {
        served = &mut server => served,
        () = shutdown => {
            let _ = stop.send(());
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    eprintln!("pgops cnpg: calls still running after {} s of shutdown were cut off", SHUTDOWN_GRACE.as_secs());
                    Ok(())
                }
            }
        }
    };
    let _ = std::fs::remove_file(&socket);
    served.map_err(|e| ServeError(format!("serving {} failed: {e}", socket.display())))
}
