//! What is made from the settings table: the layer manifest (with the `features` section vkconfig
//! reads) and the README's settings table. Tests fail when the checked-in files drift; run
//! `VKDIRTY_REGENERATE=1 cargo test -p vkdirty --lib config::docs` to rewrite them.

use super::{sources, EnumValue, Group, SettingInfo, SettingType, LAYER_NAME, PRESETS, SETTINGS};

/// The Vulkan version the layer is written against (manifest `api_version`).
pub const API_VERSION: (u32, u32, u32) = (1, 3, 239);
/// The layer's `implementation_version`.
pub const IMPLEMENTATION_VERSION: u32 = 1;
pub const DESCRIPTION: &str = "vkdirty: captures the memory the CPU writes, dirty pages only";
/// `VK_EXT_layer_settings` revision the layer reads.
pub const LAYER_SETTINGS_SPEC_VERSION: u32 = 2;
/// `VK_EXT_tooling_info` revision the layer answers.
pub const TOOLING_INFO_SPEC_VERSION: u32 = 1;

/// A JSON value that keeps its keys in the order written (the manifest is read by people too).
pub enum Json {
    Str(String),
    Bool(bool),
    Num(u64),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

fn s(v: impl Into<String>) -> Json {
    Json::Str(v.into())
}

impl Json {
    fn write(&self, out: &mut String, indent: usize) {
        let pad = |n: usize| "    ".repeat(n);
        match self {
            Json::Str(v) => out.push_str(&serde_json::to_string(v).unwrap_or_default()),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) => out.push_str(&n.to_string()),
            Json::Arr(items) if items.iter().all(|i| matches!(i, Json::Str(_))) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out, indent);
                }
                out.push(']');
            }
            Json::Arr(items) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    out.push_str(&pad(indent + 1));
                    item.write(out, indent + 1);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push_str("{\n");
                for (i, (k, v)) in fields.iter().enumerate() {
                    out.push_str(&pad(indent + 1));
                    out.push_str(&serde_json::to_string(k).unwrap_or_default());
                    out.push_str(": ");
                    v.write(out, indent + 1);
                    out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push('}');
            }
        }
    }

    pub fn to_pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }
}

/// Markdown to plain text (the manifest's descriptions).
fn plain(md: &str) -> String {
    md.replace('`', "")
}

/// A setting's value in the manifest's type (`BOOL` takes true/false, `INT` a number).
fn typed_value(info: &SettingInfo, v: &str) -> Json {
    match info.ty {
        SettingType::Bool => Json::Bool(matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "on" | "yes")),
        SettingType::Uint { .. } => Json::Num(v.parse().unwrap_or(0)),
        _ => s(v),
    }
}

fn enum_flags(vals: &[EnumValue]) -> Json {
    Json::Arr(
        vals.iter()
            .map(|v| Json::Obj(vec![("key", s(v.key)), ("label", s(v.label)), ("description", s(plain(v.doc)))]))
            .collect(),
    )
}

fn setting_json(info: &SettingInfo) -> Json {
    let mut f = vec![
        ("key", s(info.key())),
        ("env", s(format!("VKDIRTY_{}", info.name))),
        ("label", s(info.label)),
        ("description", s(plain(info.doc))),
    ];
    match info.ty {
        SettingType::Bool => f.push(("type", s("BOOL"))),
        SettingType::Enum(vals) => {
            f.push(("type", s("ENUM")));
            f.push(("flags", enum_flags(vals)));
        }
        SettingType::Ranges => f.push(("type", s("STRING"))),
        SettingType::Uint { max } => {
            f.push(("type", s("INT")));
            f.push(("range", Json::Obj(vec![("min", Json::Num(0)), ("max", Json::Num(max))])));
        }
        SettingType::SaveFile { filter } => {
            f.push(("type", s("SAVE_FILE")));
            f.push(("filter", s(filter)));
        }
        SettingType::LoadFile => f.push(("type", s("LOAD_FILE"))),
    }
    f.push(("default", typed_value(info, info.default)));
    Json::Obj(f)
}

/// The whole layer manifest.
pub fn manifest() -> Json {
    let groups = Group::ALL
        .iter()
        .map(|g| {
            Json::Obj(vec![
                ("key", s(g.key())),
                ("label", s(g.label())),
                ("description", s(g.label())),
                ("type", s("GROUP")),
                ("settings", Json::Arr(SETTINGS.iter().filter(|i| i.group == *g).map(setting_json).collect())),
            ])
        })
        .collect();
    let presets = PRESETS
        .iter()
        .map(|p| {
            let values = p
                .values
                .iter()
                .filter_map(|(name, v)| {
                    let info = super::setting(name)?;
                    Some(Json::Obj(vec![("key", s(info.key())), ("value", typed_value(info, v))]))
                })
                .collect();
            Json::Obj(vec![
                ("label", s(p.label)),
                ("description", s(plain(p.doc))),
                ("platforms", Json::Arr(vec![s("LINUX"), s("ANDROID")])),
                ("settings", Json::Arr(values)),
            ])
        })
        .collect();
    let (ma, mi, pa) = API_VERSION;
    Json::Obj(vec![
        ("file_format_version", s("1.2.0")),
        (
            "layer",
            Json::Obj(vec![
                ("name", s(LAYER_NAME)),
                ("type", s("GLOBAL")),
                ("library_path", s("./libVkLayer_vkdirty.so")),
                ("api_version", s(format!("{ma}.{mi}.{pa}"))),
                ("implementation_version", s(IMPLEMENTATION_VERSION.to_string())),
                ("description", s(DESCRIPTION)),
                (
                    "introduction",
                    s("Records which host-visible memory the application writes between submits (dirty pages \
                       only) into a .vkd trace; inspect it with the vkdirty command."),
                ),
                ("platforms", Json::Arr(vec![s("LINUX"), s("ANDROID")])),
                ("status", s("BETA")),
                (
                    "instance_extensions",
                    Json::Arr(vec![Json::Obj(vec![
                        ("name", s("VK_EXT_layer_settings")),
                        ("spec_version", s(LAYER_SETTINGS_SPEC_VERSION.to_string())),
                    ])]),
                ),
                (
                    "device_extensions",
                    Json::Arr(vec![Json::Obj(vec![
                        ("name", s("VK_EXT_tooling_info")),
                        ("spec_version", s(TOOLING_INFO_SPEC_VERSION.to_string())),
                        ("entrypoints", Json::Arr(vec![s("vkGetPhysicalDeviceToolPropertiesEXT")])),
                    ])]),
                ),
                ("disable_environment", Json::Obj(vec![("VKDIRTY_DISABLE", s("1"))])),
                ("features", Json::Obj(vec![("presets", Json::Arr(presets)), ("settings", Json::Arr(groups))])),
            ]),
        ),
    ])
}

fn accepted_md(info: &SettingInfo) -> String {
    if let Some(a) = info.accepted {
        return a.to_string();
    }
    match info.ty {
        SettingType::Bool => "`1`/`0`, `true`/`false`, `on`/`off`, `yes`/`no`".into(),
        SettingType::Enum(vals) => {
            vals.iter().filter(|v| !v.key.is_empty()).map(|v| format!("`{}`", v.key)).collect::<Vec<_>>().join(", ")
        }
        SettingType::Ranges => "`all`, or 1-based numbers and ranges: `10-20,100,200-`".into(),
        SettingType::Uint { max } => format!("`0` to `{max}`"),
        SettingType::SaveFile { .. } | SettingType::LoadFile => "a file path".into(),
    }
}

/// The README's settings table (between its `settings-table` markers).
pub fn readme_table() -> String {
    let mut t = String::from(
        "| Variable | `vk_layer_settings.txt` key | Android property | `vkdirty capture` | Default | Accepted | Meaning |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for i in SETTINGS {
        let default = match (i.default_doc, i.default) {
            (Some(d), _) => d.to_string(),
            (None, "") => "unset".to_string(),
            (None, d) => format!("`{d}`"),
        };
        let flag = if i.flag { format!("`--{}`", i.flag_name()) } else { "see below".to_string() };
        t.push_str(&format!(
            "| `VKDIRTY_{}` | `{}.{}` | `{}` | {flag} | {default} | {} | {} |\n",
            i.name,
            sources::LAYER_KEY,
            i.key(),
            sources::property_key(i.name),
            accepted_md(i),
            i.doc,
        ));
    }
    t
}

const BEGIN: &str = "<!-- settings-table:begin (made from src/config.rs) -->\n";
const END: &str = "<!-- settings-table:end -->";

/// `readme` with its settings table replaced by [`readme_table`]; `None` without the markers.
pub fn readme_with_table(readme: &str) -> Option<String> {
    let a = readme.find(BEGIN)? + BEGIN.len();
    let b = a + readme[a..].find(END)?;
    Some(format!("{}{}{}", &readme[..a], readme_table(), &readme[b..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use std::path::PathBuf;

    fn repo(p: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
    }

    /// Compares a checked-in file with what the table makes, or rewrites it when asked.
    fn check_generated(path: &str, want: &str) {
        let p = repo(path);
        let have = std::fs::read_to_string(&p).unwrap_or_default();
        if have == want {
            return;
        }
        if std::env::var_os("VKDIRTY_REGENERATE").is_some() {
            std::fs::write(&p, want).unwrap();
            return;
        }
        panic!(
            "{path} does not match src/config.rs; run `VKDIRTY_REGENERATE=1 cargo test -p vkdirty --lib \
             config::docs` and commit the result"
        );
    }

    #[test]
    fn manifest_matches_the_table() {
        check_generated("manifest/VkLayer_vkdirty.json", &manifest().to_pretty());
    }

    #[test]
    fn readme_table_matches_the_table() {
        let readme = std::fs::read_to_string(repo("README.md")).unwrap();
        let want = readme_with_table(&readme).expect("README.md has the settings-table markers");
        check_generated("README.md", &want);
    }

    /// The manifest (as checked in: `manifest_matches_the_table`) as the loader and vkconfig read
    /// it: JSON, file format 1.2.x, every setting
    /// with key, label, description, a known type and a default of that type; enum defaults
    /// among their flags; presets naming settings with values the layer accepts.
    #[test]
    fn manifest_reads_as_loader_and_vkconfig_expect() {
        let text = manifest().to_pretty();
        let m: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
        let ver = m["file_format_version"].as_str().unwrap();
        assert!(ver.starts_with("1.2."), "{ver}");
        let layer = &m["layer"];
        for k in ["name", "type", "library_path", "api_version", "implementation_version", "description"] {
            assert!(layer[k].is_string(), "layer.{k}");
        }
        assert_eq!(layer["name"], LAYER_NAME);
        let ext = |list: &str| -> Vec<String> {
            layer[list].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(ext("instance_extensions"), ["VK_EXT_layer_settings"]);
        assert_eq!(ext("device_extensions"), ["VK_EXT_tooling_info"]);

        let mut seen = Vec::new();
        for group in layer["features"]["settings"].as_array().unwrap() {
            assert_eq!(group["type"], "GROUP");
            for st in group["settings"].as_array().unwrap() {
                let key = st["key"].as_str().unwrap();
                let name = key.to_ascii_uppercase();
                let info =
                    crate::config::setting(&name).unwrap_or_else(|| panic!("manifest setting {key} not in the table"));
                assert!(st["label"].is_string() && st["description"].is_string(), "{key}");
                assert_eq!(st["env"], format!("VKDIRTY_{name}"));
                let ty = st["type"].as_str().unwrap();
                let default = &st["default"];
                match ty {
                    "BOOL" => {
                        let want = info.default == "1";
                        assert_eq!(default.as_bool(), Some(want), "{key}");
                        assert!(matches!(info.ty, SettingType::Bool));
                    }
                    "ENUM" => {
                        let keys: Vec<&str> =
                            st["flags"].as_array().unwrap().iter().map(|f| f["key"].as_str().unwrap()).collect();
                        assert!(keys.contains(&default.as_str().unwrap()), "{key}: default not among {keys:?}");
                        let SettingType::Enum(vals) = info.ty else { panic!("{key} is not an enum in the table") };
                        assert_eq!(keys, vals.iter().map(|v| v.key).collect::<Vec<_>>());
                        for k in keys.iter().filter(|k| !k.is_empty()) {
                            Settings::check(&name, k).unwrap_or_else(|e| panic!("{key}: {e}"));
                        }
                    }
                    "INT" => assert_eq!(default.as_u64().map(|d| d.to_string()).as_deref(), Some(info.default)),
                    "STRING" | "SAVE_FILE" | "LOAD_FILE" => assert_eq!(default.as_str(), Some(info.default), "{key}"),
                    other => panic!("{key}: type {other} is not one vkconfig knows here"),
                }
                if !info.default.is_empty() {
                    Settings::check(&name, info.default).unwrap();
                    let mut d = Settings::default();
                    d.apply(&name, info.default).unwrap();
                    assert_eq!(d, Settings::default(), "{name}: the table's default is not Settings::default()");
                }
                seen.push(name);
            }
        }
        let all: Vec<String> = SETTINGS.iter().map(|s| s.name.to_string()).collect();
        assert_eq!(seen.len(), all.len());
        for n in &all {
            assert!(seen.contains(n), "{n} missing from the manifest");
        }

        let presets = layer["features"]["presets"].as_array().unwrap();
        assert!(presets.len() >= 2);
        for p in presets {
            assert!(p["label"].is_string() && p["description"].is_string());
            for v in p["settings"].as_array().unwrap() {
                let name = v["key"].as_str().unwrap().to_ascii_uppercase();
                let value = match &v["value"] {
                    serde_json::Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::String(s) => s.clone(),
                    other => panic!("preset value {other}"),
                };
                Settings::check(&name, &value).unwrap();
            }
        }
    }

    #[test]
    fn every_setting_has_a_default_the_layer_reads_as_its_default() {
        for info in SETTINGS {
            assert!(!info.label.is_empty() && !info.doc.is_empty(), "{}", info.name);
            assert!(info.name.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{}", info.name);
        }
    }
}
