//! Which layers sit below this one. A capture layer below records the calls it sees; host-import
//! rewrites allocations, resources and extensions, so with such a layer below host-import stays
//! off and the layer below sees the application's own calls (`VKDIRTY_LAYERS_BELOW`).
//!
//! The loader's order of `VK_INSTANCE_LAYERS` is not to be trusted (explicit layers found in
//! different directories were seen inserted in the same order for both spellings), so the layers
//! are found from the link chain itself: `dladdr` on each next `vkGetInstanceProcAddr` names the
//! library it lives in.

use once_cell::sync::Lazy;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::ffi::{c_void, CStr};

use crate::dispatch::InstanceKey;
use crate::loader::InstanceLink;
use crate::settings;
use vkdirty::config::LayersBelow;

/// What a library below this layer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The Vulkan loader's terminator: the end of the chain.
    Loader,
    /// A layer that changes nothing the application could record (validation, device select).
    Allowed(&'static str),
    /// A layer that records the calls it sees.
    Capture(&'static str),
    /// A layer this one does not know: treated as a capture layer.
    Unknown,
}

/// Classifies a library by its file name.
pub fn classify(path: &str) -> Kind {
    let file = path.rsplit('/').next().unwrap_or(path);
    let has = |s: &str| file.contains(s);
    if has("libvulkan.so") || has("libvulkan.1") {
        Kind::Loader
    } else if has("gfxreconstruct") {
        Kind::Capture("VK_LAYER_LUNARG_gfxreconstruct")
    } else if has("renderdoc") {
        Kind::Capture("VK_LAYER_RENDERDOC_Capture")
    } else if has("khronos_validation") {
        Kind::Allowed("VK_LAYER_KHRONOS_validation")
    } else if has("MESA_device_select") {
        Kind::Allowed("VK_LAYER_MESA_device_select")
    } else {
        Kind::Unknown
    }
}

/// The library a function pointer lives in (`None` when `dladdr` cannot tell).
fn library_of(f: *const c_void) -> Option<String> {
    // SAFETY: Dl_info is plain data.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address; `info` is a valid out-pointer.
    if unsafe { libc::dladdr(f, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the dynamic linker.
    Some(unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned())
}

/// The libraries below this layer, nearest first, from the instance link chain.
///
/// # Safety
/// `link` was just taken from the loader's create info, which is alive and unchanged.
pub unsafe fn libraries(link: &InstanceLink) -> Vec<String> {
    let mut out = Vec::new();
    let mut f = link.next_gipa as *const c_void;
    let mut rest = link.rest;
    for _ in 0..64 {
        out.push(library_of(f).unwrap_or_else(|| format!("{f:p}")));
        if rest.is_null() {
            break;
        }
        // SAFETY: each link of the loader's chain is valid while vkCreateInstance runs.
        unsafe {
            f = (*rest).pfnNextGetInstanceProcAddr as *const c_void;
            rest = (*rest).pNext;
        }
    }
    out
}

/// Why host-import must stay off for what is below (`None`: nothing below forbids it).
pub fn refusal(libs: &[String], policy: LayersBelow) -> Option<String> {
    if policy == LayersBelow::Ignore {
        return None;
    }
    libs.iter().find_map(|lib| {
        let file = lib.rsplit('/').next().unwrap_or(lib);
        match classify(lib) {
            Kind::Capture(name) => Some(format!(
                "capture layer {name} ({file}) is below vkdirty: its capture must see the application's own calls"
            )),
            Kind::Unknown => Some(format!(
                "unknown layer {file} is below vkdirty: it may record the calls it sees \
                 (VKDIRTY_LAYERS_BELOW=ignore imports anyway)"
            )),
            _ => None,
        }
    })
}

/// Per instance: why host-import is off because of what is below.
static VERDICTS: Lazy<RwLock<HashMap<InstanceKey, String>>> = Lazy::new(Default::default);

/// Before `vkCreateInstance` goes down: what is below, and why host-import must stay off.
///
/// # Safety
/// As [`libraries`].
pub unsafe fn inspect(link: &InstanceLink) -> Option<String> {
    // SAFETY: caller contract.
    let libs = unsafe { libraries(link) };
    crate::log::write(vkdirty::config::LogLevel::Debug, &format!("below vkdirty: {}", libs.join(" -> ")));
    let s = settings::get();
    if s.gfxr_flush && !libs.iter().any(|l| classify(l) == Kind::Capture("VK_LAYER_LUNARG_gfxreconstruct")) {
        crate::log::once(
            vkdirty::config::LogLevel::Warn,
            "VKDIRTY_GFXR_FLUSH=1, but gfxreconstruct is not below vkdirty: its capture gets no memory data from vkdirty",
        );
    }
    refusal(&libs, s.layers_below)
}

/// `vkCreateInstance` succeeded: remembers the verdict for the instance's devices.
pub fn instance_created(key: InstanceKey, why: Option<String>) {
    let mut v = VERDICTS.write();
    match why {
        Some(w) => v.insert(key, w),
        None => v.remove(&key),
    };
}

pub fn instance_destroyed(key: InstanceKey) {
    VERDICTS.write().remove(&key);
}

/// Why host-import is off for devices of the instance with this key.
pub fn verdict(key: InstanceKey) -> Option<String> {
    VERDICTS.read().get(&key).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libs(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn capture_and_unknown_layers_below_refuse_host_import() {
        let plain = libs(&["/usr/lib/x86_64-linux-gnu/libvulkan.so.1"]);
        assert_eq!(refusal(&plain, LayersBelow::Auto), None);
        let validation = libs(&[
            "/usr/lib/x86_64-linux-gnu/libVkLayer_khronos_validation.so",
            "/usr/lib/x86_64-linux-gnu/libVkLayer_MESA_device_select.so",
            "/usr/lib/x86_64-linux-gnu/libvulkan.so.1",
        ]);
        assert_eq!(refusal(&validation, LayersBelow::Auto), None);
        let gfxr = libs(&["/usr/lib/x86_64-linux-gnu/libVkLayer_gfxreconstruct.so", "/usr/lib/libvulkan.so.1"]);
        let why = refusal(&gfxr, LayersBelow::Auto).unwrap();
        assert!(
            why.contains("VK_LAYER_LUNARG_gfxreconstruct") && why.contains("libVkLayer_gfxreconstruct.so"),
            "{why}"
        );
        assert_eq!(refusal(&gfxr, LayersBelow::Ignore), None);
        let rdoc = libs(&["/opt/renderdoc/lib/librenderdoc.so", "/usr/lib/libvulkan.so.1"]);
        assert!(refusal(&rdoc, LayersBelow::Auto).unwrap().contains("VK_LAYER_RENDERDOC_Capture"));
        let unknown = libs(&["/opt/x/libVkLayer_acme.so", "/usr/lib/libvulkan.so.1"]);
        assert!(refusal(&unknown, LayersBelow::Auto).unwrap().contains("unknown layer libVkLayer_acme.so"));
    }

    #[test]
    fn a_function_of_this_library_is_found_by_dladdr() {
        let lib = library_of(classify as *const c_void);
        assert!(lib.is_some());
    }
}
