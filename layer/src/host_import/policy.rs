//! Pure decisions of host-import, tested without a driver: which memory types and resources may be
//! imported, and the plan for an allocation's pNext chain.

use super::*;

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
pub(super) fn type_refusal(f: vk::MemoryPropertyFlags, ty: u32, no_video_memory: bool) -> Option<String> {
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
    pub(super) flags: Option<vk::MemoryAllocateFlagsInfo<'static>>,
    pub(super) priority: Option<vk::MemoryPriorityAllocateInfoEXT<'static>>,
    pub(super) capture: Option<vk::MemoryOpaqueCaptureAddressAllocateInfo<'static>>,
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
                    S::MEMORY_ALLOCATE_FLAGS_INFO => {
                        c.flags = Some(*(p as *const vk::MemoryAllocateFlagsInfo<'static>))
                    }
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
pub(super) fn keeps_types(
    what: &str,
    usage: u64,
    flags: u32,
    plain: u32,
    external: u32,
    may_hide: u32,
) -> Result<(), &'static str> {
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
pub(super) fn importable(p: &vk::ExternalMemoryProperties) -> bool {
    p.compatible_handle_types.contains(HOST_ALLOCATION)
        && p.external_memory_features.contains(vk::ExternalMemoryFeatureFlags::IMPORTABLE)
        // A dedicated-only resource cannot live in a host-pointer import.
        && !p.external_memory_features.contains(vk::ExternalMemoryFeatureFlags::DEDICATED_ONLY)
}

/// `n` rounded up to a multiple of `align` (a power of two); `None` on overflow.
pub(super) fn round_up(n: u64, align: u64) -> Option<u64> {
    Some(n.checked_add(align - 1)? & !(align - 1))
}
