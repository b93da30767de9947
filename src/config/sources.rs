//! Where setting values come from, in the Vulkan ecosystem's ways: environment variables
//! (`VKDIRTY_<NAME>` and the Khronos form `VK_VKDIRTY_CAPTURE_<NAME>`), Android system
//! properties, `VK_EXT_layer_settings` (handed over by the layer as name/value pairs) and
//! `vk_layer_settings.txt` (keys `vkdirty_capture.<name>`, the file vkconfig writes).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where setting values come from. `name` is the upper-case setting name (`TRACE_FILE`).
pub trait SettingSource {
    fn get(&self, name: &str) -> Option<String>;

    /// How a person finds the value again (`VKDIRTY_TRACE_FILE`, `vkdirty_capture.trace_file in
    /// /home/u/vk_layer_settings.txt`); used in log lines.
    fn describe(&self, name: &str) -> String {
        format!("VKDIRTY_{name}")
    }
}

/// The layer's key in `vk_layer_settings.txt`, `VK_EXT_layer_settings` and the Khronos
/// environment names: the layer name without `VK_LAYER_`, lower case.
pub const LAYER_KEY: &str = "vkdirty_capture";

/// The lower-case key of a setting (`trace_file`), as in the manifest and `VK_EXT_layer_settings`.
pub fn setting_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// `VKDIRTY_<NAME>` environment variables.
pub struct EnvSource;

impl SettingSource for EnvSource {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(format!("VKDIRTY_{name}")).ok()
    }
}

/// The Khronos layer-settings environment names: `VK_VKDIRTY_CAPTURE_<NAME>`.
pub struct KhronosEnvSource;

/// `VK_VKDIRTY_CAPTURE_<NAME>`.
pub fn khronos_env_name(name: &str) -> String {
    format!("VK_{}_{name}", LAYER_KEY.to_ascii_uppercase())
}

impl SettingSource for KhronosEnvSource {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(khronos_env_name(name)).ok()
    }
    fn describe(&self, name: &str) -> String {
        khronos_env_name(name)
    }
}

/// Reads one system property (`__system_property_get` on Android; a map in tests).
pub trait PropertyReader {
    fn property(&self, key: &str) -> Option<String>;
}

/// The Android property name of a setting: `TRACE_FILE` → `debug.vkdirty.trace_file`.
pub fn property_key(name: &str) -> String {
    format!("debug.vkdirty.{}", name.to_ascii_lowercase())
}

/// Settings from `debug.vkdirty.<name>` properties, then the Khronos form
/// `debug.vulkan.vkdirty_capture.<name>`.
pub struct PropertySource<R: PropertyReader>(pub R);

impl<R: PropertyReader> SettingSource for PropertySource<R> {
    fn get(&self, name: &str) -> Option<String> {
        let nonempty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        nonempty(self.0.property(&property_key(name)))
            .or_else(|| nonempty(self.0.property(&format!("debug.vulkan.{LAYER_KEY}.{}", setting_key(name)))))
    }
    fn describe(&self, name: &str) -> String {
        format!("property {}", property_key(name))
    }
}

/// Name/value pairs with a fixed description: `VK_EXT_layer_settings` values (converted to text
/// by the layer), and tests.
pub struct MapSource {
    pub what: String,
    pub values: HashMap<String, String>,
}

impl MapSource {
    /// `pairs` keyed by setting key or name, any case.
    pub fn new(what: impl Into<String>, pairs: impl IntoIterator<Item = (String, String)>) -> MapSource {
        MapSource { what: what.into(), values: pairs.into_iter().map(|(k, v)| (k.to_ascii_uppercase(), v)).collect() }
    }
}

impl SettingSource for MapSource {
    fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }
    fn describe(&self, name: &str) -> String {
        format!("{} {}", self.what, setting_key(name))
    }
}

/// `vk_layer_settings.txt`: `key = value` lines, `#` comments; only `vkdirty_capture.*` keys.
pub struct FileSource {
    pub path: PathBuf,
    values: HashMap<String, String>,
}

impl FileSource {
    pub fn parse(path: &Path, text: &str) -> FileSource {
        let prefix = format!("{LAYER_KEY}.");
        let mut values = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let Some((k, v)) = line.split_once('=') else { continue };
            if let Some(name) = k.trim().strip_prefix(&prefix) {
                values.insert(name.to_ascii_uppercase(), v.trim().to_string());
            }
        }
        FileSource { path: path.to_path_buf(), values }
    }

    /// The settings file the Khronos layer-settings library would read, in this order:
    /// `VK_LAYER_SETTINGS_PATH` (a file, or a directory holding `vk_layer_settings.txt`), the
    /// working directory, then the per-user file vkconfig writes
    /// (`$XDG_DATA_HOME/vulkan/settings.d/`, else `~/.local/share/vulkan/settings.d/`).
    pub fn find(env: &dyn Fn(&str) -> Option<String>, cwd: Option<&Path>) -> Option<PathBuf> {
        const FILE: &str = "vk_layer_settings.txt";
        let mut candidates = Vec::new();
        if let Some(p) = env("VK_LAYER_SETTINGS_PATH").filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            candidates.push(if p.is_dir() { p.join(FILE) } else { p });
        }
        if let Some(d) = cwd {
            candidates.push(d.join(FILE));
        }
        let data_home = env("XDG_DATA_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| env("HOME").filter(|h| !h.is_empty()).map(|h| Path::new(&h).join(".local/share")));
        if let Some(d) = data_home {
            candidates.push(d.join("vulkan/settings.d").join(FILE));
        }
        candidates.into_iter().find(|p| p.is_file())
    }

    /// Reads the file [`FileSource::find`] picks, if any (an unreadable one is skipped).
    pub fn load_default() -> Option<FileSource> {
        let env = |k: &str| std::env::var(k).ok();
        let cwd = std::env::current_dir().ok();
        let path = FileSource::find(&env, cwd.as_deref())?;
        let text = std::fs::read_to_string(&path).ok()?;
        Some(FileSource::parse(&path, &text))
    }
}

impl SettingSource for FileSource {
    fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }
    fn describe(&self, name: &str) -> String {
        format!("{LAYER_KEY}.{} in {}", setting_key(name), self.path.display())
    }
}

/// The first source that has a value wins (an empty value counts as unset: an unset Android
/// property reads as "").
pub struct Layered<'a>(pub Vec<&'a dyn SettingSource>);

impl SettingSource for Layered<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.0.iter().find_map(|s| s.get(name).filter(|v| !v.trim().is_empty()))
    }
    fn describe(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|s| s.get(name).is_some_and(|v| !v.trim().is_empty()))
            .map_or_else(|| format!("VKDIRTY_{name}"), |s| s.describe(name))
    }
}

impl<F: Fn(&str) -> Option<String>> SettingSource for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_file_keys_and_comments() {
        let f = FileSource::parse(
            Path::new("/x/vk_layer_settings.txt"),
            "# vkconfig\nkhronos_validation.enables = X\nvkdirty_capture.backend = shadow # why\n\
             vkdirty_capture.frames=1-3\n  vkdirty_capture.log_level =  debug  \nbroken line\n",
        );
        assert_eq!(f.get("BACKEND").as_deref(), Some("shadow"));
        assert_eq!(f.get("FRAMES").as_deref(), Some("1-3"));
        assert_eq!(f.get("LOG_LEVEL").as_deref(), Some("debug"));
        assert_eq!(f.get("ENABLES"), None);
        assert_eq!(f.describe("BACKEND"), "vkdirty_capture.backend in /x/vk_layer_settings.txt");
    }

    #[test]
    fn settings_file_search_order() {
        let dir = std::env::temp_dir().join(format!("vkdirty-settings-find-{}", std::process::id()));
        let (a, cwd, home) = (dir.join("a"), dir.join("cwd"), dir.join("home"));
        let user = home.join(".local/share/vulkan/settings.d");
        for d in [&a, &cwd, &user] {
            std::fs::create_dir_all(d).unwrap();
        }
        let env_of = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let home_s = home.to_string_lossy().into_owned();
        let a_s = a.to_string_lossy().into_owned();
        // Nothing there yet.
        assert_eq!(FileSource::find(&env_of(vec![("HOME", home_s.clone())]), Some(&cwd)), None);
        std::fs::write(user.join("vk_layer_settings.txt"), "").unwrap();
        assert_eq!(
            FileSource::find(&env_of(vec![("HOME", home_s.clone())]), Some(&cwd)),
            Some(user.join("vk_layer_settings.txt"))
        );
        std::fs::write(cwd.join("vk_layer_settings.txt"), "").unwrap();
        assert_eq!(
            FileSource::find(&env_of(vec![("HOME", home_s.clone())]), Some(&cwd)),
            Some(cwd.join("vk_layer_settings.txt"))
        );
        std::fs::write(a.join("vk_layer_settings.txt"), "").unwrap();
        let env = env_of(vec![("HOME", home_s.clone()), ("VK_LAYER_SETTINGS_PATH", a_s.clone())]);
        assert_eq!(FileSource::find(&env, Some(&cwd)), Some(a.join("vk_layer_settings.txt")));
        // XDG_DATA_HOME replaces ~/.local/share.
        std::fs::remove_file(cwd.join("vk_layer_settings.txt")).unwrap();
        let env = env_of(vec![("HOME", home_s), ("XDG_DATA_HOME", a_s)]);
        assert_eq!(FileSource::find(&env, Some(&cwd)), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn khronos_names() {
        assert_eq!(khronos_env_name("TRACE_FILE"), "VK_VKDIRTY_CAPTURE_TRACE_FILE");
        assert_eq!(setting_key("FLUSH_EVERY_SUBMIT"), "flush_every_submit");
        let m = MapSource::new("VK_EXT_layer_settings", [("backend".to_string(), "full".to_string())]);
        assert_eq!(m.get("BACKEND").as_deref(), Some("full"));
        assert_eq!(m.describe("BACKEND"), "VK_EXT_layer_settings backend");
    }
}
