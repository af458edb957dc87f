//! The one-worker lock of a SQLite file, taken on the database file itself.
//!
//! A lock on a file beside the database (`<path>-lock`) could be sidestepped: opening the
//! database through a symlink names another lock file, and deleting the lock file lets the
//! next worker create and lock a fresh one. A lock on the database file's own inode cannot
//! be: every path to the file, and only the file, leads to it.
//!
//! The lock is an `flock` (std's `File::try_lock`), which does not meet the POSIX record locks
//! SQLite takes on the same file. One care is needed: closing *any* descriptor of a file
//! drops every POSIX lock the process holds on it, SQLite's included (a read-only store of
//! the same file in this process would lose its locks). So a released lock is unlocked, not
//! closed: its descriptor stays in a process-wide table, one per database file, and is reused
//! when the file is opened again.

use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

/// Identifies a file whatever path names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A database file's descriptor, kept open for the process's lifetime once opened.
struct Held {
    id: FileId,
    file: File,
    locked: bool,
}

static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

/// Why the lock could not be taken.
pub(super) enum LockError {
    /// Another worker (in this process or another) holds it.
    Held,
    /// The file could not be opened or locked.
    Io(std::io::Error),
}

/// The worker lock on one database file, released when dropped.
#[derive(Debug)]
pub(super) struct WorkerLock {
    id: FileId,
}

impl WorkerLock {
    /// Creates the database file if it is missing (readable and writable by its owner only:
    /// it holds every execution's data, and SQLite gives its WAL and shared-memory files the
    /// database's mode), and takes its worker lock.
    pub(super) fn acquire(path: &Path) -> Result<Self, LockError> {
        let mut held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A file this process has opened before is locked through the same descriptor: a
        // second descriptor, once closed, would drop SQLite's locks.
        let known = std::fs::metadata(path)
            .ok()
            .map(|m| FileId::of(&m))
            .and_then(|id| held.iter().position(|h| h.id == id));
        let index = match known {
            Some(i) => i,
            None => {
                let file = open(path).map_err(LockError::Io)?;
                let id = FileId::of(&file.metadata().map_err(LockError::Io)?);
                match held.iter().position(|h| h.id == id) {
                    // Replaced between the look-up and the open: keep the first descriptor
                    // (this one has never held a lock, and SQLite has not opened the file
                    // through it, but closing it would still drop the process's locks).
                    Some(i) => {
                        std::mem::forget(file);
                        i
                    }
                    None => {
                        held.push(Held {
                            id,
                            file,
                            locked: false,
                        });
                        held.len() - 1
                    }
                }
            }
        };
        let h = &mut held[index];
        if h.locked {
            return Err(LockError::Held);
        }
        match h.file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(LockError::Held),
            Err(std::fs::TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
        h.locked = true;
        Ok(WorkerLock { id: h.id })
    }
}

impl Drop for WorkerLock {
    fn drop(&mut self) {
        let id = self.id;
        let mut held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(h) = held.iter_mut().find(|h| h.id == id) {
            // Unlocking cannot fail for a descriptor that holds the lock; if it did, the
            // lock would go with the process, as it always does.
            let _ = h.file.unlock();
            h.locked = false;
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}
