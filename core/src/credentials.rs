//! S3 credentials from a file outside the data directory (`pgops.s3_credentials_file`, a
//! mounted Kubernetes secret): what is in PGDATA (postgresql.auto.conf written by ALTER
//! SYSTEM, postgresql.conf) is in every base backup.
//!
//! The format is the AWS shared-credentials file's: `key = value` lines, `#`/`;` comments,
//! optionally under a `[default]` section (other sections are ignored):
//!
//! ```text
//! [default]
//! aws_access_key_id = AKIA…
//! aws_secret_access_key = …
//! ```
//!
//! Errors name the file, the line and the key, never a value.

use crate::InvalidSetting;
use std::path::{Component, Path, PathBuf};

/// An access key id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

const FORMAT_HINT: &str =
    "Write two lines, aws_access_key_id = … and aws_secret_access_key = … (optionally under [default]), as in an AWS credentials file.";

/// The credentials in `text`, the content of credentials file `path`.
pub fn parse(text: &str, path: &Path) -> Result<S3Credentials, InvalidSetting> {
    let (mut id, mut secret) = (None, None);
    let mut in_default = true;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            in_default = section.trim() == "default";
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(InvalidSetting::new(
                format!("credentials file \"{}\", line {}: not a key = value line", path.display(), number + 1),
                FORMAT_HINT,
            ));
        };
        if !in_default {
            continue;
        }
        let value = value.trim().to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = Some(value),
            "aws_secret_access_key" => secret = Some(value),
            _ => {}
        }
    }
    let missing = |key: &str| {
        InvalidSetting::new(
            format!("credentials file \"{}\" has no {key} (or it is empty)", path.display()),
            FORMAT_HINT,
        )
    };
    Ok(S3Credentials {
        access_key_id: id.filter(|v| !v.is_empty()).ok_or_else(|| missing("aws_access_key_id"))?,
        secret_access_key: secret.filter(|v| !v.is_empty()).ok_or_else(|| missing("aws_secret_access_key"))?,
    })
}

/// `path` with `.` and `..` resolved without touching the file system.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    normal
}

/// Checks the credentials file setting: an absolute path outside `data_directory` (when
/// known), symbolic links resolved where the path exists.
pub fn validate_file_path(path: &str, data_directory: Option<&Path>) -> Result<(), InvalidSetting> {
    validate_secret_path("pgops.s3_credentials_file", path, data_directory)
}

/// Checks the path of a file holding a secret, given in `setting`: absolute, and outside
/// the data directory (base backups copy the data directory).
pub fn validate_secret_path(setting: &str, path: &str, data_directory: Option<&Path>) -> Result<(), InvalidSetting> {
    if !path.starts_with('/') {
        return Err(InvalidSetting::new(
            format!("{setting} must be an absolute path, not \"{path}\""),
            "Give the full path of the mounted secret, such as /run/secrets/pgops/credentials or /run/secrets/pgops/encryption.key.",
        ));
    }
    let Some(data_directory) = data_directory else { return Ok(()) };
    let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| lexically_normal(p));
    if resolve(Path::new(path)).starts_with(resolve(data_directory)) {
        return Err(InvalidSetting::new(
            format!(
                "{setting} \"{path}\" is inside the data directory \"{}\": it would be copied into every base backup",
                data_directory.display()
            ),
            "Keep secrets outside the data directory, such as a Kubernetes secret mounted under /run/secrets/pgops/.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_aws_credentials_format_and_never_shows_the_secret() {
        let path = Path::new("/run/secrets/pgops/credentials");
        let text = "# rotated daily\n[default]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key=wJalr/K7MDENG\n\n[other]\naws_secret_access_key = nope\n";
        let credentials = parse(text, path).unwrap();
        assert_eq!(credentials.access_key_id, "AKIDEXAMPLE");
        assert_eq!(credentials.secret_access_key, "wJalr/K7MDENG");
        assert!(!format!("{credentials:?}").contains("wJalr"));
        // No section at all is the default one.
        assert!(parse("aws_access_key_id=a\naws_secret_access_key=b", path).is_ok());

        let missing = parse("aws_access_key_id = a\naws_secret_access_key =\n", path).unwrap_err();
        assert!(missing.message.contains("aws_secret_access_key"), "{missing:?}");
        let garbled = parse("aws_access_key_id = a\nwJalr/K7MDENG\n", path).unwrap_err();
        assert!(garbled.message.contains("line 2") && !garbled.message.contains("wJalr"), "{garbled:?}");
    }

    #[test]
    fn a_file_inside_the_data_directory_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let inside = data.path().join("credentials");
        let refused = validate_file_path(inside.to_str().unwrap(), Some(data.path())).unwrap_err();
        assert!(refused.message.contains("inside the data directory"), "{refused:?}");
        let sneaky = format!("/tmp/../{}/./credentials", data.path().display());
        assert!(validate_file_path(&sneaky, Some(data.path())).is_err());
        assert!(validate_file_path("/run/secrets/pgops/credentials", Some(data.path())).is_ok());
        assert!(validate_file_path("credentials", None).unwrap_err().message.contains("absolute"));
    }
}
