//! Page-guard engine: tracks memory regions and reports the pages written since the last
//! collection, with their bytes copied out after tracking was re-armed.
//!
//! One [`Backend`] trait, one file per backend. [`GuardManager`] owns the regions and dispatches
//! to the backend each region was tracked with; the choice is per region, so a caller can fall
//! back region by region when a backend refuses one.

use std::fmt;

/// The backends. Their names are the product's, shared by the settings, the trace reports and
/// the log: see [`BackendKind::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    /// userfaultfd `WP_ASYNC` on the memory itself, collected with `PAGEMAP_SCAN`.
    AsyncWp,
    /// Anonymous shadow, `mprotect` + `SIGSEGV` handler.
    Shadow,
    /// Anonymous shadow tracked with async-WP (no signals).
    ShadowWp,
    /// async-WP on private anonymous memory the caller owns and lends out (the layer's
    /// host-import hands it to the driver): the scan can take its fast path, which is exact only
    /// on such memory.
    OwnedWp,
    /// Every page of every region at each collection.
    Full,
    /// Only ranges the caller declares flushed.
    Assisted,
}

impl BackendKind {
    pub const ALL: [BackendKind; 6] = [
        BackendKind::AsyncWp,
        BackendKind::Shadow,
        BackendKind::ShadowWp,
        BackendKind::OwnedWp,
        BackendKind::Full,
        BackendKind::Assisted,
    ];

    /// The name in settings, trace reports and log lines. `OwnedWp` is `host-import`, after what
    /// a user chooses to get it (the layer allocating host-visible memory from memory it owns);
    /// the name, like a trace's backend code, stays stable so that reports and scripts keep
    /// reading old and new traces alike.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::AsyncWp => "async-wp",
            BackendKind::Shadow => "shadow",
            BackendKind::ShadowWp => "shadow-wp",
            BackendKind::OwnedWp => "host-import",
            BackendKind::Full => "full",
            BackendKind::Assisted => "assisted",
        }
    }

    pub fn parse(s: &str) -> Option<BackendKind> {
        BackendKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies a tracked region inside a [`GuardManager`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub u64);

/// Per-region options.
#[derive(Clone, Debug, Default)]
pub struct TrackOptions {
    /// Shadow backends: also trap reads, refreshing a page from the real memory before the
    /// application reads it (so data the GPU wrote is seen).
    pub shadow_reads: bool,
    /// Shadow backends: keep the shadow for this key (an allocation id) across untrack/track,
    /// for applications that map and unmap every frame.
    pub persistent_key: Option<u64>,
    /// The group the region is collected with by [`GuardManager::collect_all`] (the layer: its
    /// device).
    pub group: u64,
    /// Shadow backends, with `persistent_key`: the real memory holds what it held when the
    /// shadow kept for the key was last untracked (same range of the same allocation, and nothing
    /// but the application, through the tracked pointer, can have written it since), so a kept
    /// shadow is reused as it is instead of being filled from the real memory again.
    pub unchanged: bool,
    /// Nobody but the application, through the tracked pointer, can write the real memory (the
    /// layer: no resource bound to the allocation lets the device write it): `shadow-wp` never
    /// refreshes such a shadow, so its trusted predictions need no snapshot. Turned off later by
    /// [`GuardManager::device_writes`]; `false` (the device may write) is always safe.
    pub device_never_writes: bool,
}

/// Receives the dirty bytes of one collection, as coalesced runs. `offset` is relative to the
/// region's start address (the address given to `track`), and runs are clipped to the region.
pub trait DirtySink {
    fn run(&mut self, offset: usize, bytes: &[u8]);
}

impl<F: FnMut(usize, &[u8])> DirtySink for F {
    fn run(&mut self, offset: usize, bytes: &[u8]) {
        self(offset, bytes)
    }
}

/// Receives the dirty bytes of a collection over many regions: `offset` is relative to the
/// region's start address, runs are clipped to the region.
pub trait RegionSink {
    fn run(&mut self, region: RegionId, offset: usize, bytes: &[u8]);

    /// After a collection's runs: `len` bytes at `offset` of `region`, handed to [`run`](Self::run)
    /// in this collection, were reported because a predicted page differed from its snapshot
    /// (docs/design.md, "Predicted pages"), not because a write fault marked them.
    fn compared(&mut self, region: RegionId, offset: usize, len: usize) {
        let _ = (region, offset, len);
    }

    /// After a collection's runs: `len` bytes at `offset` of `region`, handed to
    /// [`run`](Self::run) in this collection, lie in pages a trusted prediction had unprotected:
    /// reported because unprotected (written, or at worst a page too many), neither trapped nor
    /// compared (docs/design.md, "Trusted predictions").
    fn trusted(&mut self, region: RegionId, offset: usize, len: usize) {
        let _ = (region, offset, len);
    }

    /// [`trusted`](Self::trusted) or [`compared`](Self::compared).
    fn predicted(&mut self, region: RegionId, offset: usize, len: usize, trusted: bool) {
        if trusted {
            self.trusted(region, offset, len)
        } else {
            self.compared(region, offset, len)
        }
    }
}

impl<F: FnMut(RegionId, usize, &[u8])> RegionSink for F {
    fn run(&mut self, region: RegionId, offset: usize, bytes: &[u8]) {
        self(region, offset, bytes)
    }
}

/// A [`RegionSink`] of two closures: the runs, and the predicted ranges (`trusted`: from a
/// trusted prediction, otherwise from compare).
pub struct WithCompared<F, G>(pub F, pub G);

impl<F: FnMut(RegionId, usize, &[u8]), G: FnMut(RegionId, usize, usize, bool)> RegionSink for WithCompared<F, G> {
    fn run(&mut self, region: RegionId, offset: usize, bytes: &[u8]) {
        (self.0)(region, offset, bytes)
    }

    fn compared(&mut self, region: RegionId, offset: usize, len: usize) {
        (self.1)(region, offset, len, false)
    }

    fn trusted(&mut self, region: RegionId, offset: usize, len: usize) {
        (self.1)(region, offset, len, true)
    }
}

/// What one collection found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CollectStats {
    /// Dirty pages reported (4 KiB units, or the system page size).
    pub pages: usize,
    /// Coalesced runs handed to the sink.
    pub runs: usize,
    /// Bytes handed to the sink.
    pub bytes: usize,
    /// Pages that were reported only because a transparent huge page covering them was written.
    pub thp_pages: usize,
    /// `PAGEMAP_SCAN` calls made (write-protect backends).
    pub scans: usize,
    /// Predicted pages compared with their snapshot instead of trapped (`collect_all` of the
    /// write-protect backends with prediction on).
    pub predicted: usize,
    /// Of those, pages found changed and reported (counted in `pages` too).
    pub compared_changed: usize,
    /// Pages reported because a trusted prediction left them unprotected (counted in `pages`).
    pub trusted: usize,
    /// Of those, pages whose prediction took no snapshot (all of them but `shadow-wp`'s where
    /// the device may write).
    pub trusted_bare: usize,
}

/// What one scan of a set found, before any run is handed to a sink (`runs`, `bytes` stay 0).
impl From<wp::ScanStats> for CollectStats {
    fn from(s: wp::ScanStats) -> Self {
        CollectStats {
            pages: s.pages,
            thp_pages: s.thp_pages,
            scans: s.ioctls,
            predicted: s.predicted,
            compared_changed: s.compared_changed,
            trusted: s.trusted,
            trusted_bare: s.trusted_bare,
            ..Default::default()
        }
    }
}

impl std::ops::AddAssign for CollectStats {
    fn add_assign(&mut self, o: Self) {
        self.pages += o.pages;
        self.runs += o.runs;
        self.bytes += o.bytes;
        self.thp_pages += o.thp_pages;
        self.scans += o.scans;
        self.predicted += o.predicted;
        self.compared_changed += o.compared_changed;
        self.trusted += o.trusted;
        self.trusted_bare += o.trusted_bare;
    }
}

/// Typed failures, so the caller can fall back per region and log the reason.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The backend cannot work in this process at all (kernel lacks a feature, syscall refused).
    #[error("{backend} unavailable: {reason}")]
    Unavailable { backend: BackendKind, reason: String },
    /// The backend works, but not on this region (e.g. `UFFDIO_REGISTER` EINVAL on a driver's
    /// special mapping).
    #[error("{backend} refused region {addr:#x}+{len:#x}: {reason}")]
    RegionRefused { backend: BackendKind, addr: usize, len: usize, reason: String },
    #[error("unknown region {0:?}")]
    UnknownRegion(RegionId),
    #[error("{op}: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl GuardError {
    pub fn os(op: &'static str) -> GuardError {
        GuardError::Os { op, source: std::io::Error::last_os_error() }
    }

    /// `backend` refuses the region at `addr`.
    pub fn refused(backend: BackendKind, addr: usize, len: usize, reason: impl Into<String>) -> GuardError {
        GuardError::RegionRefused { backend, addr, len, reason: reason.into() }
    }
}

/// A memfd of `span` bytes mapped twice with `MAP_SHARED`: the view handed to the application,
/// and the backend's own view, through which the backend's copies are no application access
/// (neither trapped by protection nor seen by write-protect). Used by `shadow` and `shadow-wp`.
struct DualView {
    app: *mut u8,
    own: *mut u8,
    span: usize,
    /// The dual arena block both views are (`new_placed`): dropping it punches the pages out and
    /// makes the application view `PROT_NONE`; neither view is unmapped itself.
    placed: Option<arena::ArenaBlock>,
}

// SAFETY: the views are plain memory owned by this struct.
unsafe impl Send for DualView {}
// SAFETY: as above.
unsafe impl Sync for DualView {}

impl DualView {
    /// `app_prot`: the application view's protection; `own_dontfork`: leave the backend's view
    /// out of a forked child.
    fn new(
        name: &std::ffi::CStr,
        span: usize,
        app_prot: libc::c_int,
        own_dontfork: bool,
    ) -> Result<DualView, GuardError> {
        Self::with_place(name, span, app_prot, own_dontfork)
    }

    /// [`new`](Self::new) with both views taken from a dual arena ([`arena::ArenaBlock::dual`]),
    /// read-write: the application view lies next to the other views taken there and merges with
    /// them into one mapping, so a collection scans a run of them with one call and one mapping
    /// walked.
    fn new_placed(span: usize) -> Result<DualView, GuardError> {
        Self::placed(arena::ArenaBlock::dual(span))
    }

    /// One private anonymous view from a private shadow arena ([`arena::ArenaBlock::private_shadow`]),
    /// read-write, which is both the application's and the layer's (`own == app`): the layer's
    /// writes through it count as written like the application's, so it only writes there while
    /// the application has no pointer to it, or checks afterwards (`shadow-wp`'s refresh). An
    /// unprotect leaves private pages writable, so predicted pages need no `MADV_POPULATE_WRITE`.
    fn new_private(span: usize) -> Result<DualView, GuardError> {
        Self::placed(arena::ArenaBlock::private_shadow(span))
    }

    /// The views of an arena block: its second view as the layer's, or the block itself where it
    /// has none (a private block).
    fn placed(block: std::io::Result<arena::ArenaBlock>) -> Result<DualView, GuardError> {
        let b = block.map_err(|source| GuardError::Os { op: "shadow memory", source })?;
        let own = if b.own().is_null() { b.ptr() } else { b.own() };
        Ok(DualView { app: b.ptr(), own, span: b.len(), placed: Some(b) })
    }

    /// One view for the application and the layer ([`new_private`](Self::new_private)).
    fn private(&self) -> bool {
        self.app == self.own
    }

    fn with_place(
        name: &std::ffi::CStr,
        span: usize,
        app_prot: libc::c_int,
        own_dontfork: bool,
    ) -> Result<DualView, GuardError> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: valid NUL-terminated name; flags are plain bits.
        let mut fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_NOEXEC_SEAL) };
        if fd < 0 {
            // Kernels before 6.3 refuse MFD_NOEXEC_SEAL.
            // SAFETY: as above.
            fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        }
        if fd < 0 {
            return Err(GuardError::os("memfd_create"));
        }
        // SAFETY: `fd` was just created and is owned here; OwnedFd closes it on every path (the
        // mappings keep the file alive).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size = libc::off_t::try_from(span).map_err(|_| GuardError::Os {
            op: "ftruncate shadow",
            source: std::io::Error::from_raw_os_error(libc::EFBIG),
        })?;
        // SAFETY: our memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(GuardError::os("ftruncate shadow"));
        }
        let map = |prot| {
            // SAFETY: a fresh shared mapping of our memfd, where the kernel picks.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), span, prot, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
            if p == libc::MAP_FAILED {
                Err(GuardError::os("mmap shadow"))
            } else {
                Ok(p as *mut u8)
            }
        };
        let own = map(libc::PROT_READ | libc::PROT_WRITE)?;
        let app = match map(app_prot) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: `own` was mapped above with `span` bytes and is not used elsewhere.
                unsafe { libc::munmap(own as *mut libc::c_void, span) };
                return Err(e);
            }
        };
        if own_dontfork {
            // Failure only costs a copy at fork.
            // SAFETY: `own` is our mapping of `span` bytes.
            unsafe { libc::madvise(own as *mut libc::c_void, span, libc::MADV_DONTFORK) };
        }
        Ok(DualView { app, own, span, placed: None })
    }

    fn protect_app(&self, prot: libc::c_int) -> Result<(), GuardError> {
        // SAFETY: the application view is our mapping of `span` bytes.
        if unsafe { libc::mprotect(self.app as *mut libc::c_void, self.span, prot) } != 0 {
            return Err(GuardError::os("mprotect shadow"));
        }
        Ok(())
    }
}

impl Drop for DualView {
    fn drop(&mut self) {
        if self.placed.is_some() {
            // Both views go with the arena block (its pages punched out, PROT_NONE).
            return;
        }
        // SAFETY: both views were mapped with `span` bytes; their owner is gone, so nothing
        // refers to them any more.
        unsafe {
            libc::munmap(self.app as *mut libc::c_void, self.span);
            libc::munmap(self.own as *mut libc::c_void, self.span);
        }
    }
}

/// Refuses what no backend can track: an empty region, a null pointer, or one that wraps the
/// address space.
fn check_region(backend: BackendKind, real: *mut u8, len: usize) -> Result<(), GuardError> {
    if len == 0 || real.is_null() || (real as usize).checked_add(len).is_none() {
        return Err(GuardError::refused(backend, real as usize, len, "empty or wrapping region"));
    }
    Ok(())
}

/// The system page size.
pub fn page_size() -> usize {
    static PAGE: once_cell::sync::OnceCell<usize> = once_cell::sync::OnceCell::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize)
}

pub mod arena;
pub mod assisted;
pub mod async_wp;
pub mod full;
pub mod shadow;
pub mod shadow_wp;
pub mod uapi;
pub mod wp;

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One backend. Implementations are shared by every region tracked with them and must be safe
/// to call from any thread; calls for different regions may run concurrently. [`GuardManager`]
/// serializes the calls for one region, and calls none for a region after its `untrack` began.
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// Begins tracking `len` bytes at `real` and returns the pointer the application must use
    /// from now on (`real` itself, or a shadow).
    ///
    /// # Safety
    /// `real..real + len` is mapped readable and writable and stays mapped until `untrack`
    /// for `id` has returned.
    unsafe fn track(&self, id: RegionId, real: *mut u8, len: usize, opts: &TrackOptions)
        -> Result<*mut u8, GuardError>;

    /// Reports the pages written since the last collection, restricted to `range` (region
    /// offsets; the whole region when `None`), re-arms them, then copies their bytes (for shadow
    /// backends: shadow to real memory first) and hands them to `sink`.
    fn collect(
        &self,
        id: RegionId,
        range: Option<Range<usize>>,
        sink: &mut dyn DirtySink,
    ) -> Result<CollectStats, GuardError>;

    /// Collects every region of `group` tracked with this backend, like `collect` on each, into
    /// `sink`.
    /// `None`: the backend has no cheaper way than one `collect` per region (the manager does
    /// that). Backends that do have one make its cost follow what was written, not the number
    /// of regions.
    fn collect_all(&self, _group: u64, _sink: &mut dyn RegionSink) -> Option<Result<CollectStats, GuardError>> {
        None
    }

    /// The caller declares `range` flushed (`vkFlushMappedMemoryRanges`). Only `assisted`
    /// records it; the others ignore it.
    fn flushed(&self, _id: RegionId, _range: Range<usize>) -> Result<(), GuardError> {
        Ok(())
    }

    /// The real memory in `range` may have been written by someone else (the GPU); shadow
    /// backends refresh the application's view of pages it has not written.
    fn invalidate(&self, _id: RegionId, _range: Range<usize>) -> Result<(), GuardError> {
        Ok(())
    }

    /// Stops tracking: outstanding writes are collected into `sink` (and, for shadow
    /// backends, copied back to the real memory) before the region is released.
    fn untrack(&self, id: RegionId, sink: &mut dyn DirtySink) -> Result<CollectStats, GuardError>;

    /// The device may write the region's real memory from now on (a resource that allows device
    /// writes was bound; see [`TrackOptions::device_never_writes`]). Called before any work that
    /// can write it is submitted. Tracked or parked regions; the others ignore it.
    fn device_writes(&self, _id: RegionId) -> Result<(), GuardError> {
        Ok(())
    }

    /// Shadow backends: drops the shadow kept for `key` ([`TrackOptions::persistent_key`]),
    /// e.g. when the allocation is freed. The others ignore it.
    fn release_persistent(&self, _key: u64) {}

    /// Collects the region's outstanding writes into `sink` like `untrack`, but keeps the region
    /// tracked (registration, place in its group's batch) while its owner has it unmapped, for
    /// [`resume`](Backend::resume). Pages a collection of the group finds written meanwhile are
    /// kept for the resume. `None`: the backend cannot keep regions (the caller untracks).
    fn park(&self, _id: RegionId, _sink: &mut dyn DirtySink) -> Option<Result<CollectStats, GuardError>> {
        None
    }

    /// Tracks a parked region again at `real` (`len` bytes, as parked) and returns the pointer the
    /// application must use; the pages found written while it was parked go to `sink`.
    /// `unchanged`: nothing but the application can have written the real memory since the park
    /// (see [`TrackOptions::unchanged`]); otherwise a shadow is filled from it again. Refused
    /// (the region stays parked) when the region cannot be resumed at `real`.
    ///
    /// # Safety
    /// As [`track`](Backend::track).
    unsafe fn resume(
        &self,
        id: RegionId,
        real: *mut u8,
        len: usize,
        _unchanged: bool,
        _sink: &mut dyn DirtySink,
    ) -> Result<*mut u8, GuardError> {
        Err(GuardError::refused(self.kind(), real as usize, len, format!("cannot resume {id:?}")))
    }
}

/// A region as tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub id: RegionId,
    /// The pointer the application must use.
    pub app_ptr: *mut u8,
    pub backend: BackendKind,
}

// SAFETY: `app_ptr` is an address handed back to the application, never dereferenced through
// this struct.
unsafe impl Send for Tracked {}
// SAFETY: as above.
unsafe impl Sync for Tracked {}

#[derive(Clone, Debug)]
struct RegionInfo {
    backend: BackendKind,
    group: u64,
    /// Serializes the region's calls, and says where it is in its life.
    life: Arc<Mutex<Life>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Tracked,
    /// Kept while its owner has it unmapped ([`GuardManager::park`]): no call but `resume` and
    /// `untrack`.
    Parked,
    /// `untrack` has begun.
    Gone,
}

/// Owns the tracked regions and the backend instances.
pub struct GuardManager {
    backends: [once_cell::sync::OnceCell<Result<Box<dyn Backend>, String>>; 6],
    regions: RwLock<HashMap<RegionId, RegionInfo>>,
    next_id: AtomicU64,
    /// Per backend, in [`BackendKind::ALL`]'s order.
    predictions: [wp::Prediction; 6],
}

impl Default for GuardManager {
    fn default() -> Self {
        Self::new()
    }
}

fn create_backend(kind: BackendKind, prediction: wp::Prediction) -> Result<Box<dyn Backend>, GuardError> {
    match kind {
        BackendKind::AsyncWp => Ok(Box::new(async_wp::AsyncWp::new(BackendKind::AsyncWp, prediction)?)),
        BackendKind::OwnedWp => Ok(Box::new(async_wp::AsyncWp::new(BackendKind::OwnedWp, prediction)?)),
        BackendKind::Shadow => Ok(Box::new(shadow::Shadow::new()?)),
        BackendKind::Full => Ok(Box::new(full::Full::new())),
        BackendKind::Assisted => Ok(Box::new(assisted::Assisted::new())),
        BackendKind::ShadowWp => Ok(Box::new(shadow_wp::ShadowWp::with_prediction(prediction)?)),
    }
}

impl GuardManager {
    pub fn new() -> GuardManager {
        Self::with_prediction(wp::Prediction::default())
    }

    /// A manager whose write-protect backends (`async-wp`, `host-import`, `shadow-wp`) predict
    /// written pages as `prediction` says (see docs/design.md, "Predicted pages").
    pub fn with_prediction(prediction: wp::Prediction) -> GuardManager {
        Self::with_prediction_by(|_| prediction)
    }

    /// As [`with_prediction`](Self::with_prediction), each backend with its own settings
    /// (`VKDIRTY_PREDICT`'s default differs per backend).
    pub fn with_prediction_by(prediction: impl Fn(BackendKind) -> wp::Prediction) -> GuardManager {
        GuardManager {
            backends: Default::default(),
            regions: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            predictions: BackendKind::ALL.map(prediction),
        }
    }

    /// The backend instance for `kind`, created on first use. Creation failures (the probe) are
    /// remembered, so a missing kernel feature is probed once.
    pub fn backend(&self, kind: BackendKind) -> Result<&dyn Backend, GuardError> {
        let idx = BackendKind::ALL.iter().position(|k| *k == kind).expect("listed");
        // Keep the bare reason: the error below names the backend again.
        let create = || {
            create_backend(kind, self.predictions[idx]).map_err(|e| match e {
                GuardError::Unavailable { reason, .. } => reason,
                e => e.to_string(),
            })
        };
        match self.backends[idx].get_or_init(create) {
            Ok(b) => Ok(b.as_ref()),
            Err(reason) => Err(GuardError::Unavailable { backend: kind, reason: reason.clone() }),
        }
    }

    /// Tracks a region with one backend.
    ///
    /// # Safety
    /// See [`Backend::track`].
    pub unsafe fn track(
        &self,
        real: *mut u8,
        len: usize,
        kind: BackendKind,
        opts: &TrackOptions,
    ) -> Result<Tracked, GuardError> {
        let backend = self.backend(kind)?;
        let id = RegionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        // SAFETY: forwarded caller contract.
        let app_ptr = unsafe { backend.track(id, real, len, opts)? };
        self.regions
            .write()
            .insert(id, RegionInfo { backend: kind, group: opts.group, life: Arc::new(Mutex::new(Life::Tracked)) });
        Ok(Tracked { id, app_ptr, backend: kind })
    }

    /// Tracks a region with the first backend of `order` that accepts it. Returns the region and
    /// the reasons the earlier backends gave (empty when the first one accepted).
    ///
    /// # Safety
    /// See [`Backend::track`].
    pub unsafe fn track_first(
        &self,
        real: *mut u8,
        len: usize,
        order: &[BackendKind],
        opts: &TrackOptions,
    ) -> Result<(Tracked, Vec<GuardError>), Vec<GuardError>> {
        let mut refusals = Vec::new();
        for &kind in order {
            // SAFETY: forwarded caller contract.
            match unsafe { self.track(real, len, kind, opts) } {
                Ok(t) => return Ok((t, refusals)),
                Err(e) => refusals.push(e),
            }
        }
        Err(refusals)
    }

    /// Runs `f` on the region's backend with the region's lock held.
    fn with_region<R>(
        &self,
        id: RegionId,
        f: impl FnOnce(&dyn Backend) -> Result<R, GuardError>,
    ) -> Result<R, GuardError> {
        let info = self.regions.read().get(&id).cloned().ok_or(GuardError::UnknownRegion(id))?;
        let life = info.life.lock();
        if *life != Life::Tracked {
            return Err(GuardError::UnknownRegion(id));
        }
        f(self.backend(info.backend)?)
    }

    /// Collects the region's outstanding writes into `sink` and keeps it tracked while unmapped
    /// ([`Backend::park`]). `Ok(false)`: its backend cannot keep regions, so it was untracked.
    pub fn park(&self, id: RegionId, sink: &mut dyn DirtySink) -> Result<bool, GuardError> {
        let info = self.regions.read().get(&id).cloned().ok_or(GuardError::UnknownRegion(id))?;
        let mut life = info.life.lock();
        if *life != Life::Tracked {
            return Err(GuardError::UnknownRegion(id));
        }
        match self.backend(info.backend)?.park(id, sink) {
            Some(r) => {
                r?;
                *life = Life::Parked;
                Ok(true)
            }
            None => {
                drop(life);
                self.untrack(id, sink).map(|_| false)
            }
        }
    }

    /// Tracks a parked region again ([`Backend::resume`]); on an error it stays parked (the
    /// caller untracks it).
    ///
    /// # Safety
    /// See [`Backend::track`].
    pub unsafe fn resume(
        &self,
        id: RegionId,
        real: *mut u8,
        len: usize,
        unchanged: bool,
        sink: &mut dyn DirtySink,
    ) -> Result<Tracked, GuardError> {
        let info = self.regions.read().get(&id).cloned().ok_or(GuardError::UnknownRegion(id))?;
        let mut life = info.life.lock();
        if *life != Life::Parked {
            return Err(GuardError::UnknownRegion(id));
        }
        // SAFETY: forwarded caller contract.
        let app_ptr = unsafe { self.backend(info.backend)?.resume(id, real, len, unchanged, sink)? };
        *life = Life::Tracked;
        Ok(Tracked { id, app_ptr, backend: info.backend })
    }

    /// Collects the whole region.
    pub fn collect(&self, id: RegionId, sink: &mut dyn DirtySink) -> Result<CollectStats, GuardError> {
        self.with_region(id, |b| b.collect(id, None, sink))
    }

    /// Collects only `range` (region offsets), e.g. the ranges of a flush.
    pub fn collect_range(
        &self,
        id: RegionId,
        range: Range<usize>,
        sink: &mut dyn DirtySink,
    ) -> Result<CollectStats, GuardError> {
        self.with_region(id, |b| b.collect(id, Some(range), sink))
    }

    /// Collects every region of `group` tracked with a backend `which` selects, into `sink`. Backends with
    /// a batch collection (`async-wp`, `host-import`, `shadow-wp`) make one `PAGEMAP_SCAN` per run
    /// of address-adjacent regions; the others are collected region by region. Every selected
    /// backend is collected even when one fails; the first error is returned.
    pub fn collect_all(
        &self,
        group: u64,
        which: &dyn Fn(BackendKind) -> bool,
        sink: &mut dyn RegionSink,
    ) -> Result<CollectStats, GuardError> {
        let mut stats = CollectStats::default();
        let mut first_err = None;
        for (i, kind) in BackendKind::ALL.into_iter().enumerate() {
            let Some(Ok(b)) = self.backends[i].get() else { continue };
            if !which(kind) {
                continue;
            }
            let r = match b.collect_all(group, sink) {
                Some(r) => r,
                None => self.collect_each(group, kind, sink),
            };
            match r {
                Ok(s) => stats += s,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(stats), Err)
    }

    /// `collect_all` for a backend without a batch collection: one `collect` per region.
    fn collect_each(
        &self,
        group: u64,
        kind: BackendKind,
        sink: &mut dyn RegionSink,
    ) -> Result<CollectStats, GuardError> {
        let ids: Vec<RegionId> = self
            .regions
            .read()
            .iter()
            .filter(|(_, i)| i.backend == kind && i.group == group)
            .map(|(&id, _)| id)
            .collect();
        let mut stats = CollectStats::default();
        let mut first_err = None;
        for id in ids {
            match self.collect(id, &mut |off: usize, bytes: &[u8]| sink.run(id, off, bytes)) {
                Ok(s) => stats += s,
                // Untracked meanwhile: its writes went to its untrack.
                Err(GuardError::UnknownRegion(_)) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(stats), Err)
    }

    pub fn flushed(&self, id: RegionId, range: Range<usize>) -> Result<(), GuardError> {
        self.with_region(id, |b| b.flushed(id, range))
    }

    pub fn invalidate(&self, id: RegionId, range: Range<usize>) -> Result<(), GuardError> {
        self.with_region(id, |b| b.invalidate(id, range))
    }

    /// The device may write the region's real memory from now on ([`Backend::device_writes`]);
    /// the region may be tracked or parked.
    pub fn device_writes(&self, id: RegionId) -> Result<(), GuardError> {
        let info = self.regions.read().get(&id).cloned().ok_or(GuardError::UnknownRegion(id))?;
        let life = info.life.lock();
        if *life == Life::Gone {
            return Err(GuardError::UnknownRegion(id));
        }
        self.backend(info.backend)?.device_writes(id)
    }

    /// Drops the persistent shadows kept for `key` (the allocation was freed).
    pub fn release_persistent(&self, key: u64) {
        for b in self.backends.iter().filter_map(|c| c.get()).filter_map(|r| r.as_ref().ok()) {
            b.release_persistent(key);
        }
    }

    /// Stops tracking; outstanding writes go to `sink` first.
    pub fn untrack(&self, id: RegionId, sink: &mut dyn DirtySink) -> Result<CollectStats, GuardError> {
        let info = self.regions.write().remove(&id).ok_or(GuardError::UnknownRegion(id))?;
        let mut life = info.life.lock();
        *life = Life::Gone;
        self.backend(info.backend)?.untrack(id, sink)
    }
}

/// Per-backend region table: each region's state behind its own lock, so calls for different
/// regions run in parallel and a call racing `untrack` finds the region gone instead of using
/// released memory.
pub(crate) struct RegionTable<T> {
    map: RwLock<HashMap<RegionId, Arc<Mutex<Option<T>>>>>,
}

impl<T> Default for RegionTable<T> {
    fn default() -> Self {
        RegionTable { map: RwLock::new(HashMap::new()) }
    }
}

impl<T> RegionTable<T> {
    pub(crate) fn insert(&self, id: RegionId, state: T) {
        self.map.write().insert(id, Arc::new(Mutex::new(Some(state))));
    }

    /// Runs `f` on the region's state, under its lock.
    pub(crate) fn with<R>(
        &self,
        id: RegionId,
        f: impl FnOnce(&mut T) -> Result<R, GuardError>,
    ) -> Result<R, GuardError> {
        let cell = self.map.read().get(&id).cloned().ok_or(GuardError::UnknownRegion(id))?;
        let mut guard = cell.lock();
        f(guard.as_mut().ok_or(GuardError::UnknownRegion(id))?)
    }

    /// Removes the region and runs `f` on its state, after any call in progress on it.
    pub(crate) fn remove<R>(&self, id: RegionId, f: impl FnOnce(T) -> Result<R, GuardError>) -> Result<R, GuardError> {
        let cell = self.map.write().remove(&id).ok_or(GuardError::UnknownRegion(id))?;
        let state = cell.lock().take().ok_or(GuardError::UnknownRegion(id))?;
        f(state)
    }
}

/// Clips an optional region-relative range to `0..len`.
pub(crate) fn clip_range(range: Option<Range<usize>>, len: usize) -> Range<usize> {
    match range {
        Some(r) => r.start.min(len)..r.end.min(len).max(r.start.min(len)),
        None => 0..len,
    }
}
