//! The cluster's identity read from its data directory (`global/pg_control`, `PG_VERSION`)
//! without a server connection: what a process beside Postgres (the CloudNativePG sidecar)
//! needs before it may write to a repository.
//!
//! `ControlFileData` (src/include/catalog/pg_control.h) starts with the system identifier;
//! the WAL segment size sits after fields whose layout differs between majors
//! (`CheckPoint` grew in some). It is found by its anchor instead: `floatFormat`, the
//! double 1234567.0 Postgres stores to detect an incompatible float format, is followed by
//! `blcksz`, `relseg_size`, `xlog_blcksz` and `xlog_seg_size`, in every major since 8.4.

use crate::ownership::ClusterIdentity;
use std::path::{Path, PathBuf};

const FLOAT_FORMAT: f64 = 1234567.0;

#[derive(Debug)]
pub struct ControlFileError {
    pub path: PathBuf,
    pub detail: String,
}

impl std::fmt::Display for ControlFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "could not read the cluster's identity from {}: {}", self.path.display(), self.detail)
    }
}

impl std::error::Error for ControlFileError {}

/// The identity of the cluster whose data directory is `data_directory`.
pub fn cluster_identity(data_directory: &Path) -> Result<ClusterIdentity, ControlFileError> {
    let control = data_directory.join("global/pg_control");
    let bytes =
        std::fs::read(&control).map_err(|e| ControlFileError { path: control.clone(), detail: e.to_string() })?;
    let (system_identifier, wal_segment_size) =
        parse(&bytes).map_err(|damage| ControlFileError { path: control, detail: damage.to_string() })?;
    let version_file = data_directory.join("PG_VERSION");
    let version = std::fs::read_to_string(&version_file)
        .map_err(|e| ControlFileError { path: version_file.clone(), detail: e.to_string() })?;
    let major: u32 = version.trim().parse().map_err(|_| ControlFileError {
        path: version_file,
        detail: format!("\"{}\" is not a PostgreSQL major version", version.trim()),
    })?;
    Ok(ClusterIdentity { system_identifier, pg_version_num: major * 10000, wal_segment_size })
}

/// Why a file's content is no `pg_control` pgops can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Damage {
    #[error("the file is too short or zeroed")]
    TooShortOrZeroed,
    #[error("no float-format marker: this is not a pg_control file of this architecture")]
    NoFloatFormat,
    #[error("WAL segment size {0} is not a power of two between 1 MB and 1 GB")]
    SegmentSize(u32),
}

/// The system identifier and WAL segment size in a `pg_control` file's content.
fn parse(bytes: &[u8]) -> Result<(u64, u32), Damage> {
    let u64_at = |at: usize| bytes.get(at..at + 8).map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")));
    let u32_at = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")));
    let system_identifier = u64_at(0).filter(|id| *id != 0).ok_or(Damage::TooShortOrZeroed)?;
    let anchor = (8..bytes.len().saturating_sub(24))
        .step_by(8)
        .find(|&at| u64_at(at).map(f64::from_bits) == Some(FLOAT_FORMAT))
        .ok_or(Damage::NoFloatFormat)?;
    let segment_size = u32_at(anchor + 20).expect("bounded by the search above");
    if !segment_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&segment_size) {
        return Err(Damage::SegmentSize(segment_size));
    }
    Ok((system_identifier, segment_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control file as Postgres lays it out around the fields read here.
    fn control_file(system_identifier: u64, segment_size: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 8192];
        bytes[..8].copy_from_slice(&system_identifier.to_ne_bytes());
        let anchor = 256;
        bytes[anchor..anchor + 8].copy_from_slice(&FLOAT_FORMAT.to_bits().to_ne_bytes());
        for (i, value) in [8192u32, 131072, 8192, segment_size].into_iter().enumerate() {
            bytes[anchor + 8 + 4 * i..anchor + 12 + 4 * i].copy_from_slice(&value.to_ne_bytes());
        }
        bytes
    }

    #[test]
    fn reads_the_system_identifier_and_segment_size() {
        assert_eq!(
            parse(&control_file(7_300_000_000_000_000_001, 16 << 20)),
            Ok((7_300_000_000_000_000_001, 16 << 20))
        );
    }

    #[test]
    fn refuses_what_is_not_a_control_file() {
        assert!(parse(&[0u8; 8192]).unwrap_err().to_string().contains("zeroed"));
        let mut no_anchor = control_file(5, 16 << 20);
        no_anchor[256..264].fill(0);
        assert!(parse(&no_anchor).unwrap_err().to_string().contains("float-format"));
        assert!(parse(&control_file(5, 12345)).unwrap_err().to_string().contains("power of two"));
    }

    #[test]
    fn reads_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("global")).unwrap();
        std::fs::write(dir.path().join("global/pg_control"), control_file(42, 1 << 24)).unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), "17\n").unwrap();
        let identity = cluster_identity(dir.path()).unwrap();
        assert_eq!(
            identity,
            ClusterIdentity { system_identifier: 42, pg_version_num: 170000, wal_segment_size: 1 << 24 }
        );
        let missing = cluster_identity(&dir.path().join("nothing")).unwrap_err();
        assert!(missing.to_string().contains("nothing/global/pg_control"), "{missing}");
    }
}
