//! SCRAM-SHA-256 password secrets, computed the way PostgreSQL computes them
//! (`scram_build_secret` in src/common/scram-common.c), so that pgops can hand Postgres a
//! secret instead of a plaintext password and can tell whether a password matches the
//! secret already stored, without rewriting it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest as _, Md5};
use sha2::{Digest, Sha256};

/// PostgreSQL's defaults (`scram_iterations`, SCRAM_DEFAULT_SALT_LEN).
const ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;
/// The most iterations pgops computes to compare a password with a stored secret. The
/// count comes from the catalog, which a role may set to 2^31 - 1 (`ALTER ROLE … PASSWORD
/// 'SCRAM-SHA-256$2147483647:…'`) to stall whoever compares; a secret above this is treated
/// as different and rewritten (with Postgres' default of 4096).
pub const MAX_COMPARED_ITERATIONS: u32 = 100_000;

/// A new secret for `password`, with a random salt.
pub fn secret(password: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).expect("the operating system's random source works");
    secret_with(password, &salt, ITERATIONS)
}

fn secret_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let (stored_key, server_key) = keys(password, salt, iterations);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

fn keys(password: &str, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    // Postgres normalizes with SASLprep and uses the raw bytes when that fails
    // (prohibited characters), as pg_saslprep's callers do.
    let prepared = stringprep::saslprep(password).map(|p| p.into_owned()).unwrap_or_else(|_| password.to_string());
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, iterations, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    (stored_key, hmac(&salted, b"Server Key"))
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// How a password compares with the secret Postgres stores for a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// The stored SCRAM secret is this password's.
    Same,
    /// The stored secret is this password's MD5 hash: same password, old hashing.
    SameInMd5,
    Different,
}

/// Compares `password` with `stored` (`rolpassword`) of role `role`.
pub fn compare(password: &str, stored: &str, role: &str) -> Comparison {
    if let Some(secret) = parse(stored) {
        if secret.iterations > MAX_COMPARED_ITERATIONS {
            return Comparison::Different;
        }
        return if keys(password, &secret.salt, secret.iterations) == (secret.stored_key, secret.server_key) {
            Comparison::Same
        } else {
            Comparison::Different
        };
    }
    // MD5 secrets are "md5" + hex(md5(password || role name)).
    if stored.len() == 35 && stored.starts_with("md5") {
        let digest = Md5::new().chain_update(password).chain_update(role).finalize();
        if stored[3..].eq_ignore_ascii_case(&hex::encode(digest)) {
            return Comparison::SameInMd5;
        }
    }
    Comparison::Different
}

struct ScramSecret {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
fn parse(stored: &str) -> Option<ScramSecret> {
    let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
    let (iterations_salt, keys) = rest.split_once('$')?;
    let (iterations, salt) = iterations_salt.split_once(':')?;
    let (stored_key, server_key) = keys.split_once(':')?;
    Some(ScramSecret {
        iterations: iterations.parse().ok()?,
        salt: STANDARD.decode(salt).ok()?,
        stored_key: STANDARD.decode(stored_key).ok()?.try_into().ok()?,
        server_key: STANDARD.decode(server_key).ok()?.try_into().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by PostgreSQL 15 itself: `SET password_encryption = 'scram-sha-256';
    /// CREATE ROLE r PASSWORD 'correct horse'; SELECT rolpassword FROM pg_authid`.
    const BY_POSTGRES: &str = "SCRAM-SHA-256$4096:qla5HPyh+7+dI4QPhIVeig==$z10wsIdKNLETowzPL3rxMX91rMdzBNAcAyAnCHzgF1Q=:6y+Eq7QKWilbhdV0UNj6R7HdcROj4FmM7fgRgZBtEsc=";

    #[test]
    fn matches_a_secret_postgres_wrote() {
        assert_eq!(compare("correct horse", BY_POSTGRES, "r"), Comparison::Same);
        assert_eq!(compare("correct horse ", BY_POSTGRES, "r"), Comparison::Different);
        let parsed = parse(BY_POSTGRES).unwrap();
        assert_eq!(secret_with("correct horse", &parsed.salt, parsed.iterations), BY_POSTGRES);
    }

    #[test]
    fn new_secrets_are_salted_and_verify() {
        let (a, b) = (secret("s3cr'et\\"), secret("s3cr'et\\"));
        assert_ne!(a, b, "each secret has its own salt");
        assert_eq!(compare("s3cr'et\\", &a, "app"), Comparison::Same);
        assert_eq!(compare("other", &a, "app"), Comparison::Different);
        assert!(a.starts_with("SCRAM-SHA-256$4096:"));
    }

    #[test]
    fn md5_hashes_are_recognised_for_their_role_only() {
        // md5('secret' || 'app'), as Postgres stores it with password_encryption = md5.
        let md5 = format!("md5{}", hex::encode(Md5::digest(b"secretapp")));
        assert_eq!(compare("secret", &md5, "app"), Comparison::SameInMd5);
        assert_eq!(compare("secret", &md5, "other"), Comparison::Different);
        assert_eq!(compare("wrong", &md5, "app"), Comparison::Different);
    }

    #[test]
    fn a_huge_iteration_count_is_not_computed_but_rewritten() {
        let salt = STANDARD.encode([7u8; SALT_LEN]);
        let zero = STANDARD.encode([0u8; 32]);
        let stalling = format!("SCRAM-SHA-256$2147483647:{salt}${zero}:{zero}");
        let started = std::time::Instant::now();
        assert_eq!(compare("any", &stalling, "r"), Comparison::Different);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
        // At the cap, still compared.
        let at_cap = secret_with("pw", &[1u8; SALT_LEN], MAX_COMPARED_ITERATIONS);
        assert_eq!(compare("pw", &at_cap, "r"), Comparison::Same);
    }

    #[test]
    fn saslprep_applies_like_postgres() {
        // A non-ASCII space maps to a space under SASLprep: both spell the same password.
        let stored = secret("pass word");
        assert_eq!(compare("pass\u{00A0}word", &stored, "r"), Comparison::Same);
    }
}
