//! Files that hold secrets (key files, tokens): written crash-safely with mode 0600,
//! read only if group and others have no access. Shared by every key file of a node.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use zeroize::Zeroizing;

/// Why a private file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadPrivateError {
    /// Group or others may access the file.
    #[error("mode {mode:o} lets group or others access it")]
    Permissions {
        /// The file's permission bits.
        mode: u32,
    },
    /// The path is not a regular file.
    #[error("not a regular file")]
    NotAFile,
    /// The file is longer than the caller allows.
    #[error("longer than {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads at most `max` bytes from `path`, refusing a file that group or others can
/// access (on Unix) or that is not a regular file.
pub fn read_private(path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>, ReadPrivateError> {
    let metadata = fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ReadPrivateError::Permissions { mode });
        }
    }
    if !metadata.is_file() {
        return Err(ReadPrivateError::NotAFile);
    }
    let mut bytes = Zeroizing::new(Vec::new());
    // One byte over the limit tells an oversized file from one at the limit.
    fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(ReadPrivateError::TooLarge { max });
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` crash-safely — temporary file (mode 0600), fsync, rename,
/// fsync of the directory — creating the directory if needed.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    // A temporary file left by an earlier crash keeps its old mode: tighten it before
    // the secret goes in.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = dir {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_mode_0600_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("secret");
        write_private(&path, b"hunter2").unwrap();
        assert_eq!(&**read_private(&path, 7).unwrap(), b"hunter2");
        assert!(matches!(
            read_private(&path, 6),
            Err(ReadPrivateError::TooLarge { max: 6 })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
            assert!(matches!(
                read_private(&path, 64),
                Err(ReadPrivateError::Permissions { mode: 0o640 })
            ));
        }
        assert!(matches!(
            read_private(dir.path(), 64),
            Err(ReadPrivateError::Permissions { .. } | ReadPrivateError::NotAFile)
        ));
    }
}
