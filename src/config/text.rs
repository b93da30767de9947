//! A setting's value from text ([`Settings::apply`]) and back ([`Settings::value_text`]).

use super::*;
use std::path::PathBuf;

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

fn parse_host_import(v: &str) -> Option<HostImport> {
    if v.eq_ignore_ascii_case("strict") {
        return Some(HostImport::Strict);
    }
    parse_bool(v).map(|on| if on { HostImport::On } else { HostImport::Off })
}

fn parse_predict(v: &str) -> Option<Predict> {
    if v.eq_ignore_ascii_case("auto") {
        return Some(Predict::Auto);
    }
    parse_bool(v).map(|on| if on { Predict::On } else { Predict::Off })
}

fn parse_shadow_refresh(v: &str) -> Option<ShadowRefresh> {
    [ShadowRefresh::Never, ShadowRefresh::Cached, ShadowRefresh::Always].into_iter().find(|r| r.name() == v)
}

fn parse_log_level(v: &str) -> Option<LogLevel> {
    [LogLevel::Off, LogLevel::Error, LogLevel::Warn, LogLevel::Info, LogLevel::Debug]
        .into_iter()
        .find(|l| l.name() == v)
}

fn parse_layers_below(v: &str) -> Option<LayersBelow> {
    match v.to_ascii_lowercase().as_str() {
        "auto" => Some(LayersBelow::Auto),
        "ignore" => Some(LayersBelow::Ignore),
        _ => None,
    }
}

fn parse_ranges(v: &str) -> Option<Option<RangeSet>> {
    if v == "all" {
        return Some(None);
    }
    RangeSet::parse(v).map(Some)
}

/// `SIGUSR1`, `usr1`, `10` → the signal number; only signals the layer does not use itself and
/// that may be caught.
pub fn parse_signal(v: &str) -> Option<i32> {
    let up = v.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "HUP" => libc::SIGHUP,
        _ => name.parse::<i32>().ok()?,
    };
    let reserved =
        [libc::SIGSEGV, libc::SIGBUS, libc::SIGKILL, libc::SIGSTOP, libc::SIGILL, libc::SIGFPE, libc::SIGABRT];
    ((1..=libc::SIGRTMAX()).contains(&n) && !reserved.contains(&n)).then_some(n)
}

/// `SIGUSR1` for a signal number the table names, else the number.
pub fn signal_name(n: i32) -> String {
    match n {
        libc::SIGUSR1 => "SIGUSR1".into(),
        libc::SIGUSR2 => "SIGUSR2".into(),
        libc::SIGHUP => "SIGHUP".into(),
        _ => n.to_string(),
    }
}

fn parse_uint(v: &str, max: u64) -> Option<u64> {
    v.parse::<u64>().ok().filter(|n| *n <= max)
}

fn path(v: &str) -> Option<Option<PathBuf>> {
    Some(Some(PathBuf::from(v)))
}

fn put<T>(slot: &mut T, v: Option<T>) -> Result<(), ()> {
    *slot = v.ok_or(())?;
    Ok(())
}

impl Settings {
    /// Sets the setting `name` from the text `v` (trimmed, non-empty). `Err` for a bad value or an
    /// unknown name; nothing changes then.
    // The caller names the setting, the value and the accepted values itself: no error payload.
    #[allow(clippy::result_unit_err)]
    pub fn apply(&mut self, name: &str, v: &str) -> Result<(), ()> {
        match name {
            "TRACE_FILE" => put(&mut self.trace_file, path(v)),
            "TRACE_EXISTS" => put(&mut self.trace_exists, Existing::parse(v)),
            "BACKEND" => put(&mut self.backend, BackendChoice::parse(v)),
            "HOST_IMPORT" => put(&mut self.host_import, parse_host_import(v)),
            "SHADOW_READS" => put(&mut self.shadow_reads, parse_bool(v)),
            "SHADOW_REFRESH" => put(&mut self.shadow_refresh, parse_shadow_refresh(v)),
            "PERSISTENT_SHADOW" => put(&mut self.persistent_shadow, parse_bool(v)),
            "PREDICT" => put(&mut self.predict, parse_predict(v)),
            "PREDICT_BUDGET_MIB" => put(&mut self.predict_budget_mib, parse_uint(v, 65536)),
            "PREDICT_TRUST" => put(&mut self.predict_trust, parse_bool(v)),
            "COMPRESSION" => put(&mut self.compression, Compression::parse(v)),
            "FRAMES" => put(&mut self.frames, parse_ranges(v)),
            "SUBMITS" => put(&mut self.submits, parse_ranges(v)),
            "FLUSH_EVERY_SUBMIT" => put(&mut self.flush_every_submit, parse_bool(v)),
            "LOG_LEVEL" => put(&mut self.log_level, parse_log_level(v)),
            "ALIGN_REQUIREMENTS" => put(&mut self.align_requirements, parse_bool(v)),
            "TRIGGER_FILE" => put(&mut self.trigger_file, path(v)),
            "TRIGGER_SIGNAL" => put(&mut self.trigger_signal, parse_signal(v).map(Some)),
            "TRIGGER_FRAMES" => put(&mut self.trigger_frames, parse_uint(v, u32::MAX as u64)),
            "LOG_FILE" => put(&mut self.log_file, path(v)),
            "LAYERS_BELOW" => put(&mut self.layers_below, parse_layers_below(v)),
            "GFXR_FLUSH" => put(&mut self.gfxr_flush, parse_bool(v)),
            "WRITE_TRACE" => put(&mut self.write_trace, parse_bool(v)),
            _ => Err(()),
        }
    }

    /// The value in effect for setting `name`, as text the setting accepts (`""`: unset).
    pub fn value_text(&self, name: &str) -> Option<String> {
        let b = |v: bool| if v { "1" } else { "0" }.to_string();
        let p = |v: &Option<PathBuf>| v.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let r = |v: &Option<RangeSet>| v.as_ref().map_or("all".to_string(), |r| r.to_string());
        Some(match name {
            "TRACE_FILE" => p(&self.trace_file),
            "TRACE_EXISTS" => self.trace_exists.name().to_string(),
            "BACKEND" => self.backend.to_string(),
            "HOST_IMPORT" => match self.host_import {
                HostImport::Off => "0",
                HostImport::On => "1",
                HostImport::Strict => "strict",
            }
            .to_string(),
            "SHADOW_READS" => b(self.shadow_reads),
            "SHADOW_REFRESH" => self.shadow_refresh.name().to_string(),
            "PERSISTENT_SHADOW" => b(self.persistent_shadow),
            "PREDICT" => match self.predict {
                Predict::Auto => "auto",
                Predict::Off => "0",
                Predict::On => "1",
            }
            .to_string(),
            "PREDICT_BUDGET_MIB" => self.predict_budget_mib.to_string(),
            "PREDICT_TRUST" => b(self.predict_trust),
            "COMPRESSION" => self.compression.name().to_string(),
            "FRAMES" => r(&self.frames),
            "SUBMITS" => r(&self.submits),
            "FLUSH_EVERY_SUBMIT" => b(self.flush_every_submit),
            "LOG_LEVEL" => self.log_level.name().to_string(),
            "ALIGN_REQUIREMENTS" => b(self.align_requirements),
            "TRIGGER_FILE" => p(&self.trigger_file),
            "TRIGGER_SIGNAL" => self.trigger_signal.map(signal_name).unwrap_or_default(),
            "TRIGGER_FRAMES" => self.trigger_frames.to_string(),
            "LOG_FILE" => p(&self.log_file),
            "LAYERS_BELOW" => match self.layers_below {
                LayersBelow::Auto => "auto",
                LayersBelow::Ignore => "ignore",
            }
            .to_string(),
            "GFXR_FLUSH" => b(self.gfxr_flush),
            "WRITE_TRACE" => b(self.write_trace),
            _ => return None,
        })
    }
}
