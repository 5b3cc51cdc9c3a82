//! Real store faults for tests: a small filesystem that fills up ([`SmallDisk`]), and an ext4
//! filesystem that the kernel turns read-only under the broker's feet, as it does when a
//! disk fails ([`FailingDisk`]). Both need root (CI runs as root); `mount` says why it cannot
//! when it cannot, and the test prints that it was skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A size-limited tmpfs mounted on a directory of its own; unmounted when dropped.
pub struct SmallDisk {
    dir: TempDir,
    filler: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mebibytes` MiB; `Err` says why it cannot (not root, no mount).
    pub fn mount(mebibytes: u32) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mebibytes}m"),
                "sekisho-test",
                &dir.path().display().to_string(),
            ],
        )?;
        let filler = dir.path().join("filler");
        Ok(SmallDisk { dir, filler })
    }

    /// The mounted directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem has no space left.
    pub fn fill(&self) {
        let mut file = std::fs::File::create(&self.filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // Smaller writes take what a 64 KiB one could not.
        let byte = [0u8; 1];
        while file.write(&byte).is_ok_and(|n| n == 1) {}
    }

    /// Gives the space back.
    pub fn free(&self) {
        std::fs::remove_file(&self.filler).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a broker still holding files open must not keep the mount.
        let _ = run("umount", &["-l", &self.path().display().to_string()]);
    }
}

/// An ext4 filesystem in a file, loop-mounted with `errors=remount-ro`; unmounted when
/// dropped.
pub struct FailingDisk {
    mount_point: TempDir,
    /// Holds the image file.
    _image_dir: TempDir,
    /// The loop device's name (`loop0`), under which ext4 lists the filesystem in sysfs.
    device: String,
}

impl FailingDisk {
    /// Makes and mounts a filesystem of `mebibytes` MiB; `Err` says why it cannot.
    pub fn mount(mebibytes: u32) -> Result<FailingDisk, String> {
        let image_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = image_dir.path().join("disk.img");
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(u64::from(mebibytes) * 1024 * 1024)
            .map_err(|e| e.to_string())?;
        let image_text = image.display().to_string();
        run("mkfs.ext4", &["-q", "-F", &image_text])?;
        let mount_point = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount_text = mount_point.path().display().to_string();
        run(
            "mount",
            &["-o", "loop,errors=remount-ro", &image_text, &mount_text],
        )?;
        let source = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE", &mount_text])
            .output()
            .map_err(|e| format!("cannot run findmnt: {e}"))?;
        let source = String::from_utf8_lossy(&source.stdout).trim().to_owned();
        let device = source.rsplit('/').next().unwrap_or_default().to_owned();
        let disk = FailingDisk {
            mount_point,
            _image_dir: image_dir,
            device,
        };
        if !disk.error_trigger().exists() {
            return Err(format!(
                "{} has no error trigger (mounted from `{source}`)",
                disk.error_trigger().display()
            ));
        }
        Ok(disk)
    }

    /// The mounted directory.
    pub fn path(&self) -> &Path {
        self.mount_point.path()
    }

    fn error_trigger(&self) -> PathBuf {
        Path::new("/sys/fs/ext4")
            .join(&self.device)
            .join("trigger_fs_error")
    }

    /// Reports a filesystem error to ext4, as a failing disk would: it remounts the
    /// filesystem read-only at once, with the broker's files open, and every later write
    /// fails with EROFS until it is unmounted and checked.
    pub fn fail(&self) {
        std::fs::write(self.error_trigger(), "sekisho test: a failing disk").unwrap();
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", &self.path().display().to_string()]);
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
