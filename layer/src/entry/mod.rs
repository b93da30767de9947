//! This layer's answers to `vkGetInstanceProcAddr` and `vkGetDeviceProcAddr`: the global
//! entry points, then the hooks of `table.rs`, each only where the next layer has the entry point.

use ash::vk;
use std::ffi::c_char;

use crate::dispatch;
use crate::ffi::{name_bytes, void_fn};
use crate::tooling;

pub mod introspection;
mod table;

pub use table::{device_hook, instance_hook};

/// Entry points answered the same for every instance (and for a null one).
pub fn global_entry(name: &[u8]) -> Option<vk::PFN_vkVoidFunction> {
    Some(match name {
        b"vkGetInstanceProcAddr" => void_fn::<vk::PFN_vkGetInstanceProcAddr>(get_instance_proc_addr),
        b"vkGetDeviceProcAddr" => void_fn::<vk::PFN_vkGetDeviceProcAddr>(get_device_proc_addr),
        b"vkEnumerateInstanceLayerProperties" => {
            void_fn::<vk::PFN_vkEnumerateInstanceLayerProperties>(introspection::enumerate_instance_layer_properties)
        }
        b"vkEnumerateInstanceExtensionProperties" => void_fn::<vk::PFN_vkEnumerateInstanceExtensionProperties>(
            introspection::enumerate_instance_extension_properties,
        ),
        b"vkEnumerateDeviceLayerProperties" => {
            void_fn::<vk::PFN_vkEnumerateDeviceLayerProperties>(introspection::enumerate_device_layer_properties)
        }
        _ => return None,
    })
}

/// # Safety
/// `instance` is null or valid; `name` is null or NUL-terminated.
pub(crate) unsafe extern "system" fn get_instance_proc_addr(
    instance: vk::Instance,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    // SAFETY: caller contract.
    unsafe { instance_proc_addr(instance, name) }
}

/// # Safety
/// `device` is null or valid; `name` is null or NUL-terminated.
pub(crate) unsafe extern "system" fn get_device_proc_addr(
    device: vk::Device,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    // SAFETY: caller contract.
    unsafe { device_proc_addr(device, name) }
}

/// The answer of this layer's `vkGetInstanceProcAddr`.
///
/// # Safety
/// `instance` is null or valid; `name` is null or NUL-terminated.
pub unsafe fn instance_proc_addr(instance: vk::Instance, name: *const c_char) -> vk::PFN_vkVoidFunction {
    // SAFETY: caller contract.
    let n = (unsafe { name_bytes(name) })?;
    if let Some(f) = global_entry(n) {
        return f;
    }
    if n == b"vkCreateInstance" {
        return instance_hook(n);
    }
    // SAFETY: caller contract.
    let Some(inst) = (unsafe { dispatch::instance(instance) }) else {
        // LLP_LAYER_18: nothing for names this layer cannot answer.
        return None;
    };
    // SAFETY: forwarded to the next layer with the same arguments.
    let next = unsafe { (inst.next_gipa)(instance, name) };
    // This layer provides VK_EXT_tooling_info itself.
    if tooling::always_answered(n) {
        return instance_hook(n);
    }
    // LLP_LAYER_18: a hook only where the next layer has the entry point (enabled extension).
    next?;
    instance_hook(n).or_else(|| device_hook(n)).or(next)
}

/// The answer of this layer's `vkGetDeviceProcAddr`.
///
/// # Safety
/// `device` is null or valid; `name` is null or NUL-terminated.
pub unsafe fn device_proc_addr(device: vk::Device, name: *const c_char) -> vk::PFN_vkVoidFunction {
    // SAFETY: caller contract.
    let n = (unsafe { name_bytes(name) })?;
    if n == b"vkGetDeviceProcAddr" {
        return void_fn::<vk::PFN_vkGetDeviceProcAddr>(get_device_proc_addr);
    }
    // SAFETY: caller contract.
    let dev = (unsafe { dispatch::device(device) })?;
    // SAFETY: forwarded to the next layer with the same arguments.
    let next = unsafe { (dev.next_gdpa)(device, name) };
    next?;
    device_hook(n).or(next)
}
