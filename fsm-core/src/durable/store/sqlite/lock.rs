//! The one-worker lock of a SQLite file, taken on the database file itself.
//!
//! A lock on a file beside the database (`<path>-lock`) could be sidestepped: opening the
//! database through a symlink names another lock file, and deleting the lock file lets the
//! next worker create and lock a fresh one. A lock on the database file's own inode cannot
//! be: every path to the file, and only the file, leads to it.
//!
//! The lock is an `flock` (std's `File::try_lock`), which does not meet the POSIX record locks
//! SQLite takes on the same file. One care is needed: closing *any* descriptor of a file
//! drops every POSIX lock the process holds on it, SQLite's included. So the table below
//! counts the stores of this process that have each file open (the worker and read-only
//! ones), and a lock's descriptor is closed only when none has it open any more: a released
//! lock is unlocked, and its descriptor stays while a read-only store of the same file lives.

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

/// A database file that stores of this process have open.
struct Open {
    id: FileId,
    /// The worker lock's descriptor, once a worker opened the file.
    file: Option<File>,
    locked: bool,
    /// Read-only stores of the file.
    readers: usize,
}

static OPEN: Mutex<Vec<Open>> = Mutex::new(Vec::new());

fn table() -> std::sync::MutexGuard<'static, Vec<Open>> {
    OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Forgets `id` once nothing holds it: its descriptor closes then, when no store of this
/// process has the file open, so no SQLite lock of ours goes with it.
fn tidy(table: &mut Vec<Open>, id: FileId) {
    table.retain(|o| o.id != id || o.locked || o.readers > 0);
}

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
        let mut table = table();
        // A file this process has open is locked through the descriptor it has: a second
        // one, once closed, would drop SQLite's locks.
        let known = std::fs::metadata(path)
            .ok()
            .map(|m| FileId::of(&m))
            .and_then(|id| table.iter().position(|o| o.id == id && o.file.is_some()));
        let index = match known {
            Some(i) => i,
            None => {
                let file = open(path).map_err(LockError::Io)?;
                let id = FileId::of(&file.metadata().map_err(LockError::Io)?);
                match table.iter().position(|o| o.id == id) {
                    Some(i) if table[i].file.is_some() => {
                        // Replaced between the look-up and the open: keep the first
                        // descriptor, and never close this one (it holds no lock, but
                        // closing it would drop the process's SQLite locks on the file).
                        std::mem::forget(file);
                        i
                    }
                    Some(i) => {
                        table[i].file = Some(file);
                        i
                    }
                    None => {
                        table.push(Open {
                            id,
                            file: Some(file),
                            locked: false,
                            readers: 0,
                        });
                        table.len() - 1
                    }
                }
            }
        };
        let open = &mut table[index];
        let id = open.id;
        if open.locked {
            return Err(LockError::Held);
        }
        let result = match open.file.as_ref().map(File::try_lock) {
            Some(Ok(())) => Ok(()),
            Some(Err(std::fs::TryLockError::WouldBlock)) => Err(LockError::Held),
            Some(Err(std::fs::TryLockError::Error(e))) => Err(LockError::Io(e)),
            None => Err(LockError::Held),
        };
        match result {
            Ok(()) => {
                open.locked = true;
                Ok(WorkerLock { id })
            }
            Err(e) => {
                tidy(&mut table, id);
                Err(e)
            }
        }
    }
}

impl Drop for WorkerLock {
    fn drop(&mut self) {
        let mut table = table();
        if let Some(open) = table.iter_mut().find(|o| o.id == self.id) {
            if let Some(file) = &open.file {
                // Unlocking cannot fail for a descriptor that holds the lock; if it did, the
                // lock would go with the process, as it always does.
                let _ = file.unlock();
            }
            open.locked = false;
        }
        tidy(&mut table, self.id);
    }
}

/// A read-only store's hold on a file: while it lives, no worker lock's descriptor of the
/// same file is closed.
#[derive(Debug)]
pub(super) struct ReaderHold {
    id: Option<FileId>,
}

impl ReaderHold {
    pub(super) fn new(path: &Path) -> Self {
        let Ok(meta) = std::fs::metadata(path) else {
            return ReaderHold { id: None };
        };
        let id = FileId::of(&meta);
        let mut table = table();
        match table.iter_mut().find(|o| o.id == id) {
            Some(open) => open.readers += 1,
            None => table.push(Open {
                id,
                file: None,
                locked: false,
                readers: 1,
            }),
        }
        ReaderHold { id: Some(id) }
    }
}

impl Drop for ReaderHold {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let mut table = table();
        if let Some(open) = table.iter_mut().find(|o| o.id == id) {
            open.readers = open.readers.saturating_sub(1);
        }
        tidy(&mut table, id);
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
