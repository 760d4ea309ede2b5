//! Client-side encryption: the age format (X25519 recipients, ChaCha20-Poly1305 in 64 KiB
//! authenticated chunks), keys from key files only.
//!
//! A key file holds one or more age secret keys (`AGE-SECRET-KEY-1…`, one a line; `#`
//! comments). The first is the current key: new objects are encrypted to it. The others
//! form the key ring that older objects are read with, so rotating is "put the new key
//! first, keep the old ones below it".

use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Names a key without revealing it: the first 8 bytes of the SHA-256 of its public key,
/// in hex. Recorded in each encrypted object's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId([u8; 8]);

impl TryFrom<String> for KeyId {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.to_string()
    }
}

impl KeyId {
    fn of(recipient: &age::x25519::Recipient) -> KeyId {
        let digest = Sha256::digest(recipient.to_string().as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for KeyId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(text).map_err(|_| format!("key id {text:?} is not hex"))?;
        let id: [u8; 8] = bytes.try_into().map_err(|_| format!("key id {text:?} is not 16 hex digits"))?;
        Ok(KeyId(id))
    }
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not read encryption key file {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    #[error("encryption key file {path} is readable by other users (mode {mode:o})")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("encryption key file {path}, line {line}: not an age secret key (AGE-SECRET-KEY-1…)")]
    Malformed { path: PathBuf, line: usize },
    #[error("encryption key file {path} holds no key")]
    Empty { path: PathBuf },
    #[error("could not create encryption key file {path}: {cause}")]
    Create { path: PathBuf, cause: io::Error },
}

impl KeyError {
    pub fn hint(&self) -> &'static str {
        match self {
            KeyError::Read { .. } => "Check the path and that the file is readable by the user running pgops (for the extension, the postgres user).",
            KeyError::Permissions { .. } => "Make the key file readable by its owner only: chmod 600 FILE (0640 is accepted when root owns it).",
            KeyError::Malformed { .. } | KeyError::Empty { .. } => {
                "Create a key file with `pgops keygen FILE`; a key ring lists the current key first and older keys below it."
            }
            KeyError::Create { .. } => "Choose a path that does not exist yet, in a directory you can write.",
        }
    }
}

/// The keys objects are encrypted to and decrypted with.
pub struct KeyRing {
    /// In file order; the first one encrypts new objects.
    keys: Vec<(KeyId, age::x25519::Identity)>,
    source: PathBuf,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key ids only: the secret keys never reach a log or a message.
        let ids: Vec<String> = self.keys.iter().map(|(id, _)| id.to_string()).collect();
        f.debug_struct("KeyRing").field("source", &self.source).field("key_ids", &ids).finish()
    }
}

impl PartialEq for KeyRing {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.key_ids().eq(other.key_ids())
    }
}

impl Eq for KeyRing {}

impl KeyRing {
    /// Reads a key file. A file that other users can read is refused, as libpq refuses
    /// private keys: mode 0600 or less, or 0640 or less when root owns it (a secret mounted
    /// for a group). The ring remembers the file's absolute path, symbolic links kept (a
    /// mounted secret's links are swapped when it is updated).
    pub fn load(path: &Path) -> Result<KeyRing, KeyError> {
        use std::os::unix::fs::MetadataExt;
        let read_error = |cause| KeyError::Read { path: path.to_path_buf(), cause };
        let path = &std::path::absolute(path).map_err(read_error)?;
        let file = std::fs::File::open(path).map_err(read_error)?;
        let metadata = file.metadata().map_err(read_error)?;
        let mode = metadata.mode() & 0o777;
        let others_may_read = if metadata.uid() == 0 { mode & 0o037 != 0 } else { mode & 0o077 != 0 };
        if others_may_read {
            return Err(KeyError::Permissions { path: path.to_path_buf(), mode });
        }
        let mut text = String::new();
        // A key file is a few lines: anything much larger is not one.
        file.take(1 << 20).read_to_string(&mut text).map_err(read_error)?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<KeyRing, KeyError> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let identity = age::x25519::Identity::from_str(line)
                .map_err(|_| KeyError::Malformed { path: path.to_path_buf(), line: index + 1 })?;
            keys.push((KeyId::of(&identity.to_public()), identity));
        }
        if keys.is_empty() {
            return Err(KeyError::Empty { path: path.to_path_buf() });
        }
        Ok(KeyRing { keys, source: path.to_path_buf() })
    }

    /// Writes a new key file at `path` (mode 0600), refusing to replace any file there.
    pub fn create_file(path: &Path) -> Result<(KeyId, String), KeyError> {
        use age::secrecy::ExposeSecret;
        use std::os::unix::fs::OpenOptionsExt;
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        let id = KeyId::of(&recipient);
        let text = format!(
            "# pgops encryption key {id}, created {}\n# public key: {recipient}\n{}\n",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
            identity.to_string().expose_secret()
        );
        let create_error = |cause| KeyError::Create { path: path.to_path_buf(), cause };
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(create_error)?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(create_error)?;
        Ok((id, recipient.to_string()))
    }

    /// The key new objects are encrypted to.
    pub fn current(&self) -> KeyId {
        self.keys[0].0
    }

    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|(id, _)| *id)
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    /// An age stream over `inner`, encrypted to the current key.
    pub(super) fn encrypt<W: Write>(&self, inner: W) -> io::Result<age::stream::StreamWriter<W>> {
        let recipient = self.keys[0].1.to_public();
        let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(io::Error::other)?;
        encryptor.wrap_output(inner)
    }

    /// The plaintext of the age stream `inner`, encrypted to key `id`; `None` when the ring
    /// does not hold that key.
    pub(super) fn decrypt<'a, R: Read + 'a>(
        &self,
        id: KeyId,
        inner: R,
    ) -> Option<Result<age::stream::StreamReader<R>, age::DecryptError>> {
        let (_, identity) = self.keys.iter().find(|(key_id, _)| *key_id == id)?;
        Some(
            age::Decryptor::new(inner)
                .and_then(|decryptor| decryptor.decrypt(std::iter::once(identity as &dyn age::Identity))),
        )
    }
}

/// A new key file `name` in `dir`, loaded: for tests that need a key ring.
#[cfg(test)]
pub(crate) fn test_ring(dir: &Path, name: &str) -> KeyRing {
    let path = dir.join(name);
    KeyRing::create_file(&path).unwrap();
    KeyRing::load(&path).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_created_private_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let (id, recipient) = KeyRing::create_file(&path).unwrap();
        assert!(recipient.starts_with("age1"), "{recipient}");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let ring = KeyRing::load(&path).unwrap();
        assert_eq!(ring.current(), id);
        assert!(!format!("{ring:?}").contains("AGE-SECRET"), "{ring:?}");
        let before = std::fs::read(&path).unwrap();
        assert!(matches!(KeyRing::create_file(&path), Err(KeyError::Create { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), before, "an existing key file must survive keygen");
    }

    #[test]
    fn key_files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        KeyRing::create_file(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeyRing::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Permissions { mode: 0o644, .. }), "{err}");
        assert!(err.hint().contains("chmod 600"));
        // Group-readable is refused unless root owns the file (a secret mounted for a group).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let root_owned = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&path).unwrap()) == 0;
        assert_eq!(KeyRing::load(&path).is_ok(), root_owned);
    }

    #[test]
    fn a_ring_lists_the_current_key_first() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        let (old_id, _) = KeyRing::create_file(&old).unwrap();
        let (new_id, _) = KeyRing::create_file(&new).unwrap();
        let text = std::fs::read_to_string(&new).unwrap() + &std::fs::read_to_string(&old).unwrap();
        let ring = KeyRing::parse(&text, Path::new("ring")).unwrap();
        assert_eq!(ring.current(), new_id);
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), vec![new_id, old_id]);
        assert!(matches!(KeyRing::parse("# nothing\n", Path::new("k")), Err(KeyError::Empty { .. })));
        assert!(matches!(KeyRing::parse("age1notasecret\n", Path::new("k")), Err(KeyError::Malformed { line: 1, .. })));
        assert_eq!(new_id.to_string().parse::<KeyId>().unwrap(), new_id);
    }
}
