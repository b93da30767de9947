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

mod memory;
mod policy;
mod resources;
#[cfg(test)]
mod tests;

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

/// What `vkCreateDevice` is called with, and what host-import learnt before.
pub struct DevicePlan {
    /// The create info passed down when extensions were added, with the storage it points to.
    info: Option<(vk::DeviceCreateInfo<'static>, Vec<*const c_char>)>,
    setup: Result<Setup, String>,
}

struct Setup {
    phys: PhysFns,
    /// The device is used as Vulkan 1.1 or later.
    api_1_1: bool,
    align: u64,
    types: Vec<vk::MemoryPropertyFlags>,
    no_video_memory: bool,
    device_name: String,
}

impl DevicePlan {
    /// host-import stays off on the device, for the reason given (logged once the device exists).
    pub fn off(why: String) -> DevicePlan {
        DevicePlan { info: None, setup: Err(why) }
    }

    /// The create info to pass down.
    pub fn create_info<'a>(&self, app: *const vk::DeviceCreateInfo<'a>) -> *const vk::DeviceCreateInfo<'a> {
        match &self.info {
            Some((ci, _)) => (ci as *const vk::DeviceCreateInfo<'static>).cast(),
            None => app,
        }
    }
}

fn level_for_off() -> LogLevel {
    if settings::get().backend == BackendChoice::HostImport {
        LogLevel::Warn
    } else {
        LogLevel::Info
    }
}

/// Before `vkCreateDevice`: decides whether host-import can work on `physical` and which
/// extensions to add. `backend_available` says whether the host-import backend works in this
/// process.
///
/// # Safety
/// `physical` is a valid physical device of `inst`; `create_info` is the application's valid
/// `VkDeviceCreateInfo`.
pub unsafe fn plan_device(
    inst: &Instance<'_>,
    physical: vk::PhysicalDevice,
    create_info: *const vk::DeviceCreateInfo<'_>,
    backend_available: impl FnOnce() -> Result<(), String>,
) -> DevicePlan {
    if !settings::get().imports_host_memory() || create_info.is_null() {
        return DevicePlan { info: None, setup: Err("off".into()) };
    }
    // SAFETY: caller contract.
    let ci = unsafe { &*create_info };
    // SAFETY: caller contract.
    match unsafe { setup(inst, physical, ci, backend_available) } {
        Ok((setup, extra)) => {
            let info = (!extra.is_empty()).then(|| {
                // SAFETY: caller contract: the application's extension names are valid.
                let mut list: Vec<*const c_char> =
                    unsafe { c_names(ci.pp_enabled_extension_names, ci.enabled_extension_count) }
                        .iter()
                        .map(|n| n.as_ptr())
                        .collect();
                list.extend(extra.iter().map(|n| n.as_ptr()));
                // The app's struct is copied, not changed; its pNext (the loader's link) is kept.
                // SAFETY: the same struct; its lifetime parameter only marks borrowed pointers,
                // which stay valid for the vkCreateDevice call this copy is made for.
                let mut mine: vk::DeviceCreateInfo<'static> =
                    unsafe { *(ci as *const vk::DeviceCreateInfo<'_>).cast::<vk::DeviceCreateInfo<'static>>() };
                mine.enabled_extension_count = list.len() as u32;
                mine.pp_enabled_extension_names = list.as_ptr();
                (mine, list)
            });
            DevicePlan { info, setup: Ok(setup) }
        }
        Err(why) => DevicePlan { info: None, setup: Err(why) },
    }
}

/// # Safety
/// As [`plan_device`].
unsafe fn setup(
    inst: &Instance<'_>,
    physical: vk::PhysicalDevice,
    ci: &vk::DeviceCreateInfo<'_>,
    backend_available: impl FnOnce() -> Result<(), String>,
) -> Result<(Setup, Vec<&'static CStr>), String> {
    let mut props = vk::PhysicalDeviceProperties::default();
    if let Some(f) = inst.next.vkGetPhysicalDeviceProperties {
        // SAFETY: valid physical device and out-pointer.
        unsafe { f(physical, &mut props) };
    }
    let device_name = props.device_name_as_c_str().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let fail = |why: String| format!("host-import off on {device_name}: {why}");

    // SAFETY: caller contract.
    let exts = device_extensions(inst, physical).map_err(fail)?;
    let has = |n: &CStr| exts.iter().any(|e| e.as_c_str() == n);
    if !has(ash::ext::external_memory_host::NAME) {
        return Err(fail("the driver does not offer VK_EXT_external_memory_host".into()));
    }
    // SAFETY: caller contract.
    let enabled = unsafe { c_names(ci.pp_enabled_extension_names, ci.enabled_extension_count) };
    if enabled.contains(&ash::ext::map_memory_placed::NAME) {
        // VK_EXT_map_memory_placed cannot place a mapping of imported host memory.
        return Err(fail("the application enabled VK_EXT_map_memory_placed".into()));
    }
    // SAFETY: caller contract: a valid chain.
    let group = unsafe { chain_find(ci.p_next, vk::StructureType::DEVICE_GROUP_DEVICE_CREATE_INFO) };
    // SAFETY: the sType says which struct this is.
    if !group.is_null() && unsafe { (*(group as *const vk::DeviceGroupDeviceCreateInfo<'_>)).physical_device_count } > 1
    {
        return Err(fail("a device group of several physical devices".into()));
    }
    backend_available().map_err(fail)?;
    let phys = PhysFns::load(inst).map_err(fail)?;

    let mut host = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
    let mut p2 = vk::PhysicalDeviceProperties2 { p_next: &mut host as *mut _ as *mut c_void, ..Default::default() };
    // SAFETY: valid physical device; the chain lives across the call; the extension is offered,
    // so the struct may be chained.
    unsafe { (phys.properties2)(physical, &mut p2) };
    let page = vkdirty::guard::page_size() as u64;
    let align = host.min_imported_host_pointer_alignment.max(page);
    if !align.is_power_of_two() || align > (1 << 30) {
        return Err(fail(format!(
            "unusable minImportedHostPointerAlignment {}",
            host.min_imported_host_pointer_alignment
        )));
    }
    let mut mp = vk::PhysicalDeviceMemoryProperties::default();
    if let Some(f) = inst.next.vkGetPhysicalDeviceMemoryProperties {
        // SAFETY: valid physical device and out-pointer.
        unsafe { f(physical, &mut mp) };
    }
    let n = (mp.memory_type_count as usize).min(mp.memory_types.len());
    let types = mp.memory_types[..n].iter().map(|t| t.property_flags).collect();

    // VK_EXT_external_memory_host needs VK_KHR_external_memory below Vulkan 1.1.
    let api = inst.info.api.min(props.api_version);
    let below_1_1 = vk::api_version_major(api) == 1 && vk::api_version_minor(api) == 0;
    let mut extra = Vec::new();
    if below_1_1 && !enabled.contains(&ash::khr::external_memory::NAME) {
        if !has(ash::khr::external_memory::NAME) {
            return Err(fail("VK_KHR_external_memory is missing on this Vulkan 1.0 device".into()));
        }
        extra.push(ash::khr::external_memory::NAME);
    }
    if !enabled.contains(&ash::ext::external_memory_host::NAME) {
        extra.push(ash::ext::external_memory_host::NAME);
    }
    let no_video_memory = has_no_video_memory(props.device_type);
    Ok((Setup { phys, api_1_1: !below_1_1, align, types, no_video_memory, device_name }, extra))
}

/// The extensions the physical device offers, from the layers below.
fn device_extensions(inst: &Instance<'_>, physical: vk::PhysicalDevice) -> Result<Vec<std::ffi::CString>, String> {
    let f = inst.next.vkEnumerateDeviceExtensionProperties.ok_or("no vkEnumerateDeviceExtensionProperties")?;
    for _ in 0..4 {
        let mut n = 0u32;
        // SAFETY: valid physical device; count query.
        let r = unsafe { f(physical, std::ptr::null(), &mut n, std::ptr::null_mut()) };
        if r != vk::Result::SUCCESS {
            return Err(format!("vkEnumerateDeviceExtensionProperties: {r:?}"));
        }
        let mut v = vec![vk::ExtensionProperties::default(); n as usize];
        // SAFETY: `v` has `n` elements.
        let r = unsafe { f(physical, std::ptr::null(), &mut n, v.as_mut_ptr()) };
        if r == vk::Result::INCOMPLETE {
            continue;
        }
        if r != vk::Result::SUCCESS {
            return Err(format!("vkEnumerateDeviceExtensionProperties: {r:?}"));
        }
        v.truncate(n as usize);
        return Ok(v.iter().filter_map(|e| e.extension_name_as_c_str().ok().map(CStr::to_owned)).collect());
    }
    Err("vkEnumerateDeviceExtensionProperties kept changing its count".into())
}

/// `vkCreateDevice` succeeded with `plan`'s create info: host-import's state of the device
/// (`None` where the settings keep host-import off).
///
/// # Safety
/// `device` is the device just created from `physical`; `next` its next layer's entry points.
pub unsafe fn device_created(
    plan: DevicePlan,
    physical: vk::PhysicalDevice,
    device: vk::Device,
    next: &DeviceNext,
) -> Option<ImportDevice> {
    if !settings::get().imports_host_memory() {
        return None;
    }
    let (active, off) = match plan.setup {
        Err(why) => {
            if why != "off" {
                log::write(level_for_off(), &format!("{why}; host-visible memory is tracked per mapping"));
            }
            (None, Some(why))
        }
        Ok(s) => match next.vkGetMemoryHostPointerPropertiesEXT {
            None => {
                let why =
                    format!("host-import off on {}: vkGetMemoryHostPointerPropertiesEXT is missing", s.device_name);
                log::write(level_for_off(), &why);
                (None, Some(why))
            }
            Some(host_pointer_props) => {
                // SAFETY: `device` is valid and the extension enabled.
                let importable_bits = unsafe { probe_importable(device, host_pointer_props, s.align) };
                let eligible = eligible_types(&s.types, s.no_video_memory) & importable_bits;
                let list: Vec<String> = (0..32).filter(|i| eligible & (1 << i) != 0).map(|i| i.to_string()).collect();
                log::info!(
                    "host-import on {}: allocations of memory type{} {} are imported ({}alignment {})",
                    s.device_name,
                    if list.len() == 1 { "" } else { "s" },
                    if list.is_empty() { "none".to_string() } else { list.join(", ") },
                    if s.no_video_memory { "no video memory, " } else { "" },
                    s.align
                );
                // Never a type that is imported itself (on devices without video memory).
                let may_hide = hideable_types(&s.types, settings::get().host_import) & !eligible;
                // The core name from Vulkan 1.1, its KHR alias below.
                let requirements2 = next.vkGetBufferMemoryRequirements2.get(!s.api_1_1);
                let a = Active {
                    device,
                    physical,
                    requirements2,
                    phys: s.phys,
                    host_pointer_props,
                    align: s.align,
                    types: s.types,
                    no_video_memory: s.no_video_memory,
                    importable_bits,
                    may_hide,
                    st: Mutex::new(ImportState::default()),
                };
                (Some(a), None)
            }
        },
    };
    Some(ImportDevice { active, off })
}

/// The memory types the driver imports a block of our memory into (0 when it refuses).
///
/// # Safety
/// `device` is valid with `VK_EXT_external_memory_host` enabled.
unsafe fn probe_importable(device: vk::Device, f: vk::PFN_vkGetMemoryHostPointerPropertiesEXT, align: u64) -> u32 {
    let Ok(block) = HostBlock::new(align as usize, align as usize) else { return 0 };
    // SAFETY: caller contract; the pointer is aligned and mapped.
    unsafe { host_pointer_bits(device, f, block.ptr()) }.unwrap_or(0)
}

/// # Safety
/// `device` is valid with the extension enabled; `p` is an aligned, mapped host pointer.
unsafe fn host_pointer_bits(
    device: vk::Device,
    f: vk::PFN_vkGetMemoryHostPointerPropertiesEXT,
    p: *mut u8,
) -> Result<u32, vk::Result> {
    let mut props = vk::MemoryHostPointerPropertiesEXT::default();
    // SAFETY: caller contract.
    let r = unsafe { f(device, HOST_ALLOCATION, p.cast(), &mut props) };
    if r == vk::Result::SUCCESS {
        Ok(props.memory_type_bits)
    } else {
        Err(r)
    }
}
