//! Before and after `vkCreateDevice`: whether host-import can work on the physical device, the
//! extensions it adds, and its state of the device (the probe of which memory types the driver
//! imports our memory into).

use super::*;

/// What `vkCreateDevice` is called with, and what host-import learnt before.
pub struct DevicePlan {
    /// The create info passed down when extensions were added, with the storage it points to.
    info: Option<(vk::DeviceCreateInfo<'static>, Vec<*const c_char>)>,
    setup: Result<Setup, String>,
}

struct Setup {
    phys: PhysFns,
    /// The device is used as Vulkan 1.1 or later.
    api_1_1: bool,
    align: u64,
    types: Vec<vk::MemoryPropertyFlags>,
    no_video_memory: bool,
    device_name: String,
}

impl DevicePlan {
    /// host-import stays off on the device, for the reason given (logged once the device exists).
    pub fn off(why: String) -> DevicePlan {
        DevicePlan { info: None, setup: Err(why) }
    }

    /// The create info to pass down.
    pub fn create_info<'a>(&self, app: *const vk::DeviceCreateInfo<'a>) -> *const vk::DeviceCreateInfo<'a> {
        match &self.info {
            Some((ci, _)) => (ci as *const vk::DeviceCreateInfo<'static>).cast(),
            None => app,
        }
    }
}

fn level_for_off() -> LogLevel {
    if settings::get().backend == BackendChoice::HostImport {
        LogLevel::Warn
    } else {
        LogLevel::Info
    }
}

/// Before `vkCreateDevice`: decides whether host-import can work on `physical` and which
/// extensions to add. `backend_available` says whether the host-import backend works in this
/// process.
///
/// # Safety
/// `physical` is a valid physical device of `inst`; `create_info` is the application's valid
/// `VkDeviceCreateInfo`.
pub unsafe fn plan_device(
    inst: &Instance<'_>,
    physical: vk::PhysicalDevice,
    create_info: *const vk::DeviceCreateInfo<'_>,
    backend_available: impl FnOnce() -> Result<(), String>,
) -> DevicePlan {
    if !settings::get().imports_host_memory() || create_info.is_null() {
        return DevicePlan { info: None, setup: Err("off".into()) };
    }
    // SAFETY: caller contract.
    let ci = unsafe { &*create_info };
    // SAFETY: caller contract.
    match unsafe { setup(inst, physical, ci, backend_available) } {
        Ok((setup, extra)) => {
            let info = (!extra.is_empty()).then(|| {
                // SAFETY: caller contract: the application's extension names are valid.
                let mut list: Vec<*const c_char> =
                    unsafe { c_names(ci.pp_enabled_extension_names, ci.enabled_extension_count) }
                        .iter()
                        .map(|n| n.as_ptr())
                        .collect();
                list.extend(extra.iter().map(|n| n.as_ptr()));
                // The app's struct is copied, not changed; its pNext (the loader's link) is kept.
                // SAFETY: the same struct; its lifetime parameter only marks borrowed pointers,
                // which stay valid for the vkCreateDevice call this copy is made for.
                let mut mine: vk::DeviceCreateInfo<'static> =
                    unsafe { *(ci as *const vk::DeviceCreateInfo<'_>).cast::<vk::DeviceCreateInfo<'static>>() };
                mine.enabled_extension_count = list.len() as u32;
                mine.pp_enabled_extension_names = list.as_ptr();
                (mine, list)
            });
            DevicePlan { info, setup: Ok(setup) }
        }
        Err(why) => DevicePlan { info: None, setup: Err(why) },
    }
}

/// # Safety
/// As [`plan_device`].
unsafe fn setup(
    inst: &Instance<'_>,
    physical: vk::PhysicalDevice,
    ci: &vk::DeviceCreateInfo<'_>,
    backend_available: impl FnOnce() -> Result<(), String>,
) -> Result<(Setup, Vec<&'static CStr>), String> {
    let mut props = vk::PhysicalDeviceProperties::default();
    if let Some(f) = inst.next.vkGetPhysicalDeviceProperties {
        // SAFETY: valid physical device and out-pointer.
        unsafe { f(physical, &mut props) };
    }
    let device_name = props.device_name_as_c_str().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let fail = |why: String| format!("host-import off on {device_name}: {why}");

    // SAFETY: caller contract.
    let exts = device_extensions(inst, physical).map_err(fail)?;
    let has = |n: &CStr| exts.iter().any(|e| e.as_c_str() == n);
    if !has(ash::ext::external_memory_host::NAME) {
        return Err(fail("the driver does not offer VK_EXT_external_memory_host".into()));
    }
    // SAFETY: caller contract.
    let enabled = unsafe { c_names(ci.pp_enabled_extension_names, ci.enabled_extension_count) };
    if enabled.contains(&ash::ext::map_memory_placed::NAME) {
        // VK_EXT_map_memory_placed cannot place a mapping of imported host memory.
        return Err(fail("the application enabled VK_EXT_map_memory_placed".into()));
    }
    // SAFETY: caller contract: a valid chain.
    let group = unsafe { chain_find(ci.p_next, vk::StructureType::DEVICE_GROUP_DEVICE_CREATE_INFO) };
    // SAFETY: the sType says which struct this is.
    if !group.is_null() && unsafe { (*(group as *const vk::DeviceGroupDeviceCreateInfo<'_>)).physical_device_count } > 1
    {
        return Err(fail("a device group of several physical devices".into()));
    }
    backend_available().map_err(fail)?;
    let phys = PhysFns::load(inst).map_err(fail)?;

    let mut host = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
    let mut p2 = vk::PhysicalDeviceProperties2 { p_next: &mut host as *mut _ as *mut c_void, ..Default::default() };
    // SAFETY: valid physical device; the chain lives across the call; the extension is offered,
    // so the struct may be chained.
    unsafe { (phys.properties2)(physical, &mut p2) };
    let page = vkdirty::guard::page_size() as u64;
    let align = host.min_imported_host_pointer_alignment.max(page);
    if !align.is_power_of_two() || align > (1 << 30) {
        return Err(fail(format!(
            "unusable minImportedHostPointerAlignment {}",
            host.min_imported_host_pointer_alignment
        )));
    }
    let mut mp = vk::PhysicalDeviceMemoryProperties::default();
    if let Some(f) = inst.next.vkGetPhysicalDeviceMemoryProperties {
        // SAFETY: valid physical device and out-pointer.
        unsafe { f(physical, &mut mp) };
    }
    let n = (mp.memory_type_count as usize).min(mp.memory_types.len());
    let types = mp.memory_types[..n].iter().map(|t| t.property_flags).collect();

    // VK_EXT_external_memory_host needs VK_KHR_external_memory below Vulkan 1.1.
    let api = inst.info.api.min(props.api_version);
    let below_1_1 = vk::api_version_major(api) == 1 && vk::api_version_minor(api) == 0;
    let mut extra = Vec::new();
    if below_1_1 && !enabled.contains(&ash::khr::external_memory::NAME) {
        if !has(ash::khr::external_memory::NAME) {
            return Err(fail("VK_KHR_external_memory is missing on this Vulkan 1.0 device".into()));
        }
        extra.push(ash::khr::external_memory::NAME);
    }
    if !enabled.contains(&ash::ext::external_memory_host::NAME) {
        extra.push(ash::ext::external_memory_host::NAME);
    }
    let no_video_memory = has_no_video_memory(props.device_type);
    Ok((Setup { phys, api_1_1: !below_1_1, align, types, no_video_memory, device_name }, extra))
}

/// The extensions the physical device offers, from the layers below.
fn device_extensions(inst: &Instance<'_>, physical: vk::PhysicalDevice) -> Result<Vec<std::ffi::CString>, String> {
    let f = inst.next.vkEnumerateDeviceExtensionProperties.ok_or("no vkEnumerateDeviceExtensionProperties")?;
    for _ in 0..4 {
        let mut n = 0u32;
        // SAFETY: valid physical device; count query.
        let r = unsafe { f(physical, std::ptr::null(), &mut n, std::ptr::null_mut()) };
        if r != vk::Result::SUCCESS {
            return Err(format!("vkEnumerateDeviceExtensionProperties: {r:?}"));
        }
        let mut v = vec![vk::ExtensionProperties::default(); n as usize];
        // SAFETY: `v` has `n` elements.
        let r = unsafe { f(physical, std::ptr::null(), &mut n, v.as_mut_ptr()) };
        if r == vk::Result::INCOMPLETE {
            continue;
        }
        if r != vk::Result::SUCCESS {
            return Err(format!("vkEnumerateDeviceExtensionProperties: {r:?}"));
        }
        v.truncate(n as usize);
        return Ok(v.iter().filter_map(|e| e.extension_name_as_c_str().ok().map(CStr::to_owned)).collect());
    }
    Err("vkEnumerateDeviceExtensionProperties kept changing its count".into())
}

/// `vkCreateDevice` succeeded with `plan`'s create info: host-import's state of the device
/// (`None` where the settings keep host-import off).
///
/// # Safety
/// `device` is the device just created from `physical`; `next` its next layer's entry points.
pub unsafe fn device_created(
    plan: DevicePlan,
    physical: vk::PhysicalDevice,
    device: vk::Device,
    next: &DeviceNext,
) -> Option<ImportDevice> {
    if !settings::get().imports_host_memory() {
        return None;
    }
    let (active, off) = match plan.setup {
        Err(why) => {
            if why != "off" {
                log::write(level_for_off(), &format!("{why}; host-visible memory is tracked per mapping"));
            }
            (None, Some(why))
        }
        Ok(s) => match next.vkGetMemoryHostPointerPropertiesEXT {
            None => {
                let why =
                    format!("host-import off on {}: vkGetMemoryHostPointerPropertiesEXT is missing", s.device_name);
                log::write(level_for_off(), &why);
                (None, Some(why))
            }
            Some(host_pointer_props) => {
                // SAFETY: `device` is valid and the extension enabled.
                let importable_bits = unsafe { probe_importable(device, host_pointer_props, s.align) };
                let eligible = eligible_types(&s.types, s.no_video_memory) & importable_bits;
                let list: Vec<String> = (0..32).filter(|i| eligible & (1 << i) != 0).map(|i| i.to_string()).collect();
                log::info!(
                    "host-import on {}: allocations of memory type{} {} are imported ({}alignment {})",
                    s.device_name,
                    if list.len() == 1 { "" } else { "s" },
                    if list.is_empty() { "none".to_string() } else { list.join(", ") },
                    if s.no_video_memory { "no video memory, " } else { "" },
                    s.align
                );
                // Never a type that is imported itself (on devices without video memory).
                let may_hide = hideable_types(&s.types, settings::get().host_import) & !eligible;
                // The core name from Vulkan 1.1, its KHR alias below.
                let requirements2 = next.vkGetBufferMemoryRequirements2.get(!s.api_1_1);
                let a = Active {
                    device,
                    physical,
                    requirements2,
                    phys: s.phys,
                    host_pointer_props,
                    align: s.align,
                    types: s.types,
                    no_video_memory: s.no_video_memory,
                    importable_bits,
                    may_hide,
                    st: Mutex::new(ImportState::default()),
                };
                (Some(a), None)
            }
        },
    };
    Some(ImportDevice { active, off })
}

/// The memory types the driver imports a block of our memory into (0 when it refuses).
///
/// # Safety
/// `device` is valid with `VK_EXT_external_memory_host` enabled.
unsafe fn probe_importable(device: vk::Device, f: vk::PFN_vkGetMemoryHostPointerPropertiesEXT, align: u64) -> u32 {
    let Ok(block) = HostBlock::new(align as usize, align as usize) else { return 0 };
    // SAFETY: caller contract; the pointer is aligned and mapped.
    unsafe { host_pointer_bits(device, f, block.ptr()) }.unwrap_or(0)
}

/// # Safety
/// `device` is valid with the extension enabled; `p` is an aligned, mapped host pointer.
pub(super) unsafe fn host_pointer_bits(
    device: vk::Device,
    f: vk::PFN_vkGetMemoryHostPointerPropertiesEXT,
    p: *mut u8,
) -> Result<u32, vk::Result> {
    let mut props = vk::MemoryHostPointerPropertiesEXT::default();
    // SAFETY: caller contract.
    let r = unsafe { f(device, HOST_ALLOCATION, p.cast(), &mut props) };
    if r == vk::Result::SUCCESS {
        Ok(props.memory_type_bits)
    } else {
        Err(r)
    }
}
