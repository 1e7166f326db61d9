//! The control token: 32 random bytes, hex, in `DATA_DIR/control.token`, mode
//! 0600. Whoever can read it may drive the node, so the daemon refuses a token
//! file that group or others can read, exactly as for the key file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Length of the token in hex characters.
const TOKEN_HEX_LEN: usize = 64;

/// The bearer token of the control API.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The token file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Group or others may access the file.
    #[error(
        "token file {path} has mode {mode:o}: group and others must have no access; fix it with `chmod 600 {path}`"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a token.
    #[error(
        "token file {path} does not hold a {TOKEN_HEX_LEN}-character hex token; delete it and restart the daemon to make a new one"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// The file is missing: the daemon has never run with this data directory.
    #[error(
        "token file {path} does not exist: is `fluidos-node run` running with this data directory?"
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Token {
    /// A fresh random token.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        // Without an entropy source nothing secure can run.
        #[allow(clippy::expect_used)]
        getrandom::fill(bytes.as_mut()).expect("the operating system's random source failed");
        Self(Zeroizing::new(hex::encode(bytes.as_ref())))
    }

    /// The token text, for the `Authorization` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` equals this token, in time independent of where
    /// they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Reads the token at `path`, refusing a file group or others can access.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let io = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::NotFound {
                TokenError::Missing {
                    path: path.to_owned(),
                }
            } else {
                TokenError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        };
        use fluidos_contracts::private_file::{ReadPrivateError, read_private};
        let bytes = read_private(path, 1024).map_err(|e| match e {
            ReadPrivateError::Permissions { mode } => TokenError::Permissions {
                path: path.to_owned(),
                mode,
            },
            ReadPrivateError::Io(source) => io(source),
            _ => TokenError::Malformed {
                path: path.to_owned(),
            },
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|_| TokenError::Malformed {
            path: path.to_owned(),
        })?;
        let t = text.trim();
        if t.len() != TOKEN_HEX_LEN || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Malformed {
                path: path.to_owned(),
            });
        }
        Ok(Self(Zeroizing::new(t.to_string())))
    }

    /// Loads the token, or creates one (mode 0600) if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        match Self::load(path) {
            Err(TokenError::Missing { .. }) => {}
            other => return other,
        }
        let token = Self::generate();
        let io = |source| TokenError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = fs::OpenOptions::new();
        // `create_new`: two daemons racing on one data dir never overwrite each
        // other's token silently.
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        file.write_all(token.as_str().as_bytes()).map_err(io)?;
        file.write_all(b"\n").map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.token");
        let a = Token::load_or_create(&path).unwrap();
        let b = Token::load_or_create(&path).unwrap();
        assert!(a.matches(b.as_str()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn comparison() {
        let t = Token::generate();
        assert!(t.matches(t.as_str()));
        assert!(!t.matches(""));
        assert!(!t.matches(&t.as_str()[1..]));
        let mut other = t.as_str().to_string();
        other.replace_range(0..1, if other.starts_with('0') { "1" } else { "0" });
        assert!(!t.matches(&other));
        assert!(!format!("{t:?}").contains(t.as_str()));
    }

    #[cfg(unix)]
    #[test]
    fn readable_by_others_or_malformed_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.token");
        Token::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            Token::load(&path),
            Err(TokenError::Permissions { mode: 0o640, .. })
        ));
        fs::write(&path, "short").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Token::load(&path),
            Err(TokenError::Malformed { .. })
        ));
        assert!(matches!(
            Token::load(&dir.path().join("none")),
            Err(TokenError::Missing { .. })
        ));
    }
}
