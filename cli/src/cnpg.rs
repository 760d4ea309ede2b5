//! `pgops cnpg instance|restore`: pgops as a CloudNativePG plugin, the sidecar of an
//! instance pod or of the recovery Job (see the pgops-cnpg crate). Its repository and settings come from the Cluster each
//! request carries, not from the global options.

use pgops_cnpg::instance::{serve, InstanceOptions, Role};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CnpgArgs {
    #[command(subcommand)]
    role: CnpgRole,
}

#[derive(clap::Subcommand)]
enum CnpgRole {
    /// Serve the instance side (Identity, WAL, Backup) on <plugin-path>/pgops.io until SIGTERM.
    ///
    /// Exit status: 0 stopped by a signal; 3 bad usage; 4 could not serve.
    Instance(SidecarArgs),
    /// Serve the recovery Job's side (Identity, RestoreJobHooks, WAL restore) on
    /// <plugin-path>/pgops.io until SIGTERM.
    ///
    /// Exit status: 0 stopped by a signal; 3 bad usage; 4 could not serve.
    Restore(SidecarArgs),
}

#[derive(clap::Args)]
struct SidecarArgs {
    /// The directory CNPG's instance manager looks for plugin sockets in
    #[arg(long, default_value = "/plugins")]
    plugin_path: PathBuf,
    /// The data directory, on the volume shared with the postgres container
    #[arg(long, env = "PGDATA")]
    pgdata: PathBuf,
    /// This pod's name, reported with its backups
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// pg_wal's directory on the WAL volume, used by the recovery Job's restore when the
    /// Cluster has walStorage (CNPG mounts that volume at /var/lib/postgresql/wal)
    #[arg(long, default_value = "/var/lib/postgresql/wal/pg_wal")]
    waldir: PathBuf,
}

/// Completes on SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        }
        // Without signal handlers the process still dies of the signal itself.
        _ => std::future::pending().await,
    }
}

pub fn run(args: CnpgArgs) -> ExitCode {
    let (role, args, command) = match args.role {
        CnpgRole::Instance(args) => (Role::Instance, args, "pgops cnpg instance"),
        CnpgRole::Restore(args) => (Role::Restore, args, "pgops cnpg restore"),
    };
    if !args.pgdata.is_absolute() {
        eprintln!(
            "{command}: PGDATA \"{}\" is not an absolute path\nhint: Set PGDATA to the data directory of the postgres container.",
            args.pgdata.display()
        );
        return ExitCode::from(crate::exit::USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{command}: could not start the I/O runtime: {e}");
            return ExitCode::from(crate::exit::OTHER);
        }
    };
    let options = InstanceOptions {
        role,
        plugin_path: args.plugin_path,
        data_directory: args.pgdata,
        pod_name: args.pod_name,
        wal_directory: args.waldir,
    };
    let served = runtime.block_on(serve(options, stop_signal()));
    // A backup thread cut off at shutdown stops at its next step; do not wait longer.
    runtime.shutdown_timeout(pgops_cnpg::instance::SHUTDOWN_GRACE);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{command}: {e}");
            ExitCode::from(crate::exit::OTHER)
        }
    }
}
