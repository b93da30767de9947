//! host-import: host-visible allocations backed by the layer's own anonymous memory, imported
//! into the driver with `VK_EXT_external_memory_host`. The application maps memory that
//! userfaultfd tracks directly (async-WP), the GPU uses those same pages: no shadow, no copy.
//!
//! What it takes, all invisible to the application:
//! - `vkCreateDevice`: `VK_EXT_external_memory_host` (and `VK_KHR_external_memory` below 1.1) is
//!   enabled in the chain below when the physical device offers it.
//! - `vkCreateBuffer` / `vkCreateImage`: `VkExternalMemory*CreateInfo(HOST_ALLOCATION)` is added
//!   where the driver says the resource can be bound to imported memory (VUID-vkBindBufferMemory-
//!   memory-02985, VUID-vkBindImageMemory-memory-02989). A resource that cannot be is "pending"
//!   until bound: while one is, allocations of the memory types it may use are not imported.
//! - `vkAllocateMemory`: eligible allocations are imported from page-aligned anonymous memory;
//!   the application's size and type index stay what it asked for. A host-pointer import cannot
//!   be dedicated, exported or another import: a dedicated buffer allocation is imported without
//!   its dedicated structure (advisory unless the driver requires it, which it then falls back
//!   for); dedicated images, exports and imports fall back to the driver's own memory.
//! - `vkMapMemory`: the pointer into our memory, tracked with [`vkdirty::guard::BackendKind::OwnedWp`].
//! - `vkFreeMemory`: the driver's memory first, then our pages.
//!
//! Eligible memory types are host-visible and not device-local: importing host memory into a
//! device-local type would move the application's data out of video memory. On a device without
//! video memory (`CPU` and `INTEGRATED_GPU` device types: every heap is system memory) device-local
//! types are eligible too. Lazily-allocated and protected types never are (neither can be
//! host-visible), so `vkGetDeviceMemoryCommitment`, valid only on lazily-allocated memory
//! (VUID-vkGetDeviceMemoryCommitment-memory-00690), never sees imported memory.

use ash::vk;
use ash::vk::Handle;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};

use crate::ffi::{c_names, cast_next, chain_find};
use crate::next::{DeviceNext, InstanceNext};
use crate::{log, settings};
use vkdirty::config::{BackendChoice, HostImport, LogLevel};

/// The handle type of imported host memory.
pub const HOST_ALLOCATION: vk::ExternalMemoryHandleTypeFlags = vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;

mod chain;
mod device;
mod memory;
mod policy;
mod resources;
#[cfg(test)]
mod tests;

pub use chain::*;
pub use device::*;
pub use memory::*;
pub use policy::*;

/// How a mapping of some memory relates to host-import.
pub enum Import {
    /// host-import is not in play for this device.
    NotApplicable,
    /// Our memory: the application's pointer for the mapping at the offset.
    Imported(*mut u8),
    /// Not imported, and why.
    NotImported(String),
}

// ---------------------------------------------------------------------------------------------
// Per instance and per device state.

/// What host-import needs to know of an instance (kept on the registry's instance state).
#[derive(Clone, Copy)]
pub struct ImportInstance {
    api: u32,
    /// `VK_KHR_get_physical_device_properties2` is enabled (by the application or the layer).
    props2_khr: bool,
    /// `VK_KHR_external_memory_capabilities` is enabled (likewise).
    caps_khr: bool,
}

/// The instance extensions host-import's physical-device queries need on a Vulkan 1.0 instance.
const INSTANCE_EXTENSIONS: [&CStr; 2] =
    [ash::khr::get_physical_device_properties2::NAME, ash::khr::external_memory_capabilities::NAME];

/// For a Vulkan 1.0 application that did not enable them, its extension list plus
/// [`INSTANCE_EXTENSIONS`], to enable below the layer (the application's view of the instance
/// is unchanged: it neither queries nor calls what it did not enable). `None`: nothing to add.
///
/// # Safety
/// `info` is the application's valid `VkInstanceCreateInfo`.
pub unsafe fn instance_extensions(info: &vk::InstanceCreateInfo<'_>) -> Option<Vec<*const c_char>> {
    if !settings::get().imports_host_memory() {
        return None;
    }
    // SAFETY: pApplicationInfo is null or valid.
    let api = unsafe { info.p_application_info.as_ref() }.map_or(0, |ai| ai.api_version);
    if vk::api_version_major(api) > 1 || vk::api_version_minor(api) >= 1 {
        return None;
    }
    // SAFETY: caller contract.
    let have = unsafe { c_names(info.pp_enabled_extension_names, info.enabled_extension_count) };
    let missing: Vec<&CStr> = INSTANCE_EXTENSIONS.into_iter().filter(|e| !have.contains(e)).collect();
    if missing.is_empty() {
        return None;
    }
    let mut all: Vec<*const c_char> = have.iter().map(|n| n.as_ptr()).collect();
    all.extend(missing.iter().map(|n| n.as_ptr()));
    Some(all)
}

/// `vkCreateInstance` succeeded, with `info` passed down (the application's, or the same with
/// [`instance_extensions`]): what host-import keeps of the instance.
///
/// # Safety
/// `info` is a valid `VkInstanceCreateInfo`.
pub unsafe fn instance_created(info: &vk::InstanceCreateInfo<'_>) -> ImportInstance {
    // SAFETY: pApplicationInfo is null or valid.
    let api = match unsafe { info.p_application_info.as_ref() } {
        Some(ai) if ai.api_version != 0 => ai.api_version,
        _ => vk::API_VERSION_1_0,
    };
    // SAFETY: caller contract.
    let exts = unsafe { c_names(info.pp_enabled_extension_names, info.enabled_extension_count) };
    let props2_khr = exts.contains(&ash::khr::get_physical_device_properties2::NAME);
    let caps_khr = exts.contains(&ash::khr::external_memory_capabilities::NAME);
    ImportInstance { api, props2_khr, caps_khr }
}

/// The physical-device queries host-import makes.
#[derive(Clone, Copy)]
struct PhysFns {
    properties2: vk::PFN_vkGetPhysicalDeviceProperties2,
    external_buffer: vk::PFN_vkGetPhysicalDeviceExternalBufferProperties,
    image_format2: vk::PFN_vkGetPhysicalDeviceImageFormatProperties2,
}

impl PhysFns {
    /// Core names on a 1.1 instance, the KHR names where the application enabled them.
    fn load(inst: &Instance<'_>) -> Result<PhysFns, String> {
        let info = inst.info;
        let core = vk::api_version_major(info.api) > 1 || vk::api_version_minor(info.api) >= 1;
        if !(core || info.props2_khr && info.caps_khr) {
            return Err("the instance is Vulkan 1.0 without VK_KHR_get_physical_device_properties2 and \
                        VK_KHR_external_memory_capabilities"
                .into());
        }
        let get = |core_name: &CStr, khr_name: &CStr| {
            let n = if core { core_name } else { khr_name };
            // SAFETY: an instance-level name resolved for the live instance.
            unsafe { (inst.gipa)(inst.handle, n.as_ptr()) }
        };
        let properties2 = cast_next!(
            get(c"vkGetPhysicalDeviceProperties2", c"vkGetPhysicalDeviceProperties2KHR"),
            vk::PFN_vkGetPhysicalDeviceProperties2
        );
        let external_buffer = cast_next!(
            get(c"vkGetPhysicalDeviceExternalBufferProperties", c"vkGetPhysicalDeviceExternalBufferPropertiesKHR"),
            vk::PFN_vkGetPhysicalDeviceExternalBufferProperties
        );
        let image_format2 = cast_next!(
            get(c"vkGetPhysicalDeviceImageFormatProperties2", c"vkGetPhysicalDeviceImageFormatProperties2KHR"),
            vk::PFN_vkGetPhysicalDeviceImageFormatProperties2
        );
        match (properties2, external_buffer, image_format2) {
            (Some(properties2), Some(external_buffer), Some(image_format2)) => {
                Ok(PhysFns { properties2, external_buffer, image_format2 })
            }
            _ => Err("the physical-device queries it needs are missing".into()),
        }
    }
}

/// A buffer or image, by handle value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Resource {
    Buffer(u64),
    Image(u64),
}

impl Resource {
    fn what(self) -> &'static str {
        match self {
            Resource::Buffer(_) => "buffer",
            Resource::Image(_) => "image",
        }
    }
}

/// A resource that cannot be bound to imported memory, not bound yet.
struct Pending {
    /// The memory types it may be bound to.
    bits: u32,
    why: &'static str,
}

/// The non-importable resources waiting for memory, with a per-type count so an allocation
/// checks in constant time.
#[derive(Default)]
struct PendingSet {
    map: HashMap<Resource, Pending>,
    per_type: [u32; 32],
}

impl PendingSet {
    fn add(&mut self, r: Resource, bits: u32, why: &'static str) {
        if let Some(old) = self.map.insert(r, Pending { bits, why }) {
            self.count(old.bits, false);
        }
        self.count(bits, true);
    }

    fn remove(&mut self, r: Resource) -> Option<Pending> {
        let p = self.map.remove(&r)?;
        self.count(p.bits, false);
        Some(p)
    }

    fn count(&mut self, bits: u32, up: bool) {
        for (i, c) in self.per_type.iter_mut().enumerate() {
            if bits & (1 << i) != 0 {
                *c = if up { c.saturating_add(1) } else { c.saturating_sub(1) };
            }
        }
    }

    /// A pending resource that may be bound to memory of type `ty`: what it is and why it
    /// cannot live in imported memory.
    fn blocking(&self, ty: u32) -> Option<(&'static str, &'static str)> {
        let n = *self.per_type.get(ty as usize)?;
        (n > 0).then(|| {
            self.map
                .iter()
                .find(|(_, p)| p.bits & (1 << ty) != 0)
                .map_or(("resource", "unknown"), |(r, p)| (r.what(), p.why))
        })
    }
}

#[derive(Default)]
struct ImportState {
    /// Imported allocations, by memory handle.
    imported: HashMap<u64, HostBlock>,
    /// Host-visible allocations not imported, with why.
    refused: HashMap<u64, String>,
    pending: PendingSet,
    /// Non-importable resources already bound (to say so if one lands in imported memory).
    non_importable: HashMap<Resource, &'static str>,
    /// Whether buffers may be external, by (flags, usage) (memory types depend on nothing
    /// else, and neither does the external-buffer query).
    buffer_ok: HashMap<(u32, u64), Result<(), &'static str>>,
    /// Whether images may be external, by (format, type, tiling, usage, flags).
    image_ok: HashMap<(i32, i32, i32, u32, u32), Result<(), &'static str>>,
}

/// A device where host-import is on.
pub struct Active {
    device: vk::Device,
    physical: vk::PhysicalDevice,
    /// `vkGetBufferMemoryRequirements2` (or its KHR name below Vulkan 1.1).
    requirements2: Option<vk::PFN_vkGetBufferMemoryRequirements2>,
    phys: PhysFns,
    host_pointer_props: vk::PFN_vkGetMemoryHostPointerPropertiesEXT,
    /// Pointer and size alignment: `minImportedHostPointerAlignment`, at least a page.
    align: u64,
    types: Vec<vk::MemoryPropertyFlags>,
    no_video_memory: bool,
    /// Types the driver imported the probe page into.
    importable_bits: u32,
    /// Types external resources may lose (`hideable_types`).
    may_hide: u32,
    st: Mutex<ImportState>,
}

/// Host-import's view of one device (kept on the registry's device state).
pub struct ImportDevice {
    /// Set where host-import is on.
    pub active: Option<Active>,
    /// Why host-import is off on this device.
    off: Option<String>,
}

/// What host-import's device planning reads of an instance: the registry's instance state, in
/// pieces (host-import sits below the registry).
pub struct Instance<'a> {
    pub handle: vk::Instance,
    pub gipa: vk::PFN_vkGetInstanceProcAddr,
    pub next: &'a InstanceNext,
    pub info: ImportInstance,
}
