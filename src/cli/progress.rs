//! A progress bar on stderr for passes over a trace: drawn only on a terminal, and only once a
//! pass has taken more than a second (short commands print nothing extra).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const DELAY: Duration = Duration::from_secs(1);

pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    shown: bool,
    tty: bool,
    /// Calls since the clock was last read.
    ticks: u32,
}

impl Progress {
    /// A bar over `total` bytes, labelled `what`.
    pub fn new(total: u64, what: &str) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template("{msg} [{wide_bar}] {bytes}/{total_bytes} ({eta} left)")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(what.to_string());
        Progress { bar, start: Instant::now(), shown: false, tty: std::io::stderr().is_terminal(), ticks: 0 }
    }

    /// Bytes done so far.
    pub fn set(&mut self, pos: u64) {
        if !self.tty {
            return;
        }
        self.ticks += 1;
        if !self.shown {
            if self.ticks % 64 != 0 || self.start.elapsed() < DELAY {
                return;
            }
            self.shown = true;
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        self.bar.set_position(pos);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
