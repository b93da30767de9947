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
//! - `vkMapMemory`: the pointer into our memory, tracked with [`BackendKind::HostImport`].
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
use once_cell::sync::Lazy;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Arc;

use crate::dispatch::{InstanceKey, InstanceState};
use crate::ffi::{cast_next, chain_find, slice};
use crate::hook_table::hook_table;
use crate::{capture, log, settings};
use vkdirty::config::{BackendChoice, HostImport, LogLevel};
use vkdirty::guard::BackendKind;

const HOST_ALLOCATION: vk::ExternalMemoryHandleTypeFlags = vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;
const NO_NEXT: vk::Result = vk::Result::ERROR_INITIALIZATION_FAILED;

hook_table! {
    /// The next layer's entry points host-import intercepts or calls.
    pub struct ImportNext, lookup import_hook {
        hooks {
            vkCreateBuffer: PFN_vkCreateBuffer => create_buffer,
            vkDestroyBuffer: PFN_vkDestroyBuffer => destroy_buffer,
            vkCreateImage: PFN_vkCreateImage => create_image,
            vkDestroyImage: PFN_vkDestroyImage => destroy_image,
            vkBindBufferMemory: PFN_vkBindBufferMemory => bind_buffer_memory,
            vkBindImageMemory: PFN_vkBindImageMemory => bind_image_memory,
            vkBindBufferMemory2: PFN_vkBindBufferMemory2 => bind_buffer_memory2,
            vkBindBufferMemory2KHR: PFN_vkBindBufferMemory2 => bind_buffer_memory2_khr,
            vkBindImageMemory2: PFN_vkBindImageMemory2 => bind_image_memory2,
            vkBindImageMemory2KHR: PFN_vkBindImageMemory2 => bind_image_memory2_khr,
            vkGetDeviceBufferMemoryRequirements: PFN_vkGetDeviceBufferMemoryRequirements
                => device_buffer_requirements,
            vkGetDeviceBufferMemoryRequirementsKHR: PFN_vkGetDeviceBufferMemoryRequirements
                => device_buffer_requirements_khr,
            vkGetDeviceImageMemoryRequirements: PFN_vkGetDeviceImageMemoryRequirements
                => device_image_requirements,
            vkGetDeviceImageMemoryRequirementsKHR: PFN_vkGetDeviceImageMemoryRequirements
                => device_image_requirements_khr,
        }
        calls {
            vkGetMemoryHostPointerPropertiesEXT: PFN_vkGetMemoryHostPointerPropertiesEXT,
            vkGetBufferMemoryRequirements: PFN_vkGetBufferMemoryRequirements,
            vkGetImageMemoryRequirements: PFN_vkGetImageMemoryRequirements,
            vkGetBufferMemoryRequirements2: PFN_vkGetBufferMemoryRequirements2,
            vkGetBufferMemoryRequirements2KHR: PFN_vkGetBufferMemoryRequirements2,
        }
    }
}

/// This layer's hook for `name` when host-import may be on (decided by the settings; a device
/// where it is off passes every call straight down).
pub fn hook(name: &[u8]) -> vk::PFN_vkVoidFunction {
    if settings::get().imports_host_memory() {
        import_hook(name)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Pure decisions (tested without a driver).

/// The memory types whose allocations may be imported, by property flags alone.
pub fn eligible_types(types: &[vk::MemoryPropertyFlags], no_video_memory: bool) -> u32 {
    let mut bits = 0u32;
    for (i, f) in types.iter().enumerate().take(32) {
        if type_refusal(*f, i as u32, no_video_memory).is_none() {
            bits |= 1 << i;
        }
    }
    bits
}

/// Why memory of type `ty` (flags `f`) is not imported; `None` when it may be.
fn type_refusal(f: vk::MemoryPropertyFlags, ty: u32, no_video_memory: bool) -> Option<String> {
    use vk::MemoryPropertyFlags as M;
    if !f.contains(M::HOST_VISIBLE) {
        return Some(format!("memory type {ty} is not host-visible"));
    }
    if f.intersects(M::LAZILY_ALLOCATED | M::PROTECTED) {
        return Some(format!("memory type {ty} is lazily allocated or protected"));
    }
    if f.contains(M::DEVICE_LOCAL) && !no_video_memory {
        return Some(format!("memory type {ty} is device-local (video memory)"));
    }
    None
}

/// Whether the device has no memory of its own: every heap is system memory.
pub fn has_no_video_memory(t: vk::PhysicalDeviceType) -> bool {
    matches!(t, vk::PhysicalDeviceType::CPU | vk::PhysicalDeviceType::INTEGRATED_GPU)
}

/// What an allocation's `pNext` chain means for a host-pointer import.
#[derive(Debug, PartialEq, Eq)]
pub enum ChainPlan {
    /// Import with the application's chain kept whole behind the import.
    Keep,
    /// A dedicated allocation for this buffer: import it without the (then only advisory)
    /// dedicated structure, from a copy of the chain (see [`CopiedChain`]), unless the driver
    /// requires dedicated memory for the buffer.
    DropDedicated(vk::Buffer),
    /// Not importable, and why.
    Refuse(&'static str),
}

/// Reads an allocation's `pNext` chain.
///
/// # Safety
/// `p` is null or a valid `VkMemoryAllocateInfo` `pNext` chain.
pub unsafe fn plan_chain(mut p: *const c_void) -> ChainPlan {
    use vk::StructureType as S;
    let mut dedicated_buffer = None;
    // A structure this layer cannot copy (so the chain cannot be rebuilt without another one).
    let mut unknown = false;
    while !p.is_null() {
        // SAFETY: every element of a valid chain starts with sType/pNext.
        let b = unsafe { &*(p as *const vk::BaseInStructure<'_>) };
        match b.s_type {
            S::MEMORY_DEDICATED_ALLOCATE_INFO => {
                // SAFETY: the sType says which struct this is.
                let d = unsafe { &*(p as *const vk::MemoryDedicatedAllocateInfo<'_>) };
                if d.image != vk::Image::null() {
                    return ChainPlan::Refuse("dedicated image allocation");
                }
                if d.buffer != vk::Buffer::null() {
                    dedicated_buffer = Some(d.buffer);
                }
            }
            S::DEDICATED_ALLOCATION_MEMORY_ALLOCATE_INFO_NV => return ChainPlan::Refuse("dedicated allocation (NV)"),
            S::EXPORT_MEMORY_ALLOCATE_INFO
            | S::EXPORT_MEMORY_ALLOCATE_INFO_NV
            | S::EXPORT_MEMORY_WIN32_HANDLE_INFO_KHR
            | S::EXPORT_MEMORY_WIN32_HANDLE_INFO_NV => return ChainPlan::Refuse("the application exports it"),
            S::IMPORT_MEMORY_HOST_POINTER_INFO_EXT
            | S::IMPORT_MEMORY_FD_INFO_KHR
            | S::IMPORT_MEMORY_WIN32_HANDLE_INFO_KHR
            | S::IMPORT_MEMORY_WIN32_HANDLE_INFO_NV
            | S::IMPORT_ANDROID_HARDWARE_BUFFER_INFO_ANDROID
            | S::IMPORT_MEMORY_ZIRCON_HANDLE_INFO_FUCHSIA
            | S::IMPORT_MEMORY_BUFFER_COLLECTION_FUCHSIA
            | S::IMPORT_METAL_BUFFER_INFO_EXT
            | S::IMPORT_SCREEN_BUFFER_INFO_QNX => return ChainPlan::Refuse("the application imports it"),
            S::MEMORY_OPAQUE_CAPTURE_ADDRESS_ALLOCATE_INFO => {
                // SAFETY: as above.
                let c = unsafe { &*(p as *const vk::MemoryOpaqueCaptureAddressAllocateInfo<'_>) };
                // VUID-VkMemoryAllocateInfo-opaqueCaptureAddress-03333.
                if c.opaque_capture_address != 0 {
                    return ChainPlan::Refuse("replayed device address");
                }
            }
            S::MEMORY_ALLOCATE_FLAGS_INFO => {
                // SAFETY: as above.
                let f = unsafe { &*(p as *const vk::MemoryAllocateFlagsInfo<'_>) };
                if f.flags.contains(vk::MemoryAllocateFlags::DEVICE_ADDRESS_CAPTURE_REPLAY) {
                    return ChainPlan::Refuse("device address capture/replay");
                }
            }
            S::MEMORY_PRIORITY_ALLOCATE_INFO_EXT => {}
            _ => unknown = true,
        }
        p = b.p_next.cast();
    }
    match dedicated_buffer {
        Some(_) if unknown => ChainPlan::Refuse("dedicated buffer allocation"),
        Some(b) => ChainPlan::DropDedicated(b),
        None => ChainPlan::Keep,
    }
}

/// A copy of an allocation chain without its dedicated structure: only structures
/// [`plan_chain`] knows (it refuses to drop the structure from any other chain).
#[derive(Default)]
pub struct CopiedChain {
    flags: Option<vk::MemoryAllocateFlagsInfo<'static>>,
    priority: Option<vk::MemoryPriorityAllocateInfoEXT<'static>>,
    capture: Option<vk::MemoryOpaqueCaptureAddressAllocateInfo<'static>>,
}

impl CopiedChain {
    /// # Safety
    /// `p` is null or a valid chain for which [`plan_chain`] returned `DropDedicated`.
    pub unsafe fn copy(mut p: *const c_void) -> CopiedChain {
        use vk::StructureType as S;
        let mut c = CopiedChain::default();
        while !p.is_null() {
            // SAFETY: every element of a valid chain starts with sType/pNext; the sType says
            // which struct it is. The copies' pNext are set by `link`.
            unsafe {
                let b = &*(p as *const vk::BaseInStructure<'_>);
                match b.s_type {
                    S::MEMORY_ALLOCATE_FLAGS_INFO => c.flags = Some(*(p as *const vk::MemoryAllocateFlagsInfo<'static>)),
                    S::MEMORY_PRIORITY_ALLOCATE_INFO_EXT => {
                        c.priority = Some(*(p as *const vk::MemoryPriorityAllocateInfoEXT<'static>))
                    }
                    S::MEMORY_OPAQUE_CAPTURE_ADDRESS_ALLOCATE_INFO => {
                        c.capture = Some(*(p as *const vk::MemoryOpaqueCaptureAddressAllocateInfo<'static>))
                    }
                    _ => {}
                }
                p = b.p_next.cast();
            }
        }
        c
    }

    /// Links the copies and returns the head (null when empty). `self` must not move while the
    /// chain is in use.
    pub fn link(&mut self) -> *const c_void {
        let mut head: *const c_void = std::ptr::null();
        if let Some(s) = &mut self.capture {
            s.p_next = head;
            head = s as *const vk::MemoryOpaqueCaptureAddressAllocateInfo<'_> as *const c_void;
        }
        if let Some(s) = &mut self.priority {
            s.p_next = head;
            head = s as *const vk::MemoryPriorityAllocateInfoEXT<'_> as *const c_void;
        }
        if let Some(s) = &mut self.flags {
            s.p_next = head;
            head = s as *const vk::MemoryAllocateFlagsInfo<'_> as *const c_void;
        }
        head
    }
}

/// Whether resources of one kind may be made external, given the memory types the driver
/// reports for them plain and external. They may not gain types (the application would choose
/// among types it never saw), and may lose only types in `may_hide`: with
/// `VKDIRTY_HOST_IMPORT=1` those both device-local and host-visible (what the application would
/// have put there goes to the other types it is offered); with `strict` none.
fn keeps_types(what: &str, usage: u64, flags: u32, plain: u32, external: u32, may_hide: u32) -> Result<(), &'static str> {
    let lost = plain & !external;
    if plain == external || (external & !plain == 0 && lost & !may_hide == 0 && external != 0) {
        if lost != 0 {
            log::once(
                LogLevel::Info,
                &format!(
                    "host-import: external {what} cannot use the device-local host-visible memory types {lost:#x}; \
                     the application's {what} (usage {usage:#x}, flags {flags:#x}) go to the other types it is \
                     offered ({external:#x}); VKDIRTY_HOST_IMPORT=strict keeps every type"
                ),
            );
        }
        return Ok(());
    }
    log::once(
        LogLevel::Info,
        &format!(
            "host-import: external {what} (usage {usage:#x}, flags {flags:#x}) would have memory types \
             {external:#x} instead of {plain:#x}; such {what} stay as the application creates them"
        ),
    );
    Err("external ones would have other memory types")
}

/// The memory types `keeps_types` may hide from external resources under `policy`.
pub fn hideable_types(types: &[vk::MemoryPropertyFlags], policy: HostImport) -> u32 {
    use vk::MemoryPropertyFlags as M;
    if policy != HostImport::On {
        return 0;
    }
    let both = M::DEVICE_LOCAL | M::HOST_VISIBLE;
    types.iter().take(32).enumerate().filter(|(_, f)| f.contains(both)).fold(0, |bits, (i, _)| bits | 1 << i)
}

/// Whether external memory properties allow binding to imported host memory.
fn importable(p: &vk::ExternalMemoryProperties) -> bool {
    p.compatible_handle_types.contains(HOST_ALLOCATION)
        && p.external_memory_features.contains(vk::ExternalMemoryFeatureFlags::IMPORTABLE)
        // A dedicated-only resource cannot live in a host-pointer import.
        && !p.external_memory_features.contains(vk::ExternalMemoryFeatureFlags::DEDICATED_ONLY)
}

/// `n` rounded up to a multiple of `align` (a power of two); `None` on overflow.
fn round_up(n: u64, align: u64) -> Option<u64> {
    Some(n.checked_add(align - 1)? & !(align - 1))
}

// ---------------------------------------------------------------------------------------------
// The layer's own memory.

/// Page-aligned shared anonymous memory from the layer's arenas (`vkdirty::guard::arena`).
/// Shared, as drivers' mapped memory is: a forked child sees the same pages (it can read and
/// write them, as it could the driver's), and no copy-on-write ever moves a page the driver
/// pinned. Imported allocations lie next to each other, so a collection scans many with one
/// `PAGEMAP_SCAN`. Given back (its pages returned to the system) on drop.
struct HostBlock {
    block: vkdirty::guard::arena::ArenaBlock,
    len: usize,
}

impl HostBlock {
    /// `len` bytes aligned to `align` (a power of two, at least the page size).
    fn new(len: usize, align: usize) -> std::io::Result<HostBlock> {
        let block = vkdirty::guard::arena::ArenaBlock::new(len, align)?;
        Ok(HostBlock { block, len })
    }

    fn ptr(&self) -> *mut u8 {
        self.block.ptr()
    }
}

// ---------------------------------------------------------------------------------------------
// Per instance and per device state.

/// What host-import needs to know of an instance.
#[derive(Clone, Copy)]
struct InstanceInfo {
    api: u32,
    /// `VK_KHR_get_physical_device_properties2` is enabled (by the application or the layer).
    props2_khr: bool,
    /// `VK_KHR_external_memory_capabilities` is enabled (likewise).
    caps_khr: bool,
}

static INSTANCES: Lazy<RwLock<HashMap<InstanceKey, InstanceInfo>>> = Lazy::new(Default::default);

/// # Safety
/// `names` has `n` valid NUL-terminated strings (or is null).
unsafe fn names<'a>(names: *const *const c_char, n: u32) -> Vec<&'a CStr> {
    if names.is_null() {
        return Vec::new();
    }
    // SAFETY: caller contract.
    unsafe { std::slice::from_raw_parts(names, n as usize) }
        .iter()
        .filter(|p| !p.is_null())
        // SAFETY: caller contract.
        .map(|&p| unsafe { CStr::from_ptr(p) })
        .collect()
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
    let have = unsafe { names(info.pp_enabled_extension_names, info.enabled_extension_count) };
    let missing: Vec<&CStr> = INSTANCE_EXTENSIONS.into_iter().filter(|e| !have.contains(e)).collect();
    if missing.is_empty() {
        return None;
    }
    let mut all: Vec<*const c_char> = have.iter().map(|n| n.as_ptr()).collect();
    all.extend(missing.iter().map(|n| n.as_ptr()));
    Some(all)
}

/// `vkCreateInstance` succeeded, with `info` passed down (the application's, or the same with
/// [`instance_extensions`]).
///
/// # Safety
/// `info` is a valid `VkInstanceCreateInfo`.
pub unsafe fn instance_created(key: InstanceKey, info: &vk::InstanceCreateInfo<'_>) {
    // SAFETY: pApplicationInfo is null or valid.
    let api = match unsafe { info.p_application_info.as_ref() } {
        Some(ai) if ai.api_version != 0 => ai.api_version,
        _ => vk::API_VERSION_1_0,
    };
    // SAFETY: caller contract.
    let exts = unsafe { names(info.pp_enabled_extension_names, info.enabled_extension_count) };
    let props2_khr = exts.contains(&ash::khr::get_physical_device_properties2::NAME);
    let caps_khr = exts.contains(&ash::khr::external_memory_capabilities::NAME);
    INSTANCES.write().insert(key, InstanceInfo { api, props2_khr, caps_khr });
}

pub fn instance_destroyed(key: InstanceKey) {
    INSTANCES.write().remove(&key);
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
    fn load(inst: &InstanceState, info: InstanceInfo) -> Result<PhysFns, String> {
        let core = vk::api_version_major(info.api) > 1 || vk::api_version_minor(info.api) >= 1;
        if !core && !(info.props2_khr && info.caps_khr) {
            return Err("the instance is Vulkan 1.0 without VK_KHR_get_physical_device_properties2 and \
                        VK_KHR_external_memory_capabilities"
                .into());
        }
        let get = |core_name: &CStr, khr_name: &CStr| {
            let n = if core { core_name } else { khr_name };
            // SAFETY: an instance-level name resolved for the live instance.
            unsafe { (inst.next_gipa)(inst.handle, n.as_ptr()) }
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
enum Resource {
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
struct Active {
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

/// Host-import's view of one device.
pub struct ImportDevice {
    next: ImportNext,
    active: Option<Active>,
    /// Why host-import is off on this device.
    off: Option<String>,
}

static DEVICES: Lazy<RwLock<HashMap<u64, Arc<ImportDevice>>>> = Lazy::new(Default::default);

fn state_of(device: vk::Device) -> Option<Arc<ImportDevice>> {
    DEVICES.read().get(&device.as_raw()).cloned()
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
    if settings::get().backend == BackendChoice::Fixed(BackendKind::HostImport) {
        LogLevel::Warn
    } else {
        LogLevel::Info
    }
}

/// Before `vkCreateDevice`: decides whether host-import can work on `physical` and which
/// extensions to add.
///
/// # Safety
/// `physical` is a valid physical device of `inst`; `create_info` is the application's valid
/// `VkDeviceCreateInfo`.
pub unsafe fn plan_device(
    inst: &InstanceState,
    physical: vk::PhysicalDevice,
    create_info: *const vk::DeviceCreateInfo<'_>,
) -> DevicePlan {
    if !settings::get().imports_host_memory() || create_info.is_null() {
        return DevicePlan { info: None, setup: Err("off".into()) };
    }
    // SAFETY: caller contract.
    let ci = unsafe { &*create_info };
    // SAFETY: caller contract.
    match unsafe { setup(inst, physical, ci) } {
        Ok((setup, extra)) => {
            let info = (!extra.is_empty()).then(|| {
                // SAFETY: caller contract: the application's extension names are valid.
                let mut list: Vec<*const c_char> =
                    unsafe { names(ci.pp_enabled_extension_names, ci.enabled_extension_count) }
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
    inst: &InstanceState,
    physical: vk::PhysicalDevice,
    ci: &vk::DeviceCreateInfo<'_>,
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
    let enabled = unsafe { names(ci.pp_enabled_extension_names, ci.enabled_extension_count) };
    if enabled.contains(&ash::ext::map_memory_placed::NAME) {
        // VK_EXT_map_memory_placed cannot place a mapping of imported host memory.
        return Err(fail("the application enabled VK_EXT_map_memory_placed".into()));
    }
    // SAFETY: caller contract: a valid chain.
    let group = unsafe { chain_find(ci.p_next, vk::StructureType::DEVICE_GROUP_DEVICE_CREATE_INFO) };
    // SAFETY: the sType says which struct this is.
    if !group.is_null() && unsafe { (*(group as *const vk::DeviceGroupDeviceCreateInfo<'_>)).physical_device_count } > 1 {
        return Err(fail("a device group of several physical devices".into()));
    }
    capture::get().backend_available(BackendKind::HostImport).map_err(fail)?;
    let info = {
        // SAFETY: physical belongs to this instance; its key is the instance's.
        let key = unsafe { InstanceKey::of(physical) };
        key.and_then(|k| INSTANCES.read().get(&k).copied())
    }
    .ok_or_else(|| fail("the instance was created before the layer".into()))?;
    let phys = PhysFns::load(inst, info).map_err(fail)?;

    let mut host = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
    let mut p2 = vk::PhysicalDeviceProperties2 { p_next: &mut host as *mut _ as *mut c_void, ..Default::default() };
    // SAFETY: valid physical device; the chain lives across the call; the extension is offered,
    // so the struct may be chained.
    unsafe { (phys.properties2)(physical, &mut p2) };
    let page = vkdirty::guard::page_size() as u64;
    let align = host.min_imported_host_pointer_alignment.max(page);
    if !align.is_power_of_two() || align > (1 << 30) {
        return Err(fail(format!("unusable minImportedHostPointerAlignment {}", host.min_imported_host_pointer_alignment)));
    }
    let mut mp = vk::PhysicalDeviceMemoryProperties::default();
    if let Some(f) = inst.next.vkGetPhysicalDeviceMemoryProperties {
        // SAFETY: valid physical device and out-pointer.
        unsafe { f(physical, &mut mp) };
    }
    let n = (mp.memory_type_count as usize).min(mp.memory_types.len());
    let types = mp.memory_types[..n].iter().map(|t| t.property_flags).collect();

    // VK_EXT_external_memory_host needs VK_KHR_external_memory below Vulkan 1.1.
    let api = info.api.min(props.api_version);
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
fn device_extensions(inst: &InstanceState, physical: vk::PhysicalDevice) -> Result<Vec<std::ffi::CString>, String> {
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

/// `vkCreateDevice` succeeded with `plan`'s create info.
///
/// # Safety
/// `device` is the device just created from `physical`; `gdpa` is the next layer's
/// `vkGetDeviceProcAddr`.
pub unsafe fn device_created(
    plan: DevicePlan,
    physical: vk::PhysicalDevice,
    device: vk::Device,
    gdpa: vk::PFN_vkGetDeviceProcAddr,
) {
    if !settings::get().imports_host_memory() {
        return;
    }
    // SAFETY: device-level names resolved for the device just created.
    let next = ImportNext::load(|n| unsafe { gdpa(device, n.as_ptr()) });
    let (active, off) = match plan.setup {
        Err(why) => {
            if why != "off" {
                log::write(level_for_off(), &format!("{why}; host-visible memory is tracked per mapping"));
            }
            (None, Some(why))
        }
        Ok(s) => match next.vkGetMemoryHostPointerPropertiesEXT {
            None => {
                let why = format!("host-import off on {}: vkGetMemoryHostPointerPropertiesEXT is missing", s.device_name);
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
                let requirements2 =
                    if s.api_1_1 { next.vkGetBufferMemoryRequirements2 } else { next.vkGetBufferMemoryRequirements2KHR };
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
    DEVICES.write().insert(device.as_raw(), Arc::new(ImportDevice { next, active, off }));
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

/// `vkDestroyDevice` returned: forgets the device and releases memory it still imported.
pub fn device_destroyed(device: vk::Device) {
    DEVICES.write().remove(&device.as_raw());
}

// ---------------------------------------------------------------------------------------------
// Allocation.

/// `vkAllocateMemory`: imports an eligible allocation, else calls `next` with the application's
/// arguments.
///
/// # Safety
/// Valid `vkAllocateMemory` arguments; `next` is the next layer's `vkAllocateMemory`.
pub unsafe fn allocate(
    next: vk::PFN_vkAllocateMemory,
    device: vk::Device,
    info: *const vk::MemoryAllocateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    p_memory: *mut vk::DeviceMemory,
) -> vk::Result {
    let d = state_of(device);
    let Some(a) = d.as_ref().and_then(|d| d.active.as_ref()).filter(|_| !info.is_null() && !p_memory.is_null())
    else {
        // SAFETY: the application's arguments, passed down.
        return unsafe { next(device, info, allocator, p_memory) };
    };
    // SAFETY: checked non-null; valid by the caller contract.
    let ai = unsafe { &*info };
    // SAFETY: as above.
    let refusal = match unsafe { a.decide(ai) } {
        Decision::Skip => {
            // SAFETY: the application's arguments, passed down.
            return unsafe { next(device, info, allocator, p_memory) };
        }
        Decision::Refuse(why) => why,
        // SAFETY: as above.
        Decision::Import(len, drop_dedicated) => match unsafe { a.import(next, device, ai, len, drop_dedicated, allocator, p_memory) } {
            Ok(r) => return r,
            Err(why) => why,
        },
    };
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(device, info, allocator, p_memory) };
    if r == vk::Result::SUCCESS {
        // SAFETY: valid on success.
        let memory = unsafe { *p_memory };
        a.st.lock().refused.insert(memory.as_raw(), refusal);
    }
    r
}

enum Decision {
    /// Not host-visible: nothing to say about it.
    Skip,
    Refuse(String),
    /// Import this many bytes; `true`: without the application's dedicated structure.
    Import(u64, bool),
}

impl Active {
    /// # Safety
    /// `ai` is a valid `VkMemoryAllocateInfo` with a valid chain.
    unsafe fn decide(&self, ai: &vk::MemoryAllocateInfo<'_>) -> Decision {
        let ty = ai.memory_type_index;
        let Some(&flags) = self.types.get(ty as usize) else { return Decision::Skip };
        if !flags.contains(vk::MemoryPropertyFlags::HOST_VISIBLE) {
            return Decision::Skip;
        }
        if let Some(why) = type_refusal(flags, ty, self.no_video_memory) {
            return Decision::Refuse(why);
        }
        if self.importable_bits & (1 << ty) == 0 {
            return Decision::Refuse(format!("the driver imports no host memory into memory type {ty}"));
        }
        // SAFETY: caller contract.
        let drop_dedicated = match unsafe { plan_chain(ai.p_next) } {
            ChainPlan::Keep => false,
            ChainPlan::Refuse(why) => return Decision::Refuse(why.into()),
            ChainPlan::DropDedicated(buffer) => {
                if let Err(why) = self.dedicated_buffer_importable(buffer) {
                    return Decision::Refuse(format!("dedicated buffer allocation ({why})"));
                }
                true
            }
        };
        if let Some((what, why)) = self.st.lock().pending.blocking(ty) {
            return Decision::Refuse(format!("non-importable {what} pending ({why})"));
        }
        match round_up(ai.allocation_size, self.align) {
            Some(len) if ai.allocation_size > 0 && usize::try_from(len).is_ok() => Decision::Import(len, drop_dedicated),
            _ => Decision::Refuse(format!("size {} out of range", ai.allocation_size)),
        }
    }

    /// Whether a dedicated allocation for `buffer` may be an import without the dedicated
    /// structure: the buffer can be bound to imported memory and the driver does not require
    /// dedicated memory for it (preferring it is a hint).
    fn dedicated_buffer_importable(&self, buffer: vk::Buffer) -> Result<(), &'static str> {
        if let Some(&why) = self.st.lock().non_importable.get(&Resource::Buffer(buffer.as_raw())) {
            return Err(why);
        }
        let f = self.requirements2.ok_or("no vkGetBufferMemoryRequirements2")?;
        let info = vk::BufferMemoryRequirementsInfo2 { buffer, ..Default::default() };
        let mut ded = vk::MemoryDedicatedRequirements::default();
        let mut req = vk::MemoryRequirements2 {
            p_next: &mut ded as *mut vk::MemoryDedicatedRequirements<'_> as *mut c_void,
            ..Default::default()
        };
        // SAFETY: a valid buffer of this device (the application's dedicated structure names
        // it, VUID-VkMemoryDedicatedAllocateInfo-buffer-parameter); the chain lives across the call.
        unsafe { f(self.device, &info, &mut req) };
        if ded.requires_dedicated_allocation == vk::TRUE {
            return Err("the driver requires it");
        }
        Ok(())
    }

    /// Allocates `len` bytes of our memory and imports it. `Err` says why the application's own
    /// allocation must be made instead.
    ///
    /// # Safety
    /// As [`allocate`].
    unsafe fn import(
        &self,
        next: vk::PFN_vkAllocateMemory,
        device: vk::Device,
        ai: &vk::MemoryAllocateInfo<'_>,
        len: u64,
        drop_dedicated: bool,
        allocator: *const vk::AllocationCallbacks<'_>,
        p_memory: *mut vk::DeviceMemory,
    ) -> Result<vk::Result, String> {
        let ty = ai.memory_type_index;
        let block = HostBlock::new(len as usize, self.align as usize).map_err(|e| {
            log::once(LogLevel::Warn, &format!("host-import: no anonymous memory for an allocation: {e}"));
            format!("mmap failed: {e}")
        })?;
        // SAFETY: valid device with the extension; the block is aligned and mapped.
        match unsafe { host_pointer_bits(device, self.host_pointer_props, block.ptr()) } {
            Ok(bits) if bits & (1 << ty) != 0 => {}
            Ok(bits) => return Err(format!("the driver imports host memory into types {bits:#x}, not type {ty}")),
            Err(r) => return Err(format!("vkGetMemoryHostPointerPropertiesEXT: {r:?}")),
        }
        // SAFETY: `decide` found a chain CopiedChain can copy when it drops the structure.
        let mut copied = if drop_dedicated { unsafe { CopiedChain::copy(ai.p_next) } } else { CopiedChain::default() };
        let rest = if drop_dedicated { copied.link() } else { ai.p_next };
        let import = vk::ImportMemoryHostPointerInfoEXT {
            p_next: rest,
            handle_type: HOST_ALLOCATION,
            p_host_pointer: block.ptr().cast(),
            ..Default::default()
        };
        // The application's allocation, its chain kept behind the import; the size rounded up
        // to a multiple of minImportedHostPointerAlignment, as an import requires.
        let mut mine = *ai;
        mine.p_next = &import as *const vk::ImportMemoryHostPointerInfoEXT<'_> as *const c_void;
        mine.allocation_size = len;
        // SAFETY: the application's valid arguments with a valid import prepended.
        let r = unsafe { next(device, &mine, allocator, p_memory) };
        if r != vk::Result::SUCCESS {
            log::once(LogLevel::Warn, &format!("host-import: the driver refused an import ({r:?}); allocating normally"));
            return Err(format!("the driver refused the import: {r:?}"));
        }
        // SAFETY: valid on success.
        let memory = unsafe { *p_memory };
        self.st.lock().imported.insert(memory.as_raw(), block);
        Ok(r)
    }
}

/// `vkFreeMemory` returned: our pages go after the driver's memory.
pub fn freed(device: vk::Device, memory: vk::DeviceMemory) {
    let Some(d) = state_of(device) else { return };
    let Some(a) = d.active.as_ref() else { return };
    let block = {
        let mut st = a.st.lock();
        st.refused.remove(&memory.as_raw());
        st.imported.remove(&memory.as_raw())
    };
    drop(block);
}

/// How a mapping of some memory relates to host-import.
pub enum Mapped {
    /// host-import is not in play for this device.
    NotApplicable,
    /// Our memory: the application's pointer for the mapping at the offset.
    Imported(*mut u8),
    /// Not imported, and why.
    NotImported(String),
}

/// The host-import side of mapping `memory` at `offset`.
pub fn mapping(device: vk::Device, memory: vk::DeviceMemory, offset: u64) -> Mapped {
    let Some(d) = state_of(device) else { return Mapped::NotApplicable };
    let Some(a) = d.active.as_ref() else {
        return d.off.clone().map_or(Mapped::NotApplicable, Mapped::NotImported);
    };
    let st = a.st.lock();
    if let Some(b) = st.imported.get(&memory.as_raw()) {
        return match usize::try_from(offset) {
            // SAFETY: offset is inside the block (checked), so the result is in the same mapping.
            Ok(off) if off < b.len => Mapped::Imported(unsafe { b.ptr().add(off) }),
            _ => Mapped::NotImported(format!("mapping offset {offset} is outside the memory")),
        };
    }
    match st.refused.get(&memory.as_raw()) {
        Some(why) => Mapped::NotImported(why.clone()),
        None => Mapped::NotImported("allocated before host-import was on".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Resources.

impl Active {
    /// Whether a buffer with this create info may be created external, so it can be bound to
    /// imported memory: the driver allows it, and it keeps the memory types the application
    /// would see without the layer.
    ///
    /// # Safety
    /// `ci` is a valid `VkBufferCreateInfo` with a valid chain.
    unsafe fn buffer_importable(&self, next: &ImportNext, ci: &vk::BufferCreateInfo<'_>) -> Result<(), &'static str> {
        use vk::StructureType as S;
        // SAFETY: caller contract.
        if !unsafe { chain_find(ci.p_next, S::EXTERNAL_MEMORY_BUFFER_CREATE_INFO) }.is_null() {
            return Err("the application chose its external handle types");
        }
        // A replayed address belongs to one buffer: no trial buffer may take it.
        let replay = vk::BufferCreateFlags::DEVICE_ADDRESS_CAPTURE_REPLAY
            | vk::BufferCreateFlags::DESCRIPTOR_BUFFER_CAPTURE_REPLAY_EXT;
        if ci.flags.intersects(replay) {
            return Err("capture/replay");
        }
        // SAFETY: caller contract.
        let usage2 = unsafe { chain_find(ci.p_next, S::BUFFER_USAGE_FLAGS_2_CREATE_INFO_KHR) };
        let mut u2 = vk::BufferUsageFlags2CreateInfoKHR::default();
        let usage = if usage2.is_null() {
            u64::from(ci.usage.as_raw())
        } else {
            // SAFETY: the sType says which struct this is.
            u2.usage = unsafe { (*(usage2 as *const vk::BufferUsageFlags2CreateInfoKHR<'_>)).usage };
            u2.usage.as_raw()
        };
        let key = (ci.flags.as_raw(), usage);
        if let Some(&verdict) = self.st.lock().buffer_ok.get(&key) {
            return verdict;
        }
        let mut q = vk::PhysicalDeviceExternalBufferInfo {
            flags: ci.flags,
            usage: ci.usage,
            handle_type: HOST_ALLOCATION,
            ..Default::default()
        };
        if !usage2.is_null() {
            q.p_next = &u2 as *const vk::BufferUsageFlags2CreateInfoKHR<'_> as *const c_void;
        }
        let mut out = vk::ExternalBufferProperties::default();
        // SAFETY: valid physical device; the structs live across the call.
        unsafe { (self.phys.external_buffer)(self.physical, &q, &mut out) };
        let verdict = if importable(&out.external_memory_properties) {
            let ext = vk::ExternalMemoryBufferCreateInfo { p_next: ci.p_next, handle_types: HOST_ALLOCATION, ..Default::default() };
            let mut eci = *ci;
            eci.p_next = &ext as *const vk::ExternalMemoryBufferCreateInfo<'_> as *const c_void;
            // SAFETY: the application's valid create info, and the same with a valid struct added.
            let (plain, external) = unsafe { (self.buffer_bits(next, ci), self.buffer_bits(next, &eci)) };
            let (Some(plain), Some(external)) = (plain, external) else {
                // Not remembered: a trial buffer could not be made this time.
                return Err("no trial buffer");
            };
            keeps_types("buffers", usage, ci.flags.as_raw(), plain, external, self.may_hide)
        } else {
            Err("the driver cannot bind it to host memory")
        };
        self.st.lock().buffer_ok.insert(key, verdict);
        verdict
    }

    /// The memory types of a trial buffer made from `ci` (destroyed again).
    ///
    /// # Safety
    /// `ci` is a valid `VkBufferCreateInfo` for this device.
    unsafe fn buffer_bits(&self, next: &ImportNext, ci: &vk::BufferCreateInfo<'_>) -> Option<u32> {
        let (create, destroy, reqs) = (next.vkCreateBuffer?, next.vkDestroyBuffer?, next.vkGetBufferMemoryRequirements?);
        let mut b = vk::Buffer::null();
        let mut r = vk::MemoryRequirements::default();
        // SAFETY: caller contract; the trial buffer is this function's own.
        unsafe {
            if create(self.device, ci, std::ptr::null(), &mut b) != vk::Result::SUCCESS {
                return None;
            }
            reqs(self.device, b, &mut r);
            destroy(self.device, b, std::ptr::null());
        }
        Some(r.memory_type_bits)
    }

    /// Whether an image with this create info may be created external (as for buffers).
    ///
    /// # Safety
    /// `ci` is a valid `VkImageCreateInfo` with a valid chain.
    unsafe fn image_importable(&self, next: &ImportNext, ci: &vk::ImageCreateInfo<'_>) -> Result<(), &'static str> {
        use vk::StructureType as S;
        for s in [S::EXTERNAL_MEMORY_IMAGE_CREATE_INFO, S::EXTERNAL_MEMORY_IMAGE_CREATE_INFO_NV] {
            // SAFETY: caller contract.
            if !unsafe { chain_find(ci.p_next, s) }.is_null() {
                return Err("the application chose its external handle types");
            }
        }
        // SAFETY: caller contract.
        if !unsafe { chain_find(ci.p_next, S::EXTERNAL_FORMAT_ANDROID) }.is_null() {
            return Err("external format");
        }
        // VUID-VkImageCreateInfo-pNext-01443: external images start undefined.
        if ci.initial_layout != vk::ImageLayout::UNDEFINED {
            return Err("preinitialized layout");
        }
        if ci.tiling == vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT {
            return Err("DRM format modifier tiling");
        }
        // Per-plane requirements; and a replayed descriptor belongs to one image.
        if ci.flags.intersects(vk::ImageCreateFlags::DISJOINT | vk::ImageCreateFlags::DESCRIPTOR_BUFFER_CAPTURE_REPLAY_EXT) {
            return Err("disjoint planes or capture/replay");
        }
        let key = (ci.format.as_raw(), ci.image_type.as_raw(), ci.tiling.as_raw(), ci.usage.as_raw(), ci.flags.as_raw());
        if let Some(&verdict) = self.st.lock().image_ok.get(&key) {
            return verdict;
        }
        let ext = vk::PhysicalDeviceExternalImageFormatInfo { handle_type: HOST_ALLOCATION, ..Default::default() };
        let q = vk::PhysicalDeviceImageFormatInfo2 {
            p_next: &ext as *const vk::PhysicalDeviceExternalImageFormatInfo<'_> as *const c_void,
            format: ci.format,
            ty: ci.image_type,
            tiling: ci.tiling,
            usage: ci.usage,
            flags: ci.flags,
            ..Default::default()
        };
        let mut eprops = vk::ExternalImageFormatProperties::default();
        let mut out = vk::ImageFormatProperties2 {
            p_next: &mut eprops as *mut vk::ExternalImageFormatProperties<'_> as *mut c_void,
            ..Default::default()
        };
        // SAFETY: valid physical device; the chains live across the call.
        let r = unsafe { (self.phys.image_format2)(self.physical, &q, &mut out) };
        let verdict = if r == vk::Result::SUCCESS && importable(&eprops.external_memory_properties) {
            let ext = vk::ExternalMemoryImageCreateInfo { p_next: ci.p_next, handle_types: HOST_ALLOCATION, ..Default::default() };
            let mut eci = *ci;
            eci.p_next = &ext as *const vk::ExternalMemoryImageCreateInfo<'_> as *const c_void;
            // SAFETY: the application's valid create info, and the same with a valid struct added.
            let (plain, external) = unsafe { (self.image_bits(next, ci), self.image_bits(next, &eci)) };
            let (Some(plain), Some(external)) = (plain, external) else {
                return Err("no trial image");
            };
            keeps_types("images", u64::from(ci.usage.as_raw()), ci.flags.as_raw(), plain, external, self.may_hide)
        } else {
            Err("the driver cannot bind it to host memory")
        };
        self.st.lock().image_ok.insert(key, verdict);
        verdict
    }

    /// The memory types of a trial image made from `ci` (destroyed again).
    ///
    /// # Safety
    /// `ci` is a valid `VkImageCreateInfo` for this device, not disjoint.
    unsafe fn image_bits(&self, next: &ImportNext, ci: &vk::ImageCreateInfo<'_>) -> Option<u32> {
        let (create, destroy, reqs) = (next.vkCreateImage?, next.vkDestroyImage?, next.vkGetImageMemoryRequirements?);
        let mut i = vk::Image::null();
        let mut r = vk::MemoryRequirements::default();
        // SAFETY: caller contract; the trial image is this function's own.
        unsafe {
            if create(self.device, ci, std::ptr::null(), &mut i) != vk::Result::SUCCESS {
                return None;
            }
            reqs(self.device, i, &mut r);
            destroy(self.device, i, std::ptr::null());
        }
        Some(r.memory_type_bits)
    }

    /// A resource that cannot be bound to imported memory was created.
    fn non_importable(&self, r: Resource, bits: u32, why: &'static str) {
        let mut st = self.st.lock();
        st.pending.add(r, bits, why);
        st.non_importable.insert(r, why);
    }

    /// A resource is being bound to `memory`.
    fn binding(&self, r: Resource, memory: vk::DeviceMemory) {
        let mut st = self.st.lock();
        st.pending.remove(r);
        let Some(&why) = st.non_importable.get(&r) else { return };
        if st.imported.contains_key(&memory.as_raw()) {
            log::once(
                LogLevel::Warn,
                &format!(
                    "host-import: {} that cannot live in imported memory ({why}) is bound to memory imported \
                     before it was created; set VKDIRTY_HOST_IMPORT=0 if the application misbehaves",
                    if matches!(r, Resource::Image(_)) { "an image" } else { "a buffer" }
                ),
            );
        }
    }

    fn destroyed(&self, r: Resource) {
        let mut st = self.st.lock();
        st.pending.remove(r);
        st.non_importable.remove(&r);
    }
}

/// The device's host-import state and the next function, for a hook.
macro_rules! hooked {
    ($device:expr, $field:ident, $missing:expr) => {{
        let Some(d) = state_of($device) else {
            log::once(LogLevel::Error, "a call on a device this layer did not see created cannot be passed down");
            return $missing;
        };
        let Some(next) = d.next.$field else { return $missing };
        (d, next)
    }};
}

/// # Safety
/// Valid `vkCreateBuffer` arguments.
unsafe extern "system" fn create_buffer(
    device: vk::Device,
    info: *const vk::BufferCreateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    p_buffer: *mut vk::Buffer,
) -> vk::Result {
    let (d, next) = hooked!(device, vkCreateBuffer, NO_NEXT);
    let Some(a) = d.active.as_ref().filter(|_| !info.is_null() && !p_buffer.is_null()) else {
        // SAFETY: the application's arguments, passed down.
        return unsafe { next(device, info, allocator, p_buffer) };
    };
    // SAFETY: checked non-null, valid by the caller contract.
    let ci = unsafe { &*info };
    // SAFETY: as above.
    match unsafe { a.buffer_importable(&d.next, ci) } {
        Ok(()) => {
            let ext = vk::ExternalMemoryBufferCreateInfo { p_next: ci.p_next, handle_types: HOST_ALLOCATION, ..Default::default() };
            let mut mine = *ci;
            mine.p_next = &ext as *const vk::ExternalMemoryBufferCreateInfo<'_> as *const c_void;
            // SAFETY: the application's arguments with a valid struct prepended to its chain.
            unsafe { next(device, &mine, allocator, p_buffer) }
        }
        Err(why) => {
            // SAFETY: the application's arguments, passed down.
            let r = unsafe { next(device, info, allocator, p_buffer) };
            if r == vk::Result::SUCCESS {
                // SAFETY: valid on success.
                let buffer = unsafe { *p_buffer };
                let bits = d.next.vkGetBufferMemoryRequirements.map_or(!0, |f| {
                    let mut req = vk::MemoryRequirements::default();
                    // SAFETY: the buffer just created, a valid out-pointer.
                    unsafe { f(device, buffer, &mut req) };
                    req.memory_type_bits
                });
                a.non_importable(Resource::Buffer(buffer.as_raw()), bits, why);
            }
            r
        }
    }
}

/// # Safety
/// Valid `vkCreateImage` arguments.
unsafe extern "system" fn create_image(
    device: vk::Device,
    info: *const vk::ImageCreateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    p_image: *mut vk::Image,
) -> vk::Result {
    let (d, next) = hooked!(device, vkCreateImage, NO_NEXT);
    let Some(a) = d.active.as_ref().filter(|_| !info.is_null() && !p_image.is_null()) else {
        // SAFETY: the application's arguments, passed down.
        return unsafe { next(device, info, allocator, p_image) };
    };
    // SAFETY: checked non-null, valid by the caller contract.
    let ci = unsafe { &*info };
    // SAFETY: as above.
    match unsafe { a.image_importable(&d.next, ci) } {
        Ok(()) => {
            let ext = vk::ExternalMemoryImageCreateInfo { p_next: ci.p_next, handle_types: HOST_ALLOCATION, ..Default::default() };
            let mut mine = *ci;
            mine.p_next = &ext as *const vk::ExternalMemoryImageCreateInfo<'_> as *const c_void;
            // SAFETY: the application's arguments with a valid struct prepended to its chain.
            unsafe { next(device, &mine, allocator, p_image) }
        }
        Err(why) => {
            // SAFETY: the application's arguments, passed down.
            let r = unsafe { next(device, info, allocator, p_image) };
            if r == vk::Result::SUCCESS {
                // SAFETY: valid on success.
                let image = unsafe { *p_image };
                let bits = match d.next.vkGetImageMemoryRequirements {
                    // Disjoint planes have per-plane requirements (VUID-vkGetImageMemoryRequirements-image-01588).
                    Some(f) if !ci.flags.contains(vk::ImageCreateFlags::DISJOINT) => {
                        let mut req = vk::MemoryRequirements::default();
                        // SAFETY: the image just created, a valid out-pointer.
                        unsafe { f(device, image, &mut req) };
                        req.memory_type_bits
                    }
                    _ => !0,
                };
                a.non_importable(Resource::Image(image.as_raw()), bits, why);
            }
            r
        }
    }
}

/// # Safety
/// Valid `vkDestroyBuffer` arguments.
unsafe extern "system" fn destroy_buffer(device: vk::Device, buffer: vk::Buffer, allocator: *const vk::AllocationCallbacks<'_>) {
    let (d, next) = hooked!(device, vkDestroyBuffer, ());
    if let Some(a) = &d.active {
        a.destroyed(Resource::Buffer(buffer.as_raw()));
    }
    // SAFETY: the application's arguments, passed down.
    unsafe { next(device, buffer, allocator) }
}

/// # Safety
/// Valid `vkDestroyImage` arguments.
unsafe extern "system" fn destroy_image(device: vk::Device, image: vk::Image, allocator: *const vk::AllocationCallbacks<'_>) {
    let (d, next) = hooked!(device, vkDestroyImage, ());
    if let Some(a) = &d.active {
        a.destroyed(Resource::Image(image.as_raw()));
    }
    // SAFETY: the application's arguments, passed down.
    unsafe { next(device, image, allocator) }
}

/// # Safety
/// Valid `vkBindBufferMemory` arguments.
unsafe extern "system" fn bind_buffer_memory(
    device: vk::Device,
    buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    offset: vk::DeviceSize,
) -> vk::Result {
    let (d, next) = hooked!(device, vkBindBufferMemory, NO_NEXT);
    if let Some(a) = &d.active {
        a.binding(Resource::Buffer(buffer.as_raw()), memory);
    }
    // SAFETY: the application's arguments, passed down.
    unsafe { next(device, buffer, memory, offset) }
}

/// # Safety
/// Valid `vkBindImageMemory` arguments.
unsafe extern "system" fn bind_image_memory(
    device: vk::Device,
    image: vk::Image,
    memory: vk::DeviceMemory,
    offset: vk::DeviceSize,
) -> vk::Result {
    let (d, next) = hooked!(device, vkBindImageMemory, NO_NEXT);
    if let Some(a) = &d.active {
        a.binding(Resource::Image(image.as_raw()), memory);
    }
    // SAFETY: the application's arguments, passed down.
    unsafe { next(device, image, memory, offset) }
}

macro_rules! bind2 {
    ($( $hook:ident, $field:ident, $pfn:ty, $info:ty, $res:ident, $handle:ident; )*) => {$(
        /// # Safety
        /// Valid arguments of the entry point this hooks.
        unsafe extern "system" fn $hook(device: vk::Device, count: u32, infos: *const $info) -> vk::Result {
            let (d, next) = hooked!(device, $field, NO_NEXT);
            if let Some(a) = &d.active {
                // SAFETY: `infos` has `count` elements.
                for i in unsafe { slice(infos, count) } {
                    a.binding(Resource::$res(i.$handle.as_raw()), i.memory);
                }
            }
            // SAFETY: the application's arguments, passed down.
            unsafe { next(device, count, infos) }
        }
        const _: $pfn = $hook;
    )*};
}

bind2! {
    bind_buffer_memory2, vkBindBufferMemory2, vk::PFN_vkBindBufferMemory2, vk::BindBufferMemoryInfo<'_>, Buffer, buffer;
    bind_buffer_memory2_khr, vkBindBufferMemory2KHR, vk::PFN_vkBindBufferMemory2, vk::BindBufferMemoryInfo<'_>, Buffer, buffer;
    bind_image_memory2, vkBindImageMemory2, vk::PFN_vkBindImageMemory2, vk::BindImageMemoryInfo<'_>, Image, image;
    bind_image_memory2_khr, vkBindImageMemory2KHR, vk::PFN_vkBindImageMemory2, vk::BindImageMemoryInfo<'_>, Image, image;
}

/// Generates the `vkGetDevice*MemoryRequirements*` hooks: the requirements of the resource as
/// host-import would create it (so what the application learns matches what it binds).
macro_rules! device_requirements {
    ($( $hook:ident, $field:ident, $info:ident, $create:ident, $ext:ident, $check:ident; )*) => {$(
        /// # Safety
        /// Valid arguments of the entry point this hooks.
        unsafe extern "system" fn $hook(
            device: vk::Device,
            info: *const vk::$info<'_>,
            out: *mut vk::MemoryRequirements2<'_>,
        ) {
            let (d, next) = hooked!(device, $field, ());
            // SAFETY: info is null or valid, with a valid create info (caller contract).
            let ci = unsafe { info.as_ref().and_then(|i| i.p_create_info.as_ref()) };
            let importable = match (&d.active, ci) {
                // SAFETY: as above.
                (Some(a), Some(ci)) => unsafe { a.$check(&d.next, ci) }.is_ok(),
                _ => false,
            };
            if importable {
                // SAFETY: checked above.
                let (i, ci) = unsafe { (&*info, ci.unwrap_unchecked()) };
                let ext = vk::$ext { p_next: ci.p_next, handle_types: HOST_ALLOCATION, ..Default::default() };
                let mut mine_ci = *ci;
                mine_ci.p_next = &ext as *const vk::$ext<'_> as *const c_void;
                let mut mine = *i;
                mine.p_create_info = &mine_ci;
                // SAFETY: the application's arguments with the create info host-import uses.
                unsafe { next(device, &mine, out) };
            } else {
                // SAFETY: the application's arguments, passed down.
                unsafe { next(device, info, out) };
            }
            if settings::get().aligns_requirements() {
                // SAFETY: `out` is null or valid.
                unsafe { crate::requirements::align2(out) };
            }
        }
    )*};
}

device_requirements! {
    device_buffer_requirements, vkGetDeviceBufferMemoryRequirements, DeviceBufferMemoryRequirements,
        BufferCreateInfo, ExternalMemoryBufferCreateInfo, buffer_importable;
    device_buffer_requirements_khr, vkGetDeviceBufferMemoryRequirementsKHR, DeviceBufferMemoryRequirements,
        BufferCreateInfo, ExternalMemoryBufferCreateInfo, buffer_importable;
    device_image_requirements, vkGetDeviceImageMemoryRequirements, DeviceImageMemoryRequirements,
        ImageCreateInfo, ExternalMemoryImageCreateInfo, image_importable;
    device_image_requirements_khr, vkGetDeviceImageMemoryRequirementsKHR, DeviceImageMemoryRequirements,
        ImageCreateInfo, ExternalMemoryImageCreateInfo, image_importable;
}

#[cfg(test)]
mod tests {
    use super::*;
    use vk::MemoryPropertyFlags as M;

    #[test]
    fn eligibility_by_memory_type() {
        // NVIDIA discrete: 0 and 1 device-local, 2 and 3 system memory, 4 the BAR.
        let nv = [
            M::DEVICE_LOCAL,
            M::DEVICE_LOCAL,
            M::HOST_VISIBLE | M::HOST_COHERENT,
            M::HOST_VISIBLE | M::HOST_COHERENT | M::HOST_CACHED,
            M::DEVICE_LOCAL | M::HOST_VISIBLE | M::HOST_COHERENT,
        ];
        assert_eq!(eligible_types(&nv, false), 0b01100);
        assert!(type_refusal(nv[4], 4, false).unwrap().contains("device-local"));
        assert!(type_refusal(nv[0], 0, false).unwrap().contains("not host-visible"));
        // lavapipe: one type, device-local and host-visible, on a CPU device.
        let lvp = [M::DEVICE_LOCAL | M::HOST_VISIBLE | M::HOST_COHERENT | M::HOST_CACHED];
        assert!(has_no_video_memory(vk::PhysicalDeviceType::CPU));
        assert!(has_no_video_memory(vk::PhysicalDeviceType::INTEGRATED_GPU));
        assert!(!has_no_video_memory(vk::PhysicalDeviceType::DISCRETE_GPU));
        assert_eq!(eligible_types(&lvp, true), 1);
        assert_eq!(eligible_types(&lvp, false), 0);
        assert_eq!(eligible_types(&[M::LAZILY_ALLOCATED | M::DEVICE_LOCAL, M::PROTECTED | M::DEVICE_LOCAL], true), 0);
    }

    fn plan(chain: *const c_void) -> ChainPlan {
        // SAFETY: the chains below are valid and live across the call.
        unsafe { plan_chain(chain) }
    }

    fn ptr<T>(t: &T) -> *const c_void {
        t as *const T as *const c_void
    }

    #[test]
    fn allocation_chains() {
        use ChainPlan::*;
        assert_eq!(plan(std::ptr::null()), Keep);
        // Kept: flags, priority, a dedicated struct naming nothing, an unknown struct.
        let flags = vk::MemoryAllocateFlagsInfo::default().flags(vk::MemoryAllocateFlags::DEVICE_ADDRESS);
        let mut prio = vk::MemoryPriorityAllocateInfoEXT::default().priority(0.5);
        prio.p_next = ptr(&flags);
        let mut none = vk::MemoryDedicatedAllocateInfo::default();
        none.p_next = ptr(&prio);
        assert_eq!(plan(ptr(&none)), Keep);
        let mut unknown = vk::ExportMetalObjectCreateInfoEXT::default();
        unknown.p_next = ptr(&none);
        assert_eq!(plan(ptr(&unknown)), Keep);
        // A dedicated image at the end of a chain.
        let img = vk::MemoryDedicatedAllocateInfo::default().image(vk::Image::from_raw(7));
        let mut head = vk::MemoryPriorityAllocateInfoEXT::default();
        head.p_next = ptr(&img);
        assert_eq!(plan(ptr(&head)), Refuse("dedicated image allocation"));
        // A dedicated buffer: dropped from a chain of known structures only.
        let mut buf = vk::MemoryDedicatedAllocateInfo::default().buffer(vk::Buffer::from_raw(7));
        assert_eq!(plan(ptr(&buf)), DropDedicated(vk::Buffer::from_raw(7)));
        buf.p_next = ptr(&prio);
        assert_eq!(plan(ptr(&buf)), DropDedicated(vk::Buffer::from_raw(7)));
        let mut odd = vk::ExportMetalObjectCreateInfoEXT::default();
        odd.p_next = ptr(&buf);
        assert_eq!(plan(ptr(&odd)), Refuse("dedicated buffer allocation"));
        let export = vk::ExportMemoryAllocateInfo::default().handle_types(vk::ExternalMemoryHandleTypeFlags::OPAQUE_FD);
        assert_eq!(plan(ptr(&export)), Refuse("the application exports it"));
        let fd = vk::ImportMemoryFdInfoKHR::default().fd(3);
        assert_eq!(plan(ptr(&fd)), Refuse("the application imports it"));
        let own = vk::ImportMemoryHostPointerInfoEXT::default();
        assert_eq!(plan(ptr(&own)), Refuse("the application imports it"));
        let cap = vk::MemoryOpaqueCaptureAddressAllocateInfo::default().opaque_capture_address(0x1000);
        assert_eq!(plan(ptr(&cap)), Refuse("replayed device address"));
        let zero = vk::MemoryOpaqueCaptureAddressAllocateInfo::default();
        assert_eq!(plan(ptr(&zero)), Keep);
        let replay = vk::MemoryAllocateFlagsInfo::default().flags(vk::MemoryAllocateFlags::DEVICE_ADDRESS_CAPTURE_REPLAY);
        assert_eq!(plan(ptr(&replay)), Refuse("device address capture/replay"));
    }

    #[test]
    fn copied_chain_keeps_everything_but_the_dedicated_structure() {
        let flags = vk::MemoryAllocateFlagsInfo::default().flags(vk::MemoryAllocateFlags::DEVICE_ADDRESS).device_mask(1);
        let mut ded = vk::MemoryDedicatedAllocateInfo::default().buffer(vk::Buffer::from_raw(9));
        ded.p_next = ptr(&flags);
        let mut prio = vk::MemoryPriorityAllocateInfoEXT::default().priority(0.25);
        prio.p_next = ptr(&ded);
        // SAFETY: a valid chain of known structures.
        let mut c = unsafe { CopiedChain::copy(ptr(&prio)) };
        let head = c.link();
        let mut seen = Vec::new();
        let mut p = head;
        while !p.is_null() {
            // SAFETY: the copied chain, alive in `c`.
            let b = unsafe { &*(p as *const vk::BaseInStructure<'_>) };
            seen.push(b.s_type);
            p = b.p_next.cast();
        }
        assert_eq!(seen, vec![vk::StructureType::MEMORY_ALLOCATE_FLAGS_INFO, vk::StructureType::MEMORY_PRIORITY_ALLOCATE_INFO_EXT]);
        assert_eq!(c.flags.map(|f| (f.flags, f.device_mask)), Some((vk::MemoryAllocateFlags::DEVICE_ADDRESS, 1)));
        assert_eq!(c.priority.map(|p| p.priority), Some(0.25));
        // SAFETY: an empty chain.
        assert!(unsafe { CopiedChain::copy(std::ptr::null()) }.link().is_null());
    }

    #[test]
    fn pending_resources_block_their_memory_types() {
        let mut p = PendingSet::default();
        assert_eq!(p.blocking(0), None);
        p.add(Resource::Image(1), 0b011, "x");
        p.add(Resource::Buffer(1), 0b110, "y");
        assert_eq!(p.blocking(0), Some(("image", "x")));
        assert!(p.blocking(1).is_some());
        assert_eq!(p.blocking(2), Some(("buffer", "y")));
        assert_eq!(p.blocking(3), None);
        assert_eq!(p.blocking(40), None);
        // Re-adding the same resource does not count it twice.
        p.add(Resource::Image(1), 0b011, "x");
        assert!(p.remove(Resource::Image(1)).is_some());
        assert!(p.remove(Resource::Image(1)).is_none());
        assert_eq!(p.blocking(0), None);
        assert_eq!(p.blocking(1), Some(("buffer", "y")));
        p.remove(Resource::Buffer(1));
        assert!((0..32).all(|t| p.blocking(t).is_none()));
        // Every type (disjoint images).
        p.add(Resource::Image(9), !0, "z");
        assert!((0..32).all(|t| p.blocking(t).is_some()));
    }

    #[test]
    fn external_resources_must_keep_their_memory_types() {
        // Strict: nothing may be hidden.
        assert_eq!(keeps_types("buffers", 3, 0, 0b11111, 0b11111, 0), Ok(()));
        assert!(keeps_types("buffers", 3, 0, 0b11111, 0b01111, 0).is_err());
        assert!(keeps_types("buffers", 3, 0, 0b11111, 0b01100, 0).is_err());
        // NVIDIA 580 (measured): external buffers lose type 4, device-local and host-visible.
        assert_eq!(keeps_types("buffers", 3, 0, 0b11111, 0b01111, 0b10000), Ok(()));
        // Losing any other type, or gaining one, or losing everything, is refused.
        assert!(keeps_types("buffers", 3, 0, 0b11111, 0b00111, 0b10000).is_err());
        assert!(keeps_types("images", 3, 0, 0b00011, 0b01111, 0b10000).is_err());
        assert!(keeps_types("images", 3, 0, 0b10000, 0, 0b10000).is_err());
    }

    #[test]
    fn only_device_local_host_visible_types_may_be_hidden() {
        use vk::MemoryPropertyFlags as M;
        let nvidia = [
            M::empty(),
            M::DEVICE_LOCAL,
            M::HOST_VISIBLE | M::HOST_COHERENT,
            M::HOST_VISIBLE | M::HOST_COHERENT | M::HOST_CACHED,
            M::DEVICE_LOCAL | M::HOST_VISIBLE | M::HOST_COHERENT,
        ];
        assert_eq!(hideable_types(&nvidia, HostImport::On), 0b10000);
        assert_eq!(hideable_types(&nvidia, HostImport::Strict), 0);
        assert_eq!(hideable_types(&nvidia, HostImport::Off), 0);
    }

    #[test]
    fn external_properties_and_rounding() {
        let mut e = vk::ExternalMemoryProperties {
            external_memory_features: vk::ExternalMemoryFeatureFlags::IMPORTABLE,
            compatible_handle_types: HOST_ALLOCATION,
            ..Default::default()
        };
        assert!(importable(&e));
        e.external_memory_features |= vk::ExternalMemoryFeatureFlags::DEDICATED_ONLY;
        assert!(!importable(&e));
        e.external_memory_features = vk::ExternalMemoryFeatureFlags::EXPORTABLE;
        assert!(!importable(&e));
        e.external_memory_features = vk::ExternalMemoryFeatureFlags::IMPORTABLE;
        e.compatible_handle_types = vk::ExternalMemoryHandleTypeFlags::OPAQUE_FD;
        assert!(!importable(&e));
        assert_eq!(round_up(1, 4096), Some(4096));
        assert_eq!(round_up(4096, 4096), Some(4096));
        assert_eq!(round_up(4097, 65536), Some(65536));
        assert_eq!(round_up(u64::MAX - 10, 4096), None);
    }

    #[test]
    fn host_blocks_are_aligned_and_writable() {
        for align in [4096usize, 65536, 1 << 21] {
            let b = HostBlock::new(3 * 4096, align.max(vkdirty::guard::page_size())).expect("mmap");
            assert_eq!(b.ptr() as usize % align, 0);
            // SAFETY: the block is mapped read-write.
            unsafe {
                std::ptr::write_bytes(b.ptr(), 0xab, b.len);
                assert_eq!(*b.ptr().add(b.len - 1), 0xab);
            }
        }
    }
}
