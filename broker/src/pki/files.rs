//! Writing key material: owner-only directories and files, replaced atomically.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::PkiError;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` (and its parents) with mode 0700 if missing, and tightens it if it exists.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error(dir))
}

/// Sets every file in `data_dir` and its `pki/` to 0600 and those directories to 0700: the
/// database, its WAL and shared-memory files, keys, certificates, the checkpoint file, the
/// pending-ends file. Symbolic links and other kinds of entries are left alone.
pub(crate) fn tighten_data_dir(data_dir: &Path) -> Result<(), PkiError> {
    for dir in [data_dir.to_owned(), data_dir.join("pki")] {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(PkiError::Io { path: dir, source }),
        };
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_error(&dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io_error(&path))?;
            let mode = if kind.is_file() {
                0o600
            } else if kind.is_dir() {
                0o700
            } else {
                continue;
            };
            let current = entry
                .metadata()
                .map_err(io_error(&path))?
                .permissions()
                .mode();
            if current & 0o777 != mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(io_error(&path))?;
            }
        }
    }
    Ok(())
}

pub(crate) fn read_to_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(io_error(path))
}

/// Writes a file readable by its owner only (0600).
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_atomically(path, contents, 0o600)
}

/// Writes a file anyone may read (0644): certificates, never keys.
pub(crate) fn write_public(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_atomically(path, contents, 0o644)
}

/// Writes to a temporary file created with `mode`, syncs it, then renames it into place, so a
/// crash leaves either the old file or the new one, never half of one, and a key is never
/// readable by others even for a moment.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(contents).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}
