//! An allocation's `pNext` chain and a host-pointer import: whether it can be imported as it is,
//! without its dedicated structure, or not at all, and the copy of the chain without that
//! structure (tested without a driver).

use super::*;

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
