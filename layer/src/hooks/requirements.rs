//! The `vkGet*MemoryRequirements*` hooks. Page-aligned requirements (`aligns_requirements`): a
//! shadow copies whole pages to the real memory, so no resource the GPU writes may share a page
//! with one the CPU writes. host-import: `vkGetDevice*MemoryRequirements` answer for the resource
//! as host-import would create it, so what the application learns matches what it binds.

use ash::vk;
use std::ffi::c_void;

use crate::dispatch::dev_of;
use crate::host_import::HOST_ALLOCATION;
use crate::settings;

fn align(r: &mut vk::MemoryRequirements) {
    let page = vkdirty::guard::page_size() as u64;
    r.alignment = r.alignment.max(page);
    if let Some(rounded) = r.size.checked_add(page - 1) {
        r.size = rounded / page * page;
    }
}

/// # Safety
/// `r` is null or valid.
unsafe fn align2(r: *mut vk::MemoryRequirements2<'_>) {
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
    if let Some(next) = dev.next.vkGetBufferMemoryRequirements {
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
    if let Some(next) = dev.next.vkGetImageMemoryRequirements {
        // SAFETY: as above.
        unsafe {
            next(device, image, out);
            if !out.is_null() {
                align(&mut *out);
            }
        }
    }
}

/// Generates the `*2` hooks (and their KHR names), which differ only in the info type and the
/// next function they call.
macro_rules! requirements2 {
    ($( $hook:ident, $field:ident, $info:ty; )*) => {$(
        /// # Safety
        /// Valid arguments of the entry point this hooks (`ALIAS`: called by its KHR name).
        pub unsafe extern "system" fn $hook<const ALIAS: bool>(
            device: vk::Device,
            info: *const $info,
            out: *mut vk::MemoryRequirements2<'_>,
        ) {
            // SAFETY: device is valid.
            let Some(dev) = (unsafe { dev_of(device) }) else { return };
            if let Some(next) = dev.next.$field.get(ALIAS) {
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
    get_image_memory_requirements2, vkGetImageMemoryRequirements2, vk::ImageMemoryRequirementsInfo2<'_>;
}

/// Generates the `vkGetDevice*MemoryRequirements` hooks (and their KHR names): the requirements
/// of the resource as host-import would create it, page-aligned where requirements are.
macro_rules! device_requirements {
    ($( $hook:ident, $field:ident, $info:ident, $ext:ident, $check:ident; )*) => {$(
        /// # Safety
        /// Valid arguments of the entry point this hooks (`ALIAS`: called by its KHR name).
        pub unsafe extern "system" fn $hook<const ALIAS: bool>(
            device: vk::Device,
            info: *const vk::$info<'_>,
            out: *mut vk::MemoryRequirements2<'_>,
        ) {
            // SAFETY: device is valid.
            let Some(dev) = (unsafe { dev_of(device) }) else { return };
            let Some(next) = dev.next.$field.get(ALIAS) else { return };
            // SAFETY: info is null or valid, with a valid create info (caller contract).
            let ci = unsafe { info.as_ref().and_then(|i| i.p_create_info.as_ref()) };
            let importable = match (dev.host_import.as_ref().and_then(|h| h.active.as_ref()), ci) {
                // SAFETY: as above.
                (Some(a), Some(ci)) => unsafe { a.$check(&dev.next, ci) }.is_ok(),
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
                unsafe { align2(out) };
            }
        }
    )*};
}

device_requirements! {
    get_device_buffer_memory_requirements, vkGetDeviceBufferMemoryRequirements, DeviceBufferMemoryRequirements,
        ExternalMemoryBufferCreateInfo, buffer_importable;
    get_device_image_memory_requirements, vkGetDeviceImageMemoryRequirements, DeviceImageMemoryRequirements,
        ExternalMemoryImageCreateInfo, image_importable;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::{self, DeviceKey, DeviceState};
    use crate::ffi::void_fn;
    use crate::next::DeviceNext;
    use ash::vk::Handle;

    /// The next layer's two names of one function, told apart by the memory types they report.
    unsafe extern "system" fn core_name(
        _: vk::Device,
        _: *const vk::BufferMemoryRequirementsInfo2<'_>,
        out: *mut vk::MemoryRequirements2<'_>,
    ) {
        // SAFETY: the test passes a valid out-pointer.
        unsafe { (*out).memory_requirements = vk::MemoryRequirements { size: 100, alignment: 4, memory_type_bits: 1 } };
    }

    unsafe extern "system" fn khr_name(
        _: vk::Device,
        _: *const vk::BufferMemoryRequirementsInfo2<'_>,
        out: *mut vk::MemoryRequirements2<'_>,
    ) {
        // SAFETY: as above.
        unsafe { (*out).memory_requirements = vk::MemoryRequirements { size: 100, alignment: 4, memory_type_bits: 2 } };
    }

    unsafe extern "system" fn no_gdpa(_: vk::Device, _: *const std::ffi::c_char) -> vk::PFN_vkVoidFunction {
        None
    }

    #[test]
    fn an_alias_goes_down_under_its_own_name() {
        // A dispatchable handle: its first word is the dispatch key.
        let word = Box::new(0x7e57_0000usize);
        let device = vk::Device::from_raw(&*word as *const usize as u64);
        let next = DeviceNext::load(|n| match n.to_bytes() {
            b"vkGetBufferMemoryRequirements2" => void_fn::<vk::PFN_vkGetBufferMemoryRequirements2>(core_name),
            b"vkGetBufferMemoryRequirements2KHR" => void_fn::<vk::PFN_vkGetBufferMemoryRequirements2>(khr_name),
            _ => None,
        });
        // SAFETY: `device` points to its key word, alive for the test.
        let key = unsafe { DeviceKey::of(device) }.unwrap();
        dispatch::add_device(
            key,
            DeviceState {
                handle: device,
                next_gdpa: no_gdpa,
                next,
                memory_types: Vec::new(),
                host_import: None,
                binds_other_memory: false,
            },
        );
        let page = vkdirty::guard::page_size() as u64;
        let info = vk::BufferMemoryRequirementsInfo2::default();
        let call = |hook: vk::PFN_vkGetBufferMemoryRequirements2| {
            let mut out = vk::MemoryRequirements2::default();
            // SAFETY: a registered device and valid pointers.
            unsafe { hook(device, &info, &mut out) };
            let r = out.memory_requirements;
            (r.memory_type_bits, r.size, r.alignment)
        };
        assert_eq!(call(get_buffer_memory_requirements2::<false>), (1, page, page));
        assert_eq!(call(get_buffer_memory_requirements2::<true>), (2, page, page));
        dispatch::remove_device(key);
    }

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
