//! One-line log messages: stderr on Linux, logcat on Android. Never panics.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use vkdirty::config::LogLevel;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

pub fn set_level(l: LogLevel) {
    LEVEL.store(l as u8, Ordering::Relaxed);
}

pub fn enabled(l: LogLevel) -> bool {
    l != LogLevel::Off && l as u8 <= LEVEL.load(Ordering::Relaxed)
}

pub fn write(l: LogLevel, msg: &str) {
    if !enabled(l) {
        return;
    }
    platform_write(l, msg);
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
    if full {
        platform_write(LogLevel::Warn, "too many distinct messages; further ones are not logged");
    }
}

#[cfg(not(target_os = "android"))]
fn platform_write(l: LogLevel, msg: &str) {
    use std::io::Write;
    // One write call per line, so lines from several threads do not interleave.
    let line = format!("vkdirty: {}: {msg}\n", l.name());
    let _ = std::io::stderr().write_all(line.as_bytes());
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
