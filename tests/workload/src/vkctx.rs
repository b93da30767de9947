//! Instance, device, queue and buffer helpers over `ash`, loading the system `libvulkan.so.1`.

use ash::vk;
use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Validation messages of warning or error severity seen by the messenger.
static VALIDATION_COUNT: AtomicUsize = AtomicUsize::new(0);
static VALIDATION_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn validation_messages() -> (usize, Vec<String>) {
    let msgs = VALIDATION_MESSAGES.lock().map(|m| m.clone()).unwrap_or_default();
    (VALIDATION_COUNT.load(Ordering::SeqCst), msgs)
}

unsafe extern "system" fn debug_callback(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    _user: *mut c_void,
) -> vk::Bool32 {
    let counted = vk::DebugUtilsMessageSeverityFlagsEXT::WARNING | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR;
    if severity.intersects(counted) {
        // SAFETY: the loader passes a valid callback-data struct whose strings are
        // NUL-terminated or null for the duration of the call.
        let text = unsafe {
            let d = &*data;
            let id = if d.p_message_id_name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(d.p_message_id_name).to_string_lossy().into_owned()
            };
            let msg = if d.p_message.is_null() {
                String::new()
            } else {
                CStr::from_ptr(d.p_message).to_string_lossy().into_owned()
            };
            format!("{severity:?} {types:?} [{id}] {msg}")
        };
        // The loader's own notes (e.g. "env var 'VK_INSTANCE_LAYERS' defined") are not
        // validation findings.
        if types == vk::DebugUtilsMessageTypeFlagsEXT::GENERAL && text.contains("[Loader Message]") {
            return vk::FALSE;
        }
        VALIDATION_COUNT.fetch_add(1, Ordering::SeqCst);
        eprintln!("vkdirty-workload: validation: {text}");
        if let Ok(mut m) = VALIDATION_MESSAGES.lock() {
            m.push(text);
        }
    }
    vk::FALSE
}

pub struct Vk {
    pub entry: ash::Entry,
    pub instance: ash::Instance,
    debug: Option<(ash::ext::debug_utils::Instance, vk::DebugUtilsMessengerEXT)>,
    pub device: ash::Device,
    pub queue: vk::Queue,
    pub queue_family: u32,
    pub mem_props: vk::PhysicalDeviceMemoryProperties,
    pub atom: u64,
    /// `vkQueueSubmit2` may be used (API 1.3 and `synchronization2` enabled).
    pub sync2: bool,
    pub device_name: String,
    pub pdev: vk::PhysicalDevice,
    /// The instance's API version.
    pub api: u32,
    /// A messenger is installed.
    pub validating: bool,
    /// `VK_EXT_external_memory_host`, when asked for and supported: its functions and
    /// `minImportedHostPointerAlignment`.
    pub host_ext: Option<(ash::ext::external_memory_host::Device, u64)>,
    /// `--khr-names`: the KHR entry points the submits and maps go through.
    pub khr: Option<crate::khr::KhrCalls>,
    /// Successful vkAllocateMemory calls so far (a capture layer below may wrap handles; the
    /// sidecar names allocations by this number too).
    allocations: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
pub struct VkError(pub String);

impl std::fmt::Display for VkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(what: &str, r: vk::Result) -> VkError {
    VkError(format!("{what}: {r:?}"))
}

impl Vk {
    /// `host_import`: enable `VK_EXT_external_memory_host` (the `import` scenario) when offered.
    /// `layer_settings`: `(name, value)` pairs for `VK_LAYER_VKDIRTY_capture`, passed as
    /// `VK_EXT_layer_settings` strings in `vkCreateInstance`'s pNext chain. `khr_names`: submit
    /// and map through the KHR names where the device offers them (`khr.rs`).
    pub fn new(
        validation: bool,
        host_import: bool,
        layer_settings: &[(String, String)],
        khr_names: bool,
    ) -> Result<Vk, VkError> {
        // SAFETY: loading libvulkan.so.1 runs its initialisers; it is the system loader.
        let entry = unsafe { ash::Entry::load() }.map_err(|e| VkError(format!("cannot load libvulkan.so.1: {e}")))?;

        // SAFETY: plain loader queries with no handles.
        let api = unsafe { entry.try_enumerate_instance_version() }
            .map_err(|e| err("vkEnumerateInstanceVersion", e))?
            .unwrap_or(vk::API_VERSION_1_0);
        let api = if api >= vk::API_VERSION_1_3 { vk::API_VERSION_1_3 } else { vk::API_VERSION_1_1 };
        // SAFETY: as above.
        let exts = unsafe { entry.enumerate_instance_extension_properties(None) }
            .map_err(|e| err("vkEnumerateInstanceExtensionProperties", e))?;
        let has_debug_utils = exts.iter().any(|e| e.extension_name_as_c_str() == Ok(ash::ext::debug_utils::NAME));
        let validating = validation && has_debug_utils;
        if validation && !has_debug_utils {
            eprintln!("vkdirty-workload: VK_EXT_debug_utils missing: validation messages are not counted");
        }

        let app_name = c"vkdirty-workload";
        let app = vk::ApplicationInfo::default()
            .application_name(app_name)
            .application_version(1)
            .engine_name(app_name)
            .api_version(api);
        let mut ext_names: Vec<*const i8> =
            if validating { vec![ash::ext::debug_utils::NAME.as_ptr()] } else { vec![] };
        // VK_EXT_layer_settings: the layer offers the extension; enable it where listed.
        let has_layer_settings = exts.iter().any(|e| e.extension_name_as_c_str() == Ok(ash::ext::layer_settings::NAME));
        if !layer_settings.is_empty() && has_layer_settings {
            ext_names.push(ash::ext::layer_settings::NAME.as_ptr());
        }
        let names: Vec<std::ffi::CString> = layer_settings
            .iter()
            .flat_map(|(k, v)| [k.as_str(), v.as_str()])
            .map(|s| std::ffi::CString::new(s).map_err(|_| VkError(format!("layer setting {s:?} holds a NUL"))))
            .collect::<Result<_, _>>()?;
        let value_ptrs: Vec<*const std::ffi::c_char> = names.iter().skip(1).step_by(2).map(|c| c.as_ptr()).collect();
        let settings: Vec<vk::LayerSettingEXT<'_>> = (0..layer_settings.len())
            .map(|i| vk::LayerSettingEXT {
                p_layer_name: c"VK_LAYER_VKDIRTY_capture".as_ptr(),
                p_setting_name: names[2 * i].as_ptr(),
                ty: vk::LayerSettingTypeEXT::STRING,
                value_count: 1,
                p_values: (&value_ptrs[i] as *const *const std::ffi::c_char).cast(),
                ..Default::default()
            })
            .collect();
        let mut lsci = vk::LayerSettingsCreateInfoEXT::default().settings(&settings);
        let mut messenger_info = vk::DebugUtilsMessengerCreateInfoEXT::default()
            .message_severity(
                vk::DebugUtilsMessageSeverityFlagsEXT::WARNING | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR,
            )
            .message_type(
                vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
                    | vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                    | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
            )
            .pfn_user_callback(Some(debug_callback));
        let mut ici = vk::InstanceCreateInfo::default().application_info(&app).enabled_extension_names(&ext_names);
        if validating {
            // Catches messages from vkCreateInstance / vkDestroyInstance too.
            ici = ici.push_next(&mut messenger_info);
        }
        if !settings.is_empty() {
            ici = ici.push_next(&mut lsci);
        }
        // SAFETY: the create info and everything it points to live across the call.
        let instance = unsafe { entry.create_instance(&ici, None) }.map_err(|e| err("vkCreateInstance", e))?;

        let debug = if validating {
            let du = ash::ext::debug_utils::Instance::new(&entry, &instance);
            let info = vk::DebugUtilsMessengerCreateInfoEXT::default()
                .message_severity(messenger_info.message_severity)
                .message_type(messenger_info.message_type)
                .pfn_user_callback(Some(debug_callback));
            // SAFETY: valid instance with the extension enabled.
            let m = unsafe { du.create_debug_utils_messenger(&info, None) }
                .map_err(|e| err("vkCreateDebugUtilsMessengerEXT", e))?;
            Some((du, m))
        } else {
            None
        };

        // SAFETY: valid instance.
        let pdevs =
            unsafe { instance.enumerate_physical_devices() }.map_err(|e| err("vkEnumeratePhysicalDevices", e))?;
        let pdev = *pdevs.first().ok_or_else(|| VkError("no Vulkan physical device".into()))?;
        // SAFETY: pdev comes from this instance.
        let (props, mem_props, families) = unsafe {
            (
                instance.get_physical_device_properties(pdev),
                instance.get_physical_device_memory_properties(pdev),
                instance.get_physical_device_queue_family_properties(pdev),
            )
        };
        let device_name = props.device_name_as_c_str().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let queue_family = families
            .iter()
            .position(|f| {
                f.queue_flags.intersects(vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE | vk::QueueFlags::TRANSFER)
            })
            .ok_or_else(|| VkError("no queue family with transfer support".into()))? as u32;

        let dev_api = props.api_version.min(api);
        let mut sync2 = false;
        if dev_api >= vk::API_VERSION_1_3 {
            let mut f13 = vk::PhysicalDeviceVulkan13Features::default();
            let mut f2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut f13);
            // SAFETY: valid physical device; f2 chain lives across the call.
            unsafe { instance.get_physical_device_features2(pdev, &mut f2) };
            sync2 = f13.synchronization2 == vk::TRUE;
        }
        let prio = [1.0f32];
        let qci = [vk::DeviceQueueCreateInfo::default().queue_family_index(queue_family).queue_priorities(&prio)];
        let mut f13 = vk::PhysicalDeviceVulkan13Features::default().synchronization2(true);
        // SAFETY: valid physical device.
        let dev_exts = unsafe { instance.enumerate_device_extension_properties(pdev) }
            .map_err(|e| err("vkEnumerateDeviceExtensionProperties", e))?;
        let host_ext = host_import
            && dev_exts.iter().any(|e| e.extension_name_as_c_str() == Ok(ash::ext::external_memory_host::NAME));
        let mut dev_ext_names: Vec<*const i8> =
            if host_ext { vec![ash::ext::external_memory_host::NAME.as_ptr()] } else { vec![] };
        let khr_exts = if khr_names { crate::khr::extensions(&dev_exts, sync2) } else { Vec::new() };
        dev_ext_names.extend(khr_exts.iter().map(|n| n.as_ptr()));
        let mut dci = vk::DeviceCreateInfo::default().queue_create_infos(&qci).enabled_extension_names(&dev_ext_names);
        if sync2 {
            dci = dci.push_next(&mut f13);
        }
        // SAFETY: valid physical device; the create info lives across the call.
        let device = unsafe { instance.create_device(pdev, &dci, None) }.map_err(|e| err("vkCreateDevice", e))?;
        // SAFETY: family and index 0 were requested at device creation.
        let queue = unsafe { device.get_device_queue(queue_family, 0) };
        let khr = khr_names.then(|| crate::khr::KhrCalls::load(&instance, &device, &khr_exts));
        let host_ext = host_ext.then(|| {
            let mut hp = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
            let mut p2 = vk::PhysicalDeviceProperties2::default().push_next(&mut hp);
            // SAFETY: valid physical device; the chain lives across the call.
            unsafe { instance.get_physical_device_properties2(pdev, &mut p2) };
            let align = hp.min_imported_host_pointer_alignment.max(1);
            (ash::ext::external_memory_host::Device::new(&instance, &device), align)
        });

        Ok(Vk {
            entry,
            pdev,
            api,
            instance,
            debug,
            device,
            queue,
            queue_family,
            mem_props,
            atom: props.limits.non_coherent_atom_size.max(1),
            sync2,
            khr,
            device_name,
            allocations: Default::default(),
            validating,
            host_ext,
        })
    }

    /// A memory type allowed by `bits` with all of `required`; among those, one with all of
    /// `preferred` and none of `avoided` when there is one.
    pub fn memory_type(
        &self,
        bits: u32,
        required: vk::MemoryPropertyFlags,
        preferred: vk::MemoryPropertyFlags,
        avoided: vk::MemoryPropertyFlags,
    ) -> Option<u32> {
        let n = self.mem_props.memory_type_count as usize;
        let ok = |i: usize, f: vk::MemoryPropertyFlags| bits & (1 << i) != 0 && f.contains(required);
        let types = &self.mem_props.memory_types[..n];
        types
            .iter()
            .enumerate()
            .find(|(i, t)| {
                ok(*i, t.property_flags)
                    && t.property_flags.contains(preferred)
                    && !t.property_flags.intersects(avoided)
            })
            .or_else(|| types.iter().enumerate().find(|(i, t)| ok(*i, t.property_flags)))
            .map(|(i, _)| i as u32)
    }

    /// Every memory type allowed by `bits` with all of `required`.
    pub fn memory_types_with(&self, bits: u32, required: vk::MemoryPropertyFlags) -> Vec<u32> {
        let n = self.mem_props.memory_type_count as usize;
        (0..n)
            .filter(|&i| bits & (1 << i) != 0 && self.mem_props.memory_types[i].property_flags.contains(required))
            .map(|i| i as u32)
            .collect()
    }

    pub fn type_flags(&self, ty: u32) -> vk::MemoryPropertyFlags {
        self.mem_props.memory_types[ty as usize].property_flags
    }

    /// A buffer of `size` bytes bound at offset 0 of its own allocation.
    pub fn buffer(
        &self,
        size: u64,
        usage: vk::BufferUsageFlags,
        required: vk::MemoryPropertyFlags,
        preferred: vk::MemoryPropertyFlags,
        avoided: vk::MemoryPropertyFlags,
    ) -> Result<Buffer, VkError> {
        self.buffer_picked(size, usage, required, preferred, avoided, None)
    }

    /// As [`Vk::buffer`], with the memory type chosen by `pick` (from the allowed type bits)
    /// when given.
    pub fn buffer_picked(
        &self,
        size: u64,
        usage: vk::BufferUsageFlags,
        required: vk::MemoryPropertyFlags,
        preferred: vk::MemoryPropertyFlags,
        avoided: vk::MemoryPropertyFlags,
        pick: Option<&dyn Fn(u32) -> Option<u32>>,
    ) -> Result<Buffer, VkError> {
        let d = &self.device;
        let bci = vk::BufferCreateInfo::default().size(size).usage(usage).sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: valid device; the create info lives across the call.
        let buffer = unsafe { d.create_buffer(&bci, None) }.map_err(|e| err("vkCreateBuffer", e))?;
        // SAFETY: buffer belongs to this device.
        let req = unsafe { d.get_buffer_memory_requirements(buffer) };
        let ty = match pick {
            Some(pick) => pick(req.memory_type_bits),
            None => self.memory_type(req.memory_type_bits, required, preferred, avoided),
        }
        .ok_or_else(|| VkError(format!("no memory type with {required:?}")))?;
        let mai = vk::MemoryAllocateInfo::default().allocation_size(req.size).memory_type_index(ty);
        // SAFETY: valid device and allocate info.
        let memory = unsafe { d.allocate_memory(&mai, None) }.map_err(|e| err("vkAllocateMemory", e))?;
        let alloc_index = self.count_allocation();
        // SAFETY: unbound buffer, memory of an allowed type and large enough.
        unsafe { d.bind_buffer_memory(buffer, memory, 0) }.map_err(|e| err("vkBindBufferMemory", e))?;
        Ok(Buffer { buffer, memory, size, alloc_size: req.size, memory_type: ty, alloc_index })
    }

    /// A buffer of `size` bytes bound at offset 0 of `memory`, which already has another one:
    /// a second resource in the same allocation, as a sub-allocator places one.
    pub fn buffer_on(
        &self,
        memory: vk::DeviceMemory,
        size: u64,
        usage: vk::BufferUsageFlags,
    ) -> Result<vk::Buffer, VkError> {
        let d = &self.device;
        let bci = vk::BufferCreateInfo::default().size(size).usage(usage).sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: valid device; the create info lives across the call.
        let buffer = unsafe { d.create_buffer(&bci, None) }.map_err(|e| err("vkCreateBuffer", e))?;
        // SAFETY: an unbound buffer of this device; the caller's memory is of a type the buffer
        // allows and large enough (it already holds a buffer of the same size and usage but one).
        if let Err(e) = unsafe { d.bind_buffer_memory(buffer, memory, 0) } {
            // SAFETY: the buffer just made, unused.
            unsafe { d.destroy_buffer(buffer, None) };
            return Err(err("vkBindBufferMemory", e));
        }
        Ok(buffer)
    }

    /// Destroys a buffer made by [`Vk::buffer_on`] (its memory is freed with the first one).
    pub fn destroy_buffer(&self, buffer: vk::Buffer) {
        // SAFETY: the caller waited for every submit using it; not used afterwards.
        unsafe { self.device.destroy_buffer(buffer, None) };
    }

    /// Memory of type `ty` with no buffer bound (`buffer` is null): memory an application maps
    /// and writes before (or without) binding anything to it.
    pub fn memory_only(&self, size: u64, ty: u32) -> Result<Buffer, VkError> {
        let mai = vk::MemoryAllocateInfo::default().allocation_size(size).memory_type_index(ty);
        // SAFETY: valid device and allocate info.
        let memory = unsafe { self.device.allocate_memory(&mai, None) }.map_err(|e| err("vkAllocateMemory", e))?;
        Ok(Buffer {
            buffer: vk::Buffer::null(),
            memory,
            size,
            alloc_size: size,
            memory_type: ty,
            alloc_index: self.count_allocation(),
        })
    }

    /// The `import` scenario: `size` bytes of the application's own anonymous memory imported
    /// with `VkImportMemoryHostPointerInfoEXT` into a host-visible coherent type, with a transfer
    /// buffer bound. Returns the buffer and the application's pointer (never passed to
    /// vkMapMemory; the pages are never unmapped).
    pub fn imported_buffer(&self, size: u64) -> Result<(Buffer, *mut u8), VkError> {
        let (ext, align) =
            self.host_ext.as_ref().ok_or_else(|| VkError("VK_EXT_external_memory_host is not offered".into()))?;
        let size = size.next_multiple_of(*align);
        // SAFETY: a fresh private anonymous mapping, kept for the life of the process.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize + *align as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(VkError(format!("mmap: {}", std::io::Error::last_os_error())));
        }
        let ptr = (p as usize).next_multiple_of(*align as usize) as *mut u8;
        let ht = vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;
        let mut hpp = vk::MemoryHostPointerPropertiesEXT::default();
        // SAFETY: valid device; `ptr` is aligned host memory of this process.
        unsafe { (ext.fp().get_memory_host_pointer_properties_ext)(self.device.handle(), ht, ptr.cast(), &mut hpp) }
            .result()
            .map_err(|e| err("vkGetMemoryHostPointerPropertiesEXT", e))?;
        let d = &self.device;
        let mut ext_info = vk::ExternalMemoryBufferCreateInfo::default().handle_types(ht);
        let usage = vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST;
        let bci = vk::BufferCreateInfo::default()
            .size(size)
            .usage(usage)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .push_next(&mut ext_info);
        // SAFETY: valid device; the create info lives across the call.
        let buffer = unsafe { d.create_buffer(&bci, None) }.map_err(|e| err("vkCreateBuffer (external)", e))?;
        // SAFETY: buffer belongs to this device.
        let req = unsafe { d.get_buffer_memory_requirements(buffer) };
        let coherent = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let ty = self
            .memory_type(
                req.memory_type_bits & hpp.memory_type_bits,
                coherent,
                vk::MemoryPropertyFlags::empty(),
                vk::MemoryPropertyFlags::empty(),
            )
            .ok_or_else(|| VkError("no host-visible coherent memory type can import host memory".into()))?;
        let mut import = vk::ImportMemoryHostPointerInfoEXT::default().handle_type(ht).host_pointer(ptr.cast());
        let mai = vk::MemoryAllocateInfo::default().allocation_size(size).memory_type_index(ty).push_next(&mut import);
        // SAFETY: valid device; the import points at `size` bytes of ours, aligned as required.
        let memory = unsafe { d.allocate_memory(&mai, None) }.map_err(|e| err("vkAllocateMemory (import)", e))?;
        let alloc_index = self.count_allocation();
        // SAFETY: unbound buffer, memory of an allowed type and large enough.
        unsafe { d.bind_buffer_memory(buffer, memory, 0) }.map_err(|e| err("vkBindBufferMemory", e))?;
        Ok((Buffer { buffer, memory, size, alloc_size: size, memory_type: ty, alloc_index }, ptr))
    }

    /// The 1-based number of the allocation just made.
    fn count_allocation(&self) -> u64 {
        self.allocations.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Destroys the buffer and frees its memory (implicitly unmapping it when mapped).
    pub fn free(&self, b: &Buffer) {
        // SAFETY: the caller waited for every submit using the buffer; handles are this
        // device's and not used afterwards.
        unsafe {
            self.device.destroy_buffer(b.buffer, None);
            self.device.free_memory(b.memory, None);
        }
    }

    /// Maps `offset..offset+size` (`vk::WHOLE_SIZE` allowed).
    pub fn map(&self, memory: vk::DeviceMemory, offset: u64, size: u64) -> Result<*mut u8, VkError> {
        if let Some(r) = self.khr.as_ref().and_then(|k| k.map2(self.device.handle(), memory, offset, size)) {
            return r.map_err(|e| err("vkMapMemory2KHR", e));
        }
        // SAFETY: host-visible memory of this device, not currently mapped; range checked by
        // the caller.
        unsafe { self.device.map_memory(memory, offset, size, vk::MemoryMapFlags::empty()) }
            .map(|p| p.cast::<u8>())
            .map_err(|e| err("vkMapMemory", e))
    }

    pub fn unmap(&self, memory: vk::DeviceMemory) {
        if let Some(r) = self.khr.as_ref().and_then(|k| k.unmap2(self.device.handle(), memory)) {
            if let Err(e) = r {
                eprintln!("vkdirty-workload: vkUnmapMemory2KHR: {e:?}");
            }
            return;
        }
        // SAFETY: memory is currently mapped.
        unsafe { self.device.unmap_memory(memory) };
    }

    pub fn flush(&self, ranges: &[vk::MappedMemoryRange<'_>]) -> Result<(), VkError> {
        if ranges.is_empty() {
            return Ok(());
        }
        // SAFETY: every range lies in a currently mapped range and is atom-aligned.
        unsafe { self.device.flush_mapped_memory_ranges(ranges) }.map_err(|e| err("vkFlushMappedMemoryRanges", e))
    }

    pub fn invalidate(&self, ranges: &[vk::MappedMemoryRange<'_>]) -> Result<(), VkError> {
        // SAFETY: as for flush.
        unsafe { self.device.invalidate_mapped_memory_ranges(ranges) }
            .map_err(|e| err("vkInvalidateMappedMemoryRanges", e))
    }
}

impl Drop for Vk {
    fn drop(&mut self) {
        // SAFETY: the owner destroyed every child object; nothing is pending after the idle wait.
        unsafe {
            let _ = self.device.device_wait_idle();
            self.device.destroy_device(None);
            if let Some((du, m)) = self.debug.take() {
                du.destroy_debug_utils_messenger(m, None);
            }
            self.instance.destroy_instance(None);
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Buffer {
    pub buffer: vk::Buffer,
    pub memory: vk::DeviceMemory,
    /// Buffer size.
    pub size: u64,
    /// Allocation size (>= buffer size).
    pub alloc_size: u64,
    pub memory_type: u32,
    /// Which successful vkAllocateMemory of the device this is (1-based).
    pub alloc_index: u64,
}

/// One command pool, one command buffer, one fence: record, submit, wait.
pub struct Frame {
    pool: vk::CommandPool,
    pub cmd: vk::CommandBuffer,
    fence: vk::Fence,
}

impl Frame {
    pub fn new(vk: &Vk) -> Result<Frame, VkError> {
        let d = &vk.device;
        let pci = vk::CommandPoolCreateInfo::default()
            .queue_family_index(vk.queue_family)
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER);
        // SAFETY: valid device and create infos.
        unsafe {
            let pool = d.create_command_pool(&pci, None).map_err(|e| err("vkCreateCommandPool", e))?;
            let cai = vk::CommandBufferAllocateInfo::default()
                .command_pool(pool)
                .level(vk::CommandBufferLevel::PRIMARY)
                .command_buffer_count(1);
            let cmd = d.allocate_command_buffers(&cai).map_err(|e| err("vkAllocateCommandBuffers", e))?[0];
            let fence = d.create_fence(&vk::FenceCreateInfo::default(), None).map_err(|e| err("vkCreateFence", e))?;
            Ok(Frame { pool, cmd, fence })
        }
    }

    pub fn begin(&self, vk: &Vk) -> Result<(), VkError> {
        let bi = vk::CommandBufferBeginInfo::default().flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: the command buffer is not pending (the previous submit was waited for).
        unsafe {
            vk.device
                .reset_command_buffer(self.cmd, vk::CommandBufferResetFlags::empty())
                .map_err(|e| err("vkResetCommandBuffer", e))?;
            vk.device.begin_command_buffer(self.cmd, &bi).map_err(|e| err("vkBeginCommandBuffer", e))
        }
    }

    pub fn copy(&self, vk: &Vk, src: vk::Buffer, dst: vk::Buffer, src_off: u64, dst_off: u64, size: u64) {
        let r = [vk::BufferCopy { src_offset: src_off, dst_offset: dst_off, size }];
        // SAFETY: recording; both buffers are alive and large enough.
        unsafe { vk.device.cmd_copy_buffer(self.cmd, src, dst, &r) };
    }

    pub fn fill(&self, vk: &Vk, dst: vk::Buffer, off: u64, size: u64, value: u32) {
        // SAFETY: recording; offset and size are multiples of 4 inside the buffer.
        unsafe { vk.device.cmd_fill_buffer(self.cmd, dst, off, size, value) };
    }

    /// Every transfer write before is visible to transfers (and host reads) after.
    pub fn barrier(&self, vk: &Vk, to_host: bool) {
        let (dst_stage, dst_access) = if to_host {
            (vk::PipelineStageFlags::HOST, vk::AccessFlags::HOST_READ)
        } else {
            (vk::PipelineStageFlags::TRANSFER, vk::AccessFlags::TRANSFER_READ | vk::AccessFlags::TRANSFER_WRITE)
        };
        let mb =
            [vk::MemoryBarrier::default().src_access_mask(vk::AccessFlags::TRANSFER_WRITE).dst_access_mask(dst_access)];
        // SAFETY: recording.
        unsafe {
            vk.device.cmd_pipeline_barrier(
                self.cmd,
                vk::PipelineStageFlags::TRANSFER,
                dst_stage,
                vk::DependencyFlags::empty(),
                &mb,
                &[],
                &[],
            )
        };
    }

    /// Ends recording and submits (with `vkQueueSubmit2` when `use_submit2`).
    pub fn submit(&self, vk: &Vk, use_submit2: bool) -> Result<(), VkError> {
        let d = &vk.device;
        // SAFETY: the command buffer is recording; the queue and fence are this device's; the
        // fence is unsignalled (reset after each wait).
        unsafe {
            d.end_command_buffer(self.cmd).map_err(|e| err("vkEndCommandBuffer", e))?;
            if use_submit2 {
                let cbi = [vk::CommandBufferSubmitInfo::default().command_buffer(self.cmd)];
                let si = [vk::SubmitInfo2::default().command_buffer_infos(&cbi)];
                if let Some(r) = vk.khr.as_ref().and_then(|k| k.submit2(vk.queue, &si, self.fence)) {
                    return r.map_err(|e| err("vkQueueSubmit2KHR", e));
                }
                let cbi = [vk::CommandBufferSubmitInfo::default().command_buffer(self.cmd)];
                let si = [vk::SubmitInfo2::default().command_buffer_infos(&cbi)];
                d.queue_submit2(vk.queue, &si, self.fence).map_err(|e| err("vkQueueSubmit2", e))
            } else {
                let cbs = [self.cmd];
                let si = [vk::SubmitInfo::default().command_buffers(&cbs)];
                d.queue_submit(vk.queue, &si, self.fence).map_err(|e| err("vkQueueSubmit", e))
            }
        }
    }

    /// Waits for the last submit.
    pub fn wait(&self, vk: &Vk) -> Result<(), VkError> {
        let d = &vk.device;
        // SAFETY: the fence is this device's and was submitted.
        unsafe {
            d.wait_for_fences(&[self.fence], true, u64::MAX).map_err(|e| err("vkWaitForFences", e))?;
            d.reset_fences(&[self.fence]).map_err(|e| err("vkResetFences", e))
        }
    }

    pub fn destroy(&self, vk: &Vk) {
        // SAFETY: nothing pending (every submit was waited for).
        unsafe {
            vk.device.destroy_fence(self.fence, None);
            vk.device.destroy_command_pool(self.pool, None);
        }
    }
}
