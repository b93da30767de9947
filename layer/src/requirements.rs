//! Page-aligned memory requirements: a shadow copies whole pages to the real memory, so no
//! resource the GPU writes may share a page with one the CPU writes. Hooks of the
//! `vkGet*MemoryRequirements*` entry points.

use ash::vk;

use crate::dispatch::dev_of;

fn align(r: &mut vk::MemoryRequirements) {
    let page = vkdirty::guard::page_size() as u64;
    r.alignment = r.alignment.max(page);
    if let Some(rounded) = r.size.checked_add(page - 1) {
        r.size = rounded / page * page;
    }
}

/// # Safety
/// `r` is null or valid.
pub(crate) unsafe fn align2(r: *mut vk::MemoryRequirements2<'_>) {
    if !r.is_null() {
        // SAFETY: caller contract.
        align(unsafe { &mut (*r).memory_requirements });
    }
}

/// # Safety
/// Valid `vkGetBufferMemoryRequirements` arguments.
pub unsafe extern "system" fn get_buffer_memory_requirements(
    device: vk::Device,
    buffer: vk::Buffer,
    out: *mut vk::MemoryRequirements,
) {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else {
        return;
    };
    if let Some(next) = dev.req.vkGetBufferMemoryRequirements {
        // SAFETY: the application's arguments, passed down; `out` is valid afterwards.
        unsafe {
            next(device, buffer, out);
            if !out.is_null() {
                align(&mut *out);
            }
        }
    }
}

/// # Safety
/// Valid `vkGetImageMemoryRequirements` arguments.
pub unsafe extern "system" fn get_image_memory_requirements(
    device: vk::Device,
    image: vk::Image,
    out: *mut vk::MemoryRequirements,
) {
    // SAFETY: device is valid.
    let Some(dev) = (unsafe { dev_of(device) }) else {
        return;
    };
    if let Some(next) = dev.req.vkGetImageMemoryRequirements {
        // SAFETY: as above.
        unsafe {
            next(device, image, out);
            if !out.is_null() {
                align(&mut *out);
            }
        }
    }
}

/// Generates the `*2`, `*2KHR` and `vkGetDevice*` variants, which differ only in the info type and
/// the next function they call.
macro_rules! requirements2 {
    ($( $hook:ident, $field:ident, $info:ty; )*) => {$(
        /// # Safety
        /// Valid arguments of the entry point this hooks.
        pub unsafe extern "system" fn $hook(
            device: vk::Device,
            info: *const $info,
            out: *mut vk::MemoryRequirements2<'_>,
        ) {
            // SAFETY: device is valid.
            let Some(dev) = (unsafe { dev_of(device) }) else { return };
            if let Some(next) = dev.req.$field {
                // SAFETY: the application's arguments, passed down; `out` is valid afterwards.
                unsafe {
                    next(device, info, out);
                    align2(out);
                }
            }
        }
    )*};
}

requirements2! {
    get_buffer_memory_requirements2, vkGetBufferMemoryRequirements2, vk::BufferMemoryRequirementsInfo2<'_>;
    get_buffer_memory_requirements2_khr, vkGetBufferMemoryRequirements2KHR, vk::BufferMemoryRequirementsInfo2<'_>;
    get_image_memory_requirements2, vkGetImageMemoryRequirements2, vk::ImageMemoryRequirementsInfo2<'_>;
    get_image_memory_requirements2_khr, vkGetImageMemoryRequirements2KHR, vk::ImageMemoryRequirementsInfo2<'_>;
    get_device_buffer_memory_requirements, vkGetDeviceBufferMemoryRequirements, vk::DeviceBufferMemoryRequirements<'_>;
    get_device_buffer_memory_requirements_khr, vkGetDeviceBufferMemoryRequirementsKHR, vk::DeviceBufferMemoryRequirements<'_>;
    get_device_image_memory_requirements, vkGetDeviceImageMemoryRequirements, vk::DeviceImageMemoryRequirements<'_>;
    get_device_image_memory_requirements_khr, vkGetDeviceImageMemoryRequirementsKHR, vk::DeviceImageMemoryRequirements<'_>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_round_up_to_pages() {
        let page = vkdirty::guard::page_size() as u64;
        let mut r = vk::MemoryRequirements { size: 100, alignment: 16, memory_type_bits: 3 };
        align(&mut r);
        assert_eq!((r.size, r.alignment, r.memory_type_bits), (page, page, 3));
        let mut r = vk::MemoryRequirements { size: 3 * page, alignment: 4 * page, memory_type_bits: 1 };
        align(&mut r);
        assert_eq!((r.size, r.alignment), (3 * page, 4 * page));
        let mut r = vk::MemoryRequirements { size: u64::MAX, alignment: 1, memory_type_bits: 1 };
        align(&mut r);
        assert_eq!(r.size, u64::MAX);
    }
}
