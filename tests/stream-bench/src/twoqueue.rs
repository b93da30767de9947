//! The two-queue case (`twoqueue`): T threads, each submitting on its own queue. Each thread owns
//! its persistently mapped host-visible allocations; a submit writes a few pages of them, submits
//! a small copy out of them and waits on the thread's fence. Measures how submits on several
//! queues at once scale: a capture layer that serialises its work at submit shows it here.
//!
//! Queues: `T` queues of one device when the device offers that many in one family, else (or with
//! `--devices per-thread`) one device per thread on the same physical device.

use ash::vk;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use crate::gpu::{command_objects, Ctx, GpuError};
use crate::stats;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Devices {
    /// One device with T queues where its family has them, else one device per thread.
    Auto,
    /// One device per thread (same physical device).
    PerThread,
}

#[derive(clap::Args)]
pub struct Args {
    /// Submitting threads, each on its own queue.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, value_enum, default_value_t = Devices::Auto)]
    devices: Devices,
    /// Timed submits per thread.
    #[arg(long, default_value_t = 5000)]
    submits: usize,
    /// Untimed submits per thread before the timed ones.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Persistently mapped allocations per thread.
    #[arg(long, default_value_t = 16)]
    allocations: usize,
    /// Size of each allocation, KiB.
    #[arg(long, default_value_t = 64)]
    alloc_kib: u64,
    /// 4 KiB pages written per submit, spread over the thread's allocations.
    #[arg(long, default_value_t = 4)]
    writes_per_submit: usize,
    /// Physical device index (default: the first real GPU, else the first device).
    #[arg(long)]
    device_index: Option<usize>,
    /// Write the JSON line here instead of stdout.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

#[derive(serde::Serialize)]
pub struct Report {
    bench: &'static str,
    threads: usize,
    /// "one device, N queues" or "one device per thread".
    layout: String,
    submits_per_thread: usize,
    allocations_per_thread: usize,
    alloc_kib: u64,
    writes_per_submit: usize,
    device: String,
    /// Per submit (write + submit + fence wait), every thread's submits together, ms.
    submit_ms: stats::Summary,
    /// From the common start to the last thread's last submit, s.
    loop_s: f64,
    /// Timed submits of all threads ÷ loop_s.
    submits_per_s: f64,
    wall_s: f64,
}

/// One thread's queue and resources.
struct Lane {
    device: ash::Device,
    queue: vk::Queue,
    pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
    fence: vk::Fence,
    buffers: Vec<vk::Buffer>,
    memories: Vec<vk::DeviceMemory>,
    mapped: Vec<*mut u8>,
    dst: vk::Buffer,
    dst_mem: vk::DeviceMemory,
}

// SAFETY: the mapped pointers are the lane's own allocations, written by the one thread that
// owns the lane; every Vulkan handle is used by that thread only (externally synchronised).
unsafe impl Send for Lane {}

struct Setup {
    _entry: ash::Entry,
    instance: ash::Instance,
    /// The devices created (one, or one per thread), destroyed at the end.
    devices: Vec<ash::Device>,
    lanes: Vec<Lane>,
    layout: String,
    name: String,
}

fn setup(a: &Args) -> Result<Setup, GpuError> {
    // SAFETY: loads the system loader; its initialisers are trusted like any shared library.
    let entry = unsafe { ash::Entry::load() }.map_err(|e| GpuError::Load(e.to_string()))?;
    let app = vk::ApplicationInfo::default()
        .application_name(c"vkdirty-stream-bench-twoqueue")
        .api_version(vk::API_VERSION_1_1);
    // SAFETY: valid create info with no extensions or layers requested.
    let instance = unsafe { entry.create_instance(&vk::InstanceCreateInfo::default().application_info(&app), None) }
        .ctx("vkCreateInstance")?;
    let mut s = Setup {
        _entry: entry,
        instance,
        devices: Vec::new(),
        lanes: Vec::new(),
        layout: String::new(),
        name: String::new(),
    };
    // On error, Drop releases what was created.
    s.open(a)?;
    Ok(s)
}

impl Setup {
    fn open(&mut self, a: &Args) -> Result<(), GpuError> {
        let inst = &self.instance;
        // SAFETY: valid instance.
        let pds = unsafe { inst.enumerate_physical_devices() }.ctx("vkEnumeratePhysicalDevices")?;
        // SAFETY: handles from this instance.
        let props: Vec<_> = pds.iter().map(|&p| unsafe { inst.get_physical_device_properties(p) }).collect();
        let idx = match a.device_index {
            Some(i) if i < pds.len() => i,
            Some(i) => return Err(GpuError::Setup(format!("device index {i} out of range ({} devices)", pds.len()))),
            None => (0..pds.len())
                .min_by_key(|&i| props[i].device_type == vk::PhysicalDeviceType::CPU)
                .ok_or_else(|| GpuError::Setup("no Vulkan physical device".into()))?,
        };
        let pd = pds[idx];
        self.name = props[idx].device_name_as_c_str().unwrap_or(c"?").to_string_lossy().into_owned();
        // SAFETY: pd is valid.
        let families = unsafe { inst.get_physical_device_queue_family_properties(pd) };
        let copy = vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE | vk::QueueFlags::TRANSFER;
        let family = families
            .iter()
            .position(|f| f.queue_count > 0 && f.queue_flags.intersects(copy))
            .ok_or_else(|| GpuError::Setup("no queue family can copy".into()))?;
        let t = a.threads;
        let one_device = a.devices == Devices::Auto && families[family].queue_count as usize >= t;
        let family = family as u32;
        self.layout = if one_device {
            format!("one device, {t} queue{}", if t > 1 { "s" } else { "" })
        } else {
            "one device per thread".into()
        };
        let per_device = if one_device { t } else { 1 };
        let prio = vec![1.0f32; per_device];
        for _ in 0..(if one_device { 1 } else { t }) {
            let qci = [vk::DeviceQueueCreateInfo::default().queue_family_index(family).queue_priorities(&prio)];
            // SAFETY: valid create info for this physical device.
            let d = unsafe { inst.create_device(pd, &vk::DeviceCreateInfo::default().queue_create_infos(&qci), None) }
                .ctx("vkCreateDevice")?;
            self.devices.push(d);
        }
        // SAFETY: pd is valid.
        let mem = unsafe { inst.get_physical_device_memory_properties(pd) };
        for i in 0..t {
            let (d, q) = if one_device { (0, i as u32) } else { (i, 0) };
            let device = self.devices[d].clone();
            // SAFETY: the queue was requested at device creation.
            let queue = unsafe { device.get_device_queue(family, q) };
            let lane = Lane {
                device,
                queue,
                pool: vk::CommandPool::null(),
                cmd: vk::CommandBuffer::null(),
                fence: vk::Fence::null(),
                buffers: Vec::new(),
                memories: Vec::new(),
                mapped: Vec::new(),
                dst: vk::Buffer::null(),
                dst_mem: vk::DeviceMemory::null(),
            };
            self.lanes.push(lane);
            let lane = self.lanes.last_mut().expect("pushed");
            lane.create(family, &mem, a)?;
        }
        Ok(())
    }
}

impl Lane {
    fn create(&mut self, family: u32, mem: &vk::PhysicalDeviceMemoryProperties, a: &Args) -> Result<(), GpuError> {
        let d = self.device.clone();
        let types = &mem.memory_types[..mem.memory_type_count as usize];
        let hv = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let size = a.alloc_kib * 1024;
        for _ in 0..a.allocations {
            let bci = vk::BufferCreateInfo::default().size(size).usage(vk::BufferUsageFlags::TRANSFER_SRC);
            // SAFETY: valid create info.
            let buffer = unsafe { d.create_buffer(&bci, None) }.ctx("vkCreateBuffer")?;
            self.buffers.push(buffer);
            // SAFETY: buffer is valid.
            let req = unsafe { d.get_buffer_memory_requirements(buffer) };
            let ty = (0..types.len() as u32)
                .filter(|&i| req.memory_type_bits & (1 << i) != 0 && types[i as usize].property_flags.contains(hv))
                .min_by_key(|&i| types[i as usize].property_flags.contains(vk::MemoryPropertyFlags::DEVICE_LOCAL))
                .ok_or_else(|| GpuError::Setup("no host-visible coherent memory type".into()))?;
            let mai = vk::MemoryAllocateInfo::default().allocation_size(req.size).memory_type_index(ty);
            // SAFETY: valid allocate info.
            let memory = unsafe { d.allocate_memory(&mai, None) }.ctx("vkAllocateMemory")?;
            self.memories.push(memory);
            // SAFETY: fresh buffer and host-visible memory of a compatible type, not mapped yet.
            unsafe {
                d.bind_buffer_memory(buffer, memory, 0).ctx("vkBindBufferMemory")?;
                let p = d.map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()).ctx("vkMapMemory")?;
                self.mapped.push(p.cast());
            }
        }
        let bci = vk::BufferCreateInfo::default().size(4096).usage(vk::BufferUsageFlags::TRANSFER_DST);
        // SAFETY: valid create info.
        self.dst = unsafe { d.create_buffer(&bci, None) }.ctx("vkCreateBuffer(dst)")?;
        // SAFETY: dst is valid.
        let req = unsafe { d.get_buffer_memory_requirements(self.dst) };
        let ty = (0..types.len() as u32)
            .find(|&i| req.memory_type_bits & (1 << i) != 0)
            .ok_or_else(|| GpuError::Setup("no memory type for the destination".into()))?;
        let mai = vk::MemoryAllocateInfo::default().allocation_size(req.size).memory_type_index(ty);
        // SAFETY: valid allocate info; fresh buffer and memory of a compatible type.
        unsafe {
            self.dst_mem = d.allocate_memory(&mai, None).ctx("vkAllocateMemory(dst)")?;
            d.bind_buffer_memory(self.dst, self.dst_mem, 0).ctx("vkBindBufferMemory(dst)")?;
        }
        (self.pool, self.cmd, self.fence) = command_objects(&d, family, vk::CommandPoolCreateFlags::empty())?;
        let region = [vk::BufferCopy { src_offset: 0, dst_offset: 0, size: 4096 }];
        // Recorded once, submitted every time (each submit is waited on before the next).
        // SAFETY: a fresh command buffer; the copy lies inside both buffers.
        unsafe {
            d.begin_command_buffer(self.cmd, &vk::CommandBufferBeginInfo::default()).ctx("vkBeginCommandBuffer")?;
            d.cmd_copy_buffer(self.cmd, self.buffers[0], self.dst, &region);
            d.end_command_buffer(self.cmd).ctx("vkEndCommandBuffer")?;
        }
        Ok(())
    }

    /// One submit: `w` distinct pages written, the copy submitted, its fence waited on and reset.
    fn submit(&self, n: usize, w: usize, pages: usize) -> Result<(), GpuError> {
        let count = self.mapped.len();
        for k in 0..w {
            let i = (n * w + k).wrapping_mul(7919) % count;
            let page = (n + k * 7) % pages;
            // SAFETY: the allocation is mapped whole and `page` lies inside it.
            unsafe { self.mapped[i].add(page * 4096).write_bytes((n % 251) as u8 + 1, 4096) };
        }
        let cmds = [self.cmd];
        let submit = [vk::SubmitInfo::default().command_buffers(&cmds)];
        let d = &self.device;
        // SAFETY: a recorded command buffer not in use (the last submit was waited on), an
        // unsignalled fence, a queue only this thread uses.
        unsafe {
            d.queue_submit(self.queue, &submit, self.fence).ctx("vkQueueSubmit")?;
            d.wait_for_fences(&[self.fence], true, u64::MAX).ctx("vkWaitForFences")?;
            d.reset_fences(&[self.fence]).ctx("vkResetFences")?;
        }
        Ok(())
    }

    fn destroy(&mut self) {
        let d = &self.device;
        // SAFETY: the lane's queue is idle (every submit was waited on); each handle is null or
        // created from this device and used by nobody else now.
        unsafe {
            for (&m, p) in self.memories.iter().zip(&self.mapped) {
                if !p.is_null() {
                    d.unmap_memory(m);
                }
            }
            for b in self.buffers.drain(..) {
                d.destroy_buffer(b, None);
            }
            for m in self.memories.drain(..) {
                d.free_memory(m, None);
            }
            d.destroy_buffer(self.dst, None);
            d.free_memory(self.dst_mem, None);
            d.destroy_fence(self.fence, None);
            d.destroy_command_pool(self.pool, None);
        }
        self.mapped.clear();
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for d in &self.devices {
            // SAFETY: a valid device; waiting makes every handle below idle.
            let _ = unsafe { d.device_wait_idle() };
        }
        for l in &mut self.lanes {
            l.destroy();
        }
        // SAFETY: every child object is destroyed; devices, then the instance.
        unsafe {
            for d in self.devices.drain(..) {
                d.destroy_device(None);
            }
            self.instance.destroy_instance(None);
        }
    }
}

pub fn run(a: Args, start: Instant) -> Result<Report, String> {
    if a.threads == 0 || a.threads > 64 {
        return Err(format!("--threads must be 1..=64, got {}", a.threads));
    }
    if a.allocations == 0 || a.alloc_kib < 4 || a.submits == 0 {
        return Err("--allocations, --submits must be at least 1 and --alloc-kib at least 4".into());
    }
    let mut s = setup(&a).map_err(|e| e.to_string())?;
    let pages = (a.alloc_kib / 4) as usize;
    let w = a.writes_per_submit.clamp(1, pages * a.allocations);
    let barrier = Arc::new(Barrier::new(a.threads));
    let lanes = std::mem::take(&mut s.lanes);
    let (warmup, submits) = (a.warmup, a.submits);
    let handles: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let barrier = barrier.clone();
            std::thread::spawn(move || -> Result<(Lane, Vec<f64>, Instant, Instant), String> {
                for n in 0..warmup {
                    lane.submit(n, w, pages).map_err(|e| e.to_string())?;
                }
                barrier.wait();
                let t0 = Instant::now();
                let mut times = Vec::with_capacity(submits);
                for n in warmup..warmup + submits {
                    let t = Instant::now();
                    lane.submit(n, w, pages).map_err(|e| e.to_string())?;
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
                Ok((lane, times, t0, Instant::now()))
            })
        })
        .collect();
    let mut all = Vec::new();
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    let mut err = None;
    for h in handles {
        match h.join().map_err(|_| "a submitting thread panicked".to_string()).and_then(|r| r) {
            Ok((lane, times, t0, t1)) => {
                s.lanes.push(lane);
                all.extend(times);
                first = Some(first.map_or(t0, |f| f.min(t0)));
                last = Some(last.map_or(t1, |l| l.max(t1)));
            }
            Err(e) => err = Some(e),
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    let loop_s = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    let (layout, device) = (s.layout.clone(), s.name.clone());
    drop(s);
    Ok(Report {
        bench: "twoqueue",
        threads: a.threads,
        layout,
        submits_per_thread: a.submits,
        allocations_per_thread: a.allocations,
        alloc_kib: a.alloc_kib,
        writes_per_submit: w,
        device,
        submit_ms: stats::summarize(&all),
        loop_s,
        submits_per_s: (a.threads * a.submits) as f64 / loop_s.max(1e-9),
        wall_s: start.elapsed().as_secs_f64(),
    })
}
