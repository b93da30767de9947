//! One-line log messages: stderr on Linux, logcat on Android. Never panics.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use vkdirty::config::LogLevel;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

pub fn set_level(l: LogLevel) {
    LEVEL.store(l as u8, Ordering::Relaxed);
}

/// `VKDIRTY_LOG_FILE`: every line also goes here, appended.
static FILE: Mutex<Option<std::fs::File>> = parking_lot::const_mutex(None);

/// Appends every later line to `path` too (created if missing). A file that cannot be opened is
/// reported once and logging goes on without it.
pub fn set_file(path: &std::path::Path) {
    match std::fs::OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => *FILE.lock() = Some(f),
        Err(e) => platform_write(LogLevel::Warn, &format!("log file {}: {e}; logging without it", path.display())),
    }
}

fn line(l: LogLevel, msg: &str) -> String {
    format!("vkdirty: {}: {msg}\n", l.name())
}

/// The same line as on stderr, one `write` per line (O_APPEND keeps lines of several processes
/// whole). A failing file is dropped after one line on stderr.
fn file_write(l: LogLevel, msg: &str) {
    use std::io::Write;
    let mut f = FILE.lock();
    let Some(file) = f.as_mut() else { return };
    if let Err(e) = file.write_all(line(l, msg).as_bytes()) {
        *f = None;
        drop(f);
        platform_write(LogLevel::Warn, &format!("writing the log file failed: {e}; logging to it stops"));
    }
}

pub fn enabled(l: LogLevel) -> bool {
    l != LogLevel::Off && l as u8 <= LEVEL.load(Ordering::Relaxed)
}

pub fn write(l: LogLevel, msg: &str) {
    if !enabled(l) {
        return;
    }
    platform_write(l, msg);
    file_write(l, msg);
}

/// Logs `msg` only the first time this exact text is seen.
pub fn once(l: LogLevel, msg: &str) {
    if !enabled(l) {
        return;
    }
    // Bounded: messages carrying addresses or ids must not grow this without end.
    const MAX: usize = 256;
    static SEEN: Mutex<Option<HashSet<String>>> = parking_lot::const_mutex(None);
    let mut seen = SEEN.lock();
    let set = seen.get_or_insert_with(HashSet::new);
    if set.len() > MAX || set.contains(msg) {
        return;
    }
    set.insert(msg.to_string());
    let full = set.len() > MAX;
    drop(seen);
    platform_write(l, msg);
    file_write(l, msg);
    if full {
        let m = "too many distinct messages; further ones are not logged";
        platform_write(LogLevel::Warn, m);
        file_write(LogLevel::Warn, m);
    }
}

#[cfg(not(target_os = "android"))]
fn platform_write(l: LogLevel, msg: &str) {
    use std::io::Write;
    // One write call per line, so lines from several threads do not interleave.
    let _ = std::io::stderr().write_all(line(l, msg).as_bytes());
}

#[cfg(target_os = "android")]
fn platform_write(l: LogLevel, msg: &str) {
    #[link(name = "log")]
    extern "C" {
        fn __android_log_write(prio: i32, tag: *const std::ffi::c_char, text: *const std::ffi::c_char) -> i32;
    }
    let prio = match l {
        LogLevel::Error => 6,
        LogLevel::Warn => 5,
        LogLevel::Info => 4,
        _ => 3,
    };
    let text: Vec<u8> = msg.bytes().filter(|&b| b != 0).chain(std::iter::once(0)).collect();
    // SAFETY: both strings are NUL-terminated and live across the call.
    unsafe { __android_log_write(prio, c"vkdirty".as_ptr(), text.as_ptr().cast()) };
}

macro_rules! log_error {
    ($($t:tt)*) => { $crate::log::write(vkdirty::config::LogLevel::Error, &format!($($t)*)) };
}
macro_rules! log_warn {
    ($($t:tt)*) => { $crate::log::write(vkdirty::config::LogLevel::Warn, &format!($($t)*)) };
}
macro_rules! log_info {
    ($($t:tt)*) => { $crate::log::write(vkdirty::config::LogLevel::Info, &format!($($t)*)) };
}
pub(crate) use {log_error as error, log_info as info, log_warn as warn};
