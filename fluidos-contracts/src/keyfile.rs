//! The node's key file: a PKCS#8 PEM ed25519 key, created on first start with mode 0600.

use std::fs;
use std::path::{Path, PathBuf};

use crate::private_file::{ReadPrivateError, read_private, write_private};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};

use crate::SecretKey;

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Group or others may read or write the key file.
    #[error(
        "key file {path} has mode {mode:o}: group and others must have no access; fix it with `chmod 600 {path}`"
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file exists but does not hold a PKCS#8 ed25519 key.
    #[error(
        "key file {path} is not a PKCS#8 PEM ed25519 key ({reason}); restore it from a backup or move it away to create a new identity"
    )]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// Reading or writing the file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Loads the key at `path`, or creates one there (mode 0600) if no file exists.
///
/// Returns the key and whether it was created now.
pub fn load_or_create(path: &Path) -> Result<(SecretKey, bool), KeyFileError> {
    match fs::metadata(path) {
        Ok(_) => Ok((load(path)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate();
            store(path, &key)?;
            Ok((key, true))
        }
        Err(source) => Err(KeyFileError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The largest key file read (a PKCS#8 PEM ed25519 key is about 120 bytes).
const MAX_FILE_BYTES: u64 = 4096;

/// Loads an existing key file, refusing one that group or others can access.
pub fn load(path: &Path) -> Result<SecretKey, KeyFileError> {
    let bytes = read_private(path, MAX_FILE_BYTES).map_err(|e| match e {
        ReadPrivateError::Permissions { mode } => KeyFileError::Permissions {
            path: path.to_owned(),
            mode,
        },
        ReadPrivateError::Io(source) => KeyFileError::Io {
            path: path.to_owned(),
            source,
        },
        other => KeyFileError::Corrupt {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })?;
    let corrupt = |reason: String| KeyFileError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let pem = std::str::from_utf8(&bytes).map_err(|_| corrupt("not UTF-8 text".into()))?;
    let signing = SigningKey::from_pkcs8_pem(pem).map_err(|e| corrupt(e.to_string()))?;
    Ok(SecretKey::from_seed(&signing.to_bytes()))
}

/// Writes `key` to `path` crash-safely (temporary file, fsync, rename), mode 0600.
pub fn store(path: &Path, key: &SecretKey) -> Result<(), KeyFileError> {
    let signing = SigningKey::from_bytes(&key.to_seed());
    let pem = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyFileError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    write_private(path, pem.as_bytes()).map_err(|source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let (first, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (second, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.node_id(), second.node_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(
            matches!(err, KeyFileError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        fs::write(&path, "-----BEGIN PRIVATE KEY-----\nnot base64\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        let err = load(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Corrupt { .. }), "{err}");
    }
}
