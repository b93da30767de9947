//! Mappings kept across unmap and map (docs/design.md, "Map every frame"): at the unmap a
//! `host-import` region (the layer's own memory) and, with `VKDIRTY_PERSISTENT_SHADOW`, a
//! `shadow-wp` region are collected and parked instead of untracked; the next map of the same
//! range resumes them, with nothing to register or arm, and a shadow nobody else can have written
//! is not filled again. With the device's lock held throughout.

use super::*;
use vkdirty::guard::DirtySink;
use vkdirty::session::Kept;

impl Capture {
    /// Whether a mapping tracked with `b` is parked at the unmap.
    pub(super) fn parks(&self, b: BackendKind) -> bool {
        match b {
            BackendKind::OwnedWp => true,
            BackendKind::ShadowWp => self.settings.persistent_shadow,
            _ => false,
        }
    }

    /// Collects an unmapped mapping's last dirty pages and parks its region, or untracks it
    /// where its backend keeps none; remembers what is kept for the next map.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn park_or_untrack(
        &self,
        dev: &DeviceState,
        mem: &mut Memories,
        key: (u64, u64),
        writer: Option<&TraceWriter>,
        id: u64,
        m: &Mapping,
        submit: u64,
    ) {
        let parks = self.parks(m.backend);
        let parked = self.untrack_with(dev, mem, writer, id, key.1, m, submit, &mut |sink: &mut dyn DirtySink| {
            if parks {
                self.guards.park(m.region, sink)
            } else {
                self.guards.untrack(m.region, sink).map(|_| false)
            }
        });
        let kept = if parked {
            Some(Kept { offset: m.offset, size: m.size, backend: m.backend, region: Some(m.region) })
        } else if m.backend == BackendKind::Shadow && self.settings.persistent_shadow {
            // The backend keeps the shadow under the allocation id (`TrackOptions::persistent_key`).
            Some(Kept { offset: m.offset, size: m.size, backend: m.backend, region: None })
        } else {
            None
        };
        if let Some(old) = kept.and_then(|k| mem.keep(key, k)) {
            self.release_kept(writer, id, old, submit);
        }
    }

    /// Untracks a kept region (the allocation is freed, or mapped with another range); the pages
    /// found written while it was parked go to `writer` for allocation `id`.
    pub(super) fn release_kept(&self, writer: Option<&TraceWriter>, id: u64, k: Kept, submit: u64) {
        let Some(region) = k.region else { return };
        let r = match writer {
            Some(w) => {
                let mut d = w.dirty(id, submit);
                let r = self.guards.untrack(region, &mut |off: usize, bytes: &[u8]| {
                    d.push(k.offset.saturating_add(off as u64), bytes)
                });
                d.finish();
                r
            }
            None => self.guards.untrack(region, &mut |_: usize, _: &[u8]| {}),
        };
        if let Err(e) = r {
            log::once(vkdirty::config::LogLevel::Error, &format!("releasing a kept mapping failed: {e}"));
        }
    }

    /// At a map of allocation `key` (`offset`, `size` resolved, at `real`, `len` bytes): resumes
    /// its kept region when the range is the same and its backend is one `order` allows, and
    /// returns it with the pages found written while it was parked (allocation offsets and
    /// bytes, recorded after the map record). Otherwise releases what was kept and returns
    /// whether the real memory is unchanged for a shadow the backend kept
    /// ([`vkdirty::guard::TrackOptions::unchanged`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn resume_kept(
        &self,
        memories: &mut Memories,
        key: (u64, u64),
        offset: u64,
        size: u64,
        real: *mut u8,
        len: usize,
        order: &[BackendKind],
    ) -> Result<(Tracked, Vec<(u64, Vec<u8>)>), bool> {
        let Some(mem) = memories.get(key) else { return Err(false) };
        let (id, device_writes) = (mem.id, mem.device_writes);
        let Some(k) = memories.take_kept(key) else { return Err(false) };
        let same = k.offset == offset && k.size == size && order.contains(&k.backend);
        let unchanged = same && !device_writes;
        let Some(region) = k.region else { return Err(unchanged) };
        if same {
            let mut runs = Vec::new();
            let mut sink = |off: usize, bytes: &[u8]| runs.push((k.offset.saturating_add(off as u64), bytes.to_vec()));
            // SAFETY: forwarded from `mapped`: `real..real + len` is the live mapping of this range.
            match unsafe { self.guards.resume(region, real, len, unchanged, &mut sink) } {
                Ok(t) => return Ok((t, runs)),
                Err(e) => log::once(
                    vkdirty::config::LogLevel::Info,
                    &format!("a kept mapping could not be resumed ({}); tracking it anew", refusal_key(&e)),
                ),
            }
        }
        let later = self.later();
        self.release_kept(later.recording(), id, k, later.submit);
        Err(false)
    }
}
