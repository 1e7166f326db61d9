//! The node's WireGuard key file: the 32-byte secret in base64 on one line, exactly as
//! `wg genkey` writes it (so `wg pubkey < wireguard.key` works on it), mode 0600.
//!
//! It behaves like the identity key file (`fluidos_contracts::keyfile`): created on
//! first start, reused afterwards, and refused when group or others can access it or
//! when it does not hold a key.

use std::fs;
use std::path::{Path, PathBuf};

use fluidos_contracts::private_file::{ReadPrivateError, read_private, write_private};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::WireGuardSecret;

/// Longest file accepted: a key is 44 base64 characters, plus a line ending and some
/// slack for whitespace an editor may add.
const MAX_FILE_BYTES: u64 = 128;

/// Why the WireGuard key file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Group or others may read or write the key file.
    #[error(
        "WireGuard key file {path} has mode {mode:o}: group and others must have no access; fix it with `chmod 600 {path}`"
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file exists but does not hold a base64 32-byte key.
    #[error(
        "WireGuard key file {path} does not hold a key ({reason}); restore it from a backup or move it away to create a new one"
    )]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing the file failed.
    #[error("WireGuard key file {path}: {source}")]
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
pub fn load_or_create(path: &Path) -> Result<(WireGuardSecret, bool), KeyFileError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok((load(path)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = WireGuardSecret::generate();
            store(path, &key)?;
            Ok((key, true))
        }
        Err(source) => Err(KeyFileError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Loads an existing key file, refusing one that group or others can access.
pub fn load(path: &Path) -> Result<WireGuardSecret, KeyFileError> {
    let corrupt = |reason: String| KeyFileError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let bytes = read_private(path, MAX_FILE_BYTES).map_err(|e| match e {
        ReadPrivateError::Permissions { mode } => KeyFileError::Permissions {
            path: path.to_owned(),
            mode,
        },
        ReadPrivateError::Io(source) => KeyFileError::Io {
            path: path.to_owned(),
            source,
        },
        other => corrupt(other.to_string()),
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| corrupt("not UTF-8 text".into()))?;
    let key = Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .map_err(|e| corrupt(format!("not base64: {e}")))?,
    );
    let key: &[u8; 32] = key
        .as_slice()
        .try_into()
        .map_err(|_| corrupt(format!("{} bytes instead of 32", key.len())))?;
    Ok(WireGuardSecret::from_bytes(key))
}

/// Writes `key` to `path` crash-safely (temporary file, fsync, rename), mode 0600.
pub fn store(path: &Path, key: &WireGuardSecret) -> Result<(), KeyFileError> {
    let mut line = Zeroizing::new(STANDARD.encode(key.to_bytes().as_slice()));
    line.push('\n');
    write_private(path, line.as_bytes()).map_err(|source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn created_once_with_mode_0600_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("wireguard.key");
        let (first, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (second, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.public(), second.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // The `wg genkey` format: 44 base64 characters and a newline.
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 45);
        assert!(text.ends_with('\n'));
        assert_eq!(
            STANDARD.decode(text.trim()).unwrap(),
            first.to_bytes().to_vec()
        );
    }

    #[test]
    fn reads_a_key_written_by_wg_genkey() {
        // RFC 7748 §6.1 Alice, base64 as `wg genkey` would print it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wireguard.key");
        fs::write(&path, "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n").unwrap();
        #[cfg(unix)]
        chmod(&path, 0o600);
        let key = load(&path).unwrap();
        assert_eq!(
            STANDARD.encode(key.public().0),
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        );
    }

    #[cfg(unix)]
    #[test]
    fn readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wireguard.key");
        load_or_create(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            chmod(&path, mode);
            let err = load_or_create(&path).unwrap_err();
            assert!(
                matches!(err, KeyFileError::Permissions { mode: m, .. } if m == mode),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 600"));
        }
        chmod(&path, 0o400);
        load(&path).unwrap();
    }

    #[test]
    fn corrupt_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wireguard.key");
        let short = STANDARD.encode([1u8; 31]);
        let long = "A".repeat(200);
        let cases: [&[u8]; 5] = [
            b"",
            b"not base64 at all!\n",
            short.as_bytes(),
            long.as_bytes(),
            &[0xff, 0xfe, 0x00, 0x41],
        ];
        for contents in cases {
            fs::write(&path, contents).unwrap();
            #[cfg(unix)]
            chmod(&path, 0o600);
            let err = load_or_create(&path).unwrap_err();
            assert!(
                matches!(err, KeyFileError::Corrupt { .. }),
                "{contents:?}: {err}"
            );
            // A corrupt file is never replaced by a new key.
            assert_eq!(fs::read(&path).unwrap(), contents);
        }
    }

    #[test]
    fn a_directory_is_not_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wireguard.key");
        fs::create_dir(&path).unwrap();
        #[cfg(unix)]
        chmod(&path, 0o700);
        let err = load(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Corrupt { .. }), "{err}");
    }
}
