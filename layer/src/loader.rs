//! The loader–layer interface structures that `ash` does not define (`vk_layer.h` of the Vulkan
//! loader), and the walk of their link chains.
#![allow(non_snake_case, non_camel_case_types)]

use ash::vk;
use std::ffi::{c_char, c_void, CStr};

/// The layer's name, as its manifest declares it.
pub const LAYER_NAME: &CStr = c"VK_LAYER_VKDIRTY_capture";
const _: () = assert!(LAYER_NAME.to_bytes().len() == vkdirty::config::LAYER_NAME.len());

/// `VkLayerFunction`: what a `VkLayer{Instance,Device}CreateInfo` carries.
pub const VK_LAYER_LINK_INFO: u32 = 0;

/// `PFN_GetPhysicalDeviceProcAddr` (`vk_layerGetPhysicalDeviceProcAddr`).
pub type PFN_GetPhysicalDeviceProcAddr =
    Option<unsafe extern "system" fn(vk::Instance, *const c_char) -> vk::PFN_vkVoidFunction>;

#[repr(C)]
pub struct VkLayerInstanceLink {
    pub pNext: *mut VkLayerInstanceLink,
    pub pfnNextGetInstanceProcAddr: vk::PFN_vkGetInstanceProcAddr,
    pub pfnNextGetPhysicalDeviceProcAddr: PFN_GetPhysicalDeviceProcAddr,
}

/// The union of `VkLayerInstanceCreateInfo`; its largest member is two pointers
/// (`layerDevice.pfnLayerCreateDevice`, `pfnLayerDestroyDevice`).
#[repr(C)]
pub union VkLayerInstanceCreateInfoU {
    pub pLayerInfo: *mut VkLayerInstanceLink,
    pub pfnSetInstanceLoaderData: *const c_void,
    pub layerDevice: [*const c_void; 2],
    pub loaderFeatures: u32,
}

/// `sType == VK_STRUCTURE_TYPE_LOADER_INSTANCE_CREATE_INFO`.
#[repr(C)]
pub struct VkLayerInstanceCreateInfo {
    pub sType: vk::StructureType,
    pub pNext: *const c_void,
    pub function: u32,
    pub u: VkLayerInstanceCreateInfoU,
}

#[repr(C)]
pub struct VkLayerDeviceLink {
    pub pNext: *mut VkLayerDeviceLink,
    pub pfnNextGetInstanceProcAddr: vk::PFN_vkGetInstanceProcAddr,
    pub pfnNextGetDeviceProcAddr: vk::PFN_vkGetDeviceProcAddr,
}

#[repr(C)]
pub union VkLayerDeviceCreateInfoU {
    pub pLayerInfo: *mut VkLayerDeviceLink,
    pub pfnSetDeviceLoaderData: *const c_void,
}

/// `sType == VK_STRUCTURE_TYPE_LOADER_DEVICE_CREATE_INFO`.
#[repr(C)]
pub struct VkLayerDeviceCreateInfo {
    pub sType: vk::StructureType,
    pub pNext: *const c_void,
    pub function: u32,
    pub u: VkLayerDeviceCreateInfoU,
}

/// `VkNegotiateLayerStructType::LAYER_NEGOTIATE_INTERFACE_STRUCT`.
pub const LAYER_NEGOTIATE_INTERFACE_STRUCT: u32 = 1;

/// The interface version this layer implements.
pub const LAYER_INTERFACE_VERSION: u32 = 2;

#[repr(C)]
pub struct VkNegotiateLayerInterface {
    pub sType: u32,
    pub pNext: *mut c_void,
    pub loaderLayerInterfaceVersion: u32,
    pub pfnGetInstanceProcAddr: Option<vk::PFN_vkGetInstanceProcAddr>,
    pub pfnGetDeviceProcAddr: Option<vk::PFN_vkGetDeviceProcAddr>,
    pub pfnGetPhysicalDeviceProcAddr: PFN_GetPhysicalDeviceProcAddr,
}

/// The first structure of `p_next` with `sType == s_type` and `function == VK_LAYER_LINK_INFO`.
///
/// # Safety
/// `p_next` is null or the start of a valid `pNext` chain (every element begins with `sType`,
/// `pNext`), as the Vulkan valid-usage rules for `pNext` chains require.
unsafe fn find_link_info(mut p_next: *const c_void, s_type: vk::StructureType) -> *mut c_void {
    while !p_next.is_null() {
        // SAFETY: every chain element starts with a VkBaseInStructure (caller contract).
        let base = unsafe { &*(p_next as *const vk::BaseInStructure<'_>) };
        if base.s_type == s_type {
            // Both loader create-info structs share the layout up to `function`.
            // SAFETY: an element with this sType is a VkLayer{Instance,Device}CreateInfo.
            let info = unsafe { &*(p_next as *const VkLayerInstanceCreateInfo) };
            if info.function == VK_LAYER_LINK_INFO {
                return p_next as *mut c_void;
            }
        }
        p_next = base.p_next as *const c_void;
    }
    std::ptr::null_mut()
}

/// What a layer needs from the instance link chain.
pub struct InstanceLink {
    pub next_gipa: vk::PFN_vkGetInstanceProcAddr,
    /// The loader's link structure, and the link the next layer takes from it.
    info: *mut VkLayerInstanceCreateInfo,
    pub(crate) rest: *mut VkLayerInstanceLink,
}

impl InstanceLink {
    /// Puts the chain back where the next layer expects it, after a `vkCreateInstance` call
    /// down the chain failed (each layer below advanced it), so the layer can call down again.
    ///
    /// # Safety
    /// The create info this link was taken from is still the loader's, alive and unchanged.
    pub unsafe fn rewind(&self) {
        // SAFETY: caller contract; `info` is the writable structure `take_instance_link` advanced.
        unsafe { (*self.info).u.pLayerInfo = self.rest };
    }
}

/// Takes this layer's link from the `VkLayerInstanceCreateInfo` chain and advances the chain to
/// the next layer (LLP_LAYER_12). `None` when the loader gave no link (not loaded by a loader).
///
/// # Safety
/// `create_info` points to the `VkInstanceCreateInfo` the loader passed to this layer's
/// `vkCreateInstance`; the loader owns the chain and expects each layer to advance it.
pub unsafe fn take_instance_link(create_info: *const vk::InstanceCreateInfo<'_>) -> Option<InstanceLink> {
    if create_info.is_null() {
        return None;
    }
    // SAFETY: create_info is valid (caller contract); its pNext chain is valid.
    let info = unsafe { find_link_info((*create_info).p_next, vk::StructureType::LOADER_INSTANCE_CREATE_INFO) }
        as *mut VkLayerInstanceCreateInfo;
    if info.is_null() {
        return None;
    }
    // SAFETY: `info` is a VkLayerInstanceCreateInfo with function LAYER_LINK_INFO, so the union
    // holds pLayerInfo; the loader allocated it writable (the documented protocol casts away
    // const to advance it).
    unsafe {
        let link = (*info).u.pLayerInfo;
        if link.is_null() {
            return None;
        }
        let next_gipa = (*link).pfnNextGetInstanceProcAddr;
        let rest = (*link).pNext;
        (*info).u.pLayerInfo = rest;
        Some(InstanceLink { next_gipa, info, rest })
    }
}

pub struct DeviceLink {
    pub next_gipa: vk::PFN_vkGetInstanceProcAddr,
    pub next_gdpa: vk::PFN_vkGetDeviceProcAddr,
}

/// Takes this layer's link from the `VkLayerDeviceCreateInfo` chain and advances the chain
/// (LLP_LAYER_13).
///
/// # Safety
/// As [`take_instance_link`], for the `VkDeviceCreateInfo` passed to `vkCreateDevice`.
pub unsafe fn take_device_link(create_info: *const vk::DeviceCreateInfo<'_>) -> Option<DeviceLink> {
    if create_info.is_null() {
        return None;
    }
    // SAFETY: as in take_instance_link.
    let info = unsafe { find_link_info((*create_info).p_next, vk::StructureType::LOADER_DEVICE_CREATE_INFO) }
        as *mut VkLayerDeviceCreateInfo;
    if info.is_null() {
        return None;
    }
    // SAFETY: as in take_instance_link.
    unsafe {
        let link = (*info).u.pLayerInfo;
        if link.is_null() {
            return None;
        }
        let next =
            DeviceLink { next_gipa: (*link).pfnNextGetInstanceProcAddr, next_gdpa: (*link).pfnNextGetDeviceProcAddr };
        (*info).u.pLayerInfo = (*link).pNext;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_vk_layer_h() {
        let p = std::mem::size_of::<*const c_void>();
        // sType(4) + pad(4) + pNext(8) + function(4) + pad(4) + union(16)
        assert_eq!(std::mem::size_of::<VkLayerInstanceCreateInfo>(), 8 + p + 8 + 2 * p);
        assert_eq!(std::mem::offset_of!(VkLayerInstanceCreateInfo, u), 8 + p + 8);
        assert_eq!(std::mem::size_of::<VkLayerInstanceLink>(), 3 * p);
        assert_eq!(std::mem::size_of::<VkLayerDeviceLink>(), 3 * p);
        assert_eq!(std::mem::offset_of!(VkNegotiateLayerInterface, pfnGetInstanceProcAddr), 8 + p + 8);
    }
}
