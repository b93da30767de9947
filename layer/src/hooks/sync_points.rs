//! Host synchronisation points. After success, GPU writes the application may now read are in
//! the real memory: shadows bring them into the application's view (`VKDIRTY_SHADOW_REFRESH`).
//! Host signals can start GPU work submitted earlier: shadows reach the real memory first.

use ash::vk;

use super::NO_NEXT;
use crate::capture::{self, SyncPoint};
use crate::dispatch::dev_of;
use crate::ffi::slice;

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
/// Valid `vkWaitSemaphores` arguments (`ALIAS`: called as `vkWaitSemaphoresKHR`).
pub unsafe extern "system" fn wait_semaphores<const ALIAS: bool>(
    device: vk::Device,
    info: *const vk::SemaphoreWaitInfo<'_>,
    timeout: u64,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkWaitSemaphores.get(ALIAS) else { return NO_NEXT };
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
        capture::get().synchronized(&dev, SyncPoint::Semaphores { values: &values, all });
    }
    r
}

/// # Safety
/// Valid `vkGetSemaphoreCounterValue` arguments (`ALIAS`: called as
/// `vkGetSemaphoreCounterValueKHR`).
pub unsafe extern "system" fn get_semaphore_counter_value<const ALIAS: bool>(
    device: vk::Device,
    semaphore: vk::Semaphore,
    value: *mut u64,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkGetSemaphoreCounterValue.get(ALIAS) else { return NO_NEXT };
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(device, semaphore, value) };
    if r == vk::Result::SUCCESS && !value.is_null() {
        // SAFETY: written by the call on success.
        let v = unsafe { *value };
        capture::get()
            .synchronized(&dev, SyncPoint::Semaphores { values: &[(vk::Handle::as_raw(semaphore), v)], all: true });
    }
    r
}

/// # Safety
/// Valid `vkSignalSemaphore` arguments (`ALIAS`: called as `vkSignalSemaphoreKHR`).
pub unsafe extern "system" fn signal_semaphore<const ALIAS: bool>(
    device: vk::Device,
    info: *const vk::SemaphoreSignalInfo<'_>,
) -> vk::Result {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else { return NO_NEXT };
    let Some(next) = dev.next.vkSignalSemaphore.get(ALIAS) else { return NO_NEXT };
    capture::get().host_signalling(&dev);
    // SAFETY: the application's arguments, passed down.
    unsafe { next(device, info) }
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
