//! The layer's settings, resolved once per process at the first `vkCreateInstance` (the only
//! place `VK_EXT_layer_settings` values are known), before the trace opens at the first
//! `vkCreateDevice`. Sources, first wins: `VKDIRTY_*`, `VK_VKDIRTY_CAPTURE_*`, (Android)
//! `debug.vkdirty.*`, `VK_EXT_layer_settings`, `vk_layer_settings.txt`, defaults.

use ash::vk;
use once_cell::sync::OnceCell;
use std::ffi::{c_char, CStr};
use vkdirty::config::{self, EnvSource, FileSource, KhronosEnvSource, MapSource, Resolved, SettingSource, Settings};

use crate::log;

static RESOLVED: OnceCell<Resolved> = OnceCell::new();

/// The settings (resolved without `VK_EXT_layer_settings` if asked for before any instance).
pub fn get() -> &'static Settings {
    &resolved().settings
}

/// The settings with where each non-default value came from.
pub fn resolved() -> &'static Resolved {
    RESOLVED.get_or_init(|| resolve(None))
}

/// `vkCreateInstance`: resolves the settings with the instance's `VK_EXT_layer_settings`. A later
/// instance cannot change them (the trace is per process); one line says so if it tries.
///
/// # Safety
/// `create_info` is null or a valid `VkInstanceCreateInfo` with a valid `pNext` chain.
pub unsafe fn instance_creating(create_info: *const vk::InstanceCreateInfo<'_>) {
    // SAFETY: caller contract.
    let api = unsafe { api_settings(create_info) };
    let mut first = false;
    RESOLVED.get_or_init(|| {
        first = true;
        resolve(api.as_ref())
    });
    if !first && api.is_some() {
        log::once(
            config::LogLevel::Info,
            "VK_EXT_layer_settings of a later vkCreateInstance are not applied: the settings are fixed at the first one",
        );
    }
}

fn resolve(api: Option<&MapSource>) -> Resolved {
    let file = FileSource::load_default();
    let props = properties();
    let mut sources: Vec<&dyn SettingSource> = vec![&EnvSource, &KhronosEnvSource];
    if let Some(p) = props.as_deref() {
        sources.push(p);
    }
    if let Some(a) = api {
        sources.push(a);
    }
    if let Some(f) = &file {
        sources.push(f);
    }
    let r = Settings::resolve(&sources);
    log::set_level(r.settings.log_level);
    if let Some(p) = &r.settings.log_file {
        log::set_file(p);
    }
    for w in &r.warnings {
        log::warn!("{w}");
    }
    if !r.origins.is_empty() {
        log::info!("settings: {}", r.origin_line());
    }
    r
}

/// Text of one `VkLayerSettingEXT`'s values (several are joined with commas), or `None` for a
/// type the layer does not read.
///
/// # Safety
/// `s` is valid: `pValues` holds `valueCount` values of `type`.
unsafe fn setting_text(s: &vk::LayerSettingEXT<'_>) -> Option<String> {
    const MAX_VALUES: u32 = 1024;
    let n = s.value_count.min(MAX_VALUES) as usize;
    if n == 0 || s.p_values.is_null() {
        return Some(String::new());
    }
    fn each<T: Copy>(p: *const std::ffi::c_void, n: usize, f: impl Fn(T) -> String) -> Vec<String> {
        // SAFETY: the caller of setting_text guarantees n values of T at p.
        unsafe { std::slice::from_raw_parts(p.cast::<T>(), n) }.iter().map(|v| f(*v)).collect()
    }
    let p = s.p_values;
    let parts = match s.ty {
        vk::LayerSettingTypeEXT::BOOL32 => each::<vk::Bool32>(p, n, |v| if v != 0 { "1" } else { "0" }.into()),
        vk::LayerSettingTypeEXT::INT32 => each::<i32>(p, n, |v| v.to_string()),
        vk::LayerSettingTypeEXT::INT64 => each::<i64>(p, n, |v| v.to_string()),
        vk::LayerSettingTypeEXT::UINT32 => each::<u32>(p, n, |v| v.to_string()),
        vk::LayerSettingTypeEXT::UINT64 => each::<u64>(p, n, |v| v.to_string()),
        vk::LayerSettingTypeEXT::FLOAT32 => each::<f32>(p, n, |v| v.to_string()),
        vk::LayerSettingTypeEXT::FLOAT64 => each::<f64>(p, n, |v| v.to_string()),
        vk::LayerSettingTypeEXT::STRING => each::<*const c_char>(p, n, |v| {
            if v.is_null() {
                String::new()
            } else {
                // SAFETY: STRING values are NUL-terminated strings (VUID-VkLayerSettingEXT-pValues-parameter).
                unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned()
            }
        }),
        _ => return None,
    };
    Some(parts.join(","))
}

/// This layer's values in every `VkLayerSettingsCreateInfoEXT` of the chain (the first value of
/// a setting wins, as in the Khronos library).
///
/// # Safety
/// `create_info` is null or valid, with a valid `pNext` chain.
unsafe fn api_settings(create_info: *const vk::InstanceCreateInfo<'_>) -> Option<MapSource> {
    if create_info.is_null() {
        return None;
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    // SAFETY: caller contract.
    let mut next = unsafe { (*create_info).p_next }.cast::<vk::BaseInStructure<'_>>();
    let mut hops = 0;
    while !next.is_null() && hops < 256 {
        hops += 1;
        // SAFETY: every pNext entry starts with sType and pNext.
        let base = unsafe { &*next };
        if base.s_type == vk::StructureType::LAYER_SETTINGS_CREATE_INFO_EXT {
            // SAFETY: the sType says which struct this is.
            let info = unsafe { &*next.cast::<vk::LayerSettingsCreateInfoEXT<'_>>() };
            let list: &[vk::LayerSettingEXT<'_>] = if info.p_settings.is_null() {
                &[]
            } else {
                // SAFETY: pSettings holds settingCount entries.
                unsafe { std::slice::from_raw_parts(info.p_settings, info.setting_count as usize) }
            };
            for s in list {
                if s.p_layer_name.is_null() || s.p_setting_name.is_null() {
                    continue;
                }
                // SAFETY: both are NUL-terminated strings.
                let (layer, name) = unsafe { (CStr::from_ptr(s.p_layer_name), CStr::from_ptr(s.p_setting_name)) };
                if layer.to_bytes() != config::LAYER_NAME.as_bytes() {
                    continue;
                }
                let name = name.to_string_lossy().into_owned();
                // SAFETY: a valid setting of this layer.
                match unsafe { setting_text(s) } {
                    Some(v) if !pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case(&name)) => pairs.push((name, v)),
                    Some(_) => {}
                    None => log::warn!("VK_EXT_layer_settings {name}: value type {:?} is not read; ignored", s.ty),
                }
            }
        }
        next = base.p_next;
    }
    (!pairs.is_empty()).then(|| MapSource::new("VK_EXT_layer_settings", pairs))
}

#[cfg(not(target_os = "android"))]
fn properties() -> Option<Box<dyn SettingSource>> {
    None
}

#[cfg(target_os = "android")]
fn properties() -> Option<Box<dyn SettingSource>> {
    use vkdirty::config::{PropertyReader, PropertySource};
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
    Some(Box::new(PropertySource(SystemProperties)))
}

/// The session record's list: every setting's value in effect and where it came from.
/// `origins` as [`Resolved::origins`]; a setting without one shows `default`.
pub fn session_settings(s: &Settings, origins: &[config::Origin]) -> Vec<vkdirty::trace::SessionSetting> {
    config::SETTINGS
        .iter()
        .map(|info| vkdirty::trace::SessionSetting {
            name: info.name.to_string(),
            value: s.value_text(info.name).unwrap_or_default(),
            from: origins.iter().find(|o| o.name == info.name).map_or("default".to_string(), |o| o.from.clone()),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_settings_of_this_layer_only_in_every_type() {
        let yes: vk::Bool32 = 1;
        let frames = c"2-3";
        let frames_ptr = [frames.as_ptr()];
        let n: u32 = 4;
        let s = [
            vk::LayerSettingEXT {
                p_layer_name: c"VK_LAYER_VKDIRTY_capture".as_ptr(),
                p_setting_name: c"shadow_reads".as_ptr(),
                ty: vk::LayerSettingTypeEXT::BOOL32,
                value_count: 1,
                p_values: (&yes as *const vk::Bool32).cast(),
                ..Default::default()
            },
            vk::LayerSettingEXT {
                p_layer_name: c"VK_LAYER_VKDIRTY_capture".as_ptr(),
                p_setting_name: c"frames".as_ptr(),
                ty: vk::LayerSettingTypeEXT::STRING,
                value_count: 1,
                p_values: frames_ptr.as_ptr().cast(),
                ..Default::default()
            },
            vk::LayerSettingEXT {
                p_layer_name: c"VK_LAYER_VKDIRTY_capture".as_ptr(),
                p_setting_name: c"trigger_frames".as_ptr(),
                ty: vk::LayerSettingTypeEXT::UINT32,
                value_count: 1,
                p_values: (&n as *const u32).cast(),
                ..Default::default()
            },
            vk::LayerSettingEXT {
                p_layer_name: c"VK_LAYER_KHRONOS_validation".as_ptr(),
                p_setting_name: c"backend".as_ptr(),
                ty: vk::LayerSettingTypeEXT::STRING,
                value_count: 1,
                p_values: frames_ptr.as_ptr().cast(),
                ..Default::default()
            },
        ];
        let lsci = vk::LayerSettingsCreateInfoEXT {
            setting_count: s.len() as u32,
            p_settings: s.as_ptr(),
            ..Default::default()
        };
        let ci = vk::InstanceCreateInfo {
            p_next: (&lsci as *const vk::LayerSettingsCreateInfoEXT<'_>).cast(),
            ..Default::default()
        };
        // SAFETY: valid structs that outlive the call.
        let m = unsafe { api_settings(&ci) }.unwrap();
        assert_eq!(m.get("SHADOW_READS").as_deref(), Some("1"));
        assert_eq!(m.get("FRAMES").as_deref(), Some("2-3"));
        assert_eq!(m.get("TRIGGER_FRAMES").as_deref(), Some("4"));
        assert_eq!(m.get("BACKEND"), None, "another layer's setting");
        let r = Settings::resolve(&[&m]);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert!(r.settings.shadow_reads && r.settings.trigger_frames == 4);
        let listed = session_settings(&r.settings, &r.origins);
        assert_eq!(listed.len(), config::SETTINGS.len());
        let frames = listed.iter().find(|x| x.name == "FRAMES").unwrap();
        assert_eq!((frames.value.as_str(), frames.from.as_str()), ("2-3", "VK_EXT_layer_settings frames"));
        let backend = listed.iter().find(|x| x.name == "BACKEND").unwrap();
        assert_eq!((backend.value.as_str(), backend.from.as_str()), ("auto", "default"));
        // No chain: nothing.
        // SAFETY: a valid struct.
        assert!(unsafe { api_settings(&vk::InstanceCreateInfo::default()) }.is_none());
    }
}
