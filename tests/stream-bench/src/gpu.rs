//! The Vulkan side: one host-visible coherent buffer the CPU writes, one small destination, and
//! a per-frame copy between them, waited on with a fence.

use ash::vk;
use std::ops::Range;

/// Bytes copied by the GPU each frame (or the whole span when smaller).
const COPY_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("cannot load the Vulkan loader (libvulkan.so.1): {0}")]
    Load(String),
    #[error("{0}: {1}")]
    Vk(&'static str, vk::Result),
    #[error("{0}")]
    Setup(String),
}

/// Names the Vulkan call a failure came from.
pub(crate) trait Ctx<T> {
    fn ctx(self, what: &'static str) -> Result<T, GpuError>;
}

impl<T> Ctx<T> for Result<T, vk::Result> {
    fn ctx(self, what: &'static str) -> Result<T, GpuError> {
        self.map_err(|e| GpuError::Vk(what, e))
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    pub name: String,
    pub device_type: String,
    pub vendor_id: u32,
    pub driver_version: u32,
    pub driver_name: String,
    pub api_version: String,
    pub memory_type: u32,
    pub memory_flags: String,
}

pub struct GpuOptions {
    pub size: u64,
    pub device_index: Option<usize>,
    pub memory_type: Option<u32>,
    /// Map and unmap around each frame's writes instead of keeping one mapping.
    pub map_every_frame: bool,
    /// Call `vkFlushMappedMemoryRanges` on the written ranges (coherent memory needs none; the
    /// assisted capture modes record only flushed ranges).
    pub flush: bool,
    /// Extra persistently mapped allocations of `alloc_bytes` each (the many-mappings case), of
    /// the buffer's memory type, each with a buffer bound.
    pub allocations: usize,
    pub alloc_bytes: u64,
}

/// One of the extra allocations.
struct Extra {
    buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    mapped: *mut u8,
}

pub struct Gpu {
    _entry: ash::Entry,
    instance: ash::Instance,
    device: ash::Device,
    queue: vk::Queue,
    pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
    fence: vk::Fence,
    src: vk::Buffer,
    src_mem: vk::DeviceMemory,
    dst: vk::Buffer,
    dst_mem: vk::DeviceMemory,
    size: u64,
    map_every_frame: bool,
    flush: bool,
    mapped: *mut u8,
    extra: Vec<Extra>,
    alloc_bytes: u64,
    pub info: DeviceInfo,
}

fn flag_names(f: vk::MemoryPropertyFlags) -> String {
    let names = [
        (vk::MemoryPropertyFlags::DEVICE_LOCAL, "DEVICE_LOCAL"),
        (vk::MemoryPropertyFlags::HOST_VISIBLE, "HOST_VISIBLE"),
        (vk::MemoryPropertyFlags::HOST_COHERENT, "HOST_COHERENT"),
        (vk::MemoryPropertyFlags::HOST_CACHED, "HOST_CACHED"),
    ];
    let v: Vec<&str> = names.iter().filter(|(b, _)| f.contains(*b)).map(|(_, n)| *n).collect();
    v.join("|")
}

fn version_string(v: u32) -> String {
    format!("{}.{}.{}", vk::api_version_major(v), vk::api_version_minor(v), vk::api_version_patch(v))
}

/// Prefers a real GPU over a software one.
fn device_rank(t: vk::PhysicalDeviceType) -> u32 {
    match t {
        vk::PhysicalDeviceType::DISCRETE_GPU => 0,
        vk::PhysicalDeviceType::INTEGRATED_GPU => 1,
        vk::PhysicalDeviceType::VIRTUAL_GPU => 2,
        vk::PhysicalDeviceType::CPU => 4,
        _ => 3,
    }
}

impl Gpu {
    pub fn new(opts: &GpuOptions) -> Result<Gpu, GpuError> {
        // SAFETY: loads the system loader; its initialisers are trusted like any shared library.
        let entry = unsafe { ash::Entry::load() }.map_err(|e| GpuError::Load(e.to_string()))?;
        let app = vk::ApplicationInfo::default()
            .application_name(c"vkdirty-stream-bench")
            .engine_name(c"vkdirty-stream-bench")
            .api_version(vk::API_VERSION_1_1);
        let ici = vk::InstanceCreateInfo::default().application_info(&app);
        // SAFETY: valid create info with no extensions or layers requested.
        let instance = unsafe { entry.create_instance(&ici, None) }.ctx("vkCreateInstance")?;
        let opened = match Self::open_device(&instance, opts) {
            Ok(o) => o,
            Err(e) => {
                // SAFETY: nothing created from the instance is left (open_device cleans up).
                unsafe { instance.destroy_instance(None) };
                return Err(e);
            }
        };
        let (device, family, mem_props, info, pd, api) = opened;
        let mut gpu = Gpu {
            _entry: entry,
            // SAFETY: family/index 0 were requested at device creation.
            queue: unsafe { device.get_device_queue(family, 0) },
            instance,
            device,
            pool: vk::CommandPool::null(),
            cmd: vk::CommandBuffer::null(),
            fence: vk::Fence::null(),
            src: vk::Buffer::null(),
            src_mem: vk::DeviceMemory::null(),
            dst: vk::Buffer::null(),
            dst_mem: vk::DeviceMemory::null(),
            size: opts.size,
            map_every_frame: opts.map_every_frame,
            flush: opts.flush,
            mapped: std::ptr::null_mut(),
            extra: Vec::new(),
            alloc_bytes: opts.alloc_bytes,
            info,
        };
        // On error, Drop releases whatever was created so far, device and instance included.
        gpu.create_resources(family, &mem_props, opts)?;
        gpu.info.driver_name = driver_name(&gpu.instance, pd, api);
        Ok(gpu)
    }

    #[allow(clippy::type_complexity)]
    fn open_device(
        instance: &ash::Instance,
        opts: &GpuOptions,
    ) -> Result<(ash::Device, u32, vk::PhysicalDeviceMemoryProperties, DeviceInfo, vk::PhysicalDevice, u32), GpuError>
    {
        // SAFETY: instance is valid.
        let pds = unsafe { instance.enumerate_physical_devices() }.ctx("vkEnumeratePhysicalDevices")?;
        if pds.is_empty() {
            return Err(GpuError::Setup("no Vulkan physical device".into()));
        }
        // SAFETY: handles come from this instance.
        let props: Vec<_> = pds.iter().map(|&p| unsafe { instance.get_physical_device_properties(p) }).collect();
        let idx = match opts.device_index {
            Some(i) if i < pds.len() => i,
            Some(i) => return Err(GpuError::Setup(format!("device index {i} out of range ({} devices)", pds.len()))),
            None => (0..pds.len()).min_by_key(|&i| device_rank(props[i].device_type)).expect("non-empty"),
        };
        let pd = pds[idx];
        let p = &props[idx];
        // SAFETY: pd is valid.
        let families = unsafe { instance.get_physical_device_queue_family_properties(pd) };
        let any_transfer = vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE | vk::QueueFlags::TRANSFER;
        let family = families
            .iter()
            .position(|f| f.queue_count > 0 && f.queue_flags.intersects(any_transfer))
            .ok_or_else(|| GpuError::Setup("no queue family can copy".into()))? as u32;
        let prio = [1.0f32];
        let qci = [vk::DeviceQueueCreateInfo::default().queue_family_index(family).queue_priorities(&prio)];
        let dci = vk::DeviceCreateInfo::default().queue_create_infos(&qci);
        // SAFETY: valid create info for this physical device.
        let device = unsafe { instance.create_device(pd, &dci, None) }.ctx("vkCreateDevice")?;
        // SAFETY: pd is valid.
        let mem_props = unsafe { instance.get_physical_device_memory_properties(pd) };
        let info = DeviceInfo {
            name: p.device_name_as_c_str().unwrap_or(c"?").to_string_lossy().into_owned(),
            device_type: format!("{:?}", p.device_type),
            vendor_id: p.vendor_id,
            driver_version: p.driver_version,
            driver_name: String::new(),
            api_version: version_string(p.api_version),
            memory_type: 0,
            memory_flags: String::new(),
        };
        Ok((device, family, mem_props, info, pd, p.api_version))
    }

    fn create_resources(
        &mut self,
        family: u32,
        mem_props: &vk::PhysicalDeviceMemoryProperties,
        opts: &GpuOptions,
    ) -> Result<(), GpuError> {
        let d = &self.device;
        let types = &mem_props.memory_types[..mem_props.memory_type_count as usize];
        let hv = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;

        let bci = vk::BufferCreateInfo::default().size(self.size).usage(vk::BufferUsageFlags::TRANSFER_SRC);
        // SAFETY: valid create info.
        self.src = unsafe { d.create_buffer(&bci, None) }.ctx("vkCreateBuffer(src)")?;
        // SAFETY: src is valid.
        let req = unsafe { d.get_buffer_memory_requirements(self.src) };
        let src_type = match opts.memory_type {
            Some(t) => {
                let ok = (t as usize) < types.len()
                    && req.memory_type_bits & (1 << t) != 0
                    && types[t as usize].property_flags.contains(hv);
                if !ok {
                    return Err(GpuError::Setup(format!(
                        "memory type {t} is not host-visible coherent and usable for the buffer"
                    )));
                }
                t
            }
            // A system-memory staging type: no DEVICE_LOCAL (a BAR window), fewest extra flags.
            None => (0..types.len() as u32)
                .filter(|&i| req.memory_type_bits & (1 << i) != 0 && types[i as usize].property_flags.contains(hv))
                .min_by_key(|&i| {
                    let f = types[i as usize].property_flags;
                    (
                        f.contains(vk::MemoryPropertyFlags::DEVICE_LOCAL),
                        f.contains(vk::MemoryPropertyFlags::HOST_CACHED),
                        i,
                    )
                })
                .ok_or_else(|| GpuError::Setup("no host-visible coherent memory type".into()))?,
        };
        self.info.memory_type = src_type;
        self.info.memory_flags = flag_names(types[src_type as usize].property_flags);
        let mai = vk::MemoryAllocateInfo::default().allocation_size(req.size).memory_type_index(src_type);
        // SAFETY: valid allocate info.
        self.src_mem = unsafe { d.allocate_memory(&mai, None) }.ctx("vkAllocateMemory(src)")?;
        // SAFETY: fresh buffer and memory of a compatible type and sufficient size.
        unsafe { d.bind_buffer_memory(self.src, self.src_mem, 0) }.ctx("vkBindBufferMemory(src)")?;
        for _ in 0..opts.allocations {
            let bci = vk::BufferCreateInfo::default().size(opts.alloc_bytes).usage(vk::BufferUsageFlags::TRANSFER_SRC);
            // SAFETY: valid create info.
            let buffer = unsafe { d.create_buffer(&bci, None) }.ctx("vkCreateBuffer(extra)")?;
            self.extra.push(Extra { buffer, memory: vk::DeviceMemory::null(), mapped: std::ptr::null_mut() });
            // SAFETY: buffer is valid.
            let req = unsafe { d.get_buffer_memory_requirements(buffer) };
            let mai = vk::MemoryAllocateInfo::default().allocation_size(req.size).memory_type_index(src_type);
            let e = self.extra.last_mut().expect("pushed");
            // SAFETY: valid allocate info.
            e.memory = unsafe { d.allocate_memory(&mai, None) }.ctx("vkAllocateMemory(extra)")?;
            // SAFETY: fresh buffer and memory of a compatible type and sufficient size; the memory
            // is host-visible and not mapped.
            unsafe {
                d.bind_buffer_memory(buffer, e.memory, 0).ctx("vkBindBufferMemory(extra)")?;
                e.mapped = d
                    .map_memory(e.memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())
                    .ctx("vkMapMemory(extra)")?
                    .cast();
            }
        }

        let copy = COPY_BYTES.min(self.size);
        let bci = vk::BufferCreateInfo::default().size(copy).usage(vk::BufferUsageFlags::TRANSFER_DST);
        // SAFETY: valid create info.
        self.dst = unsafe { d.create_buffer(&bci, None) }.ctx("vkCreateBuffer(dst)")?;
        // SAFETY: dst is valid.
        let req = unsafe { d.get_buffer_memory_requirements(self.dst) };
        let dst_type = (0..types.len() as u32)
            .filter(|&i| req.memory_type_bits & (1 << i) != 0)
            .min_by_key(|&i| !types[i as usize].property_flags.contains(vk::MemoryPropertyFlags::DEVICE_LOCAL))
            .ok_or_else(|| GpuError::Setup("no memory type for the destination buffer".into()))?;
        let mai = vk::MemoryAllocateInfo::default().allocation_size(req.size).memory_type_index(dst_type);
        // SAFETY: valid allocate info.
        self.dst_mem = unsafe { d.allocate_memory(&mai, None) }.ctx("vkAllocateMemory(dst)")?;
        // SAFETY: as for src.
        unsafe { d.bind_buffer_memory(self.dst, self.dst_mem, 0) }.ctx("vkBindBufferMemory(dst)")?;

        (self.pool, self.cmd, self.fence) =
            command_objects(d, family, vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER)?;
        Ok(())
    }

    fn map(&mut self) -> Result<(), GpuError> {
        if self.mapped.is_null() {
            // SAFETY: src_mem is host-visible and not mapped.
            let p = unsafe { self.device.map_memory(self.src_mem, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) }
                .ctx("vkMapMemory")?;
            self.mapped = p.cast();
        }
        Ok(())
    }

    fn unmap(&mut self) {
        if !self.mapped.is_null() {
            // SAFETY: src_mem is mapped; the pointer is dropped with it.
            unsafe { self.device.unmap_memory(self.src_mem) };
            self.mapped = std::ptr::null_mut();
        }
    }

    /// One frame: write `value` into `plan`'s ranges, submit a copy of (part of) the first one,
    /// and wait for it.
    pub fn frame(&mut self, plan: &[Range<usize>], value: u8) -> Result<(), GpuError> {
        self.map()?;
        for r in plan {
            debug_assert!(r.end as u64 <= self.size);
            // SAFETY: the whole buffer is mapped and `r` lies inside it (the planner's contract).
            unsafe { self.mapped.add(r.start).write_bytes(value, r.len()) };
        }
        if self.flush {
            let ranges: Vec<vk::MappedMemoryRange> = plan
                .iter()
                .map(|r| {
                    vk::MappedMemoryRange::default().memory(self.src_mem).offset(r.start as u64).size(r.len() as u64)
                })
                .collect();
            // SAFETY: the memory is mapped; ranges are page-aligned and inside the allocation.
            unsafe { self.device.flush_mapped_memory_ranges(&ranges) }.ctx("vkFlushMappedMemoryRanges")?;
        }
        if self.map_every_frame {
            self.unmap();
        }
        let copy = COPY_BYTES.min(self.size);
        let first = plan.first().map_or(0, |r| r.start as u64).min(self.size - copy);
        self.submit_copy(first, copy)
    }

    fn submit_copy(&mut self, src_offset: u64, size: u64) -> Result<(), GpuError> {
        let d = &self.device;
        let begin = vk::CommandBufferBeginInfo::default().flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        let region = [vk::BufferCopy { src_offset, dst_offset: 0, size }];
        // SAFETY: the command buffer is idle (the last submit was waited on); handles are valid and
        // the region lies inside both buffers.
        unsafe {
            d.begin_command_buffer(self.cmd, &begin).ctx("vkBeginCommandBuffer")?;
            d.cmd_copy_buffer(self.cmd, self.src, self.dst, &region);
            d.end_command_buffer(self.cmd).ctx("vkEndCommandBuffer")?;
        }
        let cmds = [self.cmd];
        let submit = [vk::SubmitInfo::default().command_buffers(&cmds)];
        // SAFETY: recorded command buffer, unsignalled fence.
        unsafe {
            d.queue_submit(self.queue, &submit, self.fence).ctx("vkQueueSubmit")?;
            d.wait_for_fences(&[self.fence], true, u64::MAX).ctx("vkWaitForFences")?;
            d.reset_fences(&[self.fence]).ctx("vkResetFences")?;
        }
        Ok(())
    }

    /// One frame of the many-mappings case: one page written at each (allocation, page) of
    /// `writes` (4 KiB pages), then the same submit and wait as [`frame`](Self::frame).
    pub fn frame_many(&mut self, writes: &[(usize, usize)], value: u8) -> Result<(), GpuError> {
        for &(i, page) in writes {
            let e = &self.extra[i];
            debug_assert!(((page + 1) * 4096) as u64 <= self.alloc_bytes);
            // SAFETY: the allocation is mapped whole; the page lies inside it (caller contract).
            unsafe { e.mapped.add(page * 4096).write_bytes(value, 4096) };
        }
        if self.flush {
            // One call for every allocation written, as an application batching its flushes would.
            let ranges: Vec<vk::MappedMemoryRange> = writes
                .iter()
                .map(|&(i, page)| {
                    vk::MappedMemoryRange::default().memory(self.extra[i].memory).offset(page as u64 * 4096).size(4096)
                })
                .collect();
            // SAFETY: each allocation is mapped whole; the pages are page-aligned and inside it.
            unsafe { self.device.flush_mapped_memory_ranges(&ranges) }.ctx("vkFlushMappedMemoryRanges")?;
        }
        let copy = COPY_BYTES.min(self.size);
        self.submit_copy(0, copy)
    }

    /// The initial upload: the whole buffer written once (not timed).
    pub fn initial_fill(&mut self, value: u8) -> Result<(), GpuError> {
        let whole = 0..self.size as usize;
        self.frame(std::slice::from_ref(&whole), value)
    }
}

fn driver_name(instance: &ash::Instance, pd: vk::PhysicalDevice, api: u32) -> String {
    if api < vk::API_VERSION_1_2 {
        return String::new();
    }
    let mut drv = vk::PhysicalDeviceDriverProperties::default();
    let mut p2 = vk::PhysicalDeviceProperties2::default().push_next(&mut drv);
    // SAFETY: the device reports 1.2+, which has the core query and the driver properties struct.
    unsafe { instance.get_physical_device_properties2(pd, &mut p2) };
    let name = drv.driver_name_as_c_str().unwrap_or(c"").to_string_lossy();
    let info = drv.driver_info_as_c_str().unwrap_or(c"").to_string_lossy();
    format!("{name} {info}").trim().to_string()
}

impl Drop for Gpu {
    fn drop(&mut self) {
        let d = &self.device;
        // SAFETY: every handle is null or created from this device; after the idle wait none is
        // in use. Unmap first so a capture tool sees the final unmap.
        unsafe {
            let _ = d.device_wait_idle();
        }
        self.unmap();
        let d = &self.device;
        // SAFETY: as above.
        unsafe {
            for e in self.extra.drain(..) {
                if !e.mapped.is_null() {
                    d.unmap_memory(e.memory);
                }
                d.destroy_buffer(e.buffer, None);
                d.free_memory(e.memory, None);
            }
            d.destroy_fence(self.fence, None);
            d.destroy_command_pool(self.pool, None);
            d.destroy_buffer(self.src, None);
            d.destroy_buffer(self.dst, None);
            d.free_memory(self.src_mem, None);
            d.free_memory(self.dst_mem, None);
            d.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}

/// A command pool on `family`, one primary command buffer from it and an unsignalled fence: what
/// each benchmark loop submits with. The caller destroys them.
pub(crate) fn command_objects(
    d: &ash::Device,
    family: u32,
    flags: vk::CommandPoolCreateFlags,
) -> Result<(vk::CommandPool, vk::CommandBuffer, vk::Fence), GpuError> {
    let pci = vk::CommandPoolCreateInfo::default().queue_family_index(family).flags(flags);
    // SAFETY: valid create info.
    let pool = unsafe { d.create_command_pool(&pci, None) }.ctx("vkCreateCommandPool")?;
    let cai = vk::CommandBufferAllocateInfo::default()
        .command_pool(pool)
        .level(vk::CommandBufferLevel::PRIMARY)
        .command_buffer_count(1);
    let rest = || -> Result<(vk::CommandBuffer, vk::Fence), GpuError> {
        // SAFETY: valid allocate info.
        let cmd = unsafe { d.allocate_command_buffers(&cai) }.ctx("vkAllocateCommandBuffers")?[0];
        // SAFETY: valid create info.
        let fence = unsafe { d.create_fence(&vk::FenceCreateInfo::default(), None) }.ctx("vkCreateFence")?;
        Ok((cmd, fence))
    };
    match rest() {
        Ok((cmd, fence)) => Ok((pool, cmd, fence)),
        Err(e) => {
            // SAFETY: the pool is unused; destroying it frees its command buffer.
            unsafe { d.destroy_command_pool(pool, None) };
            Err(e)
        }
    }
}
