//! Memory: allocation (host-import may back it with the layer's own memory), mapping (the
//! pointer the application writes through is the tracked one), flush, invalidate, unmap, free.

use ash::vk;
use std::ffi::c_void;

use super::NO_NEXT;
use crate::capture;
use crate::dispatch::dev_of;
use crate::ffi::slice;
use crate::host_import;

/// # Safety
/// Valid `vkAllocateMemory` arguments.
pub unsafe extern "system" fn allocate_memory(
    device: vk::Device,
    info: *const vk::MemoryAllocateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    p_memory: *mut vk::DeviceMemory,
) -> vk::Result {
    // SAFETY: device is valid (VUID-vkAllocateMemory-device-parameter).
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkAllocateMemory else { return NO_NEXT };
    // host-import may back the allocation with the layer's own memory; the application's
    // arguments otherwise go down unchanged.
    // SAFETY: the application's arguments.
    let r = unsafe { host_import::allocate(dev.host_import.as_ref(), next, device, info, allocator, p_memory) };
    if r == vk::Result::SUCCESS && !info.is_null() && !p_memory.is_null() {
        // SAFETY: valid on success.
        unsafe { capture::get().allocated(&dev, &*info, *p_memory) };
    }
    r
}

/// # Safety
/// Valid `vkFreeMemory` arguments.
pub unsafe extern "system" fn free_memory(
    device: vk::Device,
    memory: vk::DeviceMemory,
    allocator: *const vk::AllocationCallbacks<'_>,
) {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return };
    if memory != vk::DeviceMemory::null() {
        // Freeing unmaps implicitly: collect while the memory is still mapped.
        capture::get().freeing(&dev, memory);
    }
    if let Some(next) = dev.next.vkFreeMemory {
        // SAFETY: the application's arguments, passed down.
        unsafe { next(device, memory, allocator) };
    }
    // Pages the layer imported go after the driver's memory.
    host_import::freed(dev.host_import.as_ref(), memory);
    capture::trim_after_free();
    // A page-guarding layer below may have taken the shadow backend's fault handler away.
    vkdirty::guard::shadow::restore_handler();
}

/// # Safety
/// Valid `vkMapMemory` arguments.
pub unsafe extern "system" fn map_memory(
    device: vk::Device,
    memory: vk::DeviceMemory,
    offset: vk::DeviceSize,
    size: vk::DeviceSize,
    flags: vk::MemoryMapFlags,
    pp_data: *mut *mut c_void,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkMapMemory else { return NO_NEXT };
    // With VKDIRTY_GFXR_FLUSH, whole pages are mapped below (so the flushes can be aligned).
    let (down_offset, down_size) = capture::get().range_to_map_down(&dev, memory, offset, size);
    // SAFETY: the application's arguments, passed down (the range widened inside the allocation).
    let r = unsafe { next(device, memory, down_offset, down_size, flags, pp_data) };
    if r == vk::Result::SUCCESS && !pp_data.is_null() {
        // SAFETY: on success *pp_data is the driver's mapping of this range, valid until unmap,
        // which this layer intercepts (untracking before calling down); the application's offset
        // lies `offset - down_offset` bytes into it.
        unsafe {
            let real = (*pp_data).cast::<u8>().wrapping_add((offset - down_offset) as usize).cast();
            *pp_data = capture::get().mapped(&dev, memory, offset, size, real, false, || {
                host_import::mapping(dev.host_import.as_ref(), memory, offset)
            })
        };
    }
    r
}

/// # Safety
/// Valid `vkUnmapMemory` arguments.
pub unsafe extern "system" fn unmap_memory(device: vk::Device, memory: vk::DeviceMemory) {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return };
    capture::get().unmapping(&dev, memory);
    if let Some(next) = dev.next.vkUnmapMemory {
        // SAFETY: the application's arguments, passed down.
        unsafe { next(device, memory) };
    }
    vkdirty::guard::shadow::restore_handler();
}

/// Whether a `VkMemoryMapInfoKHR` asks for a placed mapping (`VK_EXT_map_memory_placed`).
///
/// # Safety
/// `info` is valid with a valid `pNext` chain.
unsafe fn is_placed(info: &vk::MemoryMapInfoKHR<'_>) -> bool {
    if info.flags.contains(vk::MemoryMapFlags::PLACED_EXT) {
        return true;
    }
    let mut p = info.p_next as *const vk::BaseInStructure<'_>;
    while !p.is_null() {
        // SAFETY: every pNext element starts with sType/pNext (caller contract).
        let b = unsafe { &*p };
        if b.s_type == vk::StructureType::MEMORY_MAP_PLACED_INFO_EXT {
            return true;
        }
        p = b.p_next;
    }
    false
}

/// # Safety
/// Valid `vkMapMemory2` arguments (`ALIAS`: called as `vkMapMemory2KHR`).
pub unsafe extern "system" fn map_memory2<const ALIAS: bool>(
    device: vk::Device,
    info: *const vk::MemoryMapInfoKHR<'_>,
    pp_data: *mut *mut c_void,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkMapMemory2.get(ALIAS) else { return NO_NEXT };
    if info.is_null() {
        // SAFETY: the application's arguments, passed down.
        return unsafe { next(device, info, pp_data) };
    }
    // SAFETY: info is valid (caller contract).
    let i = unsafe { &*info };
    // SAFETY: as above.
    let placed = unsafe { is_placed(i) };
    // With VKDIRTY_GFXR_FLUSH, whole pages are mapped below (as in map_memory); a placed mapping
    // stays exactly where the application put it.
    let (down_offset, down_size) =
        if placed { (i.offset, i.size) } else { capture::get().range_to_map_down(&dev, i.memory, i.offset, i.size) };
    let down = vk::MemoryMapInfoKHR { offset: down_offset, size: down_size, ..*i };
    // SAFETY: the application's arguments, passed down (the range widened inside the allocation,
    // its pNext chain kept).
    let r = unsafe { next(device, &down, pp_data) };
    if r == vk::Result::SUCCESS && !pp_data.is_null() {
        // SAFETY: on success *pp_data is the driver's mapping (as in map_memory).
        unsafe {
            let real = (*pp_data).cast::<u8>().wrapping_add((i.offset - down_offset) as usize).cast();
            *pp_data = capture::get().mapped(&dev, i.memory, i.offset, i.size, real, placed, || {
                host_import::mapping(dev.host_import.as_ref(), i.memory, i.offset)
            });
        }
    }
    r
}

/// # Safety
/// Valid `vkUnmapMemory2` arguments (`ALIAS`: called as `vkUnmapMemory2KHR`).
pub unsafe extern "system" fn unmap_memory2<const ALIAS: bool>(
    device: vk::Device,
    info: *const vk::MemoryUnmapInfoKHR<'_>,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkUnmapMemory2.get(ALIAS) else { return NO_NEXT };
    if !info.is_null() {
        // SAFETY: info is valid.
        capture::get().unmapping(&dev, unsafe { (*info).memory });
    }
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(device, info) };
    vkdirty::guard::shadow::restore_handler();
    r
}

/// # Safety
/// Valid `vkFlushMappedMemoryRanges` arguments.
pub unsafe extern "system" fn flush_mapped_memory_ranges(
    device: vk::Device,
    count: u32,
    ranges: *const vk::MappedMemoryRange<'_>,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkFlushMappedMemoryRanges else { return NO_NEXT };
    // Collect first: a shadow's bytes must reach the real memory before the driver flushes it.
    // SAFETY: `ranges` has `count` elements (VUID-vkFlushMappedMemoryRanges-pMemoryRanges-parameter).
    capture::get().flushing(&dev, unsafe { slice(ranges, count) });
    // SAFETY: the application's arguments, passed down.
    unsafe { next(device, count, ranges) }
}

/// # Safety
/// Valid `vkInvalidateMappedMemoryRanges` arguments.
pub unsafe extern "system" fn invalidate_mapped_memory_ranges(
    device: vk::Device,
    count: u32,
    ranges: *const vk::MappedMemoryRange<'_>,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkInvalidateMappedMemoryRanges else { return NO_NEXT };
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(device, count, ranges) };
    if r == vk::Result::SUCCESS {
        // SAFETY: `ranges` has `count` elements.
        capture::get().invalidated(&dev, unsafe { slice(ranges, count) });
    }
    r
}
