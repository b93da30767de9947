//! The intercepted device-level entry points. Each looks up its device, lets capture do its part
//! and calls down; a capture failure is a log line inside `capture`, never a changed result.

use ash::vk;
use std::ffi::c_void;

use crate::capture::{self, SubmitInfo, SyncPoint};
use crate::dispatch::{dev_of, DeviceState};
use crate::ffi::slice;
use crate::host_import;

/// The result to return when the entry point the application called has no next function.
const NO_NEXT: vk::Result = vk::Result::ERROR_INITIALIZATION_FAILED;

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
    let r = unsafe { host_import::allocate(next, device, info, allocator, p_memory) };
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
    host_import::freed(device, memory);
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
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(device, memory, offset, size, flags, pp_data) };
    if r == vk::Result::SUCCESS && !pp_data.is_null() {
        // SAFETY: on success *pp_data is the driver's mapping of this range, valid until unmap,
        // which this layer intercepts (untracking before calling down).
        unsafe {
            *pp_data = capture::get()
                .mapped(&dev, memory, offset, size, *pp_data, false, || host_import::mapping(device, memory, offset))
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
/// Valid `vkMapMemory2KHR` arguments; `next` is the next layer's function of that name.
unsafe fn map2(
    dev: &DeviceState,
    next: Option<vk::PFN_vkMapMemory2KHR>,
    device: vk::Device,
    info: *const vk::MemoryMapInfoKHR<'_>,
    pp_data: *mut *mut c_void,
) -> vk::Result {
    let Some(next) = next else { return NO_NEXT };
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(device, info, pp_data) };
    if r == vk::Result::SUCCESS && !pp_data.is_null() && !info.is_null() {
        // SAFETY: info is valid; on success *pp_data is the driver's mapping (as in map_memory).
        unsafe {
            let i = &*info;
            let placed = is_placed(i);
            *pp_data = capture::get().mapped(dev, i.memory, i.offset, i.size, *pp_data, placed, || {
                host_import::mapping(device, i.memory, i.offset)
            });
        }
    }
    r
}

/// # Safety
/// Valid `vkMapMemory2KHR` arguments.
pub unsafe extern "system" fn map_memory2_khr(
    device: vk::Device,
    info: *const vk::MemoryMapInfoKHR<'_>,
    pp_data: *mut *mut c_void,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    // SAFETY: forwarded arguments.
    unsafe { map2(&dev, dev.next.vkMapMemory2KHR, device, info, pp_data) }
}

/// # Safety
/// Valid `vkMapMemory2` arguments.
pub unsafe extern "system" fn map_memory2(
    device: vk::Device,
    info: *const vk::MemoryMapInfoKHR<'_>,
    pp_data: *mut *mut c_void,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    // SAFETY: forwarded arguments.
    unsafe { map2(&dev, dev.next.vkMapMemory2, device, info, pp_data) }
}

/// # Safety
/// Valid `vkUnmapMemory2KHR` arguments; `next` is the next layer's function of that name.
unsafe fn unmap2(
    dev: &DeviceState,
    next: Option<vk::PFN_vkUnmapMemory2KHR>,
    device: vk::Device,
    info: *const vk::MemoryUnmapInfoKHR<'_>,
) -> vk::Result {
    let Some(next) = next else { return NO_NEXT };
    if !info.is_null() {
        // SAFETY: info is valid.
        capture::get().unmapping(dev, unsafe { (*info).memory });
    }
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(device, info) };
    vkdirty::guard::shadow::restore_handler();
    r
}

/// # Safety
/// Valid `vkUnmapMemory2KHR` arguments.
pub unsafe extern "system" fn unmap_memory2_khr(
    device: vk::Device,
    info: *const vk::MemoryUnmapInfoKHR<'_>,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    // SAFETY: forwarded arguments.
    unsafe { unmap2(&dev, dev.next.vkUnmapMemory2KHR, device, info) }
}

/// # Safety
/// Valid `vkUnmapMemory2` arguments.
pub unsafe extern "system" fn unmap_memory2(device: vk::Device, info: *const vk::MemoryUnmapInfoKHR<'_>) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    // SAFETY: forwarded arguments.
    unsafe { unmap2(&dev, dev.next.vkUnmapMemory2, device, info) }
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

/// # Safety
/// Valid `vkQueueSubmit` arguments.
pub unsafe extern "system" fn queue_submit(
    queue: vk::Queue,
    count: u32,
    submits: *const vk::SubmitInfo<'_>,
    fence: vk::Fence,
) -> vk::Result {
    // SAFETY: queue is valid; it shares its device's dispatch key.
    let Some(dev) = (unsafe { dev_of(queue) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkQueueSubmit else { return NO_NEXT };
    let mut info = SubmitInfo { kind: 0, command_buffers: 0, waits: 0, signals: 0, fence: vk::Handle::as_raw(fence) };
    // SAFETY: `submits` has `count` elements.
    for s in unsafe { slice(submits, count) } {
        info.command_buffers = info.command_buffers.saturating_add(s.command_buffer_count);
        info.waits = info.waits.saturating_add(s.wait_semaphore_count);
        info.signals = info.signals.saturating_add(s.signal_semaphore_count);
    }
    capture::get().submitting(&dev, queue, info);
    // SAFETY: the application's arguments, passed down.
    unsafe { next(queue, count, submits, fence) }
}

/// # Safety
/// Valid `vkQueueSubmit2` arguments; `next` is the next layer's function of the called name.
unsafe fn submit2(
    dev: &DeviceState,
    next: Option<vk::PFN_vkQueueSubmit2>,
    queue: vk::Queue,
    count: u32,
    submits: *const vk::SubmitInfo2<'_>,
    fence: vk::Fence,
) -> vk::Result {
    let Some(next) = next else { return NO_NEXT };
    let mut info = SubmitInfo { kind: 1, command_buffers: 0, waits: 0, signals: 0, fence: vk::Handle::as_raw(fence) };
    // SAFETY: `submits` has `count` elements.
    for s in unsafe { slice(submits, count) } {
        info.command_buffers = info.command_buffers.saturating_add(s.command_buffer_info_count);
        info.waits = info.waits.saturating_add(s.wait_semaphore_info_count);
        info.signals = info.signals.saturating_add(s.signal_semaphore_info_count);
    }
    capture::get().submitting(dev, queue, info);
    // SAFETY: the application's arguments, passed down.
    unsafe { next(queue, count, submits, fence) }
}

/// # Safety
/// Valid `vkQueueSubmit2` arguments.
pub unsafe extern "system" fn queue_submit2(
    queue: vk::Queue,
    count: u32,
    submits: *const vk::SubmitInfo2<'_>,
    fence: vk::Fence,
) -> vk::Result {
    // SAFETY: queue is valid.
    let Some(dev) = (unsafe { dev_of(queue) }) else { return NO_NEXT };
    // SAFETY: forwarded arguments.
    unsafe { submit2(&dev, dev.next.vkQueueSubmit2, queue, count, submits, fence) }
}

/// # Safety
/// Valid `vkQueueSubmit2KHR` arguments.
pub unsafe extern "system" fn queue_submit2_khr(
    queue: vk::Queue,
    count: u32,
    submits: *const vk::SubmitInfo2<'_>,
    fence: vk::Fence,
) -> vk::Result {
    // SAFETY: queue is valid.
    let Some(dev) = (unsafe { dev_of(queue) }) else { return NO_NEXT };
    // SAFETY: forwarded arguments.
    unsafe { submit2(&dev, dev.next.vkQueueSubmit2KHR, queue, count, submits, fence) }
}

/// # Safety
/// Valid `vkQueueBindSparse` arguments.
pub unsafe extern "system" fn queue_bind_sparse(
    queue: vk::Queue,
    count: u32,
    binds: *const vk::BindSparseInfo<'_>,
    fence: vk::Fence,
) -> vk::Result {
    // SAFETY: queue is valid.
    let Some(dev) = (unsafe { dev_of(queue) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkQueueBindSparse else { return NO_NEXT };
    let mut info = SubmitInfo { kind: 2, command_buffers: 0, waits: 0, signals: 0, fence: vk::Handle::as_raw(fence) };
    // SAFETY: `binds` has `count` elements.
    for b in unsafe { slice(binds, count) } {
        info.waits = info.waits.saturating_add(b.wait_semaphore_count);
        info.signals = info.signals.saturating_add(b.signal_semaphore_count);
    }
    capture::get().submitting(&dev, queue, info);
    // SAFETY: the application's arguments, passed down.
    unsafe { next(queue, count, binds, fence) }
}

/// # Safety
/// Valid `vkQueuePresentKHR` arguments.
pub unsafe extern "system" fn queue_present_khr(
    queue: vk::Queue,
    present: *const vk::PresentInfoKHR<'_>,
) -> vk::Result {
    // SAFETY: queue is valid.
    let Some(dev) = (unsafe { dev_of(queue) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkQueuePresentKHR else { return NO_NEXT };
    capture::get().presenting();
    // SAFETY: the application's arguments, passed down.
    unsafe { next(queue, present) }
}

// Host synchronisation points: after success, GPU writes the application may now read are in
// the real memory; shadows bring them into the application's view (VKDIRTY_SHADOW_REFRESH).

/// # Safety
/// Valid `vkWaitForFences` arguments.
pub unsafe extern "system" fn wait_for_fences(
    device: vk::Device,
    count: u32,
    fences: *const vk::Fence,
    wait_all: vk::Bool32,
    timeout: u64,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkWaitForFences else { return NO_NEXT };
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(device, count, fences, wait_all, timeout) };
    if r == vk::Result::SUCCESS {
        // SAFETY: `fences` has `count` elements (VUID-vkWaitForFences-pFences-parameter).
        let f: Vec<u64> = unsafe { slice(fences, count) }.iter().map(|f| vk::Handle::as_raw(*f)).collect();
        let all = wait_all == vk::TRUE || f.len() == 1;
        capture::get().synchronized(&dev, SyncPoint::Fences { fences: &f, all });
    }
    r
}

/// # Safety
/// Valid `vkGetFenceStatus` arguments.
pub unsafe extern "system" fn get_fence_status(device: vk::Device, fence: vk::Fence) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkGetFenceStatus else { return NO_NEXT };
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(device, fence) };
    if r == vk::Result::SUCCESS {
        capture::get().synchronized(&dev, SyncPoint::Fences { fences: &[vk::Handle::as_raw(fence)], all: true });
    }
    r
}

/// # Safety
/// Valid `vkQueueWaitIdle` arguments.
pub unsafe extern "system" fn queue_wait_idle(queue: vk::Queue) -> vk::Result {
    // SAFETY: queue is valid.
    let Some(dev) = (unsafe { dev_of(queue) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkQueueWaitIdle else { return NO_NEXT };
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(queue) };
    if r == vk::Result::SUCCESS {
        capture::get().synchronized(&dev, SyncPoint::QueueIdle(vk::Handle::as_raw(queue)));
    }
    r
}

/// # Safety
/// Valid `vkDeviceWaitIdle` arguments.
pub unsafe extern "system" fn device_wait_idle(device: vk::Device) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkDeviceWaitIdle else { return NO_NEXT };
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(device) };
    if r == vk::Result::SUCCESS {
        capture::get().synchronized(&dev, SyncPoint::DeviceIdle);
    }
    r
}

/// # Safety
/// Valid `vkWaitSemaphores` arguments; `next` is the next layer's function of the called name.
unsafe fn wait_semaphores_with(
    dev: &DeviceState,
    next: Option<vk::PFN_vkWaitSemaphores>,
    device: vk::Device,
    info: *const vk::SemaphoreWaitInfo<'_>,
    timeout: u64,
) -> vk::Result {
    let Some(next) = next else { return NO_NEXT };
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(device, info, timeout) };
    if r == vk::Result::SUCCESS && !info.is_null() {
        // SAFETY: info is valid, with `semaphore_count` semaphores and values
        // (VUID-VkSemaphoreWaitInfo-pSemaphores-parameter, -pValues-parameter).
        let (sems, vals, any) = unsafe {
            let i = &*info;
            (
                slice(i.p_semaphores, i.semaphore_count),
                slice(i.p_values, i.semaphore_count),
                i.flags.contains(vk::SemaphoreWaitFlags::ANY),
            )
        };
        let values: Vec<(u64, u64)> = sems.iter().zip(vals).map(|(s, v)| (vk::Handle::as_raw(*s), *v)).collect();
        let all = !any || values.len() == 1;
        capture::get().synchronized(dev, SyncPoint::Semaphores { values: &values, all });
    }
    r
}

/// # Safety
/// Valid `vkWaitSemaphores` arguments.
pub unsafe extern "system" fn wait_semaphores(
    device: vk::Device,
    info: *const vk::SemaphoreWaitInfo<'_>,
    timeout: u64,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    // SAFETY: forwarded arguments.
    unsafe { wait_semaphores_with(&dev, dev.next.vkWaitSemaphores, device, info, timeout) }
}

/// # Safety
/// Valid `vkWaitSemaphoresKHR` arguments.
pub unsafe extern "system" fn wait_semaphores_khr(
    device: vk::Device,
    info: *const vk::SemaphoreWaitInfo<'_>,
    timeout: u64,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    // SAFETY: forwarded arguments.
    unsafe { wait_semaphores_with(&dev, dev.next.vkWaitSemaphoresKHR, device, info, timeout) }
}

/// # Safety
/// Valid `vkGetSemaphoreCounterValue` arguments; `next` is the next layer's function of the
/// called name.
unsafe fn counter_value_with(
    dev: &DeviceState,
    next: Option<vk::PFN_vkGetSemaphoreCounterValue>,
    device: vk::Device,
    semaphore: vk::Semaphore,
    value: *mut u64,
) -> vk::Result {
    let Some(next) = next else { return NO_NEXT };
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(device, semaphore, value) };
    if r == vk::Result::SUCCESS && !value.is_null() {
        // SAFETY: written by the call on success.
        let v = unsafe { *value };
        capture::get()
            .synchronized(dev, SyncPoint::Semaphores { values: &[(vk::Handle::as_raw(semaphore), v)], all: true });
    }
    r
}

/// # Safety
/// Valid `vkGetSemaphoreCounterValue` arguments.
pub unsafe extern "system" fn get_semaphore_counter_value(
    device: vk::Device,
    semaphore: vk::Semaphore,
    value: *mut u64,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    // SAFETY: forwarded arguments.
    unsafe { counter_value_with(&dev, dev.next.vkGetSemaphoreCounterValue, device, semaphore, value) }
}

/// # Safety
/// Valid `vkGetSemaphoreCounterValueKHR` arguments.
pub unsafe extern "system" fn get_semaphore_counter_value_khr(
    device: vk::Device,
    semaphore: vk::Semaphore,
    value: *mut u64,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    // SAFETY: forwarded arguments.
    unsafe { counter_value_with(&dev, dev.next.vkGetSemaphoreCounterValueKHR, device, semaphore, value) }
}

// Host signals can start GPU work submitted earlier: shadows reach the real memory first.

/// # Safety
/// Valid `vkSignalSemaphore` arguments; `next` is the next layer's function of the called name.
unsafe fn signal_semaphore_with(
    dev: &DeviceState,
    next: Option<vk::PFN_vkSignalSemaphore>,
    device: vk::Device,
    info: *const vk::SemaphoreSignalInfo<'_>,
) -> vk::Result {
    let Some(next) = next else { return NO_NEXT };
    capture::get().host_signalling(dev);
    // SAFETY: the application's arguments, passed down.
    unsafe { next(device, info) }
}

/// # Safety
/// Valid `vkSignalSemaphore` arguments.
pub unsafe extern "system" fn signal_semaphore(
    device: vk::Device,
    info: *const vk::SemaphoreSignalInfo<'_>,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    // SAFETY: forwarded arguments.
    unsafe { signal_semaphore_with(&dev, dev.next.vkSignalSemaphore, device, info) }
}

/// # Safety
/// Valid `vkSignalSemaphoreKHR` arguments.
pub unsafe extern "system" fn signal_semaphore_khr(
    device: vk::Device,
    info: *const vk::SemaphoreSignalInfo<'_>,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    // SAFETY: forwarded arguments.
    unsafe { signal_semaphore_with(&dev, dev.next.vkSignalSemaphoreKHR, device, info) }
}

/// # Safety
/// Valid `vkSetEvent` arguments.
pub unsafe extern "system" fn set_event(device: vk::Device, event: vk::Event) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkSetEvent else { return NO_NEXT };
    capture::get().host_signalling(&dev);
    // SAFETY: the application's arguments, passed down.
    unsafe { next(device, event) }
}
