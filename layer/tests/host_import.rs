//! host-import under the real Vulkan loader on lavapipe, with `VK_LAYER_KHRONOS_validation`
//! below the layer: a small ash program (this test binary, re-run as a child) allocates,
//! binds, maps and submits; the validation layer must report nothing, the GPU must read what
//! the CPU wrote into imported memory (and the CPU what the GPU wrote), and the trace must say
//! which allocations were imported and why the others were not.
// These tests drive the Vulkan API directly: every unsafe call is a plain Vulkan call on
// objects the test just created, so the blocks carry no individual SAFETY lines.
#![allow(clippy::undocumented_unsafe_blocks)]

#[path = "../../tests/common/run.rs"]
mod run;
#[path = "../../tests/common/trace.rs"]
mod trace_at;

use ash::vk;
use std::collections::BTreeSet;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use vkdirty::guard::BackendKind;
use vkdirty::trace::Event;

const CHILD_ENV: &str = "VKDIRTY_HI_CHILD";

struct Run {
    /// `name -> VkDeviceMemory` handle value, as the child reported them.
    handles: Vec<(String, u64)>,
    events: Vec<Event>,
    stderr: String,
}

/// Runs the child under our layer and the validation layer with `env`; `None` (the test is
/// skipped, with a line saying why) where the validation layer is not installed.
fn capture(name: &str, env: &[(&str, &str)]) -> Option<Run> {
    run::need_validation(&format!("host-import {name}"))?;
    let dir = run::fresh_layer();
    let trace = std::env::temp_dir().join(format!("vkdirty-hi-{name}-{}.vkd", std::process::id()));
    let _ = std::fs::remove_file(&trace);
    let layers = format!("{}:{}", run::LAYER_NAME, run::VALIDATION_LAYER);
    let mut cmd = run::self_under_layers(CHILD_ENV, &dir, &layers, &trace);
    cmd.env_remove("VKDIRTY_BACKEND").env_remove("VKDIRTY_HOST_IMPORT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run::output_within(cmd, std::time::Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(
        stdout.contains("HI done validation messages 0"),
        "child did not finish cleanly:\n{stdout}\nstderr:\n{stderr}"
    );
    let handles = stdout
        .lines()
        .filter_map(|l| l.find("HI handle ").map(|i| &l[i + 10..]))
        .map(|rest| {
            let (n, h) = rest.split_once(' ').unwrap();
            (n.to_string(), h.trim().parse().unwrap())
        })
        .collect();
    let events = trace_at::take_whole(&trace, &stderr);
    Some(Run { handles, events, stderr })
}

impl Run {
    fn alloc(&self, name: &str) -> u64 {
        let h = self.handles.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no handle {name}")).1;
        self.events
            .iter()
            .find_map(|e| match e {
                Event::Allocation(a) if a.handle == h => Some(a.id),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Allocation record for {name}"))
    }

    /// The backend and reason of the (first) mapping of `name`.
    fn map(&self, name: &str) -> (BackendKind, String) {
        let id = self.alloc(name);
        self.events
            .iter()
            .find_map(|e| match e {
                Event::Map(m) if m.alloc == id => Some((m.backend, m.reason.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Map record for {name}\nstderr:\n{}", self.stderr))
    }

    /// Pages covered by the Dirty records of `name` for `submit`.
    fn dirty_pages(&self, name: &str, submit: u64) -> BTreeSet<u64> {
        trace_at::dirty_pages(&self.events, self.alloc(name), submit, vkdirty::guard::page_size() as u64)
    }

    /// The bytes the trace holds for `name` at `[offset, offset + len)` for `submit`.
    fn dirty_bytes(&self, name: &str, submit: u64, offset: u64, len: u64) -> Option<Vec<u8>> {
        trace_at::dirty_bytes(&self.events, self.alloc(name), submit, offset, len)
    }
}

fn assert_imported(r: &Run, name: &str) {
    let (b, reason) = r.map(name);
    assert_eq!(b, BackendKind::OwnedWp, "{name}: {reason}");
    assert!(!reason.contains("not imported"), "{name}: {reason}");
}

fn assert_not_imported(r: &Run, name: &str, why: &str) {
    let (b, reason) = r.map(name);
    assert_ne!(b, BackendKind::OwnedWp, "{name}: {reason}");
    assert!(reason.starts_with(&format!("host-import: memory not imported ({why}")), "{name}: {reason}");
}

#[test]
fn host_import_backend_imports_and_explains_the_rest() {
    let Some(r) = capture("fixed", &[("VKDIRTY_BACKEND", "host-import")]) else { return };
    assert!(r.stderr.contains("host-import on llvmpipe"), "{}", r.stderr);
    assert!(r.stderr.contains("allocations of memory type 0 are imported"), "{}", r.stderr);
    for name in ["src", "image-mem", "after-bind", "dedicated-buffer"] {
        assert_imported(&r, name);
    }
    let (_, reason) = r.map("src");
    assert_eq!(reason, "host-import (host-import)");
    assert_not_imported(&r, "dedicated", "dedicated image allocation");
    assert_not_imported(&r, "linear", "non-importable image pending (preinitialized layout)");
    assert_not_imported(
        &r,
        "own-external",
        "non-importable buffer pending (the application chose its external handle types)",
    );

    // Exact tracking of the CPU's writes before submit 1: pages 1 and 5 of `src`.
    assert_eq!(r.dirty_pages("src", 1), BTreeSet::from([1, 5]));
    let page = vkdirty::guard::page_size() as u64;
    assert_eq!(r.dirty_bytes("src", 1, page + 7, 3), Some(vec![0x11, 0x12, 0x13]));
    assert_eq!(r.dirty_bytes("src", 1, 5 * page, page), Some(vec![0x55; page as usize]));
    // The linear image's memory (tracked by auto's order) is captured too.
    assert_eq!(r.dirty_bytes("linear", 2, 0, 4), Some(vec![0x77; 4]));
}

#[test]
fn auto_imports_too() {
    let Some(r) = capture("auto", &[]) else { return };
    assert_imported(&r, "src");
    assert_eq!(r.map("src").1, "host-import (auto)");
    assert_not_imported(&r, "dedicated", "dedicated image allocation");
    assert_eq!(r.dirty_pages("src", 1), BTreeSet::from([1, 5]));
}

#[test]
fn setting_turns_it_off() {
    let Some(r) = capture("off", &[("VKDIRTY_HOST_IMPORT", "0")]) else { return };
    assert!(!r.stderr.contains("host-import on"), "{}", r.stderr);
    for name in ["src", "dedicated", "linear", "after-bind"] {
        let (b, reason) = r.map(name);
        assert_ne!(b, BackendKind::OwnedWp, "{name}: {reason}");
        assert!(!reason.contains("host-import"), "{name}: {reason}");
    }
    assert_eq!(r.dirty_pages("src", 1), BTreeSet::from([1, 5]));
}

#[test]
fn a_non_importable_image_bound_into_imported_memory_is_reported() {
    let Some(r) = capture("late", &[("VK_INSTANCE_LAYERS", "VK_LAYER_VKDIRTY_capture"), ("VKDIRTY_HI_LATE", "1")])
    else {
        return;
    };
    assert!(
        r.stderr.contains(
            "an image that cannot live in imported memory (preinitialized layout) is bound to memory imported"
        ),
        "{}",
        r.stderr
    );
    assert_imported(&r, "src");
}

#[test]
fn vulkan_1_0_instance_with_the_khr_extensions_gets_host_import() {
    let Some(r) = capture("api10-khr", &[("VKDIRTY_BACKEND", "host-import"), ("VKDIRTY_HI_API10", "khr")]) else {
        return;
    };
    assert!(r.stderr.contains("host-import on "), "{}", r.stderr);
    assert_imported(&r, "src");
    assert_eq!(r.dirty_pages("src", 1), BTreeSet::from([1, 5]));
}

#[test]
fn vulkan_1_0_instance_without_them_gets_them_enabled_below_the_layer() {
    // The layer adds the two instance extensions for itself (vkcube is such an application); the
    // validation layer below sees them enabled and the imports made with them, and stays silent.
    let Some(r) = capture("api10", &[("VKDIRTY_BACKEND", "host-import"), ("VKDIRTY_HI_API10", "plain")]) else {
        return;
    };
    assert!(r.stderr.contains("host-import on "), "{}", r.stderr);
    assert!(!r.stderr.contains("could not enable"), "{}", r.stderr);
    assert_imported(&r, "src");
    assert_eq!(r.dirty_pages("src", 1), BTreeSet::from([1, 5]));
}

// ---------------------------------------------------------------------------------------------
// The child: a small Vulkan program.

static MESSAGES: AtomicUsize = AtomicUsize::new(0);

unsafe extern "system" fn on_message(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    _user: *mut c_void,
) -> vk::Bool32 {
    // SAFETY: the loader passes valid callback data for the call.
    let (id, msg) = unsafe {
        let d = &*data;
        let s = |c: Option<&std::ffi::CStr>| c.map(|m| m.to_string_lossy().into_owned()).unwrap_or_default();
        (s(d.message_id_name_as_c_str()), s(d.message_as_c_str()))
    };
    // The loader's own notes (the layers the environment adds) are not validation findings.
    if types == vk::DebugUtilsMessageTypeFlagsEXT::GENERAL && id.contains("Loader Message") {
        return vk::FALSE;
    }
    if severity
        .intersects(vk::DebugUtilsMessageSeverityFlagsEXT::WARNING | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR)
    {
        MESSAGES.fetch_add(1, Ordering::SeqCst);
        println!("HI validation: {severity:?} {msg}");
    }
    vk::FALSE
}

#[test]
#[ignore = "child process of the host-import tests"]
fn child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // SAFETY: a small, valid Vulkan program.
    unsafe { run_child() }
}

struct Ctx {
    device: ash::Device,
    mem_props: vk::PhysicalDeviceMemoryProperties,
}

impl Ctx {
    fn host_type(&self, bits: u32) -> u32 {
        let want = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        (0..self.mem_props.memory_type_count)
            .find(|&i| bits & (1 << i) != 0 && self.mem_props.memory_types[i as usize].property_flags.contains(want))
            .expect("a host-visible coherent memory type")
    }

    unsafe fn alloc(
        &self,
        name: &str,
        req: vk::MemoryRequirements,
        next: Option<&mut vk::MemoryDedicatedAllocateInfo<'_>>,
    ) -> vk::DeviceMemory {
        let mut info = vk::MemoryAllocateInfo::default()
            .allocation_size(req.size)
            .memory_type_index(self.host_type(req.memory_type_bits));
        if let Some(n) = next {
            info = info.push_next(n);
        }
        let m = unsafe { self.device.allocate_memory(&info, None) }.expect("vkAllocateMemory");
        println!("HI handle {name} {}", vk::Handle::as_raw(m));
        m
    }

    unsafe fn buffer(&self, size: u64, external: Option<&mut vk::ExternalMemoryBufferCreateInfo<'_>>) -> vk::Buffer {
        let mut ci = vk::BufferCreateInfo::default()
            .size(size)
            .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST);
        if let Some(e) = external {
            ci = ci.push_next(e);
        }
        unsafe { self.device.create_buffer(&ci, None) }.expect("vkCreateBuffer")
    }
}

unsafe fn run_child() {
    let page = vkdirty::guard::page_size() as u64;
    let api10 = std::env::var("VKDIRTY_HI_API10").ok();
    let entry = unsafe { ash::Entry::load() }.expect("load libvulkan");
    let api = if api10.is_some() { vk::API_VERSION_1_0 } else { vk::API_VERSION_1_3 };
    let app = vk::ApplicationInfo::default().application_name(c"vkdirty-hi").api_version(api);
    let mut exts: Vec<*const i8> = vec![ash::ext::debug_utils::NAME.as_ptr()];
    if api10.as_deref() == Some("khr") {
        exts.push(ash::khr::get_physical_device_properties2::NAME.as_ptr());
        exts.push(ash::khr::external_memory_capabilities::NAME.as_ptr());
    }
    let mut messenger = vk::DebugUtilsMessengerCreateInfoEXT::default()
        .message_severity(vk::DebugUtilsMessageSeverityFlagsEXT::WARNING | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR)
        .message_type(
            vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
                | vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
        )
        .pfn_user_callback(Some(on_message));
    let ici = vk::InstanceCreateInfo::default()
        .application_info(&app)
        .enabled_extension_names(&exts)
        .push_next(&mut messenger);
    let instance = unsafe { entry.create_instance(&ici, None) }.expect("vkCreateInstance");
    let du = ash::ext::debug_utils::Instance::new(&entry, &instance);
    let m = unsafe { du.create_debug_utils_messenger(&messenger, None) }.expect("messenger");
    let pd = unsafe { instance.enumerate_physical_devices() }.expect("devices")[0];
    let mem_props = unsafe { instance.get_physical_device_memory_properties(pd) };
    let prio = [1.0f32];
    let qci = [vk::DeviceQueueCreateInfo::default().queue_family_index(0).queue_priorities(&prio)];
    let device = unsafe { instance.create_device(pd, &vk::DeviceCreateInfo::default().queue_create_infos(&qci), None) }
        .expect("vkCreateDevice");
    let ctx = Ctx { device: device.clone(), mem_props };
    let queue = unsafe { device.get_device_queue(0, 0) };
    let fence = unsafe { device.create_fence(&vk::FenceCreateInfo::default(), None) }.unwrap();
    let pool = unsafe {
        device.create_command_pool(
            &vk::CommandPoolCreateInfo::default()
                .queue_family_index(0)
                .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER),
            None,
        )
    }
    .unwrap();
    let cb = unsafe {
        device.allocate_command_buffers(
            &vk::CommandBufferAllocateInfo::default()
                .command_pool(pool)
                .level(vk::CommandBufferLevel::PRIMARY)
                .command_buffer_count(1),
        )
    }
    .unwrap()[0];
    let run = |record: &dyn Fn(vk::CommandBuffer)| unsafe {
        device.reset_command_buffer(cb, vk::CommandBufferResetFlags::empty()).unwrap();
        device.begin_command_buffer(cb, &vk::CommandBufferBeginInfo::default()).unwrap();
        record(cb);
        let to_host = [vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ)];
        device.cmd_pipeline_barrier(
            cb,
            vk::PipelineStageFlags::TRANSFER,
            vk::PipelineStageFlags::HOST,
            vk::DependencyFlags::empty(),
            &to_host,
            &[],
            &[],
        );
        device.end_command_buffer(cb).unwrap();
        let cbs = [cb];
        device.queue_submit(queue, &[vk::SubmitInfo::default().command_buffers(&cbs)], fence).unwrap();
        device.wait_for_fences(&[fence], true, u64::MAX).unwrap();
        device.reset_fences(&[fence]).unwrap();
    };

    // `src`: a buffer in memory the layer imports; the CPU writes two pages.
    let size = 16 * page;
    let src = unsafe { ctx.buffer(size, None) };
    let req = unsafe { device.get_buffer_memory_requirements(src) };
    let src_mem = unsafe { ctx.alloc("src", req, None) };
    unsafe { device.bind_buffer_memory(src, src_mem, 0) }.unwrap();
    let p = unsafe { device.map_memory(src_mem, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) }.unwrap() as *mut u8;
    unsafe {
        std::ptr::copy_nonoverlapping([0x11u8, 0x12, 0x13].as_ptr(), p.add(page as usize + 7), 3);
        std::ptr::write_bytes(p.add(5 * page as usize), 0x55, page as usize);
    }
    if std::env::var_os("VKDIRTY_HI_LATE").is_some() {
        // Invalid for the driver (no validation layer in this run): an image that cannot be
        // external, created after `src` was imported, bound into it.
        let lci = vk::ImageCreateInfo::default()
            .image_type(vk::ImageType::TYPE_2D)
            .format(vk::Format::R8G8B8A8_UNORM)
            .extent(vk::Extent3D { width: 16, height: 16, depth: 1 })
            .mip_levels(1)
            .array_layers(1)
            .samples(vk::SampleCountFlags::TYPE_1)
            .tiling(vk::ImageTiling::LINEAR)
            .usage(vk::ImageUsageFlags::TRANSFER_SRC)
            .initial_layout(vk::ImageLayout::PREINITIALIZED);
        unsafe {
            let late = device.create_image(&lci, None).unwrap();
            let _ = device.get_image_memory_requirements(late);
            device.bind_image_memory(late, src_mem, 0).unwrap();
            device.destroy_image(late, None);
        }
    }
    // `dst`: another buffer; the GPU copies src → dst → src and fills a page of src.
    let dst = unsafe { ctx.buffer(size, None) };
    let dreq = unsafe { device.get_buffer_memory_requirements(dst) };
    let dst_mem = unsafe { ctx.alloc("dst", dreq, None) };
    unsafe { device.bind_buffer_memory(dst, dst_mem, 0) }.unwrap();
    run(&|cb| unsafe {
        device.cmd_copy_buffer(cb, src, dst, &[vk::BufferCopy { src_offset: page, dst_offset: 0, size: page }]);
        device.cmd_copy_buffer(cb, src, dst, &[vk::BufferCopy { src_offset: 5 * page, dst_offset: page, size: page }]);
        let b = [vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(vk::AccessFlags::TRANSFER_READ | vk::AccessFlags::TRANSFER_WRITE)];
        device.cmd_pipeline_barrier(
            cb,
            vk::PipelineStageFlags::TRANSFER,
            vk::PipelineStageFlags::TRANSFER,
            vk::DependencyFlags::empty(),
            &b,
            &[],
            &[],
        );
        device.cmd_copy_buffer(
            cb,
            dst,
            src,
            &[vk::BufferCopy { src_offset: 0, dst_offset: 12 * page, size: 2 * page }],
        );
        device.cmd_fill_buffer(cb, src, 10 * page, page, 0xabab_abab);
    }); // submit 1
        // The GPU read what the CPU wrote, and the CPU reads what the GPU wrote, through our memory.
    unsafe {
        assert_eq!(
            std::slice::from_raw_parts(p.add(12 * page as usize + 7), 3),
            &[0x11, 0x12, 0x13],
            "GPU copy of CPU bytes"
        );
        assert!(std::slice::from_raw_parts(p.add(13 * page as usize), page as usize).iter().all(|&b| b == 0x55));
        assert!(
            std::slice::from_raw_parts(p.add(10 * page as usize), page as usize).iter().all(|&b| b == 0xab),
            "GPU fill"
        );
    }

    if api10.is_none() {
        // What vkGetDeviceBufferMemoryRequirements says matches the buffer the layer creates.
        let ci = vk::BufferCreateInfo::default()
            .size(size)
            .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST);
        let mut r2 = vk::MemoryRequirements2::default();
        unsafe {
            device.get_device_buffer_memory_requirements(
                &vk::DeviceBufferMemoryRequirements::default().create_info(&ci),
                &mut r2,
            )
        };
        assert_eq!(
            (r2.memory_requirements.size, r2.memory_requirements.alignment, r2.memory_requirements.memory_type_bits),
            (req.size, req.alignment, req.memory_type_bits)
        );

        // An optimal image, importable on this driver, in plain memory.
        let ici = vk::ImageCreateInfo::default()
            .image_type(vk::ImageType::TYPE_2D)
            .format(vk::Format::R8G8B8A8_UNORM)
            .extent(vk::Extent3D { width: 64, height: 64, depth: 1 })
            .mip_levels(1)
            .array_layers(1)
            .samples(vk::SampleCountFlags::TYPE_1)
            .tiling(vk::ImageTiling::OPTIMAL)
            .usage(vk::ImageUsageFlags::TRANSFER_DST | vk::ImageUsageFlags::SAMPLED)
            .initial_layout(vk::ImageLayout::UNDEFINED);
        let img = unsafe { device.create_image(&ici, None) }.unwrap();
        let ireq = unsafe { device.get_image_memory_requirements(img) };
        let mut r2 = vk::MemoryRequirements2::default();
        unsafe {
            device.get_device_image_memory_requirements(
                &vk::DeviceImageMemoryRequirements::default().create_info(&ici),
                &mut r2,
            )
        };
        assert_eq!(
            (r2.memory_requirements.size, r2.memory_requirements.memory_type_bits),
            (ireq.size, ireq.memory_type_bits)
        );
        let img_mem = unsafe { ctx.alloc("image-mem", ireq, None) };
        unsafe { device.bind_image_memory(img, img_mem, 0) }.unwrap();
        // A dedicated allocation: a host-pointer import cannot be dedicated.
        let img2 = unsafe { device.create_image(&ici, None) }.unwrap();
        let ireq2 = unsafe { device.get_image_memory_requirements(img2) };
        let mut ded = vk::MemoryDedicatedAllocateInfo::default().image(img2);
        let ded_mem = unsafe { ctx.alloc("dedicated", ireq2, Some(&mut ded)) };
        unsafe { device.bind_image_memory(img2, ded_mem, 0) }.unwrap();
        // A linear, preinitialized image (cannot be external): memory allocated for it while it
        // waits is not imported; the CPU writes its texels.
        let lci = ici
            .tiling(vk::ImageTiling::LINEAR)
            .usage(vk::ImageUsageFlags::TRANSFER_SRC)
            .initial_layout(vk::ImageLayout::PREINITIALIZED);
        let lin = unsafe { device.create_image(&lci, None) }.unwrap();
        let lreq = unsafe { device.get_image_memory_requirements(lin) };
        let lin_mem = unsafe { ctx.alloc("linear", lreq, None) };
        unsafe { device.bind_image_memory(lin, lin_mem, 0) }.unwrap();
        // A buffer with the application's own external handle types, likewise.
        let mut own =
            vk::ExternalMemoryBufferCreateInfo::default().handle_types(vk::ExternalMemoryHandleTypeFlags::OPAQUE_FD);
        let ob = unsafe { ctx.buffer(page, Some(&mut own)) };
        let oreq = unsafe { device.get_buffer_memory_requirements(ob) };
        let own_mem = unsafe { ctx.alloc("own-external", oreq, None) };
        unsafe {
            let infos = [vk::BindBufferMemoryInfo::default().buffer(ob).memory(own_mem)];
            device.bind_buffer_memory2(&infos).unwrap();
        }
        // A dedicated buffer allocation: imported without the dedicated hint (the driver does
        // not require dedicated memory for buffers).
        let db = unsafe { ctx.buffer(4 * page, None) };
        let dbreq = unsafe { device.get_buffer_memory_requirements(db) };
        let mut dbded = vk::MemoryDedicatedAllocateInfo::default().buffer(db);
        let db_mem = unsafe { ctx.alloc("dedicated-buffer", dbreq, Some(&mut dbded)) };
        unsafe { device.bind_buffer_memory(db, db_mem, 0) }.unwrap();
        // Once bound, nothing waits: the next allocation is imported again.
        let after = unsafe { ctx.buffer(page, None) };
        let areq = unsafe { device.get_buffer_memory_requirements(after) };
        let after_mem = unsafe { ctx.alloc("after-bind", areq, None) };
        unsafe { device.bind_buffer_memory(after, after_mem, 0) }.unwrap();

        for mem in [img_mem, ded_mem, own_mem, after_mem, db_mem] {
            unsafe {
                device.map_memory(mem, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()).unwrap();
                device.unmap_memory(mem);
            }
        }
        let lp =
            unsafe { device.map_memory(lin_mem, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) }.unwrap() as *mut u8;
        unsafe { std::ptr::write_bytes(lp, 0x77, 4) };
        run(&|_| {}); // submit 2
        unsafe {
            device.unmap_memory(lin_mem);
            device.destroy_image(img, None);
            device.destroy_image(img2, None);
            device.destroy_image(lin, None);
            device.destroy_buffer(ob, None);
            device.destroy_buffer(after, None);
            device.destroy_buffer(db, None);
            for mem in [img_mem, ded_mem, lin_mem, own_mem, after_mem, db_mem] {
                device.free_memory(mem, None);
            }
        }
    }

    unsafe {
        device.unmap_memory(src_mem);
        device.destroy_buffer(src, None);
        device.destroy_buffer(dst, None);
        device.free_memory(src_mem, None);
        device.free_memory(dst_mem, None);
        device.destroy_command_pool(pool, None);
        device.destroy_fence(fence, None);
        device.destroy_device(None);
        du.destroy_debug_utils_messenger(m, None);
        instance.destroy_instance(None);
    }
    println!("HI done validation messages {}", MESSAGES.load(Ordering::SeqCst));
}
