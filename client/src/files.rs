//! Where the client keeps what enrollment gave it, and how it writes it.
//!
//! The configuration directory (`$SEKISHO_CONFIG_DIR`, else `$XDG_CONFIG_HOME/sekisho`, else
//! `~/.config/sekisho`) is created readable by its owner only and holds:
//!
//! - `broker`: the hospital's broker addresses (`HOST:PORT`), one per line, tried in order;
//! - `ca.pem`: the broker's CA, the only root the client trusts;
//! - `client.pem`: the technician's certificate;
//! - `client.key`: the private key made on this machine, mode 0600, never sent anywhere.
//!
//! Every file is written to a temporary name in the same directory, synced, and renamed into
//! place, so a crash leaves either the old file or the new one, never half of one, and a new
//! file never inherits an old file's wider permissions.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file names inside the configuration directory.
pub const BROKER_FILE: &str = "broker";
/// The pinned CA.
pub const CA_FILE: &str = "ca.pem";
/// The technician's certificate.
pub const CERTIFICATE_FILE: &str = "client.pem";
/// The technician's private key.
pub const KEY_FILE: &str = "client.key";

/// The default configuration directory, from the environment; `None` when neither
/// `SEKISHO_CONFIG_DIR`, `XDG_CONFIG_HOME` nor `HOME` is set.
pub fn default_config_dir() -> Option<PathBuf> {
    let from = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = from("SEKISHO_CONFIG_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = from("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(dir).join("sekisho"));
    }
    from("HOME").map(|home| PathBuf::from(home).join(".config").join("sekisho"))
}

/// Creates `dir` (and its parents) if missing, and makes it readable by its owner only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `contents` to `path` atomically with `mode` (0o600 for secrets, 0o644 otherwise).
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // The rename is durable once the directory is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_is_owner_only_even_over_a_wider_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.key");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&path, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn the_config_dir_is_made_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("a/b/sekisho");
        create_private_dir(&config).unwrap();
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
