//! Dispatch keys and the per-instance / per-device state, found from any dispatchable handle.

use ash::vk;
use ash::vk::Handle;
use once_cell::sync::Lazy;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

use crate::hook_table::hook_table;
use crate::{intercept, lifecycle, requirements};

/// The loader's dispatch key of an instance or physical device: the first pointer-sized word of
/// the handle (the loader's dispatch table pointer, shared by an instance and its physical
/// devices).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InstanceKey(usize);

/// The dispatch key of a device, shared by its queues and command buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceKey(usize);

/// Reads the first pointer-sized word of a dispatchable handle.
///
/// # Safety
/// `raw` is a valid dispatchable handle created through the loader (Vulkan requires dispatchable
/// handles to point to an object whose first word is the loader's dispatch pointer).
unsafe fn first_word(raw: u64) -> Option<usize> {
    if raw == 0 {
        return None;
    }
    // SAFETY: caller contract.
    Some(unsafe { *(raw as usize as *const usize) })
}

impl InstanceKey {
    /// # Safety
    /// `h` is a valid `VkInstance` or `VkPhysicalDevice`.
    pub unsafe fn of<H: Handle>(h: H) -> Option<InstanceKey> {
        // SAFETY: caller contract.
        unsafe { first_word(h.as_raw()) }.map(InstanceKey)
    }
}

impl DeviceKey {
    /// # Safety
    /// `h` is a valid `VkDevice`, `VkQueue` or `VkCommandBuffer`.
    pub unsafe fn of<H: Handle>(h: H) -> Option<DeviceKey> {
        // SAFETY: caller contract.
        unsafe { first_word(h.as_raw()) }.map(DeviceKey)
    }
}

hook_table! {
    /// The next layer's instance-level entry points.
    pub struct InstanceNext, lookup instance_hook {
        hooks {
            vkCreateInstance: PFN_vkCreateInstance => lifecycle::create_instance,
            vkDestroyInstance: PFN_vkDestroyInstance => lifecycle::destroy_instance,
            vkCreateDevice: PFN_vkCreateDevice => lifecycle::create_device,
            vkEnumerateDeviceExtensionProperties: PFN_vkEnumerateDeviceExtensionProperties
                => crate::enumerate_device_extension_properties,
            vkGetPhysicalDeviceToolProperties: PFN_vkGetPhysicalDeviceToolProperties
                => crate::tooling::get_physical_device_tool_properties,
            vkGetPhysicalDeviceToolPropertiesEXT: PFN_vkGetPhysicalDeviceToolProperties
                => crate::tooling::get_physical_device_tool_properties_ext,
        }
        calls {
            vkGetPhysicalDeviceProperties: PFN_vkGetPhysicalDeviceProperties,
            vkGetPhysicalDeviceMemoryProperties: PFN_vkGetPhysicalDeviceMemoryProperties,
        }
    }
}

hook_table! {
    /// The next layer's device-level entry points that capture intercepts.
    pub struct DeviceNext, lookup device_hook {
        hooks {
            vkDestroyDevice: PFN_vkDestroyDevice => lifecycle::destroy_device,
            vkAllocateMemory: PFN_vkAllocateMemory => intercept::allocate_memory,
            vkFreeMemory: PFN_vkFreeMemory => intercept::free_memory,
            vkMapMemory: PFN_vkMapMemory => intercept::map_memory,
            vkUnmapMemory: PFN_vkUnmapMemory => intercept::unmap_memory,
            vkMapMemory2KHR: PFN_vkMapMemory2KHR => intercept::map_memory2_khr,
            vkUnmapMemory2KHR: PFN_vkUnmapMemory2KHR => intercept::unmap_memory2_khr,
            // Vulkan 1.4 core names of the same functions.
            vkMapMemory2: PFN_vkMapMemory2KHR => intercept::map_memory2,
            vkUnmapMemory2: PFN_vkUnmapMemory2KHR => intercept::unmap_memory2,
            vkFlushMappedMemoryRanges: PFN_vkFlushMappedMemoryRanges => intercept::flush_mapped_memory_ranges,
            vkInvalidateMappedMemoryRanges: PFN_vkInvalidateMappedMemoryRanges
                => intercept::invalidate_mapped_memory_ranges,
            vkQueueSubmit: PFN_vkQueueSubmit => intercept::queue_submit,
            vkQueueSubmit2: PFN_vkQueueSubmit2 => intercept::queue_submit2,
            vkQueueSubmit2KHR: PFN_vkQueueSubmit2 => intercept::queue_submit2_khr,
            vkQueueBindSparse: PFN_vkQueueBindSparse => intercept::queue_bind_sparse,
            vkQueuePresentKHR: PFN_vkQueuePresentKHR => intercept::queue_present_khr,
            vkWaitForFences: PFN_vkWaitForFences => intercept::wait_for_fences,
            vkGetFenceStatus: PFN_vkGetFenceStatus => intercept::get_fence_status,
            vkQueueWaitIdle: PFN_vkQueueWaitIdle => intercept::queue_wait_idle,
            vkDeviceWaitIdle: PFN_vkDeviceWaitIdle => intercept::device_wait_idle,
            vkWaitSemaphores: PFN_vkWaitSemaphores => intercept::wait_semaphores,
            vkWaitSemaphoresKHR: PFN_vkWaitSemaphores => intercept::wait_semaphores_khr,
            vkGetSemaphoreCounterValue: PFN_vkGetSemaphoreCounterValue => intercept::get_semaphore_counter_value,
            vkGetSemaphoreCounterValueKHR: PFN_vkGetSemaphoreCounterValue
                => intercept::get_semaphore_counter_value_khr,
            vkSignalSemaphore: PFN_vkSignalSemaphore => intercept::signal_semaphore,
            vkSignalSemaphoreKHR: PFN_vkSignalSemaphore => intercept::signal_semaphore_khr,
            vkSetEvent: PFN_vkSetEvent => intercept::set_event,
        }
        calls {}
    }
}

hook_table! {
    /// The memory-requirement queries, intercepted only when requirements are page-aligned.
    pub struct RequirementsNext, lookup requirements_hook {
        hooks {
            vkGetBufferMemoryRequirements: PFN_vkGetBufferMemoryRequirements
                => requirements::get_buffer_memory_requirements,
            vkGetImageMemoryRequirements: PFN_vkGetImageMemoryRequirements
                => requirements::get_image_memory_requirements,
            vkGetBufferMemoryRequirements2: PFN_vkGetBufferMemoryRequirements2
                => requirements::get_buffer_memory_requirements2,
            vkGetBufferMemoryRequirements2KHR: PFN_vkGetBufferMemoryRequirements2
                => requirements::get_buffer_memory_requirements2_khr,
            vkGetImageMemoryRequirements2: PFN_vkGetImageMemoryRequirements2
                => requirements::get_image_memory_requirements2,
            vkGetImageMemoryRequirements2KHR: PFN_vkGetImageMemoryRequirements2
                => requirements::get_image_memory_requirements2_khr,
            vkGetDeviceBufferMemoryRequirements: PFN_vkGetDeviceBufferMemoryRequirements
                => requirements::get_device_buffer_memory_requirements,
            vkGetDeviceBufferMemoryRequirementsKHR: PFN_vkGetDeviceBufferMemoryRequirements
                => requirements::get_device_buffer_memory_requirements_khr,
            vkGetDeviceImageMemoryRequirements: PFN_vkGetDeviceImageMemoryRequirements
                => requirements::get_device_image_memory_requirements,
            vkGetDeviceImageMemoryRequirementsKHR: PFN_vkGetDeviceImageMemoryRequirements
                => requirements::get_device_image_memory_requirements_khr,
        }
        calls {}
    }
}

pub struct InstanceState {
    pub handle: vk::Instance,
    pub next_gipa: vk::PFN_vkGetInstanceProcAddr,
    pub next: InstanceNext,
}

pub struct DeviceState {
    pub handle: vk::Device,
    pub next_gdpa: vk::PFN_vkGetDeviceProcAddr,
    pub next: DeviceNext,
    pub req: RequirementsNext,
    /// `(property flags, heap index)` per memory type index.
    pub memory_types: Vec<(vk::MemoryPropertyFlags, u32)>,
}

// SAFETY: the handles are opaque values passed back to Vulkan, which allows calls on them from
// any thread (with the application's external synchronization).
unsafe impl Send for InstanceState {}
// SAFETY: as above.
unsafe impl Sync for InstanceState {}
// SAFETY: as above.
unsafe impl Send for DeviceState {}
// SAFETY: as above.
unsafe impl Sync for DeviceState {}

static INSTANCES: Lazy<RwLock<HashMap<InstanceKey, Arc<InstanceState>>>> = Lazy::new(Default::default);
static DEVICES: Lazy<RwLock<HashMap<DeviceKey, Arc<DeviceState>>>> = Lazy::new(Default::default);

pub fn add_instance(key: InstanceKey, s: InstanceState) {
    INSTANCES.write().insert(key, Arc::new(s));
}

/// Removes an instance; returns how many are left.
pub fn remove_instance(key: InstanceKey) -> usize {
    let mut m = INSTANCES.write();
    m.remove(&key);
    m.len()
}

/// # Safety
/// `h` is a valid `VkInstance` or `VkPhysicalDevice`.
pub unsafe fn instance<H: Handle>(h: H) -> Option<Arc<InstanceState>> {
    // SAFETY: caller contract.
    let key = unsafe { InstanceKey::of(h) }?;
    INSTANCES.read().get(&key).cloned()
}

pub fn add_device(key: DeviceKey, s: DeviceState) {
    DEVICES.write().insert(key, Arc::new(s));
}

pub fn remove_device(key: DeviceKey) {
    DEVICES.write().remove(&key);
}

/// # Safety
/// `h` is a valid `VkDevice`, `VkQueue` or `VkCommandBuffer`.
pub unsafe fn device<H: Handle>(h: H) -> Option<Arc<DeviceState>> {
    // SAFETY: caller contract.
    let key = unsafe { DeviceKey::of(h) }?;
    DEVICES.read().get(&key).cloned()
}

/// The device state of a device, queue or command buffer.
///
/// # Safety
/// `h` is a valid dispatchable handle created through the loader.
pub unsafe fn dev_of<H: vk::Handle>(h: H) -> Option<Arc<DeviceState>> {
    // SAFETY: caller contract.
    let d = unsafe { device(h) };
    if d.is_none() {
        crate::log::once(
            vkdirty::config::LogLevel::Error,
            "a call on a device this layer did not see created cannot be passed down",
        );
    }
    d
}
