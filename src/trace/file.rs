//! Opening a trace file without clobbering anything.
//!
//! A trace is always a new regular file: created with `O_CREAT|O_EXCL|O_NOFOLLOW` (so a symlink,
//! hard link, FIFO, device or another process's trace at the name is never opened), non-blocking
//! (a FIFO cannot hang the application), mode 0600 (it holds application memory), and held
//! under an exclusive `flock` while it is written (a second guard for tools and for
//! [`Existing::Overwrite`]). When the name is taken, [`Existing`] decides what happens.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::TraceError;

/// What to do when the trace name is already taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Write to the next free name (`x-2.vkd`, `x-3.vkd`, ...) and say so.
    Next,
    /// Fail.
    Refuse,
    /// Replace an existing regular file that no live writer holds (the old file is unlinked and
    /// a new one created: a hard link's other names keep the old bytes). Anything else at the
    /// name (symlink, FIFO, device, directory) is refused.
    Overwrite,
}

impl Existing {
    pub fn name(self) -> &'static str {
        match self {
            Existing::Next => "next",
            Existing::Refuse => "refuse",
            Existing::Overwrite => "overwrite",
        }
    }

    pub fn parse(v: &str) -> Option<Existing> {
        [Existing::Next, Existing::Refuse, Existing::Overwrite].into_iter().find(|e| e.name() == v)
    }
}

/// A trace file opened for writing.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    /// The name actually used.
    pub path: PathBuf,
    /// One line to log when the name differs from the one asked for, or the lock failed.
    pub note: Option<String>,
}

/// Highest number tried by [`Existing::Next`].
const MAX_NUMBER: u32 = 9999;

/// `x.vkd` → `x-2.vkd` (`x` → `x-2`).
pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    path.with_file_name(name)
}

/// Creates a new regular file at exactly `path`; `EEXIST` when anything is there.
fn create_exclusive(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    // The umask may have narrowed the mode below 0600; the owner needs read and write.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Takes the exclusive advisory lock without waiting; `Ok(false)` when someone else holds it.
fn try_lock(f: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor this File owns; no memory is passed.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Whether a trace is being written right now (a live writer holds its lock). `None` when that
/// cannot be told (not a regular file, no permission, no lock support).
pub fn is_being_written(path: &Path) -> Option<bool> {
    let f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    // SAFETY: flock on a descriptor this File owns.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if r == 0 {
        return Some(false);
    }
    (io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)).then_some(true)
}

/// Why the thing at `path` cannot be overwritten, or `None` when it is a regular file no live
/// writer holds.
fn overwrite_refusal(path: &Path) -> Option<String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    let ft = meta.file_type();
    let what = if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        match is_being_written(path) {
            Some(true) => return Some("it is being written by a live process".into()),
            _ => return None,
        }
    };
    Some(format!("it is {what}, not a regular file"))
}

/// Opens a new trace file at `path` (see the module doc), applying `existing` when the name is
/// taken. Errors name the path.
pub fn open_trace_file(path: &Path, existing: Existing) -> Result<Opened, TraceError> {
    let ctx = |p: &Path| format!("cannot create trace file {}", p.display());
    let first = create_exclusive(path);
    let (file, used, note) = match first {
        Ok(f) => (f, path.to_path_buf(), None),
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(TraceError::io(ctx(path), e)),
        Err(e) => match existing {
            Existing::Refuse => return Err(TraceError::io(format!("{} (VKDIRTY_TRACE_EXISTS=refuse)", ctx(path)), e)),
            Existing::Overwrite => {
                if let Some(why) = overwrite_refusal(path) {
                    return Err(TraceError::io(
                        format!("{}: will not overwrite: {why}", ctx(path)),
                        io::Error::from(io::ErrorKind::AlreadyExists),
                    ));
                }
                std::fs::remove_file(path).map_err(|e| TraceError::io(ctx(path), e))?;
                let f = create_exclusive(path).map_err(|e| TraceError::io(ctx(path), e))?;
                (f, path.to_path_buf(), None)
            }
            Existing::Next => {
                let mut found = None;
                for n in 2..=MAX_NUMBER {
                    let p = numbered(path, n);
                    match create_exclusive(&p) {
                        Ok(f) => {
                            found = Some((f, p));
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(TraceError::io(ctx(&p), e)),
                    }
                }
                let Some((f, p)) = found else {
                    return Err(TraceError::io(
                        format!("{}: it and the numbered names up to {MAX_NUMBER} exist", ctx(path)),
                        io::Error::from(io::ErrorKind::AlreadyExists),
                    ));
                };
                let note = format!("{} exists; writing {} instead", path.display(), p.display());
                (f, p, Some(note))
            }
        },
    };
    let note = match try_lock(&file) {
        Ok(true) => note,
        // Nobody else can have the new file open yet; a failure here means no lock support.
        Ok(false) | Err(_) => {
            let l = format!("no advisory lock on {} (the file system may not support flock)", used.display());
            Some(note.map_or(l.clone(), |n| format!("{n}; {l}")))
        }
    };
    Ok(Opened { file, path: used, note })
}
