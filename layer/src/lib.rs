//! `VK_LAYER_VKDIRTY_capture`: translates the Vulkan ABI into calls on the vkdirty core.
//!
//! Exported entry points: `vkNegotiateLoaderLayerInterfaceVersion` (interface version 2),
//! `vkGetInstanceProcAddr`, `vkGetDeviceProcAddr`, and the introspection functions Android's
//! loader uses instead of the manifest. Everything else is reached through the hook table in
//! [`dispatch`]. A panic aborts (the workspace profiles set `panic = "abort"`), so the code avoids
//! panicking paths: a panic must never unwind into the loader's C frames.
#![deny(unsafe_op_in_unsafe_fn)]
#![allow(non_snake_case)]

mod below;
mod capture;
mod dispatch;
mod ffi;
mod gfxr;
mod hook_table;
mod host_import;
mod intercept;
mod lifecycle;
mod loader;
mod log;
mod requirements;
mod settings;
mod tooling;
mod trigger;

use ash::vk;
use std::ffi::{c_char, CStr};

use ffi::void_fn;

pub const LAYER_NAME: &CStr = c"VK_LAYER_VKDIRTY_capture";
const LAYER_DESCRIPTION: &CStr = c"vkdirty: captures the memory the CPU writes, dirty pages only";
const _: () = assert!(LAYER_NAME.to_bytes().len() == vkdirty::config::LAYER_NAME.len());

/// Entry points answered the same for every instance (and for a null one).
fn global_entry(name: &[u8]) -> Option<vk::PFN_vkVoidFunction> {
    Some(match name {
        b"vkGetInstanceProcAddr" => void_fn::<vk::PFN_vkGetInstanceProcAddr>(get_instance_proc_addr),
        b"vkGetDeviceProcAddr" => void_fn::<vk::PFN_vkGetDeviceProcAddr>(get_device_proc_addr),
        b"vkEnumerateInstanceLayerProperties" => {
            void_fn::<vk::PFN_vkEnumerateInstanceLayerProperties>(enumerate_instance_layer_properties)
        }
        b"vkEnumerateInstanceExtensionProperties" => {
            void_fn::<vk::PFN_vkEnumerateInstanceExtensionProperties>(enumerate_instance_extension_properties)
        }
        b"vkEnumerateDeviceLayerProperties" => {
            void_fn::<vk::PFN_vkEnumerateDeviceLayerProperties>(enumerate_device_layer_properties)
        }
        _ => return None,
    })
}

/// LLP_LAYER_4, LLP_LAYER_5: negotiates interface version 2 and hands over the entry points.
///
/// # Safety
/// Called by the loader with a valid `VkNegotiateLayerInterface`.
#[no_mangle]
pub unsafe extern "system" fn vkNegotiateLoaderLayerInterfaceVersion(
    p: *mut loader::VkNegotiateLayerInterface,
) -> vk::Result {
    if p.is_null() {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    }
    // SAFETY: the loader passes a valid, writable struct.
    let p = unsafe { &mut *p };
    if p.sType != loader::LAYER_NEGOTIATE_INTERFACE_STRUCT {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    }
    // A loader newer than us accepts our version; an older one (0, 1) finds the exported
    // vkGet*ProcAddr by name, which this library also provides.
    if p.loaderLayerInterfaceVersion >= 2 {
        p.loaderLayerInterfaceVersion = loader::LAYER_INTERFACE_VERSION;
        p.pfnGetInstanceProcAddr = Some(get_instance_proc_addr);
        p.pfnGetDeviceProcAddr = Some(get_device_proc_addr);
        p.pfnGetPhysicalDeviceProcAddr = None;
    }
    vk::Result::SUCCESS
}
const _: unsafe extern "system" fn(*mut loader::VkNegotiateLayerInterface) -> vk::Result =
    vkNegotiateLoaderLayerInterfaceVersion;

/// # Safety
/// `instance` is null or valid; `name` is null or NUL-terminated.
pub(crate) unsafe extern "system" fn get_instance_proc_addr(
    instance: vk::Instance,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    // SAFETY: caller contract.
    unsafe { lifecycle::instance_proc_addr(instance, name) }
}

/// # Safety
/// `device` is null or valid; `name` is null or NUL-terminated.
pub(crate) unsafe extern "system" fn get_device_proc_addr(
    device: vk::Device,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    // SAFETY: caller contract.
    unsafe { lifecycle::device_proc_addr(device, name) }
}

fn layer_properties() -> vk::LayerProperties {
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

/// The exported names, for the loader (and Android's, which looks them up by name). Each forwards
/// to a function that is not exported, and only those are handed out as pointers: an application
/// linked with libvulkan has the loader's functions of the same names in the global scope, where
/// they would otherwise stand in for ours and loop the chain back into the loader.
macro_rules! exports {
    ($( $name:ident : $pfn:ident => $imp:ident ( $($a:ident : $t:ty),* ) -> $r:ty; )*) => {$(
        /// # Safety
        /// The arguments of the Vulkan entry point of this name.
        #[no_mangle]
        pub unsafe extern "system" fn $name($($a: $t),*) -> $r {
            // SAFETY: forwarded caller contract.
            unsafe { $imp($($a),*) }
        }
        const _: vk::$pfn = $name;
        const _: vk::$pfn = $imp;
    )*};
}

exports! {
    vkGetInstanceProcAddr: PFN_vkGetInstanceProcAddr
        => get_instance_proc_addr(instance: vk::Instance, name: *const c_char) -> vk::PFN_vkVoidFunction;
    vkGetDeviceProcAddr: PFN_vkGetDeviceProcAddr
        => get_device_proc_addr(device: vk::Device, name: *const c_char) -> vk::PFN_vkVoidFunction;
    vkEnumerateInstanceLayerProperties: PFN_vkEnumerateInstanceLayerProperties
        => enumerate_instance_layer_properties(count: *mut u32, props: *mut vk::LayerProperties) -> vk::Result;
    vkEnumerateInstanceExtensionProperties: PFN_vkEnumerateInstanceExtensionProperties
        => enumerate_instance_extension_properties(
            layer_name: *const c_char,
            count: *mut u32,
            props: *mut vk::ExtensionProperties
        ) -> vk::Result;
    vkEnumerateDeviceLayerProperties: PFN_vkEnumerateDeviceLayerProperties
        => enumerate_device_layer_properties(
            physical: vk::PhysicalDevice,
            count: *mut u32,
            props: *mut vk::LayerProperties
        ) -> vk::Result;
    vkEnumerateDeviceExtensionProperties: PFN_vkEnumerateDeviceExtensionProperties
        => enumerate_device_extension_properties(
            physical: vk::PhysicalDevice,
            layer_name: *const c_char,
            count: *mut u32,
            props: *mut vk::ExtensionProperties
        ) -> vk::Result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_properties_name_the_manifest_layer() {
        let p = layer_properties();
        assert_eq!(p.layer_name_as_c_str().ok(), Some(LAYER_NAME));
        let manifest = include_str!("../../manifest/VkLayer_vkdirty.json");
        assert!(manifest.contains("\"VK_LAYER_VKDIRTY_capture\""));
        assert!(manifest.contains("./libVkLayer_vkdirty.so"));
    }

    #[test]
    fn negotiation_reports_version_2_and_entry_points() {
        let mut n = loader::VkNegotiateLayerInterface {
            sType: loader::LAYER_NEGOTIATE_INTERFACE_STRUCT,
            pNext: std::ptr::null_mut(),
            loaderLayerInterfaceVersion: 3,
            pfnGetInstanceProcAddr: None,
            pfnGetDeviceProcAddr: None,
            pfnGetPhysicalDeviceProcAddr: None,
        };
        // SAFETY: a valid struct.
        assert_eq!(unsafe { vkNegotiateLoaderLayerInterfaceVersion(&mut n) }, vk::Result::SUCCESS);
        assert_eq!(n.loaderLayerInterfaceVersion, 2);
        assert!(n.pfnGetInstanceProcAddr.is_some() && n.pfnGetDeviceProcAddr.is_some());
        n.sType = 0;
        // SAFETY: as above.
        assert_ne!(unsafe { vkNegotiateLoaderLayerInterfaceVersion(&mut n) }, vk::Result::SUCCESS);
    }

    #[test]
    fn introspection_follows_the_two_call_idiom() {
        let mut count = 0u32;
        // SAFETY: valid pointers.
        unsafe {
            assert_eq!(vkEnumerateInstanceLayerProperties(&mut count, std::ptr::null_mut()), vk::Result::SUCCESS);
            assert_eq!(count, 1);
            let mut p = vk::LayerProperties::default();
            let mut zero = 0u32;
            assert_eq!(vkEnumerateInstanceLayerProperties(&mut zero, &mut p), vk::Result::INCOMPLETE);
            assert_eq!(
                vkEnumerateDeviceLayerProperties(vk::PhysicalDevice::null(), &mut count, &mut p),
                vk::Result::SUCCESS
            );
            assert_eq!(p.layer_name_as_c_str().ok(), Some(LAYER_NAME));
            let mut n = 5u32;
            assert_eq!(
                vkEnumerateInstanceExtensionProperties(LAYER_NAME.as_ptr(), &mut n, std::ptr::null_mut()),
                vk::Result::SUCCESS
            );
            assert_eq!(n, 1);
            let mut e = [vk::ExtensionProperties::default(); 2];
            n = 2;
            assert_eq!(
                vkEnumerateInstanceExtensionProperties(LAYER_NAME.as_ptr(), &mut n, e.as_mut_ptr()),
                vk::Result::SUCCESS
            );
            assert_eq!((n, e[0].extension_name_as_c_str().ok()), (1, Some(c"VK_EXT_layer_settings")));
            n = 0;
            assert_eq!(
                vkEnumerateInstanceExtensionProperties(LAYER_NAME.as_ptr(), &mut n, e.as_mut_ptr()),
                vk::Result::INCOMPLETE
            );
            n = 3;
            assert_eq!(
                vkEnumerateDeviceExtensionProperties(
                    vk::PhysicalDevice::null(),
                    LAYER_NAME.as_ptr(),
                    &mut n,
                    e.as_mut_ptr()
                ),
                vk::Result::SUCCESS
            );
            assert_eq!((n, e[0].extension_name_as_c_str().ok()), (1, Some(c"VK_EXT_tooling_info")));
            assert_eq!(
                vkEnumerateInstanceExtensionProperties(std::ptr::null(), &mut n, std::ptr::null_mut()),
                vk::Result::ERROR_LAYER_NOT_PRESENT
            );
            assert_eq!(
                vkEnumerateInstanceExtensionProperties(c"VK_LAYER_other".as_ptr(), &mut n, std::ptr::null_mut()),
                vk::Result::ERROR_LAYER_NOT_PRESENT
            );
        }
    }

    #[test]
    fn proc_addr_answers_without_an_instance() {
        // SAFETY: null instance and valid names.
        unsafe {
            assert!(vkGetInstanceProcAddr(vk::Instance::null(), c"vkCreateInstance".as_ptr()).is_some());
            assert!(vkGetInstanceProcAddr(vk::Instance::null(), c"vkGetInstanceProcAddr".as_ptr()).is_some());
            assert!(vkGetInstanceProcAddr(vk::Instance::null(), c"vkQueueSubmit".as_ptr()).is_none());
            assert!(vkGetInstanceProcAddr(vk::Instance::null(), c"vkNotAFunction".as_ptr()).is_none());
            assert!(vkGetInstanceProcAddr(vk::Instance::null(), std::ptr::null()).is_none());
            assert!(vkGetDeviceProcAddr(vk::Device::null(), c"vkQueueSubmit".as_ptr()).is_none());
        }
    }

    #[test]
    fn hook_lookup_knows_every_table_entry() {
        for n in ["vkCreateInstance", "vkDestroyInstance", "vkCreateDevice", "vkEnumerateDeviceExtensionProperties"] {
            assert!(dispatch::instance_hook(n.as_bytes()).is_some(), "{n}");
        }
        for n in [
            "vkDestroyDevice",
            "vkAllocateMemory",
            "vkFreeMemory",
            "vkMapMemory",
            "vkUnmapMemory",
            "vkMapMemory2KHR",
            "vkUnmapMemory2KHR",
            "vkMapMemory2",
            "vkUnmapMemory2",
            "vkFlushMappedMemoryRanges",
            "vkInvalidateMappedMemoryRanges",
            "vkQueueSubmit",
            "vkQueueSubmit2",
            "vkQueueSubmit2KHR",
            "vkQueueBindSparse",
            "vkQueuePresentKHR",
        ] {
            assert!(dispatch::device_hook(n.as_bytes()).is_some(), "{n}");
        }
        assert!(dispatch::requirements_hook(b"vkGetDeviceImageMemoryRequirementsKHR").is_some());
        assert!(dispatch::device_hook(b"vkCmdDraw").is_none());
    }
}
