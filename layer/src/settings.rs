//! The layer's settings, read once: `VKDIRTY_*` environment variables, then (Android)
//! `debug.vkdirty.*` system properties.

use once_cell::sync::Lazy;
use vkdirty::config::{EnvSource, Settings};

use crate::log;

static SETTINGS: Lazy<Settings> = Lazy::new(|| {
    let (s, warnings) = load();
    log::set_level(s.log_level);
    for w in warnings {
        log::warn!("{w}");
    }
    s
});

/// The settings (read on first use; bad values are logged then).
pub fn get() -> &'static Settings {
    &SETTINGS
}

#[cfg(not(target_os = "android"))]
fn load() -> (Settings, Vec<String>) {
    Settings::load(&EnvSource)
}

#[cfg(target_os = "android")]
fn load() -> (Settings, Vec<String>) {
    use vkdirty::config::{Layered, PropertyReader, PropertySource};
    struct SystemProperties;
    impl PropertyReader for SystemProperties {
        fn property(&self, key: &str) -> Option<String> {
            let name = std::ffi::CString::new(key).ok()?;
            // PROP_VALUE_MAX is 92 bytes including the NUL.
            let mut buf = [0 as std::ffi::c_char; 92];
            // SAFETY: `name` is NUL-terminated; `buf` has PROP_VALUE_MAX bytes as required.
            let n = unsafe { libc::__system_property_get(name.as_ptr(), buf.as_mut_ptr()) };
            if n <= 0 {
                return None;
            }
            // SAFETY: the property value written into `buf` is NUL-terminated.
            let v = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
            Some(v.to_string_lossy().into_owned())
        }
    }
    let props = PropertySource(SystemProperties);
    Settings::load(&Layered(vec![&EnvSource, &props]))
}

/// The process name: the base name of `argv[0]` (on Android, the package name).
pub fn process_name() -> String {
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let first = cmdline.split(|&b| b == 0).next().unwrap_or(&[]);
    let s = String::from_utf8_lossy(first);
    let base = s.rsplit('/').next().unwrap_or("").trim().to_string();
    if !base.is_empty() {
        return base;
    }
    std::fs::read_to_string("/proc/self/comm").map(|c| c.trim().to_string()).unwrap_or_default()
}

/// The Android package of this process (`None` elsewhere).
pub fn android_package() -> Option<String> {
    if cfg!(target_os = "android") {
        vkdirty::config::package_from_cmdline(&std::fs::read("/proc/self/cmdline").ok()?)
    } else {
        None
    }
}
