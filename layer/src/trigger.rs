//! Runtime capture triggers: a file whose existence turns capture on (`VKDIRTY_TRIGGER_FILE`) and
//! a signal that toggles it (`VKDIRTY_TRIGGER_SIGNAL`, handler installed only when set), with
//! `VKDIRTY_TRIGGER_FRAMES` limiting each trigger to a number of frames. Checked at frame
//! boundaries (each present), and at submits while the application has not presented yet.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use vkdirty::config::{signal_name, Settings};

use crate::log;

/// Signals received so far; the handler only increments it.
static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: one atomic add.
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// Installs the counting handler for `sig`. Returns a line to log when it replaced an
/// application's own handler.
fn install(sig: i32) -> Result<Option<String>, String> {
    // SAFETY: a zeroed sigaction is a valid start; the handler is a plain extern "C" fn that only
    // touches an atomic; old receives the previous action.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, &sa, &mut old) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let replaced = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
        Ok(replaced
            .then(|| format!("the application's {} handler was replaced by the capture trigger", signal_name(sig))))
    }
}

pub struct Trigger {
    file: Option<PathBuf>,
    /// 0: no limit.
    frames: u64,
    /// Signals handled so far.
    seen: u32,
    file_was: bool,
    /// Without a frame limit: toggled by each signal.
    signal_on: bool,
    /// With a frame limit: frames (or submits) of the current window still to capture.
    left: u64,
    on: bool,
    /// Last check at a submit (they are throttled; presents are not).
    last_submit_check: Option<Instant>,
}

impl Trigger {
    /// `None` when no trigger is configured (capture follows FRAMES/SUBMITS alone).
    pub fn new(s: &Settings) -> Option<Trigger> {
        if !s.triggered() {
            return None;
        }
        if let Some(sig) = s.trigger_signal {
            match install(sig) {
                Ok(note) => {
                    if let Some(n) = note {
                        log::warn!("{n}");
                    }
                    log::info!(
                        "trigger: kill -{} {} turns capture on",
                        signal_name(sig).trim_start_matches("SIG"),
                        std::process::id()
                    );
                }
                Err(e) => log::error!("trigger signal {}: {e}; that trigger is off", signal_name(sig)),
            }
        }
        if let Some(f) = &s.trigger_file {
            log::info!("trigger: capture is on while {} exists", f.display());
        }
        Some(Trigger {
            file: s.trigger_file.clone(),
            frames: s.trigger_frames,
            seen: SIGNALS.load(Ordering::Relaxed),
            file_was: false,
            signal_on: false,
            left: 0,
            on: false,
            last_submit_check: None,
        })
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Reads the triggers; returns whether capture is on from here.
    pub fn check(&mut self) -> bool {
        let exists = self.file.as_ref().is_some_and(|p| p.exists());
        let rising = exists && !self.file_was;
        self.file_was = exists;
        let now = SIGNALS.load(Ordering::Relaxed);
        let signals = now.wrapping_sub(self.seen);
        self.seen = now;
        if self.frames == 0 {
            if signals % 2 == 1 {
                self.signal_on = !self.signal_on;
            }
            self.on = exists || self.signal_on;
        } else {
            if rising || signals > 0 {
                self.left = self.frames;
            }
            self.on = self.left > 0;
        }
        self.on
    }

    /// At a submit before any present: [`Trigger::check`] at most once a millisecond (a `stat`
    /// per submit is cheap, but submits can come by the hundred thousand).
    pub fn check_at_submit(&mut self) -> bool {
        let now = Instant::now();
        if self.last_submit_check.is_some_and(|t| now.duration_since(t) < Duration::from_millis(1)) {
            return self.on;
        }
        self.last_submit_check = Some(now);
        self.check()
    }

    /// One frame (or, before any present, one submit) of an open window was captured.
    pub fn consumed(&mut self) {
        if self.frames > 0 && self.on {
            self.left = self.left.saturating_sub(1);
        }
    }
}

impl vkdirty::session::Trigger for Trigger {
    fn is_on(&self) -> bool {
        Trigger::is_on(self)
    }
    fn check(&mut self) -> bool {
        Trigger::check(self)
    }
    fn check_at_submit(&mut self) -> bool {
        Trigger::check_at_submit(self)
    }
    fn consumed(&mut self) {
        Trigger::consumed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(file: &std::path::Path, frames: u64) -> Settings {
        Settings { trigger_file: Some(file.to_path_buf()), trigger_frames: frames, ..Settings::default() }
    }

    #[test]
    fn file_window_follows_the_file() {
        let f = std::env::temp_dir().join(format!("vkdirty-trigger-unit-{}", std::process::id()));
        let _ = std::fs::remove_file(&f);
        let mut t = Trigger::new(&settings(&f, 0)).unwrap();
        assert!(!t.check());
        std::fs::write(&f, b"").unwrap();
        assert!(t.check() && t.check());
        std::fs::remove_file(&f).unwrap();
        assert!(!t.check());
    }

    #[test]
    fn frame_limit_counts_from_each_rising_edge() {
        let f = std::env::temp_dir().join(format!("vkdirty-trigger-unit-n-{}", std::process::id()));
        let _ = std::fs::remove_file(&f);
        let mut t = Trigger::new(&settings(&f, 2)).unwrap();
        assert!(!t.check());
        std::fs::write(&f, b"").unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(t.check());
            t.consumed();
        }
        // Two frames, then off although the file is still there.
        assert_eq!(seen, [true, true, false, false]);
        std::fs::remove_file(&f).unwrap();
        assert!(!t.check());
        std::fs::write(&f, b"").unwrap();
        assert!(t.check(), "a new file is a new trigger");
        let _ = std::fs::remove_file(&f);
    }

    #[test]
    fn each_signal_toggles() {
        let s = Settings { trigger_signal: Some(libc::SIGUSR2), ..Settings::default() };
        let mut t = Trigger::new(&s).unwrap();
        assert!(!t.check());
        // SAFETY: raising a signal whose handler was just installed.
        unsafe { libc::raise(libc::SIGUSR2) };
        assert!(t.check() && t.check());
        // SAFETY: as above.
        unsafe { libc::raise(libc::SIGUSR2) };
        assert!(!t.check());
    }

    #[test]
    fn no_trigger_configured() {
        assert!(Trigger::new(&Settings::default()).is_none());
    }
}
