//! `VK_LAYER_VKDIRTY_capture`: translates the Vulkan ABI into calls on the vkdirty core.
//!
//! Exported entry points: `vkNegotiateLoaderLayerInterfaceVersion` (interface version 2),
//! `vkGetInstanceProcAddr`, `vkGetDeviceProcAddr`, and the introspection functions Android's
//! loader uses instead of the manifest. Everything else is reached through the entry-point table
//! in `entry/table.rs`. A panic aborts (the workspace profiles set `panic = "abort"`), so the code avoids
//! panicking paths: a panic must never unwind into the loader's C frames.
#![deny(unsafe_op_in_unsafe_fn)]
#![allow(non_snake_case)]

// Imports flow one way (checked by tests/module_graph.rs): the crate root and `entry` → `hooks`
// → `capture`, `host_import`, `gfxr`, ... → `dispatch` (the registry) → `next`, `ffi`, `log`.
mod below;
mod capture;
mod dispatch;
mod entry;
mod ffi;
mod gfxr;
mod hook_table;
mod hooks;
mod host_import;
mod loader;
mod log;
mod next;
mod settings;
mod tooling;
mod trigger;

use ash::vk;
use std::ffi::c_char;

use entry::introspection::{
    enumerate_device_extension_properties, enumerate_device_layer_properties, enumerate_instance_extension_properties,
    enumerate_instance_layer_properties,
};
use entry::{get_device_proc_addr, get_instance_proc_addr};

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
    use entry::introspection::layer_properties;
    use loader::LAYER_NAME;

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
            assert!(entry::instance_hook(n.as_bytes()).is_some(), "{n}");
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
            assert!(entry::device_hook(n.as_bytes()).is_some(), "{n}");
        }
        assert!(entry::device_hook(b"vkCmdDraw").is_none());
    }

    #[test]
    fn aliases_answer_with_their_own_hook() {
        // One hook per alias pair, instantiated once per name: each calls down its own name.
        for (core, alias) in [
            ("vkQueueSubmit2", "vkQueueSubmit2KHR"),
            ("vkMapMemory2", "vkMapMemory2KHR"),
            ("vkUnmapMemory2", "vkUnmapMemory2KHR"),
            ("vkWaitSemaphores", "vkWaitSemaphoresKHR"),
            ("vkGetSemaphoreCounterValue", "vkGetSemaphoreCounterValueKHR"),
            ("vkSignalSemaphore", "vkSignalSemaphoreKHR"),
        ] {
            let (c, a) = (entry::device_hook(core.as_bytes()), entry::device_hook(alias.as_bytes()));
            assert!(c.is_some() && a.is_some(), "{core} / {alias}");
            assert_ne!(c.map(|f| f as usize), a.map(|f| f as usize), "{core} / {alias}");
        }
        let tool = |n: &str| entry::instance_hook(n.as_bytes()).map(|f| f as usize);
        assert!(tool("vkGetPhysicalDeviceToolProperties").is_some());
        assert_ne!(tool("vkGetPhysicalDeviceToolProperties"), tool("vkGetPhysicalDeviceToolPropertiesEXT"));
    }
}
