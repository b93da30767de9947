//! What the layer says of itself: its layer properties and extensions, for the loader's and
//! Android's introspection (`vkEnumerate*LayerProperties`, `vkEnumerate*ExtensionProperties`).

use ash::vk;
use std::ffi::{c_char, CStr};

use crate::dispatch;
use crate::loader::LAYER_NAME;
use crate::tooling;

const LAYER_DESCRIPTION: &CStr = c"vkdirty: captures the memory the CPU writes, dirty pages only";

pub fn layer_properties() -> vk::LayerProperties {
    let mut p = vk::LayerProperties {
        spec_version: {
            let (major, minor, patch) = vkdirty::config::docs::API_VERSION;
            vk::make_api_version(0, major, minor, patch)
        },
        implementation_version: vkdirty::config::docs::IMPLEMENTATION_VERSION,
        ..Default::default()
    };
    for (d, s) in p.layer_name.iter_mut().zip(LAYER_NAME.to_bytes()) {
        *d = *s as c_char;
    }
    for (d, s) in p.description.iter_mut().zip(LAYER_DESCRIPTION.to_bytes()) {
        *d = *s as c_char;
    }
    p
}

/// Writes this layer's one property record with the Vulkan two-call idiom.
///
/// # Safety
/// `count` is valid; `props` is null or has `*count` elements.
unsafe fn enumerate_self(count: *mut u32, props: *mut vk::LayerProperties) -> vk::Result {
    if count.is_null() {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    }
    // SAFETY: caller contract.
    unsafe {
        if props.is_null() {
            *count = 1;
            return vk::Result::SUCCESS;
        }
        if *count < 1 {
            return vk::Result::INCOMPLETE;
        }
        *props = layer_properties();
        *count = 1;
    }
    vk::Result::SUCCESS
}

/// Whether `layer_name` names this layer.
///
/// # Safety
/// `layer_name` is null or NUL-terminated.
unsafe fn is_self(layer_name: *const c_char) -> bool {
    // SAFETY: caller contract.
    !layer_name.is_null() && unsafe { CStr::from_ptr(layer_name) } == LAYER_NAME
}

/// Android introspection: this layer.
///
/// # Safety
/// Valid `vkEnumerateInstanceLayerProperties` arguments.
pub(crate) unsafe extern "system" fn enumerate_instance_layer_properties(
    count: *mut u32,
    props: *mut vk::LayerProperties,
) -> vk::Result {
    // SAFETY: caller contract.
    unsafe { enumerate_self(count, props) }
}

/// Writes `exts` with the Vulkan two-call idiom.
///
/// # Safety
/// `count` is valid; `props` is null or has `*count` elements.
unsafe fn enumerate_extensions(
    exts: &[(&CStr, u32)],
    count: *mut u32,
    props: *mut vk::ExtensionProperties,
) -> vk::Result {
    if count.is_null() {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    }
    // SAFETY: caller contract.
    unsafe {
        if props.is_null() {
            *count = exts.len() as u32;
            return vk::Result::SUCCESS;
        }
        let n = (*count as usize).min(exts.len());
        for (i, (name, spec)) in exts.iter().take(n).enumerate() {
            let mut e = vk::ExtensionProperties { spec_version: *spec, ..Default::default() };
            for (d, s) in e.extension_name.iter_mut().zip(name.to_bytes()) {
                *d = *s as c_char;
            }
            *props.add(i) = e;
        }
        *count = n as u32;
        if n < exts.len() {
            vk::Result::INCOMPLETE
        } else {
            vk::Result::SUCCESS
        }
    }
}

/// The instance extensions this layer provides (as in its manifest).
const INSTANCE_EXTENSIONS: &[(&CStr, u32)] =
    &[(c"VK_EXT_layer_settings", vkdirty::config::docs::LAYER_SETTINGS_SPEC_VERSION)];
/// The device extensions this layer provides (as in its manifest).
const DEVICE_EXTENSIONS: &[(&CStr, u32)] = &[(tooling::EXTENSION, vkdirty::config::docs::TOOLING_INFO_SPEC_VERSION)];

/// LLP_LAYER_15: this layer's instance extensions; any other layer name is not ours.
///
/// # Safety
/// Valid `vkEnumerateInstanceExtensionProperties` arguments.
pub(crate) unsafe extern "system" fn enumerate_instance_extension_properties(
    layer_name: *const c_char,
    count: *mut u32,
    props: *mut vk::ExtensionProperties,
) -> vk::Result {
    // SAFETY: caller contract.
    if unsafe { is_self(layer_name) } {
        // SAFETY: caller contract.
        return unsafe { enumerate_extensions(INSTANCE_EXTENSIONS, count, props) };
    }
    vk::Result::ERROR_LAYER_NOT_PRESENT
}

/// Android introspection: this layer, so Android puts it in the device chain too.
///
/// # Safety
/// Valid `vkEnumerateDeviceLayerProperties` arguments.
pub(crate) unsafe extern "system" fn enumerate_device_layer_properties(
    _physical: vk::PhysicalDevice,
    count: *mut u32,
    props: *mut vk::LayerProperties,
) -> vk::Result {
    // SAFETY: caller contract.
    unsafe { enumerate_self(count, props) }
}

/// LLP_LAYER_16: this layer's device extensions; other queries go down the chain.
///
/// # Safety
/// Valid `vkEnumerateDeviceExtensionProperties` arguments.
pub(crate) unsafe extern "system" fn enumerate_device_extension_properties(
    physical: vk::PhysicalDevice,
    layer_name: *const c_char,
    count: *mut u32,
    props: *mut vk::ExtensionProperties,
) -> vk::Result {
    // SAFETY: caller contract.
    if unsafe { is_self(layer_name) } {
        // SAFETY: caller contract.
        return unsafe { enumerate_extensions(DEVICE_EXTENSIONS, count, props) };
    }
    if physical == vk::PhysicalDevice::null() {
        return vk::Result::ERROR_LAYER_NOT_PRESENT;
    }
    // SAFETY: physical is a valid physical device.
    let Some(inst) = (unsafe { dispatch::instance(physical) }) else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    match inst.next.vkEnumerateDeviceExtensionProperties {
        // SAFETY: the application's arguments, passed down.
        Some(f) => unsafe { f(physical, layer_name, count, props) },
        None => vk::Result::ERROR_INITIALIZATION_FAILED,
    }
}
