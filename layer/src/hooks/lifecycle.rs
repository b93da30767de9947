//! Instance and device life cycle: the link-chain walk, the next layer's tables, and the
//! registry's entries (with host-import's state).

use ash::vk;
use std::ffi::{c_char, CStr};

use crate::dispatch::{self, DeviceKey, DeviceState, InstanceKey, InstanceState};
use crate::ffi::cast_next;
use crate::next::{DeviceNext, InstanceNext};
use crate::{below, capture, host_import, loader, log, settings};
use vkdirty::guard::BackendKind;

/// Reads an optional C string of `VkApplicationInfo`.
///
/// # Safety
/// `p` is null or NUL-terminated.
unsafe fn opt_str(p: *const c_char) -> Option<String> {
    // SAFETY: caller contract.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// # Safety
/// Called by the loader as `vkCreateInstance` with valid arguments (VUID-vkCreateInstance-*).
pub unsafe extern "system" fn create_instance(
    create_info: *const vk::InstanceCreateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    p_instance: *mut vk::Instance,
) -> vk::Result {
    // Resolve the settings now, with the instance's VK_EXT_layer_settings; bad values are
    // reported at start-up.
    // SAFETY: create_info is the application's valid create info.
    unsafe { settings::instance_creating(create_info) };
    // LLP_LAYER_12: take our link and advance the chain before calling down.
    // SAFETY: create_info is the loader-provided VkInstanceCreateInfo.
    let Some(link) = (unsafe { loader::take_instance_link(create_info) }) else {
        log::error!("vkCreateInstance without the loader's layer link; is the layer loaded by a Vulkan loader?");
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // SAFETY: a global command is looked up with a null instance.
    let next_create = unsafe { (link.next_gipa)(vk::Instance::null(), c"vkCreateInstance".as_ptr()) };
    let Some(next_create) = cast_next!(next_create, vk::PFN_vkCreateInstance) else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // host-import's queries on a Vulkan 1.0 instance need two instance extensions. The loader
    // hands each driver only the extensions it has (an unknown name was seen dropped, not
    // refused), so a failure here comes from a layer below: the application's own create info
    // is then passed down instead.
    // A capture layer below must see the application's own extensions (and, later, allocations).
    // SAFETY: the link was just taken from the loader's live create info.
    let refusal = unsafe { below::inspect(&link) };
    // SAFETY: create_info is the application's valid create info.
    let extended = if refusal.is_some() { None } else { unsafe { host_import::instance_extensions(&*create_info) } };
    let mut mine = None;
    let mut r = vk::Result::ERROR_EXTENSION_NOT_PRESENT;
    if let Some(names) = &extended {
        // SAFETY: as below; the copy differs only in its extension list, which outlives the call.
        let mut ci = unsafe { *create_info };
        ci.enabled_extension_count = names.len() as u32;
        ci.pp_enabled_extension_names = names.as_ptr();
        // LLP_LAYER_21: pInstance is passed down untouched.
        // SAFETY: the application's arguments with extensions added.
        r = unsafe { next_create(&ci, allocator, p_instance) };
        if r == vk::Result::SUCCESS {
            mine = Some(ci);
        } else {
            log::info!("host-import: the instance could not enable the extensions it needs on Vulkan 1.0 ({r:?})");
            // SAFETY: the loader's create info, still alive; the layers below advanced its link.
            unsafe { link.rewind() };
        }
    }
    if mine.is_none() {
        // SAFETY: the application's arguments, passed down unchanged (but for the advanced link).
        r = unsafe { next_create(create_info, allocator, p_instance) };
        if r != vk::Result::SUCCESS {
            return r;
        }
    }
    // SAFETY: on success the next layer wrote a valid instance to p_instance.
    let instance = unsafe { *p_instance };
    let next_gipa = link.next_gipa;
    // SAFETY: instance-level names resolved for the instance just created.
    let next = InstanceNext::load(|n| unsafe { next_gipa(instance, n.as_ptr()) });
    // SAFETY: instance is a valid dispatchable handle.
    let Some(key) = (unsafe { InstanceKey::of(instance) }) else { return r };
    // SAFETY: the create info passed down, valid.
    let host_import = unsafe { host_import::instance_created(mine.as_ref().unwrap_or(&*create_info)) };
    dispatch::add_instance(key, InstanceState { handle: instance, next_gipa, next, host_import });
    below::instance_created(key, refusal);

    // SAFETY: create_info is valid; pApplicationInfo is null or valid (VUID-VkInstanceCreateInfo-pApplicationInfo-parameter).
    let (app, engine) = unsafe {
        let ai = (*create_info).p_application_info;
        if ai.is_null() {
            (None, None)
        } else {
            (opt_str((*ai).p_application_name), opt_str((*ai).p_engine_name))
        }
    };
    capture::get().instance_created(app, engine);
    r
}

/// # Safety
/// Called as `vkDestroyInstance` with valid arguments.
pub unsafe extern "system" fn destroy_instance(instance: vk::Instance, allocator: *const vk::AllocationCallbacks<'_>) {
    // SAFETY: instance is null or valid; the key is read before the object is destroyed.
    let Some(key) = (unsafe { InstanceKey::of(instance) }) else { return };
    // SAFETY: as above.
    let Some(st) = (unsafe { dispatch::instance(instance) }) else {
        log::error!("vkDestroyInstance of an instance this layer does not know");
        return;
    };
    let left = dispatch::remove_instance(key);
    below::instance_destroyed(key);
    if let Some(f) = st.next.vkDestroyInstance {
        // SAFETY: the application's arguments, passed down.
        unsafe { f(instance, allocator) };
    }
    if left == 0 {
        capture::get().last_instance_destroyed();
    }
}

/// # Safety
/// Called as `vkCreateDevice` with valid arguments.
pub unsafe extern "system" fn create_device(
    physical: vk::PhysicalDevice,
    create_info: *const vk::DeviceCreateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    p_device: *mut vk::Device,
) -> vk::Result {
    // SAFETY: physical is a valid physical device of an instance this layer created.
    let Some(inst) = (unsafe { dispatch::instance(physical) }) else {
        log::error!("vkCreateDevice on a physical device of an unknown instance");
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // LLP_LAYER_13: take our link and advance the chain.
    // SAFETY: create_info is the loader-provided VkDeviceCreateInfo.
    let Some(link) = (unsafe { loader::take_device_link(create_info) }) else {
        log::error!("vkCreateDevice without the loader's layer link");
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // The next vkCreateDevice comes from the real instance, never a null one.
    // SAFETY: inst.handle is the live instance of this physical device.
    let next_create = unsafe { (link.next_gipa)(inst.handle, c"vkCreateDevice".as_ptr()) };
    let Some(next_create) = cast_next!(next_create, vk::PFN_vkCreateDevice) else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // host-import enables VK_EXT_external_memory_host below us when the device offers it.
    // SAFETY: physical and create_info are valid (caller contract).
    // SAFETY: physical is a valid physical device; its key is its instance's.
    let plan = match unsafe { dispatch::InstanceKey::of(physical) }.and_then(below::verdict) {
        Some(why) if settings::get().imports_host_memory() => {
            host_import::DevicePlan::off(format!("host-import off: {why}"))
        }
        _ => {
            let view = host_import::Instance {
                handle: inst.handle,
                gipa: inst.next_gipa,
                next: &inst.next,
                info: inst.host_import,
            };
            let available = || capture::get().backend_available(BackendKind::OwnedWp);
            // SAFETY: physical and create_info are valid (caller contract).
            unsafe { host_import::plan_device(&view, physical, create_info, available) }
        }
    };
    // LLP_LAYER_22: pDevice is passed down untouched.
    // SAFETY: the application's arguments, passed down unchanged (but for the advanced link and
    // extensions host-import added to a copy of the create info).
    let down = plan.create_info(create_info);
    // SAFETY: down is a valid create info; physical belongs to inst.
    let stripped = unsafe { crate::tooling::strip_if_unsupported(&inst, physical, down) };
    let down = stripped.as_ref().map_or(down, |(ci, _)| (ci as *const vk::DeviceCreateInfo<'static>).cast());
    // SAFETY: the next layer's vkCreateDevice with the application's arguments and a valid create info.
    let r = unsafe { next_create(physical, down, allocator, p_device) };
    if r != vk::Result::SUCCESS {
        return r;
    }
    // SAFETY: on success the next layer wrote a valid device.
    let device = unsafe { *p_device };
    let next_gdpa = link.next_gdpa;
    // SAFETY: device-level names resolved for the device just created.
    let next = DeviceNext::load(|n| unsafe { next_gdpa(device, n.as_ptr()) });

    let mut memory_types = Vec::new();
    if let Some(f) = inst.next.vkGetPhysicalDeviceMemoryProperties {
        let mut mp = vk::PhysicalDeviceMemoryProperties::default();
        // SAFETY: valid physical device and out-pointer.
        unsafe { f(physical, &mut mp) };
        let n = (mp.memory_type_count as usize).min(mp.memory_types.len());
        memory_types = mp.memory_types[..n].iter().map(|t| (t.property_flags, t.heap_index)).collect();
    }
    let mut props = vk::PhysicalDeviceProperties::default();
    if let Some(f) = inst.next.vkGetPhysicalDeviceProperties {
        // SAFETY: valid physical device and out-pointer.
        unsafe { f(physical, &mut props) };
    }
    // SAFETY: the application's create info (valid, caller contract), read before anything else
    // may change it.
    let binds_other_memory = unsafe {
        let ci = &*create_info;
        crate::ffi::c_names(ci.pp_enabled_extension_names, ci.enabled_extension_count)
            .iter()
            .any(|n| capture::device_writes::BINDS_OTHER_MEMORY.iter().any(|o| n.to_bytes() == o.as_bytes()))
    };
    // SAFETY: device is a valid dispatchable handle.
    let Some(key) = (unsafe { DeviceKey::of(device) }) else { return r };
    // SAFETY: the device just created from `physical`, and its next layer's entry points.
    let host_import = unsafe { host_import::device_created(plan, physical, device, &next) };
    dispatch::add_device(
        key,
        DeviceState { handle: device, next_gdpa, next, memory_types, host_import, binds_other_memory },
    );
    capture::get().device_created(&props);
    r
}

/// # Safety
/// Called as `vkDestroyDevice` with valid arguments.
pub unsafe extern "system" fn destroy_device(device: vk::Device, allocator: *const vk::AllocationCallbacks<'_>) {
    // SAFETY: device is null or valid; read before it is destroyed.
    let Some(key) = (unsafe { DeviceKey::of(device) }) else { return };
    // SAFETY: as above.
    let Some(dev) = (unsafe { dispatch::device(device) }) else {
        log::error!("vkDestroyDevice of a device this layer does not know");
        return;
    };
    // Mappings are collected while the memory is still there.
    capture::get().device_destroyed(&dev);
    dispatch::remove_device(key);
    if let Some(f) = dev.next.vkDestroyDevice {
        // SAFETY: the application's arguments, passed down.
        unsafe { f(device, allocator) };
    }
    // The memory host-import still imported goes after the driver's device.
    drop(dev);
}
