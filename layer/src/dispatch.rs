//! The instance/device registry: dispatch keys and the per-instance / per-device state (the next
//! layer's tables, host-import's state), found from any dispatchable handle. Every hook looks its
//! device up here; which hooks there are is the entry side's business (`entry/table.rs`).

use ash::vk;
use ash::vk::Handle;
use once_cell::sync::Lazy;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

use crate::host_import::{ImportDevice, ImportInstance};
use crate::next::{DeviceNext, InstanceNext};

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

pub struct InstanceState {
    pub handle: vk::Instance,
    pub next_gipa: vk::PFN_vkGetInstanceProcAddr,
    pub next: InstanceNext,
    /// What host-import needs to know of the instance.
    pub host_import: ImportInstance,
}

pub struct DeviceState {
    pub handle: vk::Device,
    pub next_gdpa: vk::PFN_vkGetDeviceProcAddr,
    pub next: DeviceNext,
    /// `(property flags, heap index)` per memory type index.
    pub memory_types: Vec<(vk::MemoryPropertyFlags, u32)>,
    /// host-import's state of the device; `None` where the settings keep host-import off. Its
    /// imported memory is released when the last reference goes, after `vkDestroyDevice`.
    pub host_import: Option<ImportDevice>,
    /// The application enabled an extension that binds device memory to objects other than
    /// buffers and images (`capture::device_writes::BINDS_OTHER_MEMORY`): every allocation of
    /// the device counts as written by the device.
    pub binds_other_memory: bool,
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
