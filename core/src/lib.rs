//! The Postgres-free core of pgops: object stores (S3 and local directory), compression,
//! Barman-Cloud-compatible object naming, the repository ownership guard and the WAL
//! archiver. The extension and the CLI are thin layers over this crate.

pub mod archive;
pub mod backup;
pub mod check;
pub mod control_file;
pub mod credentials;
pub mod error;
pub mod naming;
pub mod ownership;
pub mod pipeline;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod retry;
pub mod roles;
pub mod schedule;
pub mod setting;
pub mod signals;
pub mod store;
pub mod timeline;
pub mod verify;
pub mod wal_fetch;

pub use setting::InvalidSetting;
