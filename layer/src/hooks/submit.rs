//! Submits: each is numbered by the session and, inside the capture window, first collects what
//! the CPU wrote to the device's mappings.

use ash::vk;

use super::NO_NEXT;
use crate::capture::{self, SubmitInfo};
use crate::dispatch::dev_of;
use crate::ffi::slice;

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
/// Valid `vkQueueSubmit2` arguments (`ALIAS`: called as `vkQueueSubmit2KHR`).
pub unsafe extern "system" fn queue_submit2<const ALIAS: bool>(
    queue: vk::Queue,
    count: u32,
    submits: *const vk::SubmitInfo2<'_>,
    fence: vk::Fence,
) -> vk::Result {
    // SAFETY: queue is valid.
    let Some(dev) = (unsafe { dev_of(queue) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkQueueSubmit2.get(ALIAS) else { return NO_NEXT };
    let mut info = SubmitInfo { kind: 1, command_buffers: 0, waits: 0, signals: 0, fence: vk::Handle::as_raw(fence) };
    // SAFETY: `submits` has `count` elements.
    for s in unsafe { slice(submits, count) } {
        info.command_buffers = info.command_buffers.saturating_add(s.command_buffer_info_count);
        info.waits = info.waits.saturating_add(s.wait_semaphore_info_count);
        info.signals = info.signals.saturating_add(s.signal_semaphore_info_count);
    }
    capture::get().submitting(&dev, queue, info);
    // SAFETY: the application's arguments, passed down.
    unsafe { next(queue, count, submits, fence) }
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
    // SAFETY: as above.
    capture::get().sparse_bound(&dev, unsafe { slice(binds, count) });
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
