//! Repository URLs: `s3://bucket/prefix` or `file:///absolute/path`.

use crate::InvalidSetting;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryUrl {
    /// An S3 bucket and a key prefix without leading or trailing slashes (may be empty).
    S3 { bucket: String, prefix: String },
    /// A local directory, absolute.
    Local { root: PathBuf },
}

const HINT: &str = "Use s3://bucket/prefix (for example s3://cnpg-backups/cnpg-main) or file:///absolute/path.";

impl FromStr for RepositoryUrl {
    type Err = InvalidSetting;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| InvalidSetting::new(format!("invalid repository \"{value}\": {why}"), HINT);
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket name"));
            }
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
                && bucket.as_bytes()[0].is_ascii_alphanumeric();
            if !valid_bucket {
                return Err(invalid(
                    "bucket names are 3 to 63 characters: lowercase letters, digits, dots and hyphens",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|part| part.is_empty() || part == "." || part == "..") && !prefix.is_empty() {
                return Err(invalid("the prefix has an empty, \".\" or \"..\" path segment"));
            }
            Ok(RepositoryUrl::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() })
        } else if let Some(path) = value.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid("the path after file:// must be absolute (file:///var/backups/pg)"));
            }
            if path.split('/').any(|part| part == "..") {
                return Err(invalid("the path must not contain \"..\""));
            }
            Ok(RepositoryUrl::Local { root: PathBuf::from(path) })
        } else {
            let scheme = value.split_once("://").map(|(s, _)| s).unwrap_or(value);
            Err(invalid(&format!("unsupported scheme \"{scheme}\"; pgops supports s3:// and file://")))
        }
    }
}

impl RepositoryUrl {
    /// Barman's server name: the last path component (`s3://bucket/path/<server_name>`).
    pub fn server_name(&self) -> String {
        let path = match self {
            RepositoryUrl::S3 { bucket, prefix } if prefix.is_empty() => bucket.as_str(),
            RepositoryUrl::S3 { prefix, .. } => prefix.as_str(),
            RepositoryUrl::Local { root } => root.to_str().unwrap_or("pgops"),
        };
        path.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("pgops").to_string()
    }
}

impl fmt::Display for RepositoryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepositoryUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RepositoryUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            RepositoryUrl::Local { root } => write!(f, "file://{}", root.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RepositoryUrl, InvalidSetting> {
        s.parse()
    }

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse("s3://cnpg-backups/cnpg-main/").unwrap(),
            RepositoryUrl::S3 { bucket: "cnpg-backups".into(), prefix: "cnpg-main".into() }
        );
        assert_eq!(parse("s3://bkt").unwrap(), RepositoryUrl::S3 { bucket: "bkt".into(), prefix: "".into() });
        assert_eq!(parse("s3://bkt/a/b").unwrap().to_string(), "s3://bkt/a/b");
        assert!(parse("s3://").unwrap_err().message.contains("no bucket"));
        assert!(parse("s3://Upper/x").unwrap_err().message.contains("bucket names"));
        assert!(parse("s3://bkt/a//b").is_err());
        assert!(parse("s3://bkt/a/../b").is_err());
    }

    #[test]
    fn server_names() {
        let name = |url: &str| url.parse::<RepositoryUrl>().unwrap().server_name();
        assert_eq!(name("s3://cnpg-backups/cnpg-main"), "cnpg-main");
        assert_eq!(name("s3://cnpg-backups/a/b"), "b");
        assert_eq!(name("s3://cnpg-backups"), "cnpg-backups");
        assert_eq!(name("file:///var/backups/main/"), "main");
    }

    #[test]
    fn file_urls() {
        assert_eq!(parse("file:///var/backups").unwrap(), RepositoryUrl::Local { root: "/var/backups".into() });
        assert!(parse("file://relative/path").unwrap_err().message.contains("absolute"));
        assert!(parse("file:///a/../b").is_err());
    }

    #[test]
    fn other_schemes_are_refused_with_a_hint() {
        let err = parse("gs://bucket/x").unwrap_err();
        assert!(err.message.contains("unsupported scheme \"gs\""), "{}", err.message);
        assert!(err.hint.contains("s3://"));
        assert!(parse("/just/a/path").is_err());
    }
}
