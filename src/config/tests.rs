//! Settings: parsing, precedence, rendering back to text.

use super::*;
use crate::guard::BackendKind;
use std::collections::HashMap;
use std::path::Path;

fn map_source(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name: &str| m.get(name).cloned()
}

#[test]
fn every_setting_reads_back_as_text_the_setting_accepts() {
    let (s, w) = Settings::load(&map_source(&[
        ("BACKEND", "shadow"),
        ("HOST_IMPORT", "strict"),
        ("SHADOW_READS", "on"),
        ("FRAMES", "3,1-2"),
        ("TRIGGER_SIGNAL", "usr2"),
        ("TRIGGER_FRAMES", "7"),
        ("LOG_FILE", "/tmp/x.log"),
    ]));
    assert!(w.is_empty(), "{w:?}");
    for info in SETTINGS {
        let text = s.value_text(info.name).unwrap_or_else(|| panic!("{}: no value_text arm", info.name));
        let mut back = Settings::default();
        if !text.is_empty() {
            back.apply(info.name, &text).unwrap_or_else(|()| panic!("{}: {text:?} does not read back", info.name));
        }
        assert_eq!(back.value_text(info.name), Some(text), "{}", info.name);
    }
    assert_eq!(s.value_text("FRAMES").as_deref(), Some("1-3"));
    assert_eq!(s.value_text("TRIGGER_SIGNAL").as_deref(), Some("SIGUSR2"));
    assert_eq!(s.value_text("SHADOW_READS").as_deref(), Some("1"));
}

#[test]
fn precedence_and_origins() {
    let env = map_source(&[("BACKEND", "full")]);
    let api = MapSource::new(
        "VK_EXT_layer_settings",
        [("backend".into(), "shadow".into()), ("frames".into(), "2-3".into()), ("compression".into(), "zstd".into())],
    );
    let file = FileSource::parse(
        Path::new("/x/vk_layer_settings.txt"),
        "vkdirty_capture.frames = 9\nvkdirty_capture.compression = none\nvkdirty_capture.log_level = info\n",
    );
    let r = Settings::resolve(&[&env, &api, &file]);
    assert_eq!(r.settings.backend, BackendChoice::Fixed(BackendKind::Full), "the environment wins");
    assert_eq!(r.settings.frames, RangeSet::parse("2-3"), "VK_EXT_layer_settings beats the file");
    assert_eq!(r.settings.compression, Compression::None, "a bad value falls through to the next source");
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("VK_EXT_layer_settings compression: bad value \"zstd\""), "{:?}", r.warnings);
    assert!(
        r.warnings[0].contains("using the value of vkdirty_capture.compression in /x/vk_layer_settings.txt"),
        "{:?}",
        r.warnings
    );
    // LOG_LEVEL=info is the default: not listed.
    let names: Vec<&str> = r.origins.iter().map(|o| o.name).collect();
    assert_eq!(names, ["BACKEND", "COMPRESSION", "FRAMES"]);
    assert_eq!(
        r.origin_line(),
        "BACKEND=full (VKDIRTY_BACKEND), COMPRESSION=none (vkdirty_capture.compression in /x/vk_layer_settings.txt), \
         FRAMES=2-3 (VK_EXT_layer_settings frames)"
    );
    // Sources given nothing: defaults.
    let r = Settings::resolve(&[&map_source(&[])]);
    assert_eq!(r.settings, Settings::default());
    assert!(r.origins.is_empty());
}

#[test]
fn defaults_when_nothing_is_set() {
    let (s, w) = Settings::load(&map_source(&[]));
    assert_eq!(s, Settings::default());
    assert!(w.is_empty());
    assert_eq!(s.backend, BackendChoice::Auto);
    assert!(s.align_requirements);
    assert_eq!(s.compression, Compression::Lz4);
}

#[test]
fn every_setting_parses() {
    let (s, w) = Settings::load(&map_source(&[
        ("TRACE_FILE", "/tmp/x.vkd"),
        ("BACKEND", "shadow"),
        ("HOST_IMPORT", "off"),
        ("SHADOW_READS", "on"),
        ("SHADOW_REFRESH", "always"),
        ("PERSISTENT_SHADOW", "no"),
        ("COMPRESSION", "none"),
        ("FRAMES", "10-20,100"),
        ("SUBMITS", "5-"),
        ("FLUSH_EVERY_SUBMIT", "1"),
        ("LOG_LEVEL", "debug"),
        ("ALIGN_REQUIREMENTS", "false"),
        ("TRACE_EXISTS", "refuse"),
    ]));
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(s.trace_exists, Existing::Refuse);
    assert_eq!(s.trace_file.as_deref(), Some(Path::new("/tmp/x.vkd")));
    assert_eq!(s.backend, BackendChoice::Fixed(BackendKind::Shadow));
    assert!(s.shadow_reads && !s.persistent_shadow && s.flush_every_submit);
    assert_eq!(s.shadow_refresh, ShadowRefresh::Always);
    assert!(!s.align_requirements);
    assert_eq!(s.host_import, HostImport::Off);
    assert_eq!(s.compression, Compression::None);
    assert_eq!(s.log_level, LogLevel::Debug);
    assert_eq!(s.frames.as_ref().map(|r| r.to_string()).as_deref(), Some("10-20,100"));
    assert_eq!(s.submits.as_ref().map(|r| r.to_string()).as_deref(), Some("5-"));
}

#[test]
fn every_backend_name_is_accepted() {
    for c in BackendChoice::ALL {
        let (s, w) = Settings::load(&map_source(&[("BACKEND", c.name())]));
        assert!(w.is_empty());
        assert_eq!(s.backend, c);
    }
    // The settings table offers exactly the choices the parser takes.
    let SettingType::Enum(keys) = setting("BACKEND").unwrap().ty else { panic!("BACKEND is an enum") };
    let keys: Vec<&str> = keys.iter().map(|k| k.key).collect();
    let names: Vec<&str> = BackendChoice::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(keys, names);
    // Every backend but the one only host-import reaches is a choice of its own.
    for k in BackendKind::ALL {
        assert_eq!(BackendChoice::ALL.contains(&BackendChoice::Fixed(k)), k != BackendKind::OwnedWp, "{k}");
    }
    assert_eq!(BackendChoice::parse("host-import"), Some(BackendChoice::HostImport));
}

#[test]
fn bad_values_warn_once_each_and_keep_defaults() {
    let (s, w) = Settings::load(&map_source(&[
        ("BACKEND", "magic"),
        ("SHADOW_READS", "maybe"),
        ("COMPRESSION", "zstd"),
        ("FRAMES", "20-10"),
        ("SUBMITS", "0"),
        ("LOG_LEVEL", "loud"),
    ]));
    assert_eq!(s, Settings::default());
    assert_eq!(w.len(), 6, "{w:?}");
    assert!(w[0].contains("VKDIRTY_BACKEND") && w[0].contains("\"magic\""));
    assert!(w[0].contains("auto, async-wp, shadow-wp, shadow, full, assisted, host-import"));
    assert!(w[2].contains("VKDIRTY_COMPRESSION") && w[2].contains("lz4, none"));
    for line in &w {
        assert!(line.contains("using the default"), "{line}");
    }
}

#[test]
fn values_are_trimmed_and_empty_means_unset() {
    let (s, w) = Settings::load(&map_source(&[("BACKEND", "  full "), ("LOG_LEVEL", "")]));
    assert!(w.is_empty());
    assert_eq!(s.backend, BackendChoice::Fixed(BackendKind::Full));
    assert_eq!(s.log_level, LogLevel::Info);
}

#[test]
fn shadow_refresh_policy() {
    assert_eq!(Settings::default().shadow_refresh, ShadowRefresh::Cached);
    for (v, cached, uncached) in [("never", false, false), ("cached", true, false), ("always", true, true)] {
        let (s, w) = Settings::load(&map_source(&[("SHADOW_REFRESH", v)]));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.shadow_refresh.name(), v);
        assert_eq!(s.shadow_refresh.at_sync_points(true), cached, "{v}");
        assert_eq!(s.shadow_refresh.at_sync_points(false), uncached, "{v}");
    }
    let (s, w) = Settings::load(&map_source(&[("SHADOW_REFRESH", "sometimes")]));
    assert_eq!(s.shadow_refresh, ShadowRefresh::Cached);
    assert!(w[0].contains("never, cached, always"), "{w:?}");
}

#[test]
fn range_sets() {
    let r = RangeSet::parse("100, 10-20 ,15-25,26").unwrap();
    assert_eq!(r.to_string(), "10-26,100");
    assert!(r.contains(10) && r.contains(26) && r.contains(100));
    assert!(!r.contains(9) && !r.contains(27) && !r.contains(101));
    assert!(r.any_at_or_after(100) && !r.any_at_or_after(101));
    let open = RangeSet::parse("7-").unwrap();
    assert!(open.contains(u64::MAX) && !open.contains(6));
    for bad in ["", "a", "1-b", "0", "0-3", "5-4", "1,,2", "-3", "1-2-3"] {
        assert_eq!(RangeSet::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn capture_windows() {
    let (s, _) = Settings::load(&map_source(&[("FRAMES", "3-4"), ("SUBMITS", "10-")]));
    assert!(!s.captures(2, 50));
    assert!(!s.captures(3, 9));
    assert!(s.captures(3, 10) && s.captures(4, 11));
    assert!(!s.captures(5, 12));
    assert!(s.captures_later(1, 1) && s.captures_later(4, 100));
    assert!(!s.captures_later(5, 100));
    let all = Settings::default();
    assert!(all.captures(1, 1) && all.captures_later(u64::MAX, u64::MAX));
}

#[test]
fn alignment_follows_backend() {
    let cases = [
        ("auto", true),
        ("shadow", true),
        ("shadow-wp", true),
        // Memory it cannot import falls back to auto's order.
        ("host-import", true),
        ("async-wp", false),
        ("full", false),
        ("assisted", false),
    ];
    for (b, want) in cases {
        let (s, _) = Settings::load(&map_source(&[("BACKEND", b)]));
        assert_eq!(s.aligns_requirements(), want, "{b}");
    }
    let (s, _) = Settings::load(&map_source(&[("ALIGN_REQUIREMENTS", "0")]));
    assert!(!s.aligns_requirements());
}

#[test]
fn auto_order_starts_with_async_wp_and_ends_with_full() {
    assert_eq!(BackendChoice::Auto.order().first(), Some(&BackendKind::AsyncWp));
    assert_eq!(BackendChoice::Auto.order().last(), Some(&BackendKind::Full));
    assert_eq!(BackendChoice::Fixed(BackendKind::Shadow).order(), &[BackendKind::Shadow]);
    assert_eq!(BackendChoice::HostImport.order(), BackendChoice::Auto.order());
    assert_eq!(BackendChoice::HostImport.mapping_order(true)[0], BackendKind::OwnedWp);
    assert_eq!(BackendChoice::Auto.mapping_order(true)[1..], AUTO_ORDER);
    assert_eq!(BackendChoice::Auto.mapping_order(false), AUTO_ORDER);
    assert_eq!(
        BackendChoice::Fixed(BackendKind::Assisted).app_import_order(),
        &[BackendKind::AsyncWp, BackendKind::Full]
    );
    assert_eq!(BackendChoice::Auto.app_import_order(), &[BackendKind::AsyncWp, BackendKind::Full]);
}

#[test]
fn host_import_follows_backend_and_setting() {
    for (b, want) in [("auto", true), ("host-import", true), ("async-wp", false), ("shadow-wp", false), ("full", false)]
    {
        let (s, _) = Settings::load(&map_source(&[("BACKEND", b)]));
        assert_eq!(s.imports_host_memory(), want, "{b}");
        let (s, w) = Settings::load(&map_source(&[("BACKEND", b), ("HOST_IMPORT", "0")]));
        assert!(w.is_empty());
        assert!(!s.imports_host_memory(), "{b} with HOST_IMPORT=0");
        let (s, w) = Settings::load(&map_source(&[("BACKEND", b), ("HOST_IMPORT", "Strict")]));
        assert!(w.is_empty());
        assert_eq!((s.host_import, s.imports_host_memory()), (HostImport::Strict, want), "{b} with HOST_IMPORT=strict");
    }
    let (s, w) = Settings::load(&map_source(&[("HOST_IMPORT", "loose")]));
    assert_eq!((s.host_import, w.len()), (HostImport::On, 1), "an unknown value warns and keeps the default");
}

#[test]
fn prediction_defaults_per_backend_and_one_or_zero_mean_every_backend() {
    let predicts = |v: Option<&str>| -> Vec<bool> {
        let pairs: Vec<(&str, &str)> = v.map(|v| ("PREDICT", v)).into_iter().collect();
        let (s, w) = Settings::load(&map_source(&pairs));
        assert!(w.is_empty(), "{v:?}: {w:?}");
        BackendKind::ALL.iter().map(|&k| s.predict.enabled_for(k)).collect()
    };
    let auto: Vec<bool> = BackendKind::ALL
        .iter()
        .map(|k| matches!(k, BackendKind::AsyncWp | BackendKind::OwnedWp | BackendKind::ShadowWp))
        .collect();
    assert_eq!(predicts(None), auto);
    assert_eq!(predicts(Some("auto")), auto);
    for on in ["1", "on", "true", "yes"] {
        assert!(predicts(Some(on)).iter().all(|&p| p), "{on}");
    }
    for off in ["0", "off", "false", "no"] {
        assert!(predicts(Some(off)).iter().all(|&p| !p), "{off}");
    }
    let (s, w) = Settings::load(&map_source(&[("PREDICT", "sometimes")]));
    assert_eq!((s.predict, w.len()), (Predict::Auto, 1), "an unknown value warns and keeps the default");
    assert_eq!(s.value_text("PREDICT").as_deref(), Some("auto"));
}

struct Props(HashMap<String, String>);
impl PropertyReader for Props {
    fn property(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

#[test]
fn android_properties_map_to_settings() {
    assert_eq!(property_key("FLUSH_EVERY_SUBMIT"), "debug.vkdirty.flush_every_submit");
    let props = Props(
        [
            ("debug.vkdirty.backend", "shadow"),
            ("debug.vkdirty.frames", "1-3"),
            ("debug.vkdirty.trace_file", "/data/local/tmp/t.vkd"),
            // An unset property reads as "".
            ("debug.vkdirty.log_level", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    let env = map_source(&[("LOG_LEVEL", "warn"), ("BACKEND", "full")]);
    let psrc = PropertySource(props);
    // Environment first, then properties.
    let (s, w) = Settings::load(&Layered(vec![&env, &psrc]));
    assert!(w.is_empty());
    assert_eq!(s.backend, BackendChoice::Fixed(BackendKind::Full));
    assert_eq!(s.log_level, LogLevel::Warn);
    assert_eq!(s.frames, RangeSet::parse("1-3"));
    assert_eq!(s.trace_file.as_deref(), Some(Path::new("/data/local/tmp/t.vkd")));
    let (s, _) = Settings::load(&psrc);
    assert_eq!(s.backend, BackendChoice::Fixed(BackendKind::Shadow));
    assert_eq!(s.log_level, LogLevel::Info);
}

#[test]
fn gfxr_settings() {
    let (s, w) = Settings::load(&map_source(&[]));
    assert!(w.is_empty());
    assert_eq!((s.layers_below, s.gfxr_flush, s.write_trace), (LayersBelow::Auto, false, true));
    let (s, w) =
        Settings::load(&map_source(&[("LAYERS_BELOW", "Ignore"), ("GFXR_FLUSH", "1"), ("WRITE_TRACE", "off")]));
    assert!(w.is_empty(), "{w:?}");
    assert_eq!((s.layers_below, s.gfxr_flush, s.write_trace), (LayersBelow::Ignore, true, false));
    let (s, w) = Settings::load(&map_source(&[("LAYERS_BELOW", "never")]));
    assert_eq!((s.layers_below, w.len()), (LayersBelow::Auto, 1), "a bad value warns and keeps the default");
}
