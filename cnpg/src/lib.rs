//! pgops as a CloudNativePG plugin (CNPG-I): a thin gRPC surface over the pgops core.
//! Requests come in as CNPG sends them, the core archives and fetches WAL exactly as the
//! extension and the CLI do, and every core error leaves as one gRPC status
//! ([`status`]), whose message names the parameter or object and says what to do.
//!
//! CNPG's instance manager dials `unix://<plugin path>/<plugin name>` without TLS and, on
//! each new connection, calls Identity's GetPluginMetadata and GetPluginCapabilities, then
//! GetCapabilities of every service advertised, then Probe
//! (cloudnative-pg `internal/cnpi/plugin/connection/connection.go`); the socket's file
//! name, the metadata name and the Cluster's `spec.plugins[].name` must be the same
//! string, [`PLUGIN_NAME`].

pub mod backup;
pub mod cluster;
pub mod config;
pub mod identity;
pub mod instance;
pub mod restore_job;
pub mod status;
pub mod wal;

/// The plugin's name: the socket's file name, GetPluginMetadata's `name`, and what a
/// Cluster writes in `spec.plugins[].name`.
pub const PLUGIN_NAME: &str = "pgops.io";

/// The generated CNPG-I messages and services (`proto/`, same packages as cnpg-i v0.6).
pub mod proto {
    pub mod identity {
        tonic::include_proto!("cnpgi.identity.v1");
    }
    /// Also holds RestoreJobHooks: upstream declares it in package `cnpgi.wal.v1`.
    pub mod wal {
        tonic::include_proto!("cnpgi.wal.v1");
    }
    pub mod backup {
        tonic::include_proto!("cnpgi.backup.v1");
    }
}
