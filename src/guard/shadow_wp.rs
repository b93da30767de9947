//! `shadow-wp`: the application gets a shadow that userfaultfd can track, for drivers whose own
//! mappings it refuses (NVIDIA's are `VM_MIXEDMAP`/`VM_PFNMAP`). No signal, no `mprotect`.
//!
//! # Shadow memory
//! Each region gets a `memfd` covering its pages, mapped twice with `MAP_SHARED`:
//! - the *application view*, registered for async write-protect with [`super::wp`] and handed to
//!   the application (keeping the region's offset within its first page, so shadow pages and
//!   real pages line up one to one);
//! - the *layer view*, never registered and never handed out: every copy this backend makes into
//!   the shadow goes through it, so the layer's own writes never count as the application's.
//!
//! A region whose memory the device never writes ([`TrackOptions::device_never_writes`]) gets one
//! *private* anonymous view instead, from arenas of its own ([`super::arena::ArenaBlock::private_shadow`]):
//! the layer writes it only while the application has no pointer to it (the fill at `track`,
//! before registering; at `resume`, before protecting it again) or, once told the device does
//! write it ([`Backend::device_writes`]), in a refresh that checks afterwards (below). Private
//! memory is cheaper to track: its write faults cost less, and a predicted page is writable after
//! the unprotect alone, where shared memory needs `MADV_POPULATE_WRITE` per page as well
//! (docs/design.md, "Predicted pages").
//!
//! # Collection
//! `PAGEMAP_SCAN` with `PM_SCAN_WP_MATCHING` on the application view returns the written pages and
//! re-protects them under the page-table lock; only then are their bytes copied shadow → real
//! (read through the layer view), clipped to the region, and handed to the sink from the real
//! memory. A write racing the collection lands before the re-protection (and is in the copy) or
//! after it (and is in the next scan). A page the kernel dropped from the application view after
//! it was written (reclaim of the shmem page, `MADV_DONTNEED`) has no page-table entry and no
//! write-protect marker; the kernel reports such a page as written, so it is collected too.
//!
//! # Freshness: [`ShadowWp::refresh`]
//! The real memory changes behind the shadow when the GPU writes it. At the host synchronisation
//! points the layer calls `invalidate` (→ `refresh`), which brings the real bytes into the pages
//! of the shadow that the application has not written since the last collection:
//! 1. a non-resetting scan ([`WpTracker::written`]) says which pages the application wrote; those
//!    keep the application's bytes (the page is the unit of tracking: a written page is copied
//!    back whole at the next collection, so its bytes must stay the application's);
//! 2. every other page is compared with the real memory (`memcmp`), and each differing 8-byte
//!    word is logged with its shadow value and its real value; nothing is written yet;
//! 3. after a batch of pages, a second non-resetting scan of the logged pages: a page written
//!    since step 1 is left alone (counted in [`RefreshStats::races`]); on the others each logged
//!    word is swapped in through the layer view with a compare-and-swap whose expected value is
//!    the shadow value read in step 2.
//!
//! On a private view the swaps go through the application's own view, so they mark the page as
//! written. Step 2 keeps a copy of each page it logged words of; after the swaps:
//! 4. the swapped pages are protected again (`UFFDIO_WRITEPROTECT`) and each is compared with its
//!    copy, the successful swaps applied: a page that differs was written by the application
//!    between the step-3 scan and the protection, and is marked written again (its stores
//!    stand, and the next collection reports the page). A store after the protection faults.
//!
//! An application store seen by a step-2 read faulted first, clearing the page's write-protect
//! bit before the step-3 scan reads it: the page is skipped whole. A store after that scan
//! either changes the word before the swap (the swap fails: the store stands) or lands after it
//! (it overwrites the refreshed value). Nothing is undone, so no store can be mistaken for the
//! refresh's own. One case gives the GPU's value: a store made after the step-3 scan that writes
//! exactly the value the shadow already held, into a word the GPU changed. That store races the
//! GPU's write of the same word, which the Vulkan memory model leaves undefined (see
//! docs/design.md).
//!
//! # Prediction
//! With write prediction ([`ShadowWp::with_prediction`]) the group's span set predicts pages of
//! the application views ([`WpTracker::predict_set`] after each batch collection delivered its
//! runs). A predicted page is unprotected, so it reads as written to the refresh's scans: the
//! refresh compares such a page with its snapshot instead (equal: refreshed, and each swapped
//! word is written into the snapshot too; different: the application's, left alone). See
//! docs/design.md, "Predicted pages", "shadow-wp".
//!
//! # Persistent shadows
//! With [`TrackOptions::persistent_key`], `untrack` keeps the memfd and both views for that key
//! (the application view made `PROT_NONE`, so touching it while unmapped crashes like touching
//! unmapped memory); the next `track` with the key and the same page count reuses them, so the
//! application gets the same pointer back when the offset within the first page is the same.
//! [`Backend::release_persistent`] drops them (the layer calls it at `vkFreeMemory`).
//! The layer parks the region instead ([`Backend::park`]): the shadow keeps its registration and
//! its place in the batch, [`Backend::resume`] takes the new real pointer and fills the shadow from
//! it only when the real memory may have changed (docs/design.md, "Map every frame").
//!
//! # Limits
//! - Per page: a page the application writes is copied back whole (clipped to the region),
//!   including bytes the GPU wrote in it since the last refresh; such a page is also not
//!   refreshed until it has been collected. CPU-written and GPU-written data must not share a page.
//! - After `fork()` the child shares a memfd shadow with the parent (as it shares `MAP_SHARED`
//!   driver memory); writes made in the child are tracked for the child only. A private shadow is
//!   the child's own copy, as host-import's private arenas are: its writes there do not reach the
//!   parent's memory (through the driver's shared mapping they would). Vulkan objects are not
//!   usable in a child, so only a child that writes mapped memory without the GPU sees this.
//! - [`TrackOptions::shadow_reads`] is not supported: async write-protect cannot see reads.

use super::wp::{self, WpSpan, WpTracker};
use super::*;
use std::sync::atomic::{fence, AtomicU64};

/// Pages read before the second scan checks them; bounds the word log (at most 512 words a
/// page).
const BATCH_PAGES: usize = 64;

/// What a refresh did. [`ShadowWp::totals`] sums them per backend instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// Pages compared with the real memory (not written by the application since the last
    /// collection).
    pub pages_compared: u64,
    /// Pages left alone because the application has written them since the last collection.
    pub pages_written: u64,
    /// Pages where at least one word was brought in from the real memory.
    pub pages_refreshed: u64,
    /// 8-byte words brought in.
    pub words: u64,
    /// Words left alone because they changed between the read and the swap (an application write).
    pub words_contended: u64,
    /// Pages the application wrote while they were being read: left as the application wrote them.
    pub races: u64,
    /// Private views: pages the application wrote while words were swapped in (its stores
    /// stand); marked written again for the next collection.
    pub rewritten: u64,
    /// `PAGEMAP_SCAN` walks made.
    pub scans: u64,
}

impl std::ops::AddAssign for RefreshStats {
    fn add_assign(&mut self, o: Self) {
        self.pages_compared += o.pages_compared;
        self.pages_written += o.pages_written;
        self.pages_refreshed += o.pages_refreshed;
        self.words += o.words;
        self.words_contended += o.words_contended;
        self.races += o.races;
        self.rewritten += o.rewritten;
        self.scans += o.scans;
    }
}

/// Where [`ShadowWp::refresh_interleaved`] calls back within each batch of pages.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshStep {
    /// The batch's words are read and logged; the scan that checks their pages comes next.
    BeforeCheck,
    /// That scan is done; the swaps come next.
    BeforeSwap,
    /// Private views: the swaps are done; the pages are protected again and checked next.
    BeforeProtect,
}

/// A word to bring in, kept until the second scan cleared its page.
struct Swap {
    /// Address in the layer view (8-byte aligned).
    at: usize,
    old: u64,
    new: u64,
}

struct Region {
    real: usize,
    len: usize,
    /// The region's offset within its first page.
    head: usize,
    /// The application view and the layer view (`own`).
    views: DualView,
    span: Option<WpSpan>,
    key: Option<u64>,
    /// Parked ([`Backend::park`]): `real` is stale (the driver unmapped it).
    parked: bool,
    /// Scan outputs and the word log, kept to avoid allocations per call.
    runs: Vec<Range<usize>>,
    written: Vec<Range<usize>>,
    swaps: Vec<Swap>,
    /// Pages of the current batch that got swaps: (application-view page, first swap index,
    /// predicted and unchanged).
    batch: Vec<(usize, usize, bool)>,
    /// Private view: each batch page as read (`BATCH_PAGES` pages), the swaps made applied, and
    /// the batch pages (index, page) to check after protecting them again.
    copies: Vec<u8>,
    check: Vec<(usize, usize)>,
}

impl Region {
    /// The region's bytes in the application view.
    fn app_bytes(&self) -> Range<usize> {
        let start = self.views.app as usize + self.head;
        start..start + self.len
    }

    fn real_of(&self, app_addr: usize) -> usize {
        self.real + (app_addr - self.views.app as usize - self.head)
    }

    fn layer_of(&self, app_addr: usize) -> usize {
        self.layer_base() + (app_addr - self.views.app as usize)
    }

    fn layer_base(&self) -> usize {
        self.views.own as usize
    }

    fn span(&self) -> Result<&WpSpan, GuardError> {
        self.span
            .as_ref()
            .ok_or(GuardError::Os { op: "shadow-wp", source: std::io::Error::other("region is not registered") })
    }

    fn collect(
        &mut self,
        wp: &WpTracker,
        range: Option<Range<usize>>,
        sink: &mut dyn DirtySink,
    ) -> Result<CollectStats, GuardError> {
        let want = clip_range(range, self.len);
        let mut stats = CollectStats::default();
        if want.is_empty() {
            return Ok(stats);
        }
        let bytes = self.app_bytes();
        let mut runs = std::mem::take(&mut self.runs);
        let scanned = wp.scan(self.span()?, bytes.start + want.start..bytes.start + want.end, &mut runs);
        let result = scanned.map(|scan| {
            stats.pages = scan.pages;
            stats.thp_pages = scan.thp_pages;
            stats.scans = scan.ioctls;
            self.deliver(&runs, sink, &mut stats);
            stats
        });
        self.runs = runs;
        result
    }

    /// Copies the written `runs` (application-view pages a scan just returned and re-protected)
    /// shadow → real memory, clipped to the region, and hands them to `sink` from the real memory.
    fn deliver(&self, runs: &[Range<usize>], sink: &mut dyn DirtySink, stats: &mut CollectStats) {
        let bytes = self.app_bytes();
        for run in runs {
            let Some(run) = wp::intersect(run, &bytes) else { continue };
            let real = self.real_of(run.start);
            // SAFETY: `run` lies inside the region: the layer view maps it (our memfd) and
            // the real memory is mapped and writable while tracked (track contract). The scan
            // re-protected these pages first, so a later application write is in the next scan.
            let copied = unsafe {
                std::ptr::copy_nonoverlapping(self.layer_of(run.start) as *const u8, real as *mut u8, run.len());
                std::slice::from_raw_parts(real as *const u8, run.len())
            };
            sink.run(run.start - bytes.start, copied);
            stats.runs += 1;
            stats.bytes += run.len();
        }
    }

    /// Hands `runs` (application-view pages) to `sink` as the shadow holds them, without copying
    /// them to the real memory (gone, or just filled from it): pages found written while parked.
    fn report_shadow(&self, runs: Vec<Range<usize>>, sink: &mut dyn DirtySink, stats: &mut CollectStats) {
        let bytes = self.app_bytes();
        for run in runs {
            let Some(run) = wp::intersect(&run, &bytes) else { continue };
            // SAFETY: inside the region's layer view, ours while the region lives.
            let b = unsafe { std::slice::from_raw_parts(self.layer_of(run.start) as *const u8, run.len()) };
            sink.run(run.start - bytes.start, b);
            stats.runs += 1;
            stats.bytes += run.len();
        }
    }

    /// See the module documentation, "Freshness". `preds`: the group's span set, whose
    /// predicted pages read as written to a scan (see "Prediction").
    fn refresh(
        &mut self,
        wp: &WpTracker,
        range: Range<usize>,
        preds: Option<&mut wp::SpanSet<RegionId>>,
        scanned: &[Range<usize>],
        between: &mut dyn FnMut(RefreshStep),
    ) -> Result<RefreshStats, GuardError> {
        let want = clip_range(Some(range), self.len);
        let mut st = RefreshStats::default();
        if want.is_empty() {
            return Ok(st);
        }
        let page = page_size();
        let bytes = self.app_bytes();
        let lo = bytes.start + want.start;
        let hi = bytes.start + want.end;
        let mut written = std::mem::take(&mut self.written);
        let r = self.refresh_pages(wp, lo..hi, page, &mut written, &mut st, preds, scanned, between);
        self.written = written;
        // Whatever happened, no logged word may outlive this call.
        self.swaps.clear();
        self.batch.clear();
        self.check.clear();
        r.map(|()| st)
    }

    #[allow(clippy::too_many_arguments)]
    fn refresh_pages(
        &mut self,
        wp: &WpTracker,
        want: Range<usize>,
        page: usize,
        written: &mut Vec<Range<usize>>,
        st: &mut RefreshStats,
        mut preds: Option<&mut wp::SpanSet<RegionId>>,
        scanned: &[Range<usize>],
        between: &mut dyn FnMut(RefreshStep),
    ) -> Result<(), GuardError> {
        let pages = wp::page_floor(want.start)..wp::page_ceil(want.end);
        wp.written(self.span()?, pages.clone(), written)?;
        st.scans += 1;
        if !preds.as_ref().is_some_and(|s| s.any_predicted(&pages)) {
            preds = None;
        }
        let mut w = 0;
        let mut p = pages.start;
        while p < pages.end {
            while w < written.len() && written[w].end <= p {
                w += 1;
            }
            let mut predicted = false;
            if w < written.len() && written[w].start <= p {
                // A predicted page reads as written (it is unprotected): the application wrote
                // it only if it differs from its snapshot.
                let Some(set) = preds.as_deref_mut() else {
                    st.pages_written += ((written[w].end.min(pages.end) - p) / page) as u64;
                    p = written[w].end;
                    continue;
                };
                let ordinary = scanned.iter().any(|r| r.contains(&p));
                match set.predicted_snapshot(p) {
                    Some(snap) if !ordinary && self.same_as(p, snap) => predicted = true,
                    _ => {
                        st.pages_written += 1;
                        p += page;
                        continue;
                    }
                }
            }
            let b = p.max(want.start)..(p + page).min(want.end);
            st.pages_compared += 1;
            let first = self.swaps.len();
            self.read_page(b);
            if self.swaps.len() > first {
                if self.views.private() {
                    // The page as read, for the check after the swaps (see `settle`). A store
                    // after this copy faulted before the check scan: the page is left alone.
                    let k = self.batch.len();
                    self.copies.resize(self.copies.len().max((k + 1) * page), 0);
                    // SAFETY: `p` is a whole page of the view, mapped for the life of the region;
                    // the copy's room was made above. memcpy is opaque to concurrent stores.
                    unsafe {
                        libc::memcpy(self.copies.as_mut_ptr().add(k * page).cast(), p as *const libc::c_void, page)
                    };
                }
                self.batch.push((p, first, predicted));
                if self.batch.len() == BATCH_PAGES {
                    self.settle(wp, page, written, st, preds.as_deref_mut(), between)?;
                }
            }
            p += page;
        }
        if !self.batch.is_empty() {
            self.settle(wp, page, written, st, preds, between)?;
        }
        Ok(())
    }

    /// Whether the application-view page at `p` holds `snap` (read through the layer view).
    fn same_as(&self, p: usize, snap: &[u8]) -> bool {
        // SAFETY: the layer view maps the region's pages for the life of the region; the
        // application may write them concurrently (any byte value is valid; memcmp is opaque).
        unsafe { libc::memcmp(self.layer_of(p) as *const libc::c_void, snap.as_ptr().cast(), snap.len()) == 0 }
    }

    /// Logs each word of `b` (application-view addresses inside one page) where the real
    /// memory differs from the shadow, with both values. Nothing is written yet. Equal
    /// stretches are skipped with `memcmp` first (the common case: the GPU wrote little).
    fn read_page(&mut self, b: Range<usize>) {
        const CHUNK: usize = 256;
        if self.same(b.clone()) {
            return;
        }
        let mut c = b.start;
        while c < b.end {
            let end = ((c / CHUNK + 1) * CHUNK).min(b.end);
            if !self.same(c..end) {
                self.read_words(c..end);
            }
            c = end;
        }
    }

    /// Whether the shadow and the real memory hold the same bytes at `r` (application-view
    /// addresses inside the region).
    fn same(&self, r: Range<usize>) -> bool {
        // SAFETY: both ranges lie inside mapped memory (the layer view; the tracked real region).
        // memcmp is opaque to the compiler, so concurrent writers cannot make this a Rust data
        // race; a stale answer only means a stretch is examined (or skipped) needlessly, or a
        // GPU write that raced the refresh waits for the next one.
        unsafe {
            libc::memcmp(
                self.layer_of(r.start) as *const libc::c_void,
                self.real_of(r.start) as *const libc::c_void,
                r.len(),
            ) == 0
        }
    }

    /// The word-by-word comparison of `b` (chunk boundaries are 8-byte aligned, so a word never
    /// spans two calls).
    fn read_words(&mut self, b: Range<usize>) {
        let mut word = b.start & !7;
        while word < b.end {
            // Bytes of this word inside `b`, as a little-endian mask.
            let from = b.start.max(word) - word;
            let to = b.end.min(word + 8) - word;
            let mask = if to - from == 8 { u64::MAX } else { (u64::MAX >> (64 - 8 * (to - from))) << (8 * from) };
            // SAFETY: `word` is 8-byte aligned inside the layer view (a page multiple), which is
            // ours for the life of the region; the application view maps the same memory, so the
            // word is only ever accessed atomically here.
            let cur = unsafe { AtomicU64::from_ptr(self.layer_of(word) as *mut u64) }.load(Ordering::Relaxed);
            let incoming = if mask == u64::MAX {
                // SAFETY: the whole word lies inside the real region (aligned like the shadow,
                // since both start at the same offset within a page); the GPU may be writing it,
                // hence volatile.
                unsafe { std::ptr::read_volatile(self.real_of(word) as *const u64) }
            } else {
                let mut v = 0u64;
                for i in from..to {
                    // SAFETY: byte `word + i` lies inside `b`, inside the real region.
                    let byte = unsafe { std::ptr::read_volatile(self.real_of(word + i) as *const u8) };
                    v |= (byte as u64) << (8 * i);
                }
                v
            };
            let new = (cur & !mask) | (incoming & mask);
            if new != cur {
                self.swaps.push(Swap { at: self.layer_of(word), old: cur, new });
            }
            word += 8;
        }
    }

    /// Checks the batch's pages with a second scan, then swaps the logged words in on the pages
    /// the application still has not written.
    fn settle(
        &mut self,
        wp: &WpTracker,
        page: usize,
        written: &mut Vec<Range<usize>>,
        st: &mut RefreshStats,
        mut preds: Option<&mut wp::SpanSet<RegionId>>,
        between: &mut dyn FnMut(RefreshStep),
    ) -> Result<(), GuardError> {
        between(RefreshStep::BeforeCheck);
        // The shadow words were read before the scan reads the page tables: an application
        // store those reads saw was preceded by its write fault, which cleared the page's
        // write-protect bit, so the scan reports the page as written.
        fence(Ordering::SeqCst);
        let first = self.batch[0].0;
        let last = self.batch[self.batch.len() - 1].0;
        wp.written(self.span()?, first..last + page, written)?;
        st.scans += 1;
        between(RefreshStep::BeforeSwap);
        let mut w = 0;
        for (k, &(p, start, predicted)) in self.batch.iter().enumerate() {
            while w < written.len() && written[w].end <= p {
                w += 1;
            }
            // A predicted page is unprotected: the scan cannot tell, the snapshot can. (A page
            // with a snapshot that a region's own collection re-protected is an ordinary one.)
            let mut snap = preds.as_deref_mut().and_then(|s| s.predicted_snapshot(p));
            let raced = match (predicted, snap.as_deref()) {
                (true, Some(snap)) => !self.same_as(p, snap),
                (true, None) => true,
                (false, _) => w < written.len() && written[w].start <= p,
            };
            if raced {
                st.races += 1;
                continue;
            }
            let end = self.batch.get(k + 1).map_or(self.swaps.len(), |b| b.1);
            let mut any = false;
            // A private view: the swaps are writes through the application's own view, which
            // mark the page as written; it is protected again and checked below (a predicted page
            // is unprotected anyway, and its snapshot tells).
            let check = self.views.private() && !predicted;
            if check {
                self.check.push((k, p));
            }
            for sw in &self.swaps[start..end] {
                // SAFETY: as in `read_words`: an aligned word of the layer view.
                let cell = unsafe { AtomicU64::from_ptr(sw.at as *mut u64) };
                // Expected: the value read before the check. An application store since then
                // changed it, and the store wins.
                match cell.compare_exchange(sw.old, sw.new, Ordering::SeqCst, Ordering::Relaxed) {
                    Ok(_) => {
                        st.words += 1;
                        any = true;
                        if check {
                            let at = k * page + (sw.at - self.layer_of(p));
                            self.copies[at..at + 8].copy_from_slice(&sw.new.to_ne_bytes());
                        }
                        // The refresh's bytes are not the application's: the snapshot follows.
                        if let Some(snap) = snap.as_deref_mut() {
                            let at = sw.at - self.layer_of(p);
                            snap[at..at + 8].copy_from_slice(&sw.new.to_ne_bytes());
                        }
                    }
                    Err(_) => st.words_contended += 1,
                }
            }
            st.pages_refreshed += u64::from(any);
        }
        self.batch.clear();
        self.swaps.clear();
        self.recheck(wp, page, st, between)
    }

    /// Private view, after `settle`'s swaps: protects the swapped pages again, then compares
    /// each with its copy as read with the swaps applied. A page that differs was written by the
    /// application between the check scan and the protection (a store after it faults and is
    /// reported anyway): it is marked written again, so the next collection reports it.
    fn recheck(
        &mut self,
        wp: &WpTracker,
        page: usize,
        st: &mut RefreshStats,
        between: &mut dyn FnMut(RefreshStep),
    ) -> Result<(), GuardError> {
        if self.check.is_empty() {
            return Ok(());
        }
        between(RefreshStep::BeforeProtect);
        let span = self.span()?;
        for run in wp::normalize(self.check.iter().map(|&(_, p)| p..p + page).collect()) {
            wp.protect(span, run)?;
        }
        for &(k, p) in &self.check {
            // SAFETY: `p` is a whole page of the view; the copy holds `page` bytes at `k`.
            // memcmp is opaque to concurrent stores.
            let same =
                unsafe { libc::memcmp(p as *const libc::c_void, self.copies.as_ptr().add(k * page).cast(), page) == 0 };
            if !same {
                wp.mark_written(span, p..p + page)?;
                st.rewritten += 1;
            }
        }
        self.check.clear();
        Ok(())
    }
}

/// One group's application views, for the batch collection. Its lock is held by a collection of
/// the group from the scan until every run was delivered, and by `untrack` while it takes a region
/// out; collections of different groups run in parallel.
struct Group {
    spans: wp::SpanSet<RegionId>,
    found: Vec<(RegionId, Range<usize>)>,
    /// Parked regions, with the runs found written since, for the resume.
    parked: HashMap<RegionId, Vec<Range<usize>>>,
}

impl Group {
    fn new(prediction: wp::Prediction) -> Group {
        // The refresh needs a trusted prediction's snapshot too (docs/design.md, "Trusted
        // predictions").
        let spans = wp::SpanSet::default().with_prediction(prediction).keep_snapshots();
        Group { spans, found: Vec::new(), parked: HashMap::new() }
    }
}

pub struct ShadowWp {
    wp: &'static WpTracker,
    regions: RegionTable<Region>,
    /// Every region's application view by group, for [`Backend::collect_all`]: the views are
    /// placed next to each other in arenas, so a run of them is scanned with one call. A group
    /// stays once created (an empty one is a few bytes), so a region is never added to a group
    /// another thread has just dropped.
    groups: RwLock<HashMap<u64, Arc<Mutex<Group>>>>,
    group_of: Mutex<HashMap<RegionId, u64>>,
    /// Persistent shadows of untracked regions, with the offset within the first page and the
    /// length they were tracked with.
    kept: Mutex<HashMap<u64, (DualView, usize, usize)>>,
    totals: Mutex<RefreshStats>,
    prediction: wp::Prediction,
}

impl ShadowWp {
    /// Opens (once per process) the userfaultfd; unavailable without shmem write-protect.
    /// Without write prediction.
    pub fn new() -> Result<ShadowWp, GuardError> {
        Self::with_prediction(wp::Prediction::default())
    }

    /// [`new`](Self::new), predicting written pages of the application views as `prediction`
    /// says (docs/design.md, "Predicted pages").
    pub fn with_prediction(prediction: wp::Prediction) -> Result<ShadowWp, GuardError> {
        let wp = wp::tracker(BackendKind::ShadowWp)?;
        let shmem = linux_raw_sys::general::UFFD_FEATURE_WP_HUGETLBFS_SHMEM as u64;
        if wp.features() & shmem == 0 {
            return Err(GuardError::Unavailable {
                backend: BackendKind::ShadowWp,
                reason: "the kernel lacks userfaultfd write-protect on shmem (UFFD_FEATURE_WP_HUGETLBFS_SHMEM)".into(),
            });
        }
        Ok(ShadowWp {
            wp,
            regions: RegionTable::default(),
            groups: RwLock::new(HashMap::new()),
            group_of: Mutex::new(HashMap::new()),
            kept: Mutex::new(HashMap::new()),
            totals: Mutex::new(RefreshStats::default()),
            prediction,
        })
    }

    /// Brings what the GPU wrote into the pages of `range` (region offsets) that the application
    /// has not written since the last collection. See the module documentation.
    pub fn refresh(&self, id: RegionId, range: Range<usize>) -> Result<RefreshStats, GuardError> {
        self.refresh_interleaved(id, range, &mut |_| {})
    }

    /// [`refresh`](Self::refresh), calling `between` at each [`RefreshStep`] of every batch:
    /// tests write through the application pointer there to race the refresh deterministically.
    #[doc(hidden)]
    pub fn refresh_interleaved(
        &self,
        id: RegionId,
        range: Range<usize>,
        between: &mut dyn FnMut(RefreshStep),
    ) -> Result<RefreshStats, GuardError> {
        // The group's lock first (the order of collections): its predicted pages are the
        // region's too, and a collection must not resolve them while the refresh runs.
        let group = self.group_of.lock().get(&id).copied().and_then(|g| self.groups.read().get(&g).cloned());
        let mut g = group.as_ref().map(|g| g.lock());
        // A refresh says the device writes the memory: from the next prediction on, snapshots
        // (see `device_writes`).
        if let Some(g) = g.as_deref_mut() {
            g.spans.set_snapshots(&id, true);
        }
        // Predicted pages a region's own scan re-protected since are ordinary pages again; when
        // it cannot be told which, every predicted page counts as written.
        let mut spans = g.as_deref_mut().map(|g| &mut g.spans);
        let scanned = spans.as_deref().and_then(|s| s.scanned_since_prediction(self.wp));
        if scanned.is_none() {
            spans = None;
        }
        let scanned = scanned.unwrap_or_default();
        let st = self.regions.with(id, |r| r.refresh(self.wp, range, spans, &scanned, between))?;
        *self.totals.lock() += st;
        Ok(st)
    }

    /// The sum of every refresh of this instance.
    pub fn totals(&self) -> RefreshStats {
        *self.totals.lock()
    }

    fn group(&self, group: u64) -> Arc<Mutex<Group>> {
        if let Some(g) = self.groups.read().get(&group) {
            return g.clone();
        }
        self.groups.write().entry(group).or_insert_with(|| Arc::new(Mutex::new(Group::new(self.prediction)))).clone()
    }

    /// Persistent shadows kept now.
    pub fn kept_count(&self) -> usize {
        self.kept.lock().len()
    }
}

impl Backend for ShadowWp {
    fn kind(&self) -> BackendKind {
        BackendKind::ShadowWp
    }

    unsafe fn track(
        &self,
        id: RegionId,
        real: *mut u8,
        len: usize,
        opts: &TrackOptions,
    ) -> Result<*mut u8, GuardError> {
        check_region(BackendKind::ShadowWp, real, len)?;
        let page = page_size();
        let head = real as usize & (page - 1);
        let Some(span) = (head + len).checked_next_multiple_of(page) else {
            return Err(GuardError::refused(BackendKind::ShadowWp, real as usize, len, "wrapping region"));
        };
        let reuse = opts.persistent_key.and_then(|k| self.kept.lock().remove(&k));
        let (views, fill, fresh) = match reuse {
            Some((v, kept_head, kept_len)) if v.span == span => {
                v.protect_app(libc::PROT_READ | libc::PROT_WRITE)?;
                // The shadow still holds what the real memory holds unless someone else wrote it.
                let same = opts.unchanged && kept_head == head && kept_len == len;
                (v, !same, false)
            }
            // Memory the device never writes is never refreshed: one private view will do.
            _ if opts.device_never_writes => (DualView::new_private(span)?, true, true),
            _ => (DualView::new_placed(span)?, true, true),
        };
        if fill {
            // SAFETY: `real..real + len` is mapped readable (caller contract); the layer view has
            // `span >= head + len` bytes and is not registered yet (a private view is registered
            // and protected just below), so this copy is no application write.
            unsafe { std::ptr::copy_nonoverlapping(real, views.own.add(head), len) };
        }
        let span = self.wp.register(views.app as usize, span, BackendKind::ShadowWp)?;
        if fresh && !views.private() {
            // Map the shadow's pages into the new application view, read-only and still
            // write-protected (a read fault keeps the marker's bit): each collection's scan then
            // walks present entries, about 2x cheaper than markers (docs/design.md, "How the scan
            // grows with populated memory"). No memory is added: the fill above made the pages.
            // A kept view has its entries already.
            // SAFETY: advice on the application view we just mapped and registered.
            unsafe { libc::madvise(views.app.cast(), span.pages().len(), libc::MADV_POPULATE_READ) };
        }
        let inserted = {
            let g = self.group(opts.group);
            let mut g = g.lock();
            let inserted = g.spans.insert(&span, id);
            if inserted.is_ok() && opts.device_never_writes {
                // No refresh will reach this shadow: trusted predictions need no snapshot.
                g.spans.set_snapshots(&id, false);
            }
            inserted
        };
        if inserted.is_ok() {
            self.group_of.lock().insert(id, opts.group);
        }
        if let Err(e) = inserted {
            let _ = self.wp.unregister(span);
            return Err(e);
        }
        let app = views.app as usize + head;
        self.regions.insert(
            id,
            Region {
                real: real as usize,
                len,
                head,
                views,
                span: Some(span),
                key: opts.persistent_key,
                parked: false,
                runs: Vec::new(),
                written: Vec::new(),
                swaps: Vec::new(),
                batch: Vec::new(),
                copies: Vec::new(),
                check: Vec::new(),
            },
        );
        Ok(app as *mut u8)
    }

    fn collect(
        &self,
        id: RegionId,
        range: Option<Range<usize>>,
        sink: &mut dyn DirtySink,
    ) -> Result<CollectStats, GuardError> {
        self.regions.with(id, |r| r.collect(self.wp, range, sink))
    }

    fn invalidate(&self, id: RegionId, range: Range<usize>) -> Result<(), GuardError> {
        self.refresh(id, range).map(|_| ())
    }

    fn release_persistent(&self, key: u64) {
        self.kept.lock().remove(&key);
    }

    fn device_writes(&self, id: RegionId) -> Result<(), GuardError> {
        // Under the group's lock, as a collection's predictions are made: the next one takes
        // snapshots again. Predictions made before stay without: the device cannot have written
        // the memory before this call, and the next collection consumes them (docs/design.md,
        // "Trusted predictions").
        let g = self.group_of.lock().get(&id).and_then(|g| self.groups.read().get(g).cloned());
        let g = g.ok_or(GuardError::UnknownRegion(id))?;
        g.lock().spans.set_snapshots(&id, true);
        Ok(())
    }

    fn park(&self, id: RegionId, sink: &mut dyn DirtySink) -> Option<Result<CollectStats, GuardError>> {
        let Some(g) = self.group_of.lock().get(&id).and_then(|g| self.groups.read().get(g).cloned()) else {
            return Some(Err(GuardError::UnknownRegion(id)));
        };
        // The group's lock, then the region's (as `collect_all`): no batch collection runs between
        // this final collection and the region being marked parked.
        let mut g = g.lock();
        let r = self.regions.with(id, |r| {
            let stats = r.collect(self.wp, None, sink)?;
            // The application view stays as it is (registered, protected, readable): changing
            // its protection costs two page-table walks and TLB shootdowns a map (measured: about
            // a quarter of a map-every-frame's time at 16 MiB). Writes through it while unmapped
            // are undefined behaviour for the application; here they are tracked like any other
            // (see `resume`).
            r.parked = true;
            Ok(stats)
        });
        if r.is_ok() {
            g.parked.insert(id, Vec::new());
        }
        Some(r)
    }

    unsafe fn resume(
        &self,
        id: RegionId,
        real: *mut u8,
        len: usize,
        unchanged: bool,
        sink: &mut dyn DirtySink,
    ) -> Result<*mut u8, GuardError> {
        let refused = |why: &str| GuardError::refused(BackendKind::ShadowWp, real as usize, len, why);
        check_region(BackendKind::ShadowWp, real, len)?;
        let g = self.group_of.lock().get(&id).and_then(|g| self.groups.read().get(g).cloned());
        let g = g.ok_or(GuardError::UnknownRegion(id))?;
        let mut g = g.lock();
        self.regions.with(id, |r| {
            let head = real as usize & (page_size() - 1);
            if !r.parked || r.len != len || r.head != head {
                return Err(refused("parked with another length or offset within its first page"));
            }
            r.real = real as usize;
            r.parked = false;
            let kept = wp::normalize(g.parked.remove(&id).unwrap_or_default());
            if unchanged {
                // Only the application (through a pointer it should no longer have used) can
                // have written the shadow while parked: as if written after this map, copied to
                // the real memory now (the device cannot be writing it) or at the next collection.
                r.deliver(&kept, sink, &mut CollectStats::default());
            } else {
                // The whole shadow is filled from the real memory, then marks of such writes go (a
                // real unmapped mapping would not have kept them), and so do the fill's own on a
                // private view.
                // SAFETY: `real..real + len` is mapped readable (caller contract); the layer view
                // holds `head + len` bytes. The application has no pointer to the shadow until
                // this returns (as far as it may use one).
                unsafe { std::ptr::copy_nonoverlapping(real, r.views.own.add(head), len) };
                let span = r.span()?;
                self.wp.rearm(span, span.pages())?;
                r.report_shadow(kept, sink, &mut CollectStats::default());
            }
            Ok((r.views.app as usize + head) as *mut u8)
        })
    }

    fn collect_all(&self, group: u64, sink: &mut dyn RegionSink) -> Option<Result<CollectStats, GuardError>> {
        Some(self.collect_every(group, sink))
    }

    fn untrack(&self, id: RegionId, sink: &mut dyn DirtySink) -> Result<CollectStats, GuardError> {
        // Out of the batch first (before the region's lock: `collect_all` takes the set's lock,
        // then regions' locks): from here on only the final collection below sees its pages.
        let group = self.group_of.lock().remove(&id).and_then(|g| self.groups.read().get(&g).cloned());
        let mut kept = Vec::new();
        if let Some(g) = group {
            let mut g = g.lock();
            g.spans.remove(&id);
            kept = g.parked.remove(&id).unwrap_or_default();
            if g.spans.is_empty() {
                *g = Group::new(self.prediction);
            }
        }
        self.regions.remove(id, |mut r| {
            if r.parked {
                // The real memory is gone: the pages found written go out as the shadow holds
                // them, and the shadow is dropped.
                let mut stats = CollectStats::default();
                let scanned = match r.span.as_ref() {
                    Some(span) => self.wp.scan(span, span.pages(), &mut r.runs).map(|_| ()),
                    None => Ok(()),
                };
                kept.append(&mut r.runs);
                r.report_shadow(wp::normalize(kept), sink, &mut stats);
                let released = r.span.take().map_or(Ok(()), |s| self.wp.unregister(s));
                scanned?;
                return released.map(|()| stats);
            }
            let collected = r.collect(self.wp, None, sink);
            let released = match r.span.take() {
                Some(s) => self.wp.unregister(s),
                None => Ok(()),
            };
            if let (Some(key), Ok(_), Ok(())) = (r.key, &collected, &released) {
                let Region { views, head, len, .. } = r;
                if views.protect_app(libc::PROT_NONE).is_ok() {
                    self.kept.lock().insert(key, (views, head, len));
                }
            }
            let stats = collected?;
            released.map(|()| stats)
        })
    }
}

impl ShadowWp {
    /// Collects every region of `group`: one `PAGEMAP_SCAN` per run of adjacent application views, then for
    /// each region with written pages the copy to the real memory and the sink, as `collect`.
    fn collect_every(&self, group: u64, sink: &mut dyn RegionSink) -> Result<CollectStats, GuardError> {
        let Some(g) = self.groups.read().get(&group).cloned() else { return Ok(CollectStats::default()) };
        let mut guard = g.lock();
        let Group { spans, found, parked } = &mut *guard;
        found.clear();
        // On an error the runs found elsewhere are still delivered (their pages were re-armed).
        let scanned = self.wp.scan_set(spans, found);
        let scan = scanned.as_ref().copied().unwrap_or_default();
        let mut stats = CollectStats::from(scan);
        let mut runs: Vec<Range<usize>> = Vec::new();
        let mut i = 0;
        while i < found.len() {
            let id = found[i].0;
            runs.clear();
            while i < found.len() && found[i].0 == id {
                runs.push(found[i].1.clone());
                i += 1;
            }
            if let Some(kept) = parked.get_mut(&id) {
                // Not mapped now (its real memory is gone): reported at the resume.
                kept.append(&mut runs);
                continue;
            }
            let r = self.regions.with(id, |r| {
                r.deliver(&runs, &mut |off: usize, bytes: &[u8]| sink.run(id, off, bytes), &mut stats);
                Ok(())
            });
            match r {
                // Its pages were scanned while still in the set, so it is still tracked: the group's
                // lock is held, and untrack leaves the group first.
                Ok(()) | Err(GuardError::UnknownRegion(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for trusted in [false, true] {
            found.clear();
            spans.predicted_runs(trusted, found);
            for (id, run) in found.iter().filter(|(id, _)| !parked.contains_key(id)) {
                let _ = self.regions.with(*id, |r| {
                    if let Some(run) = wp::intersect(run, &r.app_bytes()) {
                        sink.predicted(*id, run.start - r.app_bytes().start, run.len(), trusted);
                    }
                    Ok(())
                });
            }
        }
        // Delivered (copied to the real memory): now the next written pages may be predicted.
        if scanned.is_ok() {
            self.wp.predict_set(spans)?;
        }
        scanned.map(|_| stats)
    }
}

impl Drop for ShadowWp {
    fn drop(&mut self) {
        // Regions the owner never untracked: release their registration before the views go.
        let cells: Vec<_> = self.regions.map.write().drain().map(|(_, c)| c).collect();
        for cell in cells {
            if let Some(mut r) = cell.lock().take() {
                if let Some(s) = r.span.take() {
                    let _ = self.wp.unregister(s);
                }
            }
        }
    }
}
