//! The next layer's entry points, per instance and per device: every function this layer calls
//! down to, resolved once when the instance or device is created. The entry points this layer
//! answers are in `entry/table.rs`; each of its hooks calls its own name's slot here.

use crate::hook_table::next_table;

next_table! {
    /// The next layer's instance-level entry points.
    pub struct InstanceNext {
        vkCreateInstance: PFN_vkCreateInstance,
        vkDestroyInstance: PFN_vkDestroyInstance,
        vkCreateDevice: PFN_vkCreateDevice,
        vkEnumerateDeviceExtensionProperties: PFN_vkEnumerateDeviceExtensionProperties,
        vkGetPhysicalDeviceToolProperties | vkGetPhysicalDeviceToolPropertiesEXT: PFN_vkGetPhysicalDeviceToolProperties,
        vkGetPhysicalDeviceProperties: PFN_vkGetPhysicalDeviceProperties,
        vkGetPhysicalDeviceMemoryProperties: PFN_vkGetPhysicalDeviceMemoryProperties,
    }
}

next_table! {
    /// The next layer's device-level entry points.
    pub struct DeviceNext {
        vkDestroyDevice: PFN_vkDestroyDevice,
        // Memory.
        vkAllocateMemory: PFN_vkAllocateMemory,
        vkFreeMemory: PFN_vkFreeMemory,
        vkMapMemory: PFN_vkMapMemory,
        vkUnmapMemory: PFN_vkUnmapMemory,
        vkMapMemory2 | vkMapMemory2KHR: PFN_vkMapMemory2KHR,
        vkUnmapMemory2 | vkUnmapMemory2KHR: PFN_vkUnmapMemory2KHR,
        vkFlushMappedMemoryRanges: PFN_vkFlushMappedMemoryRanges,
        vkInvalidateMappedMemoryRanges: PFN_vkInvalidateMappedMemoryRanges,
        vkGetMemoryHostPointerPropertiesEXT: PFN_vkGetMemoryHostPointerPropertiesEXT,
        // Submits.
        vkQueueSubmit: PFN_vkQueueSubmit,
        vkQueueSubmit2 | vkQueueSubmit2KHR: PFN_vkQueueSubmit2,
        vkQueueBindSparse: PFN_vkQueueBindSparse,
        vkQueuePresentKHR: PFN_vkQueuePresentKHR,
        // Host synchronisation points.
        vkWaitForFences: PFN_vkWaitForFences,
        vkGetFenceStatus: PFN_vkGetFenceStatus,
        vkQueueWaitIdle: PFN_vkQueueWaitIdle,
        vkDeviceWaitIdle: PFN_vkDeviceWaitIdle,
        vkWaitSemaphores | vkWaitSemaphoresKHR: PFN_vkWaitSemaphores,
        vkGetSemaphoreCounterValue | vkGetSemaphoreCounterValueKHR: PFN_vkGetSemaphoreCounterValue,
        vkSignalSemaphore | vkSignalSemaphoreKHR: PFN_vkSignalSemaphore,
        vkSetEvent: PFN_vkSetEvent,
        // Memory requirements.
        vkGetBufferMemoryRequirements: PFN_vkGetBufferMemoryRequirements,
        vkGetImageMemoryRequirements: PFN_vkGetImageMemoryRequirements,
        vkGetBufferMemoryRequirements2 | vkGetBufferMemoryRequirements2KHR: PFN_vkGetBufferMemoryRequirements2,
        vkGetImageMemoryRequirements2 | vkGetImageMemoryRequirements2KHR: PFN_vkGetImageMemoryRequirements2,
        vkGetDeviceBufferMemoryRequirements | vkGetDeviceBufferMemoryRequirementsKHR:
            PFN_vkGetDeviceBufferMemoryRequirements,
        vkGetDeviceImageMemoryRequirements | vkGetDeviceImageMemoryRequirementsKHR:
            PFN_vkGetDeviceImageMemoryRequirements,
        // Buffers and images (host-import).
        vkCreateBuffer: PFN_vkCreateBuffer,
        vkDestroyBuffer: PFN_vkDestroyBuffer,
        vkCreateImage: PFN_vkCreateImage,
        vkDestroyImage: PFN_vkDestroyImage,
        vkBindBufferMemory: PFN_vkBindBufferMemory,
        vkBindImageMemory: PFN_vkBindImageMemory,
        vkBindBufferMemory2 | vkBindBufferMemory2KHR: PFN_vkBindBufferMemory2,
        vkBindImageMemory2 | vkBindImageMemory2KHR: PFN_vkBindImageMemory2,
    }
}
