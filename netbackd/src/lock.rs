//! One netbackd per backend domain: on real Xen two backends watching the same
//! `backend/vif` tree would both serve every device (two sets of mappings, two event
//! channel bindings, frames on two switches). `netbackd --xen` takes an exclusive `flock` on
//! `<run dir>/dom<domid>.lock` before it touches xenstore, and writes its pid there; a second
//! one finds the lock held and refuses to start, naming the pid.
//!
//! The kernel drops the lock when the process ends however it ends (a crash, `kill -9`), so a
//! stale file never blocks a restart; the file itself is left in place (removing it would let
//! a third instance lock a new file while the second still holds the old one).

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another netbackd{} already serves the vifs of domain {domid} (it holds {}): stop it \
         first{} (without --close-on-exit its vifs stay connected for this one to take over), \
         or leave it running",
        pid.map_or(String::new(), |p| format!(" (pid {p})")),
        path.display(),
        pid.map_or(String::new(), |p| format!(" (kill {p})"))
    )]
    Held {
        /// The backend domain.
        domid: u16,
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as it wrote it.
        pid: Option<u32>,
    },
    /// The run directory or the lock file could not be made, opened or written.
    #[error(
        "cannot {op} {}: {source}; check --run-dir (default /run/netbackd) is a directory \
         root may write, or name another",
        path.display()
    )]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The lock, held while this lives.
#[derive(Debug)]
pub struct InstanceLock {
    /// Held open: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock of backend domain `domid` in `run_dir` (made 0700 if missing), and writes
    /// this process's pid into it.
    pub fn acquire(run_dir: &Path, domid: u16) -> Result<Self, LockError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| LockError::Io { op, path, source }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(run_dir)
            .map_err(io("create the run directory", run_dir))?;
        let path = run_dir.join(format!("dom{domid}.lock"));
        // Not truncated on open: the holder's pid stays readable to whoever is refused.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io("open the lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    domid,
                    pid: text.trim().parse().ok(),
                    path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock", &path)(e)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_all())
            .map_err(io("write the pid into", &path))?;
        Ok(InstanceLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh directory name under the system's temporary directory (not created).
    fn scratch(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("netbackd-lock-{tag}-{}", std::process::id()))
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_until_the_first_goes() {
        let dir = scratch("twice").join("run");
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
        let first = InstanceLock::acquire(&dir, 0).unwrap();
        assert_eq!(first.path(), dir.join("dom0.lock"));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the run directory is root's alone");
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap(),
            format!("{pid}\n")
        );

        // A second open of the same file is a second lock: flock locks belong to open files,
        // so this holds within one process as between two.
        let e = InstanceLock::acquire(&dir, 0).unwrap_err();
        assert!(
            matches!(&e, LockError::Held { domid: 0, pid: Some(p), .. } if *p == pid),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&format!("(pid {pid})")), "{msg}");
        assert!(msg.contains(&format!("kill {pid}")), "{msg}");
        assert!(msg.contains("dom0.lock"), "{msg}");
        // The refused attempt left the holder's pid in place.
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap(),
            format!("{pid}\n")
        );

        // Another backend domain is another lock.
        let other = InstanceLock::acquire(&dir, 3).unwrap();
        assert_eq!(other.path(), dir.join("dom3.lock"));

        // The holder goes (as a crashed one would): the file stays, and the lock is free.
        drop(first);
        assert!(dir.join("dom0.lock").exists());
        let again = InstanceLock::acquire(&dir, 0).unwrap();
        drop((again, other));
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_stale_file_of_a_dead_holder_is_taken_over() {
        let dir = scratch("stale");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dom0.lock"), "999999999 and more\n").unwrap();
        let lock = InstanceLock::acquire(&dir, 0).unwrap();
        assert_eq!(
            std::fs::read_to_string(lock.path()).unwrap(),
            format!("{}\n", std::process::id()),
            "the old content is replaced, not appended to"
        );
        // Held with content that is not a pid: the message has no pid rather than a wrong one.
        std::fs::write(dir.join("dom0.lock"), "garbage").unwrap();
        let e = InstanceLock::acquire(&dir, 0).unwrap_err();
        assert!(matches!(e, LockError::Held { pid: None, .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("another netbackd already serves"),
            "{e}"
        );
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_dir_that_cannot_be_made_says_what_to_do() {
        let file = scratch("notadir");
        std::fs::write(&file, "").unwrap();
        let e = InstanceLock::acquire(&file.join("run"), 0).unwrap_err();
        assert!(matches!(e, LockError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("--run-dir"), "{e}");
        std::fs::remove_file(&file).unwrap();
    }
}
