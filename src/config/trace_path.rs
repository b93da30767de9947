//! Where the trace file goes when `TRACE_FILE` names a directory, a template or nothing.

use std::path::{Path, PathBuf};

/// `vkdirty_<process>_<pid>.vkd`, with characters that are awkward in file names replaced.
pub fn default_trace_file_name(process: &str, pid: u32) -> String {
    let clean: String = process
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    let clean = if clean.is_empty() { "app".to_string() } else { clean };
    format!("vkdirty_{clean}_{pid}.vkd")
}

/// Where the trace goes: the setting when it names a file (`{pid}` and `{process}` replaced);
/// inside it when it is an existing directory; otherwise the default name in the working directory, or, on Android (when
/// `android_package` is given), in `/sdcard/Android/data/<package>/files/`.
pub fn resolve_trace_path(setting: Option<&Path>, process: &str, pid: u32, android_package: Option<&str>) -> PathBuf {
    let name = default_trace_file_name(process, pid);
    match setting {
        Some(p) if p.is_dir() => p.join(name),
        Some(p) => match p.to_str() {
            Some(s) if s.contains("{pid}") || s.contains("{process}") => {
                let clean = default_trace_file_name(process, 0);
                let clean = clean.trim_start_matches("vkdirty_").trim_end_matches("_0.vkd");
                PathBuf::from(s.replace("{pid}", &pid.to_string()).replace("{process}", clean))
            }
            _ => p.to_path_buf(),
        },
        None => match android_package {
            Some(pkg) => PathBuf::from(format!("/sdcard/Android/data/{pkg}/files")).join(name),
            None => PathBuf::from(name),
        },
    }
}

/// The Android package of a process, from its command line (`com.example.app:service` →
/// `com.example.app`).
pub fn package_from_cmdline(cmdline: &[u8]) -> Option<String> {
    let first = cmdline.split(|&b| b == 0).next()?;
    let s = std::str::from_utf8(first).ok()?;
    let pkg = s.split(':').next()?.trim();
    (!pkg.is_empty() && !pkg.contains('/')).then(|| pkg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_paths() {
        assert_eq!(default_trace_file_name("my app/x", 42), "vkdirty_my_app_x_42.vkd");
        assert_eq!(default_trace_file_name("", 1), "vkdirty_app_1.vkd");
        assert_eq!(resolve_trace_path(None, "game", 7, None), PathBuf::from("vkdirty_game_7.vkd"));
        assert_eq!(
            resolve_trace_path(None, "com.x.y", 7, Some("com.x.y")),
            PathBuf::from("/sdcard/Android/data/com.x.y/files/vkdirty_com.x.y_7.vkd")
        );
        let dir = std::env::temp_dir();
        assert_eq!(resolve_trace_path(Some(&dir), "g", 1, None), dir.join("vkdirty_g_1.vkd"));
        let file = dir.join("does-not-exist-vkdirty/t.vkd");
        assert_eq!(resolve_trace_path(Some(&file), "g", 1, None), file);
        let tpl = Path::new("/tmp/t-{process}-{pid}.vkd");
        assert_eq!(resolve_trace_path(Some(tpl), "a b", 9, None), PathBuf::from("/tmp/t-a_b-9.vkd"));
        assert_eq!(package_from_cmdline(b"com.a.b:remote\0--x\0"), Some("com.a.b".into()));
        assert_eq!(package_from_cmdline(b"/system/bin/app\0"), None);
        assert_eq!(package_from_cmdline(b""), None);
    }
}
