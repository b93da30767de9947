//! Capture through a faked device: guard backends and the trace writer for real.

use super::*;
use crate::next::DeviceNext;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use vkdirty::trace::TraceReader;

fn leak_settings(pairs: &[(&str, &str)], trace: &Path) -> &'static Settings {
    let mut m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    m.insert("TRACE_FILE".into(), trace.display().to_string());
    let (s, warnings) = Settings::load(&move |n: &str| m.get(n).cloned());
    assert!(warnings.is_empty(), "{warnings:?}");
    Box::leak(Box::new(s))
}

unsafe extern "system" fn no_gdpa(_: vk::Device, _: *const std::ffi::c_char) -> vk::PFN_vkVoidFunction {
    None
}

fn fake_device(raw: u64) -> DeviceState {
    DeviceState {
        handle: vk::Device::from_raw(raw),
        next_gdpa: no_gdpa,
        next: DeviceNext::load(|_| None),
        memory_types: vec![(vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT, 0)],
        host_import: None,
        binds_other_memory: false,
    }
}

/// Anonymous memory standing in for a driver's mapping.
#[path = "../../../tests/common/anon.rs"]
mod anon;
use anon::Anon as FakeMapping;

fn fake_mapping(pages: usize) -> FakeMapping {
    FakeMapping::expect(pages * vkdirty::guard::page_size())
}

fn temp_trace(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vkdirty-capture-unit-{name}-{}.vkd", std::process::id()))
}

fn read_events(path: &Path) -> Vec<Event> {
    let (events, trunc) = TraceReader::open(path).unwrap().events().unwrap();
    assert!(trunc.is_none());
    let _ = std::fs::remove_file(path);
    events
}

fn dirty_pages(events: &[Event], submit: u64) -> BTreeSet<u64> {
    let page = vkdirty::guard::page_size() as u64;
    let mut pages = BTreeSet::new();
    for e in events {
        if let Event::Dirty(d) = e {
            if d.submit == submit {
                for &(o, l) in &d.runs {
                    pages.extend(o / page..(o + l).div_ceil(page));
                }
            }
        }
    }
    pages
}

fn submit(cap: &Capture, dev: &DeviceState) {
    cap.submitting(
        dev,
        vk::Queue::from_raw(0x99),
        SubmitInfo { kind: 0, command_buffers: 1, waits: 0, signals: 0, fence: 0 },
    );
}

/// shadow-wp through the capture: what the GPU wrote reaches the application's view at a sync
/// point per VKDIRTY_SHADOW_REFRESH (once per completion), at vkInvalidateMappedMemoryRanges
/// unless `never`; a host signal copies the application's writes to the real memory.
#[test]
fn shadow_wp_refreshes_at_sync_points_and_collects_at_host_signals() {
    let page = vkdirty::guard::page_size();
    for (i, policy) in ["never", "cached", "always"].into_iter().enumerate() {
        let trace = temp_trace(&format!("sync-{policy}"));
        let cap = Capture::new(leak_settings(&[("BACKEND", "shadow-wp"), ("SHADOW_REFRESH", policy)], &trace));
        // Memory type 0 of the fake device is HOST_COHERENT, not HOST_CACHED.
        let dev = fake_device(0x3000 + i as u64);
        cap.device_created(&vk::PhysicalDeviceProperties::default());
        let mem = vk::DeviceMemory::from_raw(0x30);
        let fake = fake_mapping(4);
        cap.allocated(&dev, &vk::MemoryAllocateInfo::default().allocation_size(fake.len() as u64), mem);
        // A buffer the device may write (a copy destination) lives in it.
        let buffer = vkdirty::session::Resource::Buffer(0x31);
        cap.resource_created(&dev, buffer, false);
        cap.bound(&dev, buffer, mem);
        // SAFETY: `fake` stays mapped until after `freeing`.
        let app =
            unsafe { cap.mapped(&dev, mem, 0, vk::WHOLE_SIZE, fake.ptr().cast(), false, || Import::NotApplicable) }
                as *mut u8;
        assert_ne!(app, fake.ptr(), "{policy}: shadow-wp hands out a shadow");
        // SAFETY: in bounds of the fake mapping and of the shadow.
        let gpu = |off: usize, v: u8| unsafe { *fake.ptr().add(off) = v };
        // SAFETY: as above.
        let real = |off: usize| unsafe { *fake.ptr().add(off) };
        // SAFETY: as above.
        let seen = |off: usize| unsafe { std::ptr::read_volatile(app.add(off)) };
        cap.submitting(
            &dev,
            vk::Queue::from_raw(0x99),
            SubmitInfo { kind: 0, command_buffers: 1, waits: 0, signals: 0, fence: 7 },
        );
        gpu(page + 1, 0x11);
        cap.synchronized(&dev, SyncPoint::Fences { fences: &[7], all: true });
        assert_eq!(seen(page + 1), if policy == "always" { 0x11 } else { 0 }, "{policy}: fence wait");
        // Polling the same fence again shows nothing new: no refresh.
        gpu(page + 2, 0x22);
        cap.synchronized(&dev, SyncPoint::Fences { fences: &[7], all: true });
        assert_eq!(seen(page + 2), 0, "{policy}: second poll of a signalled fence");
        cap.synchronized(&dev, SyncPoint::Semaphores { values: &[(5, 1)], all: true });
        assert_eq!(seen(page + 2), if policy == "always" { 0x22 } else { 0 }, "{policy}: timeline value");
        let whole = [vk::MappedMemoryRange::default().memory(mem).offset(0).size(vk::WHOLE_SIZE)];
        cap.invalidated(&dev, &whole);
        let want = if policy == "never" { 0 } else { 0x22 };
        assert_eq!((seen(page + 1) == 0x11, seen(page + 2)), (policy != "never", want), "{policy}: invalidate");
        // The application writes; a host signal puts it into the real memory before the GPU
        // can run work that waited for the signal.
        // SAFETY: in bounds of the shadow.
        unsafe { *app.add(2 * page + 3) = 0x33 };
        cap.host_signalling(&dev);
        assert_eq!(real(2 * page + 3), 0x33, "{policy}: host signal");
        cap.unmapping(&dev, mem);
        cap.freeing(&dev, mem);
        cap.last_instance_destroyed();
        drop(fake);
        let ev = read_events(&trace);
        assert_eq!(dirty_pages(&ev, 2), BTreeSet::from([2]), "{policy}: recorded for the next submit");
    }
}

/// Map every frame under shadow-wp (persistent shadows by default): the same range mapped again
/// gets the same shadow back, kept since the unmap. Memory only read-only resources are bound to
/// is neither refreshed at sync points nor filled again at the map (the device cannot have
/// written it); once a resource the device may write is bound, the map brings in what the device
/// wrote. Every write of the application is recorded at its submit.
#[test]
fn shadow_wp_keeps_shadows_across_unmap_and_reads_the_real_memory_only_where_the_device_may_write() {
    let page = vkdirty::guard::page_size();
    let trace = temp_trace("kept");
    let cap = Capture::new(leak_settings(&[("BACKEND", "shadow-wp"), ("SHADOW_REFRESH", "always")], &trace));
    let dev = fake_device(0x3100);
    cap.device_created(&vk::PhysicalDeviceProperties::default());
    let mem = vk::DeviceMemory::from_raw(0x31);
    let fake = fake_mapping(4);
    cap.allocated(&dev, &vk::MemoryAllocateInfo::default().allocation_size(fake.len() as u64), mem);
    let src = vkdirty::session::Resource::Buffer(0x41);
    cap.resource_created(&dev, src, true);
    cap.bound(&dev, src, mem);
    // SAFETY: `fake` stays mapped until after `freeing`.
    let map = || unsafe { cap.mapped(&dev, mem, 0, vk::WHOLE_SIZE, fake.ptr().cast(), false, || Import::NotApplicable) }
        as *mut u8;
    // SAFETY: in bounds of the fake mapping.
    let behind = |off: usize, v: u8| unsafe { *fake.ptr().add(off) = v };
    let app = map();
    // SAFETY: in bounds of the shadow while mapped.
    let write = |off: usize, v: u8| unsafe { std::ptr::write_volatile(app.add(off), v) };
    // SAFETY: as above.
    let seen = |off: usize| unsafe { std::ptr::read_volatile(app.add(off)) };
    write(7, 1);
    cap.unmapping(&dev, mem);
    submit(&cap, &dev); // 1
                        // Bytes changed behind the layer's back (no device can, here) show that nothing reads them.
    behind(page, 0x55);
    assert_eq!(map(), app, "the kept shadow comes back");
    assert_eq!(seen(page), 0, "not filled again: nothing could have written the memory");
    cap.synchronized(&dev, SyncPoint::DeviceIdle);
    assert_eq!(seen(page), 0, "not refreshed at a sync point either");
    write(2 * page, 2);
    cap.unmapping(&dev, mem);
    submit(&cap, &dev); // 2
                        // A copy destination bound to it: the device may write it from now on.
    let dst = vkdirty::session::Resource::Buffer(0x42);
    cap.resource_created(&dev, dst, false);
    cap.bound(&dev, dst, mem);
    behind(3 * page, 0x66);
    assert_eq!(map(), app);
    assert_eq!((seen(page), seen(3 * page), seen(7), seen(2 * page)), (0x55, 0x66, 1, 2), "filled at the map");
    write(3 * page + 1, 3);
    submit(&cap, &dev); // 3
    cap.unmapping(&dev, mem);
    cap.freeing(&dev, mem);
    cap.last_instance_destroyed();
    drop(fake);
    let ev = read_events(&trace);
    assert_eq!(dirty_pages(&ev, 1), BTreeSet::from([0]));
    assert_eq!(dirty_pages(&ev, 2), BTreeSet::from([2]));
    assert_eq!(dirty_pages(&ev, 3), BTreeSet::from([3]));
    let kept =
        ev.iter().filter(|e| matches!(e, Event::Map(m) if m.reason.contains("kept since the last unmap"))).count();
    assert_eq!(kept, 2, "both maps after the first resume the kept region");
}

/// A shadow-wp mapping of memory the device cannot write: its trusted predictions take no
/// snapshot. A copy destination bound to it while mapped must make the guard take snapshots again
/// before the device can write it: the GPU's bytes on a trusted page the application left alone
/// are then refreshed into the shadow and stay in the memory at the next submit. Without the
/// layer telling the guard, the refresh takes the page for written and the submit copies the
/// shadow's stale page over the GPU's bytes.
#[test]
fn shadow_wp_takes_snapshots_again_once_the_device_may_write() {
    let page = vkdirty::guard::page_size();
    let trace = temp_trace("rebind");
    let settings = [("BACKEND", "shadow-wp"), ("SHADOW_REFRESH", "always"), ("PREDICT", "1")];
    let cap = Capture::new(leak_settings(&settings, &trace));
    let dev = fake_device(0x3200);
    cap.device_created(&vk::PhysicalDeviceProperties::default());
    let mem = vk::DeviceMemory::from_raw(0x32);
    let fake = fake_mapping(8);
    cap.allocated(&dev, &vk::MemoryAllocateInfo::default().allocation_size(fake.len() as u64), mem);
    let src = vkdirty::session::Resource::Buffer(0x51);
    cap.resource_created(&dev, src, true);
    cap.bound(&dev, src, mem);
    // SAFETY: `fake` stays mapped until after `freeing`.
    let app = unsafe { cap.mapped(&dev, mem, 0, vk::WHOLE_SIZE, fake.ptr().cast(), false, || Import::NotApplicable) }
        as *mut u8;
    // SAFETY: in bounds of the shadow while mapped.
    let write = |off: usize, v: u8| unsafe { std::ptr::write_volatile(app.add(off), v) };
    // SAFETY: as above.
    let seen = |off: usize| unsafe { std::ptr::read_volatile(app.add(off)) };
    // SAFETY: in bounds of the fake mapping (the driver's memory).
    let real = |off: usize| unsafe { std::ptr::read_volatile(fake.ptr().add(off)) };
    // Pages 2 and 3 at every submit: predicted, then trusted (without snapshot: nothing bound
    // lets the device write).
    for i in 1..=10u8 {
        write(2 * page + i as usize, i);
        write(3 * page + i as usize, i);
        submit(&cap, &dev);
    }
    let dst = vkdirty::session::Resource::Buffer(0x52);
    cap.resource_created(&dev, dst, false);
    cap.bound(&dev, dst, mem);
    for i in 11..=14u8 {
        write(2 * page + i as usize, i);
        write(3 * page + i as usize, i);
        submit(&cap, &dev);
    }
    // The GPU writes page 3; the application writes only page 2.
    // SAFETY: in bounds of the fake mapping.
    unsafe { std::ptr::write_volatile(fake.ptr().add(3 * page + 100), 0x77) };
    write(2 * page + 100, 0x99);
    cap.synchronized(&dev, SyncPoint::DeviceIdle);
    assert_eq!(seen(3 * page + 100), 0x77, "the GPU's byte is refreshed into the shadow");
    submit(&cap, &dev);
    assert_eq!(real(3 * page + 100), 0x77, "the GPU's byte stays in the memory");
    assert_eq!(real(2 * page + 100), 0x99, "the application's byte is copied");
    cap.unmapping(&dev, mem);
    cap.freeing(&dev, mem);
    cap.last_instance_destroyed();
    drop(fake);
    let ev = read_events(&trace);
    let trusted: usize = ev.iter().filter(|e| matches!(e, Event::Trusted { .. })).count();
    assert!(trusted >= 5, "only {trusted} trusted records: the test needs trusted predictions");
}

#[test]
fn frame_window_records_only_inside_and_keeps_earlier_writes() {
    let trace = temp_trace("window");
    let cap = Capture::new(leak_settings(&[("BACKEND", "async-wp"), ("FRAMES", "2-3")], &trace));
    let dev = fake_device(0x1000);
    let page = vkdirty::guard::page_size();
    cap.device_created(&vk::PhysicalDeviceProperties::default());
    let mem = vk::DeviceMemory::from_raw(0x10);
    let fake = fake_mapping(8);
    cap.allocated(&dev, &vk::MemoryAllocateInfo::default().allocation_size(fake.len() as u64), mem);
    // SAFETY: `fake` stays mapped until after `unmapping`.
    let p = unsafe { cap.mapped(&dev, mem, 0, vk::WHOLE_SIZE, fake.ptr().cast(), false, || Import::NotApplicable) }
        as *mut u8;
    assert_eq!(p, fake.ptr(), "async-wp hands back the real pointer");
    // SAFETY: the pages written are inside the fake mapping.
    let write = |pg: usize| unsafe { *p.add(pg * page + 7) = pg as u8 + 1 };
    write(0);
    submit(&cap, &dev); // 1, frame 1: outside
    cap.presenting();
    write(1);
    submit(&cap, &dev); // 2, frame 2: inside
    cap.presenting();
    write(2);
    submit(&cap, &dev); // 3, frame 3: inside
    cap.presenting();
    write(3);
    submit(&cap, &dev); // 4, frame 4: outside, nothing later
    write(4);
    cap.unmapping(&dev, mem);
    cap.freeing(&dev, mem);
    cap.last_instance_destroyed();
    drop(fake);

    let ev = read_events(&trace);
    assert!(dirty_pages(&ev, 1).is_empty());
    // Page 0, written in frame 1, is kept for the first captured submit.
    assert_eq!(dirty_pages(&ev, 2), BTreeSet::from([0, 1]));
    assert_eq!(dirty_pages(&ev, 3), BTreeSet::from([2]));
    assert!(dirty_pages(&ev, 4).is_empty());
    assert!(dirty_pages(&ev, 5).is_empty(), "nothing recorded after the last window");
    let marks: Vec<&Event> =
        ev.iter().filter(|e| matches!(e, Event::CaptureStart { .. } | Event::CaptureStop { .. })).collect();
    assert_eq!(marks, vec![&Event::CaptureStart { frame: 2, submit: 2 }, &Event::CaptureStop { frame: 4, submit: 4 }]);
    let frames: Vec<(u64, u64)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Frame { frame, last_submit, .. } => Some((*frame, *last_submit)),
            _ => None,
        })
        .collect();
    assert_eq!(frames, vec![(1, 1), (2, 2), (3, 3)]);
    assert_eq!(ev.iter().filter(|e| matches!(e, Event::Submit(_))).count(), 4);
    assert!(ev.iter().any(|e| matches!(e, Event::Unmap { .. })));
    assert!(ev.iter().any(|e| matches!(e, Event::Free { .. })));
}

#[test]
fn submit_window_before_a_later_range_records_unmapped_writes() {
    let trace = temp_trace("submits");
    let cap = Capture::new(leak_settings(&[("BACKEND", "async-wp"), ("SUBMITS", "3")], &trace));
    let dev = fake_device(0x2000);
    let page = vkdirty::guard::page_size();
    cap.device_created(&vk::PhysicalDeviceProperties::default());
    let mem = vk::DeviceMemory::from_raw(0x20);
    let fake = fake_mapping(4);
    cap.allocated(&dev, &vk::MemoryAllocateInfo::default().allocation_size(fake.len() as u64), mem);
    // Mapped at page 1: region offsets become allocation offsets + 1 page.
    // SAFETY: `fake` stays mapped until after `unmapping`.
    let p = unsafe {
        cap.mapped(&dev, mem, page as u64, 2 * page as u64, fake.ptr().cast(), false, || Import::NotApplicable)
    } as *mut u8;
    submit(&cap, &dev); // 1
                        // SAFETY: inside the mapping.
    unsafe { *p.add(page + 1) = 9 };
    // Unmapped before the window: still recorded, for the window's reconstruction.
    cap.unmapping(&dev, mem);
    submit(&cap, &dev); // 2
    submit(&cap, &dev); // 3
    cap.last_instance_destroyed();
    drop(fake);
    let ev = read_events(&trace);
    assert_eq!(dirty_pages(&ev, 2), BTreeSet::from([2]));
}

#[test]
fn an_unwritable_trace_leaves_the_application_untouched() {
    let cap = Capture::new(leak_settings(&[("BACKEND", "async-wp")], Path::new("/nonexistent/dir/t.vkd")));
    let dev = fake_device(0x3000);
    cap.device_created(&vk::PhysicalDeviceProperties::default());
    let mem = vk::DeviceMemory::from_raw(0x30);
    let fake = fake_mapping(2);
    cap.allocated(&dev, &vk::MemoryAllocateInfo::default().allocation_size(fake.len() as u64), mem);
    // SAFETY: `fake` stays mapped until after `unmapping`.
    let p = unsafe { cap.mapped(&dev, mem, 0, vk::WHOLE_SIZE, fake.ptr().cast(), false, || Import::NotApplicable) };
    assert_eq!(p as *mut u8, fake.ptr());
    submit(&cap, &dev);
    cap.unmapping(&dev, mem);
    cap.freeing(&dev, mem);
    cap.last_instance_destroyed();
    assert!(!Path::new("/nonexistent/dir/t.vkd").exists());
}

/// One thread of the concurrency test: its allocations on `dev`, written and submitted on its own
/// queue `queue`; returns its allocations' handles and, per submit, their bytes at the submit.
fn submit_concurrently(
    cap: &Capture,
    dev: &DeviceState,
    queue: u64,
    memory_base: u64,
    submits: usize,
    go: &std::sync::Barrier,
) -> (Vec<u64>, Vec<Vec<Vec<u8>>>) {
    let page = vkdirty::guard::page_size();
    let pages = 6;
    let fakes: Vec<FakeMapping> = (0..3).map(|_| fake_mapping(pages)).collect();
    let handles: Vec<u64> = (0..fakes.len() as u64).map(|i| memory_base + i).collect();
    let mut apps = Vec::new();
    for (f, &h) in fakes.iter().zip(&handles) {
        let mem = vk::DeviceMemory::from_raw(h);
        cap.allocated(dev, &vk::MemoryAllocateInfo::default().allocation_size(f.len() as u64), mem);
        // SAFETY: `f` stays mapped until after `freeing` below.
        let p = unsafe { cap.mapped(dev, mem, 0, vk::WHOLE_SIZE, f.ptr().cast(), false, || Import::NotApplicable) };
        apps.push(p as *mut u8);
    }
    go.wait();
    let mut states = Vec::with_capacity(submits);
    for n in 0..submits {
        for k in 0..2 {
            let (a, p) = ((n + k) % apps.len(), (n * 5 + k * 3 + memory_base as usize) % pages);
            let v = (n * 7 + k + memory_base as usize) as u8 | 1;
            // SAFETY: page `p` lies inside the mapping handed out for allocation `a`.
            unsafe { std::ptr::write_bytes(apps[a].add(p * page), v, page) };
        }
        // SAFETY: as above, reading the whole mappings this thread alone writes.
        states.push(apps.iter().map(|&p| unsafe { std::slice::from_raw_parts(p, pages * page) }.to_vec()).collect());
        cap.submitting(
            dev,
            vk::Queue::from_raw(queue),
            SubmitInfo { kind: 0, command_buffers: 1, waits: 0, signals: 0, fence: 0 },
        );
    }
    for &h in &handles {
        cap.unmapping(dev, vk::DeviceMemory::from_raw(h));
        cap.freeing(dev, vk::DeviceMemory::from_raw(h));
    }
    drop(fakes);
    (handles, states)
}

/// Two threads write and submit at once, on two queues of one device and on two devices: replayed
/// in stream order, each thread's allocations hold exactly what it had written at each of its
/// submits (even when the other thread's collection took its pages), and every dirty record of a
/// device's allocation precedes the submit records whose numbers are at least its own and follows
/// the others (so a replay up to a submit number agrees).
#[test]
fn two_threads_submitting_at_once_replay_exactly_at_every_submit() {
    for backend in ["async-wp", "shadow-wp", "shadow"] {
        for same_device in [true, false] {
            let what = format!("{backend}, {}", if same_device { "one device" } else { "two devices" });
            let trace = temp_trace(&format!("threads-{backend}-{same_device}"));
            let cap = Capture::new(leak_settings(&[("BACKEND", backend)], &trace));
            let devs = [fake_device(0x7000), fake_device(if same_device { 0x7000 } else { 0x7001 })];
            cap.device_created(&vk::PhysicalDeviceProperties::default());
            let go = std::sync::Barrier::new(2);
            let submits = 150;
            let results: Vec<(Vec<u64>, Vec<Vec<Vec<u8>>>)> = std::thread::scope(|s| {
                let threads: Vec<_> = (0..2)
                    .map(|t| {
                        let (cap, dev, go) = (&cap, &devs[t], &go);
                        s.spawn(move || {
                            submit_concurrently(cap, dev, 0x900 + t as u64, 0x100 * (t as u64 + 1), submits, go)
                        })
                    })
                    .collect();
                threads.into_iter().map(|h| h.join().unwrap()).collect()
            });
            cap.last_instance_destroyed();
            let ev = read_events(&trace);

            let mut ids: HashMap<u64, (u64, u64)> = HashMap::new(); // handle -> (id, device)
            for e in &ev {
                if let Event::Allocation(a) = e {
                    ids.insert(a.handle, (a.id, a.device));
                }
            }
            let mut replay = vkdirty::trace::Replay::new();
            let mut seen = [0usize; 2];
            for (i, e) in ev.iter().enumerate() {
                replay.apply(e, i as u64).unwrap();
                let Event::Submit(s) = e else { continue };
                let t = (s.queue - 0x900) as usize;
                let (handles, states) = &results[t];
                let k = seen[t];
                seen[t] += 1;
                for (a, h) in handles.iter().enumerate() {
                    let got = replay.to_vec(ids[h].0).unwrap();
                    assert!(got == states[k][a], "{what}: thread {t}, its submit {k} (seq {}), allocation {a}", s.seq);
                }
            }
            assert_eq!(seen, [submits, submits], "{what}: every submit recorded");

            // Dirty tags against the stream order of the submit records of the same device.
            let device_of: HashMap<u64, u64> = ids.values().map(|&(id, d)| (id, d)).collect();
            let dirty: Vec<(usize, u64, u64)> = ev
                .iter()
                .enumerate()
                .filter_map(|(i, e)| match e {
                    Event::Dirty(d) => Some((i, d.submit, device_of[&d.alloc])),
                    _ => None,
                })
                .collect();
            for (i, e) in ev.iter().enumerate() {
                let Event::Submit(s) = e else { continue };
                for &(j, tag, dev) in dirty.iter().filter(|d| d.2 == s.device) {
                    assert_eq!(
                        j < i,
                        tag <= s.seq,
                        "{what}: dirty record {j} (for submit {tag}) and submit record {i} (seq {}) of device {dev:#x}",
                        s.seq
                    );
                }
            }
        }
    }
}

/// Flush calls the fake next layer saw: per call, (memory, offset, size, first byte of the real
/// memory there at the call) for each range.
type FlushCall = Vec<(u64, u64, u64, u8)>;
static FLUSHES: parking_lot::Mutex<Vec<(u64, FlushCall)>> = parking_lot::Mutex::new(Vec::new());
/// memory handle → the fake real mapping's address, for the fake flush to read.
static REAL: parking_lot::Mutex<Vec<(u64, usize)>> = parking_lot::Mutex::new(Vec::new());

unsafe extern "system" fn fake_flush(
    device: vk::Device,
    n: u32,
    ranges: *const vk::MappedMemoryRange<'_>,
) -> vk::Result {
    // SAFETY: the layer passes `n` valid ranges.
    let ranges = unsafe { std::slice::from_raw_parts(ranges, n as usize) };
    let real = REAL.lock().clone();
    let call = ranges
        .iter()
        .map(|r| {
            let m = r.memory.as_raw();
            let base = real.iter().find(|x| x.0 == m).map(|x| x.1).expect("a known memory");
            // SAFETY: the range lies inside the fake mapping (the layer clips to the mapping).
            (m, r.offset, r.size, unsafe { *((base + r.offset as usize) as *const u8) })
        })
        .collect();
    FLUSHES.lock().push((device.as_raw(), call));
    vk::Result::SUCCESS
}

/// VKDIRTY_GFXR_FLUSH: one flush call down the chain per submit, with the dirty pages of every
/// mapping written since the last (adjacent pages merged), none when nothing was written; on
/// shadow-wp the real memory holds the bytes when the call is made.
#[test]
fn gfxr_flushes_go_down_in_one_call_per_submit() {
    let page = vkdirty::guard::page_size();
    for (i, backend) in ["async-wp", "shadow-wp"].into_iter().enumerate() {
        let trace = temp_trace(&format!("gfxr-{backend}"));
        let cap =
            Capture::new(leak_settings(&[("BACKEND", backend), ("GFXR_FLUSH", "1"), ("WRITE_TRACE", "0")], &trace));
        let raw = 0x5000 + i as u64;
        let mut dev = fake_device(raw);
        dev.next = DeviceNext::load(|n| {
            if n.to_bytes() == b"vkFlushMappedMemoryRanges" {
                crate::ffi::void_fn::<vk::PFN_vkFlushMappedMemoryRanges>(fake_flush)
            } else {
                None
            }
        });
        cap.device_created(&vk::PhysicalDeviceProperties::default());
        let fakes: Vec<FakeMapping> = (0..3).map(|_| fake_mapping(4)).collect();
        let mems: Vec<vk::DeviceMemory> = (0..3).map(|k| vk::DeviceMemory::from_raw(raw * 16 + k)).collect();
        let mut apps = Vec::new();
        for (m, f) in mems.iter().zip(&fakes) {
            REAL.lock().push((m.as_raw(), f.ptr() as usize));
            cap.allocated(&dev, &vk::MemoryAllocateInfo::default().allocation_size(f.len() as u64), *m);
            // SAFETY: `f` stays mapped until after `freeing`.
            let p = unsafe { cap.mapped(&dev, *m, 0, vk::WHOLE_SIZE, f.ptr().cast(), false, || Import::NotApplicable) };
            apps.push(p as *mut u8);
        }
        // SAFETY: in bounds of the application's pointer while mapped.
        let write = |k: usize, off: usize, v: u8| unsafe { std::ptr::write_volatile(apps[k].add(off), v) };
        let calls = || FLUSHES.lock().iter().filter(|c| c.0 == raw).map(|c| c.1.clone()).collect::<Vec<_>>();
        let sorted = |mut c: FlushCall| {
            c.sort_unstable();
            c
        };
        let (p, m) = (page as u64, |k: usize| mems[k].as_raw());
        write(0, 0, 1);
        write(0, page + 5, 2);
        write(1, 3 * page, 3);
        submit(&cap, &dev);
        assert_eq!(calls().len(), 1, "{backend}: one call for both written mappings");
        assert_eq!(sorted(calls()[0].clone()), vec![(m(0), 0, 2 * p, 1), (m(1), 3 * p, p, 3)], "{backend}");
        submit(&cap, &dev);
        assert_eq!(calls().len(), 1, "{backend}: nothing written, nothing flushed");
        write(2, 2 * page, 4);
        submit(&cap, &dev);
        assert_eq!(calls().len(), 2, "{backend}");
        assert_eq!(calls()[1], vec![(m(2), 2 * p, p, 4)], "{backend}");
        for mem in &mems {
            cap.unmapping(&dev, *mem);
            cap.freeing(&dev, *mem);
        }
        assert_eq!(calls().len(), 2, "{backend}: nothing left to flush at the unmaps");
        cap.last_instance_destroyed();
        drop(fakes);
        assert!(!trace.exists(), "{backend}: no trace written with WRITE_TRACE=0");
    }
}
