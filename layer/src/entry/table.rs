//! The entry points this layer answers: one list, name → hook, that knows the core/extension
//! aliases (`vkQueueSubmit2 | vkQueueSubmit2KHR`: one hook, generic over the name it answers).
//! Both `vkGetInstanceProcAddr` and `vkGetDeviceProcAddr` answer from it. Each group is answered
//! only while its condition holds; otherwise the names go to the layers below.

use crate::hook_table::hook_table;
use crate::hooks::{lifecycle, memory, requirements, resources, submit, sync_points};
use crate::{settings, tooling};

use super::introspection;

hook_table! {
    /// The instance-level entry points.
    pub fn instance_hook {
        when (true) {
            vkCreateInstance: PFN_vkCreateInstance => lifecycle::create_instance,
            vkDestroyInstance: PFN_vkDestroyInstance => lifecycle::destroy_instance,
            vkCreateDevice: PFN_vkCreateDevice => lifecycle::create_device,
            vkEnumerateDeviceExtensionProperties: PFN_vkEnumerateDeviceExtensionProperties
                => introspection::enumerate_device_extension_properties,
            vkGetPhysicalDeviceToolProperties | vkGetPhysicalDeviceToolPropertiesEXT:
                PFN_vkGetPhysicalDeviceToolProperties => tooling::get_physical_device_tool_properties,
        }
    }
}

hook_table! {
    /// The device-level entry points.
    pub fn device_hook {
        when (true) {
            vkDestroyDevice: PFN_vkDestroyDevice => lifecycle::destroy_device,
            vkAllocateMemory: PFN_vkAllocateMemory => memory::allocate_memory,
            vkFreeMemory: PFN_vkFreeMemory => memory::free_memory,
            vkMapMemory: PFN_vkMapMemory => memory::map_memory,
            vkUnmapMemory: PFN_vkUnmapMemory => memory::unmap_memory,
            vkMapMemory2 | vkMapMemory2KHR: PFN_vkMapMemory2KHR => memory::map_memory2,
            vkUnmapMemory2 | vkUnmapMemory2KHR: PFN_vkUnmapMemory2KHR => memory::unmap_memory2,
            vkFlushMappedMemoryRanges: PFN_vkFlushMappedMemoryRanges => memory::flush_mapped_memory_ranges,
            vkInvalidateMappedMemoryRanges: PFN_vkInvalidateMappedMemoryRanges
                => memory::invalidate_mapped_memory_ranges,
            vkQueueSubmit: PFN_vkQueueSubmit => submit::queue_submit,
            vkQueueSubmit2 | vkQueueSubmit2KHR: PFN_vkQueueSubmit2 => submit::queue_submit2,
            vkQueueBindSparse: PFN_vkQueueBindSparse => submit::queue_bind_sparse,
            vkQueuePresentKHR: PFN_vkQueuePresentKHR => submit::queue_present_khr,
            vkWaitForFences: PFN_vkWaitForFences => sync_points::wait_for_fences,
            vkGetFenceStatus: PFN_vkGetFenceStatus => sync_points::get_fence_status,
            vkQueueWaitIdle: PFN_vkQueueWaitIdle => sync_points::queue_wait_idle,
            vkDeviceWaitIdle: PFN_vkDeviceWaitIdle => sync_points::device_wait_idle,
            vkWaitSemaphores | vkWaitSemaphoresKHR: PFN_vkWaitSemaphores => sync_points::wait_semaphores,
            vkGetSemaphoreCounterValue | vkGetSemaphoreCounterValueKHR: PFN_vkGetSemaphoreCounterValue
                => sync_points::get_semaphore_counter_value,
            vkSignalSemaphore | vkSignalSemaphoreKHR: PFN_vkSignalSemaphore => sync_points::signal_semaphore,
            vkSetEvent: PFN_vkSetEvent => sync_points::set_event,
        }
        // host-import: buffers and images that can live in imported memory are created external.
        when (settings::get().imports_host_memory() || settings::get().backend.may_shadow()) {
            vkCreateBuffer: PFN_vkCreateBuffer => resources::create_buffer,
            vkDestroyBuffer: PFN_vkDestroyBuffer => resources::destroy_buffer,
            vkCreateImage: PFN_vkCreateImage => resources::create_image,
            vkDestroyImage: PFN_vkDestroyImage => resources::destroy_image,
            vkBindBufferMemory: PFN_vkBindBufferMemory => resources::bind_buffer_memory,
            vkBindImageMemory: PFN_vkBindImageMemory => resources::bind_image_memory,
            vkBindBufferMemory2 | vkBindBufferMemory2KHR: PFN_vkBindBufferMemory2 => resources::bind_buffer_memory2,
            vkBindImageMemory2 | vkBindImageMemory2KHR: PFN_vkBindImageMemory2 => resources::bind_image_memory2,
        }
        // Requirements of resources not created yet: host-import's view, page-aligned or not.
        when (settings::get().imports_host_memory() || settings::get().aligns_requirements()) {
            vkGetDeviceBufferMemoryRequirements | vkGetDeviceBufferMemoryRequirementsKHR:
                PFN_vkGetDeviceBufferMemoryRequirements => requirements::get_device_buffer_memory_requirements,
            vkGetDeviceImageMemoryRequirements | vkGetDeviceImageMemoryRequirementsKHR:
                PFN_vkGetDeviceImageMemoryRequirements => requirements::get_device_image_memory_requirements,
        }
        when (settings::get().aligns_requirements()) {
            vkGetBufferMemoryRequirements: PFN_vkGetBufferMemoryRequirements
                => requirements::get_buffer_memory_requirements,
            vkGetImageMemoryRequirements: PFN_vkGetImageMemoryRequirements
                => requirements::get_image_memory_requirements,
            vkGetBufferMemoryRequirements2 | vkGetBufferMemoryRequirements2KHR: PFN_vkGetBufferMemoryRequirements2
                => requirements::get_buffer_memory_requirements2,
            vkGetImageMemoryRequirements2 | vkGetImageMemoryRequirements2KHR: PFN_vkGetImageMemoryRequirements2
                => requirements::get_image_memory_requirements2,
        }
    }
}
