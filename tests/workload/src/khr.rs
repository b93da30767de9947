//! `--khr-names`: the submits and maps go through the KHR names of `VK_KHR_synchronization2`
//! (`vkQueueSubmit2KHR`) and `VK_KHR_map_memory2` (`vkMapMemory2KHR`, `vkUnmapMemory2KHR`),
//! looked up with `vkGetDeviceProcAddr` by those names, so a layer's alias entry points are the
//! ones called. Each extension is enabled where the device offers it; the rest of the run uses
//! the core calls.

use ash::vk;
use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};

/// What `vkGetDeviceProcAddr` returns, when not null.
type VoidFn = unsafe extern "system" fn();

/// The extensions of `offered` to enable; `VK_KHR_synchronization2` only where its feature is
/// enabled already (the Vulkan 1.3 `synchronization2` feature).
pub fn extensions(offered: &[vk::ExtensionProperties], sync2_feature: bool) -> Vec<&'static CStr> {
    let has = |n: &CStr| offered.iter().any(|e| e.extension_name_as_c_str() == Ok(n));
    let mut v = Vec::new();
    if sync2_feature && has(ash::khr::synchronization2::NAME) {
        v.push(ash::khr::synchronization2::NAME);
    }
    if has(ash::khr::map_memory2::NAME) {
        v.push(ash::khr::map_memory2::NAME);
    }
    v
}

/// The KHR entry points found, and how often each was called.
pub struct KhrCalls {
    submit2: Option<vk::PFN_vkQueueSubmit2>,
    map2: Option<(vk::PFN_vkMapMemory2KHR, vk::PFN_vkUnmapMemory2KHR)>,
    submits: AtomicU64,
    maps: AtomicU64,
}

impl KhrCalls {
    /// Looks the KHR names up on `device`, for the extensions in `enabled`.
    pub fn load(instance: &ash::Instance, device: &ash::Device, enabled: &[&CStr]) -> KhrCalls {
        let lookup = |name: &CStr| {
            // SAFETY: a valid device and a NUL-terminated name.
            unsafe { (instance.fp_v1_0().get_device_proc_addr)(device.handle(), name.as_ptr()) }
        };
        let on = |n: &CStr| enabled.contains(&n);
        let submit2 = on(ash::khr::synchronization2::NAME).then(|| lookup(c"vkQueueSubmit2KHR")).flatten();
        // SAFETY: the loader answered for vkQueueSubmit2KHR, whose prototype is PFN_vkQueueSubmit2 (vk.xml).
        let submit2 = submit2.map(|f| unsafe { std::mem::transmute::<VoidFn, vk::PFN_vkQueueSubmit2>(f) });
        let map2 = on(ash::khr::map_memory2::NAME)
            .then(|| lookup(c"vkMapMemory2KHR").zip(lookup(c"vkUnmapMemory2KHR")))
            .flatten();
        // SAFETY: the loader answered for vkMapMemory2KHR and vkUnmapMemory2KHR, whose
        // prototypes are these PFN types (vk.xml).
        let map2 = map2.map(|(m, u)| unsafe {
            (
                std::mem::transmute::<VoidFn, vk::PFN_vkMapMemory2KHR>(m),
                std::mem::transmute::<VoidFn, vk::PFN_vkUnmapMemory2KHR>(u),
            )
        });
        KhrCalls { submit2, map2, submits: AtomicU64::new(0), maps: AtomicU64::new(0) }
    }

    /// `vkQueueSubmit2KHR`, when found.
    pub fn submit2(
        &self,
        queue: vk::Queue,
        submits: &[vk::SubmitInfo2<'_>],
        fence: vk::Fence,
    ) -> Option<Result<(), vk::Result>> {
        let f = self.submit2?;
        self.submits.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller passes valid submit infos for this device's queue and fence.
        let r = unsafe { f(queue, submits.len() as u32, submits.as_ptr(), fence) };
        Some(r.result())
    }

    /// `vkMapMemory2KHR`, when found.
    pub fn map2(
        &self,
        device: vk::Device,
        memory: vk::DeviceMemory,
        offset: u64,
        size: u64,
    ) -> Option<Result<*mut u8, vk::Result>> {
        let (map, _) = self.map2?;
        self.maps.fetch_add(1, Ordering::Relaxed);
        let info = vk::MemoryMapInfoKHR::default().memory(memory).offset(offset).size(size);
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: as vkMapMemory: host-visible memory of this device, not mapped; `info` and `p`
        // live across the call.
        let r = unsafe { map(device, &info, &mut p) };
        Some(r.result().map(|()| p.cast::<u8>()))
    }

    /// `vkUnmapMemory2KHR`, when found.
    pub fn unmap2(&self, device: vk::Device, memory: vk::DeviceMemory) -> Option<Result<(), vk::Result>> {
        let (_, unmap) = self.map2?;
        let info = vk::MemoryUnmapInfoKHR::default().memory(memory);
        // SAFETY: the memory is mapped; `info` lives across the call.
        Some(unsafe { unmap(device, &info) }.result())
    }

    /// One line for the run's output: what went through the KHR names.
    pub fn describe(&self) -> String {
        let said = |found: bool, n: u64, ext: &str| {
            if found {
                format!("{n} calls")
            } else {
                format!("not used ({ext} not offered)")
            }
        };
        format!(
            "khr names: vkQueueSubmit2KHR {}; vkMapMemory2KHR {}",
            said(self.submit2.is_some(), self.submits.load(Ordering::Relaxed), "VK_KHR_synchronization2"),
            said(self.map2.is_some(), self.maps.load(Ordering::Relaxed), "VK_KHR_map_memory2"),
        )
    }
}
