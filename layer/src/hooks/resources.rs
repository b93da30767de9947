//! Buffers and images, hooked while host-import may be on or a mapping may be shadowed.
//! host-import: a resource that can live in imported memory is created external
//! (`VkExternalMemory*CreateInfo(HOST_ALLOCATION)`); one that cannot is pending until bound, and
//! keeps its memory types from being imported meanwhile. Capture: whether each resource's usage
//! allows device writes, and so whether the memory it is bound to may be written by the device
//! (`capture/device_writes.rs`).

use ash::vk;
use ash::vk::Handle;
use std::ffi::c_void;

use super::NO_NEXT;
use crate::capture;
use crate::capture::device_writes::{buffer_read_only, buffer_usage, image_read_only};
use crate::dispatch::{dev_of, DeviceState};
use crate::ffi::slice;
use crate::host_import::{Active, Resource, HOST_ALLOCATION};
use crate::next::DeviceNext;
use vkdirty::session::Resource as Res;

/// The device's state and the next function, for a hook.
macro_rules! hooked {
    // Hooks that return nothing.
    ($device:expr, $next:expr) => {
        hooked!($device, $next, ())
    };
    ($device:expr, $next:expr, $missing:expr) => {{
        // SAFETY: the hook's device is valid (caller contract).
        let Some(d) = (unsafe { dev_of($device) }) else {
            return $missing;
        };
        let Some(next) = $next(&d.next) else {
            return $missing;
        };
        (d, next)
    }};
}

/// host-import's state of a device where it is on.
fn active(d: &DeviceState) -> Option<&Active> {
    d.host_import.as_ref()?.active.as_ref()
}

/// # Safety
/// Valid `vkCreateBuffer` arguments.
pub unsafe extern "system" fn create_buffer(
    device: vk::Device,
    info: *const vk::BufferCreateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    p_buffer: *mut vk::Buffer,
) -> vk::Result {
    let (d, next) = hooked!(device, |n: &DeviceNext| n.vkCreateBuffer, NO_NEXT);
    // SAFETY: the application's arguments.
    let r = unsafe { create_buffer_below(&d, next, device, info, allocator, p_buffer) };
    if r == vk::Result::SUCCESS && !info.is_null() && !p_buffer.is_null() {
        // SAFETY: valid on success; the create info is the application's (caller contract).
        let (ci, buffer) = unsafe { (&*info, *p_buffer) };
        // SAFETY: as above.
        let read_only = buffer_read_only(unsafe { buffer_usage(ci) }, ci.flags);
        capture::get().resource_created(&d, Res::Buffer(buffer.as_raw()), read_only);
    }
    r
}

/// `vkCreateBuffer` down the chain, made external where host-import may bind it to its memory.
///
/// # Safety
/// Valid `vkCreateBuffer` arguments.
unsafe fn create_buffer_below(
    d: &DeviceState,
    next: vk::PFN_vkCreateBuffer,
    device: vk::Device,
    info: *const vk::BufferCreateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    p_buffer: *mut vk::Buffer,
) -> vk::Result {
    let Some(a) = active(d).filter(|_| !info.is_null() && !p_buffer.is_null()) else {
        // SAFETY: the application's arguments, passed down.
        return unsafe { next(device, info, allocator, p_buffer) };
    };
    // SAFETY: checked non-null, valid by the caller contract.
    let ci = unsafe { &*info };
    // SAFETY: as above.
    match unsafe { a.buffer_importable(&d.next, ci) } {
        Ok(()) => {
            let ext = vk::ExternalMemoryBufferCreateInfo {
                p_next: ci.p_next,
                handle_types: HOST_ALLOCATION,
                ..Default::default()
            };
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
pub unsafe extern "system" fn create_image(
    device: vk::Device,
    info: *const vk::ImageCreateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    p_image: *mut vk::Image,
) -> vk::Result {
    let (d, next) = hooked!(device, |n: &DeviceNext| n.vkCreateImage, NO_NEXT);
    // SAFETY: the application's arguments.
    let r = unsafe { create_image_below(&d, next, device, info, allocator, p_image) };
    if r == vk::Result::SUCCESS && !info.is_null() && !p_image.is_null() {
        // SAFETY: valid on success; the create info is the application's (caller contract).
        let (ci, image) = unsafe { (&*info, *p_image) };
        capture::get().resource_created(&d, Res::Image(image.as_raw()), image_read_only(ci.usage, ci.flags));
    }
    r
}

/// `vkCreateImage` down the chain, made external where host-import may bind it to its memory.
///
/// # Safety
/// Valid `vkCreateImage` arguments.
unsafe fn create_image_below(
    d: &DeviceState,
    next: vk::PFN_vkCreateImage,
    device: vk::Device,
    info: *const vk::ImageCreateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    p_image: *mut vk::Image,
) -> vk::Result {
    let Some(a) = active(d).filter(|_| !info.is_null() && !p_image.is_null()) else {
        // SAFETY: the application's arguments, passed down.
        return unsafe { next(device, info, allocator, p_image) };
    };
    // SAFETY: checked non-null, valid by the caller contract.
    let ci = unsafe { &*info };
    // SAFETY: as above.
    match unsafe { a.image_importable(&d.next, ci) } {
        Ok(()) => {
            let ext = vk::ExternalMemoryImageCreateInfo {
                p_next: ci.p_next,
                handle_types: HOST_ALLOCATION,
                ..Default::default()
            };
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
pub unsafe extern "system" fn destroy_buffer(
    device: vk::Device,
    buffer: vk::Buffer,
    allocator: *const vk::AllocationCallbacks<'_>,
) {
    let (d, next) = hooked!(device, |n: &DeviceNext| n.vkDestroyBuffer);
    if let Some(a) = active(&d) {
        a.destroyed(Resource::Buffer(buffer.as_raw()));
    }
    capture::get().resource_destroyed(&d, Res::Buffer(buffer.as_raw()));
    // SAFETY: the application's arguments, passed down.
    unsafe { next(device, buffer, allocator) }
}

/// # Safety
/// Valid `vkDestroyImage` arguments.
pub unsafe extern "system" fn destroy_image(
    device: vk::Device,
    image: vk::Image,
    allocator: *const vk::AllocationCallbacks<'_>,
) {
    let (d, next) = hooked!(device, |n: &DeviceNext| n.vkDestroyImage);
    if let Some(a) = active(&d) {
        a.destroyed(Resource::Image(image.as_raw()));
    }
    capture::get().resource_destroyed(&d, Res::Image(image.as_raw()));
    // SAFETY: the application's arguments, passed down.
    unsafe { next(device, image, allocator) }
}

/// # Safety
/// Valid `vkBindBufferMemory` arguments.
pub unsafe extern "system" fn bind_buffer_memory(
    device: vk::Device,
    buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    offset: vk::DeviceSize,
) -> vk::Result {
    let (d, next) = hooked!(device, |n: &DeviceNext| n.vkBindBufferMemory, NO_NEXT);
    if let Some(a) = active(&d) {
        a.binding(Resource::Buffer(buffer.as_raw()), memory);
    }
    capture::get().bound(&d, Res::Buffer(buffer.as_raw()), memory);
    // SAFETY: the application's arguments, passed down.
    unsafe { next(device, buffer, memory, offset) }
}

/// # Safety
/// Valid `vkBindImageMemory` arguments.
pub unsafe extern "system" fn bind_image_memory(
    device: vk::Device,
    image: vk::Image,
    memory: vk::DeviceMemory,
    offset: vk::DeviceSize,
) -> vk::Result {
    let (d, next) = hooked!(device, |n: &DeviceNext| n.vkBindImageMemory, NO_NEXT);
    if let Some(a) = active(&d) {
        a.binding(Resource::Image(image.as_raw()), memory);
    }
    capture::get().bound(&d, Res::Image(image.as_raw()), memory);
    // SAFETY: the application's arguments, passed down.
    unsafe { next(device, image, memory, offset) }
}

macro_rules! bind2 {
    ($( $hook:ident, $field:ident, $info:ty, $res:ident, $handle:ident; )*) => {$(
        /// # Safety
        /// Valid arguments of the entry point this hooks (`ALIAS`: called by its KHR name).
        pub unsafe extern "system" fn $hook<const ALIAS: bool>(
            device: vk::Device,
            count: u32,
            infos: *const $info,
        ) -> vk::Result {
            let (d, next) = hooked!(device, |n: &DeviceNext| n.$field.get(ALIAS), NO_NEXT);
            // SAFETY: `infos` has `count` elements.
            for i in unsafe { slice(infos, count) } {
                if let Some(a) = active(&d) {
                    a.binding(Resource::$res(i.$handle.as_raw()), i.memory);
                }
                capture::get().bound(&d, Res::$res(i.$handle.as_raw()), i.memory);
            }
            // SAFETY: the application's arguments, passed down.
            unsafe { next(device, count, infos) }
        }
    )*};
}

bind2! {
    bind_buffer_memory2, vkBindBufferMemory2, vk::BindBufferMemoryInfo<'_>, Buffer, buffer;
    bind_image_memory2, vkBindImageMemory2, vk::BindImageMemoryInfo<'_>, Image, image;
}
