//! What the layer records: allocations, mappings and their tracking, collections at submit, and
//! the trace file's life cycle. Every failure here becomes one log line; the application's call
//! always goes on.

use ash::vk;
use ash::vk::Handle;
use once_cell::sync::Lazy;
use parking_lot::{Mutex, MutexGuard, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vkdirty::config::{self, Settings, ShadowRefresh};
use vkdirty::guard::{BackendKind, GuardError, GuardManager, RegionId, TrackOptions, Tracked};
use vkdirty::session::{self, must_collect, Mapping, Mark, Memories, RegionRef, Session};
use vkdirty::trace::{self, Event, TraceWriter, WriterOptions};

use crate::dispatch::DeviceState;
use crate::host_import::Import;
use crate::log;
use crate::settings;

mod app_import;
mod collect;
pub mod device_writes;
mod kept;
mod life;

/// The process-wide capture state. Two kinds of lock (docs/design.md, "Locking"): each device's
/// allocations and mappings behind the device's own lock, held across the device's collections
/// and the records they send; the session (trace, numbering, window) behind a small lock, taken
/// inside a device's lock and held briefly. So submits on different devices collect in parallel.
pub struct Capture {
    settings: &'static Settings,
    guards: GuardManager,
    state: Mutex<State>,
    devices: RwLock<HashMap<u64, Device>>,
    /// The process that opened the trace.
    owner_pid: AtomicU32,
}

/// One device's allocations and mappings, and the lock its collections hold.
type Device = Arc<Mutex<Memories>>;

/// What a collection outside a submit (flush, unmap, free, host signal) needs from the session.
struct Later {
    writer: Option<Arc<TraceWriter>>,
    /// The number of the next submit, which the collected bytes are recorded for.
    submit: u64,
    /// Whether bytes collected now are recorded (see [`Capture::records_later`]).
    record: bool,
    /// Outside a capture window.
    outside: bool,
}

impl Later {
    /// The writer when collected bytes are recorded.
    fn recording(&self) -> Option<&TraceWriter> {
        self.writer.as_deref().filter(|_| self.record)
    }
}

static CAPTURE: Lazy<Capture> = Lazy::new(|| Capture::new(settings::get()));

pub fn get() -> &'static Capture {
    &CAPTURE
}

type State = Session<crate::trigger::Trigger>;

/// What `vkQueueSubmit*` / `vkQueueBindSparse` pass, for the submit record.
pub struct SubmitInfo {
    pub kind: u8,
    pub command_buffers: u32,
    pub waits: u32,
    pub signals: u32,
    /// The fence the submit signals (0: none).
    pub fence: u64,
}

/// A host synchronisation point that returned success: GPU work may have completed, so shadow
/// mappings are refreshed from the real memory (`VKDIRTY_SHADOW_REFRESH`).
pub enum SyncPoint<'a> {
    /// `vkWaitForFences` (`all`: waitAll) or `vkGetFenceStatus` (one fence, `all`).
    Fences {
        fences: &'a [u64],
        all: bool,
    },
    /// `vkWaitSemaphores` (`all`: not `WAIT_ANY`) or `vkGetSemaphoreCounterValue` (one, `all`).
    Semaphores {
        values: &'a [(u64, u64)],
        all: bool,
    },
    QueueIdle(u64),
    DeviceIdle,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The key under which a refusal is logged once: the backend and reason without addresses.
fn refusal_key(e: &GuardError) -> String {
    match e {
        GuardError::Unavailable { backend, reason } => {
            // The manager keeps a failed probe's whole message as the reason.
            let prefix = format!("{backend} unavailable: ");
            format!("{prefix}{}", reason.strip_prefix(&prefix).unwrap_or(reason))
        }
        GuardError::RegionRefused { backend, reason, .. } => format!("{backend} refused a mapping: {reason}"),
        other => other.to_string(),
    }
}

/// Allocation bytes freed since the heap was last trimmed.
static FREED_SINCE_TRIM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Freed allocation bytes after which the heap is trimmed at the free itself.
const TRIM_EVERY: u64 = 64 << 20;
/// Freed allocation bytes after which the next submit trims the heap (so what was freed last
/// goes back too; each trim walks the heap, about 2 ms for 400 MB, so not at every free).
const TRIM_AT_SUBMIT: u64 = 16 << 20;

/// After `vkFreeMemory` went down: once every [`TRIM_EVERY`] bytes of freed allocations, hands
/// the allocator's free pages back to the system. glibc keeps freed heap memory it cannot trim
/// from the top; the layer's own small, long-lived allocations made between the driver's
/// (tracking state, collection buffers) are enough to pin it, so without this the process kept
/// the freed allocations' memory resident (measured: 4000 x 64 KiB mapped, written and freed
/// left 347 MB resident under async-wp against 75 MB without the layer).
pub fn trim_after_free() {
    trim_if_freed(TRIM_EVERY);
}

fn trim_if_freed(at_least: u64) {
    if FREED_SINCE_TRIM.load(Ordering::Relaxed) < at_least.max(1) {
        return;
    }
    FREED_SINCE_TRIM.store(0, Ordering::Relaxed);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Capture {
    fn new(settings: &'static Settings) -> Capture {
        Capture {
            settings,
            guards: GuardManager::with_prediction_by(|kind| vkdirty::guard::wp::Prediction {
                enabled: settings.predict.enabled_for(kind),
                budget: (settings.predict_budget_mib as usize) << 20,
                trust: settings.predict_trust,
            }),
            state: Mutex::new(Session::new(crate::trigger::Trigger::new(settings))),
            devices: RwLock::new(HashMap::new()),
            owner_pid: AtomicU32::new(0),
        }
    }

    /// The session's lock. Taken inside a device's lock, never the other way round.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// The device's state (created on first use).
    fn device(&self, device: u64) -> Device {
        if let Some(d) = self.devices.read().get(&device) {
            return d.clone();
        }
        self.devices.write().entry(device).or_default().clone()
    }

    fn writer(&self) -> Option<Arc<TraceWriter>> {
        self.lock().writer().cloned()
    }

    /// The session as a collection outside a submit needs it (taken with the device locked, so
    /// the device's next submit is numbered after it).
    fn later(&self) -> Later {
        let st = self.lock();
        Later {
            writer: st.writer().cloned(),
            submit: st.window.next_submit(),
            record: self.records_later(&st),
            outside: st.window.outside(self.settings),
        }
    }

    /// `vkCreateInstance` succeeded.
    pub fn instance_created(&self, app_name: Option<String>, engine_name: Option<String>) {
        life::pin_library_and_register_exit();
        let mut st = self.lock();
        if st.app_name.is_empty() {
            st.app_name = app_name.unwrap_or_default();
        }
        if st.engine_name.is_empty() {
            st.engine_name = engine_name.unwrap_or_default();
        }
    }

    /// Whether a guard backend works in this process (its probe, run once).
    pub fn backend_available(&self, kind: BackendKind) -> Result<(), String> {
        self.guards.backend(kind).map(|_| ()).map_err(|e| e.to_string())
    }

    /// `vkDestroyDevice` is about to be called: stops tracking the device's mappings.
    pub fn device_destroyed(&self, dev: &DeviceState) {
        let device = dev.handle.as_raw();
        let d = self.device(device);
        let mut mem = d.lock();
        let later = self.later();
        // Regions kept for unmapped allocations go first; what they found is not recorded (the
        // allocations go with the device).
        for k in mem.take_kept_of_device(device) {
            self.release_kept(None, 0, k, later.submit);
        }
        let (untracked, ids) = mem.device_destroyed(device);
        for u in untracked {
            self.untrack(dev, &mem, later.recording(), u.alloc, u.memory, &u.mapping, later.submit);
        }
        // Shadows kept for the device's allocations (VKDIRTY_PERSISTENT_SHADOW) go with them.
        for id in ids {
            self.guards.release_persistent(id);
        }
        drop(mem);
        self.devices.write().remove(&device);
    }

    pub fn allocated(&self, dev: &DeviceState, info: &vk::MemoryAllocateInfo<'_>, memory: vk::DeviceMemory) {
        let device = dev.handle.as_raw();
        let (flags, heap) = dev
            .memory_types
            .get(info.memory_type_index as usize)
            .copied()
            .unwrap_or((vk::MemoryPropertyFlags::empty(), 0));
        let d = self.device(device);
        let mut mem = d.lock();
        // Numbered and recorded under the session's lock: ids ascend in the trace.
        let (id, writer) = {
            let mut st = self.lock();
            let id = st.next_allocation_id();
            let writer = st.writer().cloned();
            if let Some(w) = &writer {
                w.record(&Event::Allocation(trace::Allocation {
                    id,
                    handle: memory.as_raw(),
                    device,
                    size: info.allocation_size,
                    memory_type: info.memory_type_index,
                    property_flags: flags.as_raw(),
                    heap,
                }));
            }
            (id, writer)
        };
        let cached = flags.contains(vk::MemoryPropertyFlags::HOST_CACHED);
        mem.allocate((device, memory.as_raw()), id, info.allocation_size, cached);
        // SAFETY: the application's valid create info.
        if dev.binds_other_memory || unsafe { device_writes::shared_allocation(info) } {
            mem.device_writes((device, memory.as_raw()));
        }
        if let Some(ptr) = app_import::host_pointer(info) {
            let key = (device, memory.as_raw());
            self.track_app_import(&mut mem, writer.as_deref(), key, id, ptr, info.allocation_size);
        }
    }

    /// `vkFreeMemory` is about to be called: an implicit unmap, then the free record.
    pub fn freeing(&self, dev: &DeviceState, memory: vk::DeviceMemory) {
        let key = (dev.handle.as_raw(), memory.as_raw());
        let d = self.device(key.0);
        let mut mem = d.lock();
        if mem.get(key).is_some() {
            self.unmap_locked(dev, &mut mem, key);
        }
        if let Some(k) = mem.take_kept(key) {
            let later = self.later();
            let id = mem.get(key).map_or(0, |m| m.id);
            self.release_kept(later.recording(), id, k, later.submit);
        }
        if let Some(m) = mem.free(key) {
            FREED_SINCE_TRIM.fetch_add(m.size, Ordering::Relaxed);
            // A shadow kept for the allocation (VKDIRTY_PERSISTENT_SHADOW) goes with it.
            self.guards.release_persistent(m.id);
            if let Some(w) = self.writer() {
                w.record(&Event::Free { alloc: m.id });
            }
        }
    }

    /// `vkMapMemory*` returned `real`: tracks the mapping and returns the pointer the application
    /// must use.
    ///
    /// # Safety
    /// `real` is the pointer the driver returned for this mapping of `size` bytes (or
    /// `VK_WHOLE_SIZE`) at `offset`; `import` says whether host-import owns the memory (asked only when
    /// the mapping is tracked); it stays mapped until [`Capture::unmapping`] or
    /// [`Capture::freeing`] for this memory has returned.
    pub unsafe fn mapped(
        &self,
        dev: &DeviceState,
        memory: vk::DeviceMemory,
        offset: u64,
        size: u64,
        real: *mut std::ffi::c_void,
        placed: bool,
        import: impl FnOnce() -> Import,
    ) -> *mut std::ffi::c_void {
        let key = (dev.handle.as_raw(), memory.as_raw());
        let d = self.device(key.0);
        let mut memories = d.lock();
        let writer = self.writer();
        if writer.is_none() && !self.settings.gfxr_flush {
            return real;
        }
        let Some(mem) = memories.get(key) else {
            log::once(
                vkdirty::config::LogLevel::Warn,
                "a mapping of memory allocated before the layer saw it is not captured",
            );
            return real;
        };
        if mem.app_import {
            // Its whole range is tracked already, at the application's pointer.
            return real;
        }
        if mem.mapping.is_some() {
            log::once(vkdirty::config::LogLevel::Warn, "memory mapped twice; the second mapping is not captured");
            return real;
        }
        let id = mem.id;
        let size = if size == vk::WHOLE_SIZE { mem.size.saturating_sub(offset) } else { size };
        if size == 0 || real.is_null() {
            return real;
        }
        // Memory host-import imported is the layer's own: tracked at our pointer, host-import first.
        let import = import();
        let real = match import {
            Import::Imported(p) => p.cast(),
            _ => real,
        };
        let Ok(len) = usize::try_from(size) else { return real };
        let mut order = self.settings.backend.mapping_order(matches!(import, Import::Imported(_)));
        if placed {
            // A placed mapping must stay at the address the application chose.
            order.retain(|b| !must_collect(*b));
        }
        // The same range mapped again: its kept region goes on (docs/design.md, "Map every frame").
        let unchanged = match self.resume_kept(&mut memories, key, offset, size, real.cast(), len, &order) {
            Ok((t, runs)) => {
                let reason = format!("{} ({}); kept since the last unmap", t.backend, self.settings.backend);
                self.record_mapped(&mut memories, writer.as_deref(), key, id, offset, size, len, &t, reason);
                if !runs.is_empty() {
                    let later = self.later();
                    if let Some(w) = later.recording() {
                        let mut d = w.dirty(id, later.submit);
                        for (at, bytes) in &runs {
                            d.push(*at, bytes);
                        }
                        d.finish();
                    }
                }
                return t.app_ptr.cast();
            }
            Err(unchanged) => unchanged,
        };
        let opts = TrackOptions {
            shadow_reads: self.settings.shadow_reads,
            persistent_key: self.settings.persistent_shadow.then_some(id),
            group: key.0,
            unchanged,
            device_never_writes: !memories.get(key).is_some_and(|m| m.device_writes),
        };
        let forced = refuse_for_testing(&mut order, real as usize, len);
        // SAFETY: forwarded caller contract: real..real+len is the driver's live mapping.
        let tracked = unsafe { self.guards.track_first(real.cast(), len, &order, &opts) };
        let tracked = match tracked {
            Ok((t, r)) => Ok((t, forced.into_iter().chain(r).collect::<Vec<_>>())),
            Err(r) => Err(forced.into_iter().chain(r).collect::<Vec<_>>()),
        };
        match tracked {
            Ok((t, refusals)) => {
                for r in &refusals {
                    log::once(vkdirty::config::LogLevel::Info, &format!("{}; falling back", refusal_key(r)));
                }
                let mut reason = if refusals.is_empty() {
                    format!("{} ({})", t.backend, self.settings.backend)
                } else {
                    // Without addresses, so `vkdirty info` counts mappings per distinct reason.
                    let why: Vec<String> = refusals.iter().map(refusal_key).collect();
                    format!("{}; using {}", why.join("; "), t.backend)
                };
                if let Import::NotImported(why) = &import {
                    reason = format!("host-import: memory not imported ({why}); {reason}");
                }
                self.record_mapped(&mut memories, writer.as_deref(), key, id, offset, size, len, &t, reason);
                t.app_ptr.cast()
            }
            Err(refusals) => {
                for r in &refusals {
                    log::once(vkdirty::config::LogLevel::Warn, &refusal_key(r));
                }
                log::once(vkdirty::config::LogLevel::Warn, "a mapping no backend accepted is not captured");
                real
            }
        }
    }

    /// A mapping is tracked: into the bookkeeping, and its map record.
    #[allow(clippy::too_many_arguments)]
    fn record_mapped(
        &self,
        memories: &mut Memories,
        writer: Option<&TraceWriter>,
        key: (u64, u64),
        id: u64,
        offset: u64,
        size: u64,
        len: usize,
        t: &Tracked,
        reason: String,
    ) {
        let mapping = Mapping { region: t.id, offset, size, backend: t.backend };
        memories.map(key, mapping, len, false);
        if let Some(w) = writer {
            w.record(&Event::Map(trace::Map {
                alloc: id,
                offset,
                size,
                app_ptr: t.app_ptr as u64,
                backend: t.backend,
                reason,
            }));
        }
    }

    /// `vkUnmapMemory*` is about to be called: collects what is dirty, then untracks (or parks:
    /// `kept.rs`).
    pub fn unmapping(&self, dev: &DeviceState, memory: vk::DeviceMemory) {
        let key = (dev.handle.as_raw(), memory.as_raw());
        let d = self.device(key.0);
        let mut mem = d.lock();
        if mem.get(key).is_some_and(|m| m.app_import) {
            // Tracked until it is freed.
            return;
        }
        self.unmap_locked(dev, &mut mem, key);
    }

    /// With the device's lock held.
    fn unmap_locked(&self, dev: &DeviceState, mem: &mut Memories, key: (u64, u64)) {
        let Some(u) = mem.unmap(key) else { return };
        let id = u.alloc;
        let later = self.later();
        // The dirty record and the unmap record wake the writer thread once.
        let _held = later.writer.as_deref().map(|w| w.hold());
        self.park_or_untrack(dev, mem, key, later.recording(), id, &u.mapping, later.submit);
        if let Some(w) = &later.writer {
            w.record(&Event::Unmap { alloc: id });
        }
    }

    /// `vkFlushMappedMemoryRanges` is about to be called: declares and collects the ranges.
    pub fn flushing(&self, dev: &DeviceState, ranges: &[vk::MappedMemoryRange<'_>]) {
        let device = dev.handle.as_raw();
        let d = self.device(device);
        let memories = d.lock();
        let later = self.later();
        let mut per_alloc: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        for r in ranges {
            let Some(mem) = memories.get((device, r.memory.as_raw())) else { continue };
            let Some(m) = mem.mapping else { continue };
            let Some((region_range, alloc_range)) = session::clip(&m, r.offset, r.size) else { continue };
            if let Err(e) = self.guards.flushed(m.region, region_range.clone()) {
                log::once(vkdirty::config::LogLevel::Error, &format!("declaring a flush failed: {e}"));
            }
            per_alloc.entry(mem.id).or_default().push(alloc_range);
            // Outside a capture window the pages stay marked (the first captured submit collects
            // them), so nothing is written; shadows must still reach the real memory now.
            if !later.outside || must_collect(m.backend) {
                self.collect(later.recording(), mem.id, &m, Some(region_range), later.submit);
            }
        }
        if let Some(w) = later.recording() {
            for (alloc, ranges) in per_alloc {
                w.record(&Event::Flush { alloc, ranges });
            }
        }
    }

    /// `vkInvalidateMappedMemoryRanges` returned: shadows refresh from the real memory.
    pub fn invalidated(&self, dev: &DeviceState, ranges: &[vk::MappedMemoryRange<'_>]) {
        if self.settings.shadow_refresh == ShadowRefresh::Never {
            return;
        }
        let device = dev.handle.as_raw();
        let d = self.device(device);
        let memories = d.lock();
        for r in ranges {
            let Some(mem) = memories.get((device, r.memory.as_raw())) else { continue };
            let Some(m) = mem.mapping else { continue };
            if !mem.device_writes {
                // Nobody but the application wrote it: the shadow holds its bytes.
                continue;
            }
            let Some((region_range, _)) = session::clip(&m, r.offset, r.size) else { continue };
            if let Err(e) = self.guards.invalidate(m.region, region_range) {
                log::once(vkdirty::config::LogLevel::Error, &format!("invalidating a shadow failed: {e}"));
            }
        }
    }

    /// A host synchronisation point of `dev` returned success: refreshes the shadow mappings of
    /// the device the policy selects, unless the point only re-observes completion an earlier
    /// refresh followed. The refresh runs outside the state lock (a concurrent unmap makes the
    /// region unknown, which is fine).
    pub fn synchronized(&self, dev: &DeviceState, point: SyncPoint<'_>) {
        let policy = self.settings.shadow_refresh;
        if policy == ShadowRefresh::Never {
            return;
        }
        let device = dev.handle.as_raw();
        let need = {
            let mut st = self.lock();
            match point {
                SyncPoint::Fences { fences, all } => st.sync.fences(fences, all),
                SyncPoint::Semaphores { values, all } => st.sync.semaphores(values, all),
                SyncPoint::QueueIdle(q) => st.sync.queue_idle(q),
                SyncPoint::DeviceIdle => st.sync.device_idle(device),
            }
        };
        if !need {
            return;
        }
        let regions: Vec<(RegionId, usize)> =
            self.device(device).lock().shadows(device, |cached| policy.at_sync_points(cached));
        for (region, len) in regions {
            match self.guards.invalidate(region, 0..len) {
                Ok(()) | Err(GuardError::UnknownRegion(_)) => {}
                Err(e) => log::once(vkdirty::config::LogLevel::Error, &format!("refreshing a shadow failed: {e}")),
            }
        }
    }

    /// The host is about to signal a semaphore or set an event, which can start GPU work submitted
    /// earlier: shadows copy what the application wrote to the real memory first (recorded for
    /// the next submit, like a flush).
    pub fn host_signalling(&self, dev: &DeviceState) {
        let d = self.device(dev.handle.as_raw());
        let mem = d.lock();
        let later = self.later();
        self.collect_device(dev, &mem, later.recording(), later.submit, false);
    }

    /// A submit to `queue` of `dev` is about to be called: collects every mapping of the device,
    /// writes the dirty pages, then the submit record. The device's lock is held throughout (a
    /// submit on another device runs beside it); the session's only while the submit is numbered.
    pub fn submitting(&self, dev: &DeviceState, queue: vk::Queue, info: SubmitInfo) {
        let device = dev.handle.as_raw();
        let d = self.device(device);
        let mem = d.lock();
        let (step, writer) = {
            let mut st = self.lock();
            st.sync.submitted(device, queue.as_raw(), info.fence);
            let step = st.window.submit(self.settings);
            let writer = st.writer().cloned();
            if let (Some(mark), Some(w)) = (step.mark, &writer) {
                let (frame, seq) = (step.frame, step.seq);
                w.record(&match mark {
                    Mark::Start => Event::CaptureStart { frame, submit: seq },
                    Mark::Stop => Event::CaptureStop { frame, submit: seq },
                });
            }
            (step, writer)
        };
        let (seq, active, record) = (step.seq, step.active, step.record);
        if let Some(on) = step.trigger_changed {
            log::info!("trigger: capture {} at submit {seq}", if on { "on" } else { "off" });
        }
        let writing = writer.is_some();
        // The dirty records and the submit record wake the writer thread once, at the end.
        let _held = writer.as_deref().map(|w| w.hold());
        let recording = writer.as_deref().filter(|_| record);
        self.collect_device(dev, &mem, recording, seq, active && writing);
        trim_if_freed(TRIM_AT_SUBMIT);
        // The collection puts the shadow backend's fault handler back in front of one the
        // application installed over it; say so once.
        static HANDLER_NOTED: AtomicBool = AtomicBool::new(false);
        if vkdirty::guard::shadow::handler_reinstalls() > 0 && !HANDLER_NOTED.swap(true, Ordering::Relaxed) {
            log::warn!(
                "another SIGSEGV handler was installed over vkdirty's; vkdirty's is back in front and passes \
                 faults that are not its own on to it"
            );
        }
        if let Some(w) = &writer {
            w.record(&Event::Submit(trace::Submit {
                device,
                queue: queue.as_raw(),
                seq,
                timestamp_ns: now_ns(),
                command_buffers: info.command_buffers,
                waits: info.waits,
                signals: info.signals,
                kind: info.kind,
            }));
        }
    }

    /// `vkQueuePresentKHR`: the current frame ends.
    pub fn presenting(&self) {
        let mut st = self.lock();
        let step = st.window.present();
        if let Some(w) = st.writer() {
            w.record(&Event::Frame { frame: step.frame, last_submit: step.last_submit, timestamp_ns: now_ns() });
        }
        if let Some(on) = step.trigger_changed {
            log::info!(
                "trigger: capture {} from frame {} (after submit {})",
                if on { "on" } else { "off" },
                step.frame + 1,
                step.last_submit
            );
        }
    }
}

/// Test aid: `VKDIRTY_TEST_REFUSE=async-wp[,...]` makes the named backends refuse every mapping
/// (while another one is left to try), to exercise the fallback of `auto` on drivers whose
/// mappings the backends accept. Not a setting: the refusals are recorded as such.
fn refuse_for_testing(order: &mut Vec<BackendKind>, addr: usize, len: usize) -> Vec<GuardError> {
    static REFUSE: Lazy<Vec<BackendKind>> = Lazy::new(|| {
        std::env::var("VKDIRTY_TEST_REFUSE")
            .map(|v| v.split(',').filter_map(|n| BackendKind::parse(n.trim())).collect())
            .unwrap_or_default()
    });
    let mut forced = Vec::new();
    for &k in REFUSE.iter() {
        if order.len() > 1 && order.contains(&k) {
            order.retain(|b| *b != k);
            forced.push(GuardError::RegionRefused {
                backend: k,
                addr,
                len,
                reason: "refused for testing (VKDIRTY_TEST_REFUSE)".into(),
            });
        }
    }
    forced
}

#[cfg(test)]
mod tests;
