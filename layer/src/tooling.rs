//! `VK_EXT_tooling_info` (core in Vulkan 1.3): the layer lists itself first in
//! `vkGetPhysicalDeviceToolProperties(EXT)`, then the tools below it.

use ash::vk;
use std::ffi::{c_char, CStr};

use crate::dispatch::{self, InstanceState};
use crate::loader::LAYER_NAME;

pub const EXTENSION: &CStr = c"VK_EXT_tooling_info";

fn copy(dst: &mut [c_char], src: &str) {
    // Leave room for the NUL; the array is zeroed first.
    let room = dst.len() - 1;
    for (d, s) in dst.iter_mut().take(room).zip(src.bytes()) {
        *d = s as c_char;
    }
}

/// This layer's record; `p_next` is the application's.
fn ours(p_next: *mut std::ffi::c_void) -> vk::PhysicalDeviceToolProperties<'static> {
    let mut p = vk::PhysicalDeviceToolProperties {
        p_next,
        // It records the application's memory writes, and host-import and the aligned memory
        // requirements change what the application sees.
        purposes: vk::ToolPurposeFlags::TRACING | vk::ToolPurposeFlags::MODIFYING_FEATURES,
        ..Default::default()
    };
    copy(&mut p.name, "vkdirty");
    copy(&mut p.version, env!("CARGO_PKG_VERSION"));
    copy(&mut p.description, "Captures the memory the CPU writes through mapped pointers, dirty pages only");
    copy(&mut p.layer, LAYER_NAME.to_str().unwrap_or(""));
    p
}

/// The two-call idiom with this layer's record first.
///
/// # Safety
/// Valid `vkGetPhysicalDeviceToolProperties` arguments.
unsafe fn tool_properties(
    physical: vk::PhysicalDevice,
    count: *mut u32,
    props: *mut vk::PhysicalDeviceToolProperties<'_>,
    next_of: impl Fn(&InstanceState) -> Option<vk::PFN_vkGetPhysicalDeviceToolProperties>,
) -> vk::Result {
    // SAFETY: physical is a valid physical device (caller contract).
    let next = unsafe { dispatch::instance(physical) }.and_then(|i| next_of(&i));
    // SAFETY: caller contract.
    unsafe { with_next(next, physical, count, props) }
}

/// [`tool_properties`] with the next layer's entry point given.
///
/// # Safety
/// As [`tool_properties`]; `next` accepts `physical`.
unsafe fn with_next(
    next: Option<vk::PFN_vkGetPhysicalDeviceToolProperties>,
    physical: vk::PhysicalDevice,
    count: *mut u32,
    props: *mut vk::PhysicalDeviceToolProperties<'_>,
) -> vk::Result {
    if count.is_null() {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    }
    // SAFETY: count is valid; props is null or has *count elements (caller contract); the rest of
    // the array is handed down with its count.
    unsafe {
        if props.is_null() {
            let mut below = 0u32;
            if let Some(f) = next {
                let r = f(physical, &mut below, std::ptr::null_mut());
                if r != vk::Result::SUCCESS {
                    return r;
                }
            }
            *count = below + 1;
            return vk::Result::SUCCESS;
        }
        if *count == 0 {
            return vk::Result::INCOMPLETE;
        }
        *props = ours((*props).p_next);
        let mut rest = *count - 1;
        let r = match next {
            Some(f) if rest > 0 => f(physical, &mut rest, props.add(1)),
            Some(f) => {
                let mut below = 0u32;
                let r = f(physical, &mut below, std::ptr::null_mut());
                if r == vk::Result::SUCCESS && below > 0 {
                    vk::Result::INCOMPLETE
                } else {
                    r
                }
            }
            None => {
                rest = 0;
                vk::Result::SUCCESS
            }
        };
        *count = 1 + if r.as_raw() >= 0 { rest } else { 0 };
        r
    }
}

/// # Safety
/// Called as `vkGetPhysicalDeviceToolProperties` (`ALIAS`: `vkGetPhysicalDeviceToolPropertiesEXT`)
/// with valid arguments.
pub unsafe extern "system" fn get_physical_device_tool_properties<const ALIAS: bool>(
    physical: vk::PhysicalDevice,
    count: *mut u32,
    props: *mut vk::PhysicalDeviceToolProperties<'_>,
) -> vk::Result {
    // SAFETY: caller contract.
    unsafe { tool_properties(physical, count, props, |i| i.next.vkGetPhysicalDeviceToolProperties.get(ALIAS)) }
}

/// Whether `name` is one of the entry points this layer answers even where the layers below do
/// not (it provides `VK_EXT_tooling_info` itself).
pub fn always_answered(name: &[u8]) -> bool {
    name == b"vkGetPhysicalDeviceToolProperties" || name == b"vkGetPhysicalDeviceToolPropertiesEXT"
}

/// `VK_EXT_tooling_info` is this layer's: when the application enables it and the device below
/// does not offer it, the create info passed down leaves it out. Returns the copy to pass down
/// (with the name list it points to), or `None` to pass `ci` as it is.
///
/// # Safety
/// `ci` is a valid `VkDeviceCreateInfo`; `physical` a valid physical device of `inst`.
pub unsafe fn strip_if_unsupported(
    inst: &InstanceState,
    physical: vk::PhysicalDevice,
    ci: *const vk::DeviceCreateInfo<'_>,
) -> Option<(vk::DeviceCreateInfo<'static>, Vec<*const c_char>)> {
    // SAFETY: ci is valid; its extension names are ppEnabledExtensionNames[0..count].
    let names: Vec<*const c_char> = unsafe {
        let c = &*ci;
        if c.pp_enabled_extension_names.is_null() {
            return None;
        }
        std::slice::from_raw_parts(c.pp_enabled_extension_names, c.enabled_extension_count as usize).to_vec()
    };
    // SAFETY: each name is NUL-terminated.
    let is_ours = |p: &*const c_char| !p.is_null() && unsafe { CStr::from_ptr(*p) } == EXTENSION;
    if !names.iter().any(is_ours) {
        return None;
    }
    let f = inst.next.vkEnumerateDeviceExtensionProperties?;
    let mut n = 0u32;
    // SAFETY: the two-call idiom on a valid physical device.
    let supported = unsafe {
        if f(physical, std::ptr::null(), &mut n, std::ptr::null_mut()) != vk::Result::SUCCESS {
            return None;
        }
        let mut v = vec![vk::ExtensionProperties::default(); n as usize];
        if f(physical, std::ptr::null(), &mut n, v.as_mut_ptr()).as_raw() < 0 {
            return None;
        }
        v.truncate(n as usize);
        v.iter().any(|e| e.extension_name_as_c_str().ok() == Some(EXTENSION))
    };
    if supported {
        return None;
    }
    let kept: Vec<*const c_char> = names.into_iter().filter(|p| !is_ours(p)).collect();
    // SAFETY: a copy of the application's create info; only the extension list differs, and the
    // caller keeps `kept` alive with it.
    let mut copy: vk::DeviceCreateInfo<'static> = unsafe { std::mem::transmute(*ci) };
    copy.enabled_extension_count = kept.len() as u32;
    copy.pp_enabled_extension_names = kept.as_ptr();
    Some((copy, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer below that reports two tools named "below0", "below1".
    unsafe extern "system" fn two_below(
        _: vk::PhysicalDevice,
        count: *mut u32,
        props: *mut vk::PhysicalDeviceToolProperties<'_>,
    ) -> vk::Result {
        // SAFETY: the two-call idiom's pointers, valid in these tests.
        unsafe {
            if props.is_null() {
                *count = 2;
                return vk::Result::SUCCESS;
            }
            let n = (*count).min(2);
            for i in 0..n {
                let p = &mut *props.add(i as usize);
                copy(&mut p.name, &format!("below{i}"));
            }
            *count = n;
            if n < 2 {
                vk::Result::INCOMPLETE
            } else {
                vk::Result::SUCCESS
            }
        }
    }

    fn name(p: &vk::PhysicalDeviceToolProperties<'_>) -> String {
        p.name_as_c_str().unwrap().to_string_lossy().into_owned()
    }

    #[test]
    fn first_then_the_tools_below() {
        let phys = vk::PhysicalDevice::null();
        let mut n = 0u32;
        // SAFETY: valid pointers for every call below.
        unsafe {
            assert_eq!(with_next(Some(two_below), phys, &mut n, std::ptr::null_mut()), vk::Result::SUCCESS);
            assert_eq!(n, 3);
            let mut out = vec![vk::PhysicalDeviceToolProperties::default(); 3];
            assert_eq!(with_next(Some(two_below), phys, &mut n, out.as_mut_ptr()), vk::Result::SUCCESS);
            assert_eq!(
                (n, name(&out[0]), name(&out[1]), name(&out[2])),
                (3, "vkdirty".into(), "below0".into(), "below1".into())
            );
            assert_eq!(out[0].layer_as_c_str().ok(), Some(LAYER_NAME));
            assert!(out[0].purposes.contains(vk::ToolPurposeFlags::TRACING));
            // Too small an array: INCOMPLETE, and the count says how many were written.
            let mut n = 2u32;
            assert_eq!(with_next(Some(two_below), phys, &mut n, out.as_mut_ptr()), vk::Result::INCOMPLETE);
            assert_eq!(n, 2);
            let mut n = 1u32;
            assert_eq!(with_next(Some(two_below), phys, &mut n, out.as_mut_ptr()), vk::Result::INCOMPLETE);
            assert_eq!(n, 1);
            let mut n = 0u32;
            assert_eq!(with_next(Some(two_below), phys, &mut n, out.as_mut_ptr()), vk::Result::INCOMPLETE);
            // Nothing below.
            let mut n = 5u32;
            assert_eq!(with_next(None, phys, &mut n, out.as_mut_ptr()), vk::Result::SUCCESS);
            assert_eq!(n, 1);
        }
    }
}
