//! Validation errors for user-facing settings, shaped for Postgres' ERROR + HINT.

use std::fmt;

/// A setting whose value cannot be used: `message` says what is wrong, `hint` how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    pub message: String,
    pub hint: String,
}

impl InvalidSetting {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { message: message.into(), hint: hint.into() }
    }
}

impl fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (hint: {})", self.message, self.hint)
    }
}

impl std::error::Error for InvalidSetting {}

/// Checks an S3 endpoint URL: http or https, with a host, nothing after the authority
/// (path-style addressing puts the bucket in the path).
pub fn validate_endpoint(endpoint: &str) -> Result<(), InvalidSetting> {
    let hint = "Use a URL such as http://rustfs.rustfs.svc:9000 or https://s3.eu-west-1.amazonaws.com, or leave it empty for AWS S3.";
    let url = url::Url::parse(endpoint)
        .map_err(|e| InvalidSetting::new(format!("invalid S3 endpoint \"{endpoint}\": {e}"), hint))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(InvalidSetting::new(
            format!("invalid S3 endpoint \"{endpoint}\": scheme must be http or https, not \"{}\"", url.scheme()),
            hint,
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(InvalidSetting::new(format!("invalid S3 endpoint \"{endpoint}\": no host"), hint));
    }
    if url.path() != "/" && !url.path().is_empty() || url.query().is_some() {
        return Err(InvalidSetting::new(
            format!("invalid S3 endpoint \"{endpoint}\": must not have a path or query"),
            "Put the bucket and prefix in pgops.repository (s3://bucket/prefix), not in the endpoint.",
        ));
    }
    Ok(())
}

/// Checks an S3 region name (S3-compatible servers usually accept `us-east-1`).
pub fn validate_region(region: &str) -> Result<(), InvalidSetting> {
    if !region.is_empty() && region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Ok(());
    }
    Err(InvalidSetting::new(
        format!("invalid S3 region \"{region}\""),
        "Use a region name such as us-east-1 (S3-compatible servers usually accept us-east-1).",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert!(validate_endpoint("http://127.0.0.1:9000").is_ok());
        assert!(validate_endpoint("https://s3.amazonaws.com/").is_ok());
        assert!(validate_endpoint("ftp://x").unwrap_err().message.contains("scheme"));
        assert!(validate_endpoint("localhost:9000").is_err());
        assert!(validate_endpoint("http://h:9000/bucket").unwrap_err().message.contains("path"));
        assert!(validate_endpoint("not a url").is_err());
    }

    #[test]
    fn regions() {
        assert!(validate_region("eu-west-1").is_ok());
        assert!(validate_region("").unwrap_err().hint.contains("us-east-1"));
        assert!(validate_region("us east").is_err());
    }
}
