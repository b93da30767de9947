//! Allocations and their mappings: allocation ids, map/unmap bookkeeping, which regions belong to
//! which allocation, and which mappings are shadows a host synchronisation point may refresh.
//! Keys are (device, memory) handle values; nothing here calls a driver or a guard backend.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;

use crate::guard::{BackendKind, RegionId};

/// `VK_WHOLE_SIZE`: to the end of the mapping.
pub const WHOLE_SIZE: u64 = !0;

/// An allocation.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pub id: u64,
    pub size: u64,
    /// Its memory type is `HOST_CACHED` (see `VKDIRTY_SHADOW_REFRESH`).
    pub cached: bool,
    pub mapping: Option<Mapping>,
    /// Host memory the application imported: tracked from allocation to free.
    pub app_import: bool,
    /// The device (or anyone but the application through its mapping) may write it: a resource
    /// whose usage allows device writes was bound to it, or it is shared outside the device.
    /// Set once, never cleared (docs/design.md, "Which memory the device may write").
    pub device_writes: bool,
    /// Its last mapping, kept while it is unmapped.
    pub kept: Option<Kept>,
}

/// An unmapped allocation's last mapping, kept for the next map of the same range: a parked
/// region (`host-import`, `shadow-wp`) or a shadow the backend keeps under the allocation id
/// (`shadow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kept {
    pub offset: u64,
    pub size: u64,
    pub backend: BackendKind,
    /// The parked region, resumed or untracked by the caller; `None` when no region is left.
    pub region: Option<RegionId>,
}

/// A buffer or an image (by handle), for [`Memories::bound`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Buffer(u64),
    Image(u64),
}

/// A tracked mapping of an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub region: RegionId,
    /// Allocation offset of the mapping's first byte.
    pub offset: u64,
    pub size: u64,
    pub backend: BackendKind,
}

/// A tracked region: its allocation (id and memory handle) and mapping.
#[derive(Clone, Copy, Debug)]
pub struct RegionRef {
    pub region: RegionId,
    pub alloc: u64,
    pub memory: u64,
    pub map: Mapping,
}

/// A mapping whose tracking ends: collect its last dirty pages, then untrack it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Untracked {
    pub alloc: u64,
    pub memory: u64,
    pub mapping: Mapping,
}

/// Whether collection must run at every submit regardless of the capture window: shadow backends
/// copy the application's writes to the real memory only when collecting.
pub fn must_collect(b: BackendKind) -> bool {
    matches!(b, BackendKind::Shadow | BackendKind::ShadowWp)
}

/// The mapped part of `[offset, offset + size)` (allocation offsets, [`WHOLE_SIZE`] allowed) as
/// region offsets and as allocation offsets.
pub fn clip(m: &Mapping, offset: u64, size: u64) -> Option<(Range<usize>, (u64, u64))> {
    let map_end = m.offset.saturating_add(m.size);
    let start = offset.max(m.offset);
    let end = if size == WHOLE_SIZE { map_end } else { offset.saturating_add(size).min(map_end) };
    if start >= end {
        return None;
    }
    let rs = usize::try_from(start - m.offset).ok()?;
    let re = usize::try_from(end - m.offset).ok()?;
    Some((rs..re, (start, end - start)))
}

#[derive(Default)]
pub struct Memories {
    memories: HashMap<(u64, u64), Memory>,
    /// Per device: mapped allocations by id (collection order), to their memory handle.
    mapped: HashMap<u64, BTreeMap<u64, u64>>,
    /// Tracked regions, so a collection over every region of a device maps its runs back
    /// without walking the mappings.
    regions: HashMap<RegionId, RegionRef>,
    /// Per device: the shadow mappings, with their length and whether their memory type is
    /// `HOST_CACHED`.
    shadows: HashMap<u64, BTreeMap<RegionId, (usize, bool)>>,
    /// Per device: those of `shadows` whose allocation the device may write, the only ones a
    /// host synchronisation point refreshes. Kept apart so a fence wait walks these, not every
    /// mapping (thousands of mapped allocations that only the application writes).
    refreshable: HashMap<u64, BTreeSet<RegionId>>,
    /// Resources whose usage allows no device write. Any other (unknown ones included) marks the
    /// memory it is bound to as written by the device.
    read_only: HashSet<(u64, Resource)>,
}

impl Memories {
    /// An allocation of `size` bytes with id `id` (from [`crate::session::Session::next_allocation_id`]).
    pub fn allocate(&mut self, key: (u64, u64), id: u64, size: u64, cached: bool) {
        self.memories.insert(
            key,
            Memory { id, size, cached, mapping: None, app_import: false, device_writes: false, kept: None },
        );
    }

    /// Marks the allocation as one the device (or another party) may write. Returns the regions
    /// (mapped or kept) to tell when this newly set the flag.
    pub fn device_writes(&mut self, key: (u64, u64)) -> Vec<RegionId> {
        let Some(m) = self.memories.get_mut(&key) else { return Vec::new() };
        if std::mem::replace(&mut m.device_writes, true) {
            return Vec::new();
        }
        if let Some(mp) = m.mapping {
            if self.shadows.get(&key.0).is_some_and(|sh| sh.contains_key(&mp.region)) {
                self.refreshable.entry(key.0).or_default().insert(mp.region);
            }
        }
        m.mapping.map(|mp| mp.region).into_iter().chain(m.kept.and_then(|k| k.region)).collect()
    }

    /// A resource of `device` was created; `read_only`: its usage allows no device write.
    pub fn resource_created(&mut self, device: u64, r: Resource, read_only: bool) {
        if read_only {
            self.read_only.insert((device, r));
        } else {
            self.read_only.remove(&(device, r));
        }
    }

    pub fn resource_destroyed(&mut self, device: u64, r: Resource) {
        self.read_only.remove(&(device, r));
    }

    /// `r` was bound to the allocation `key`: unless it is known read-only, the device may write
    /// the allocation from now on.
    /// Returns the regions to tell, as [`Memories::device_writes`].
    pub fn bound(&mut self, key: (u64, u64), r: Resource) -> Vec<RegionId> {
        if self.read_only.contains(&(key.0, r)) {
            return Vec::new();
        }
        self.device_writes(key)
    }

    /// Keeps the unmapped allocation's last mapping (replacing one kept before, which is returned
    /// so its region can be untracked).
    pub fn keep(&mut self, key: (u64, u64), kept: Kept) -> Option<Kept> {
        self.memories.get_mut(&key).and_then(|m| m.kept.replace(kept))
    }

    /// Takes the allocation's kept mapping.
    pub fn take_kept(&mut self, key: (u64, u64)) -> Option<Kept> {
        self.memories.get_mut(&key).and_then(|m| m.kept.take())
    }

    /// Takes the kept mappings of the device's allocations (it is being destroyed).
    pub fn take_kept_of_device(&mut self, device: u64) -> Vec<Kept> {
        self.memories.iter_mut().filter(|((d, _), _)| *d == device).filter_map(|(_, m)| m.kept.take()).collect()
    }

    pub fn get(&self, key: (u64, u64)) -> Option<&Memory> {
        self.memories.get(&key)
    }

    /// Records a tracked mapping of `len` bytes (`app_import`: the application's own host
    /// memory, tracked until the free).
    pub fn map(&mut self, key: (u64, u64), mapping: Mapping, len: usize, app_import: bool) {
        let Some(m) = self.memories.get_mut(&key) else {
            return;
        };
        m.mapping = Some(mapping);
        m.app_import |= app_import;
        let (id, cached, device_writes) = (m.id, m.cached, m.device_writes);
        self.mapped.entry(key.0).or_default().insert(id, key.1);
        self.regions
            .insert(mapping.region, RegionRef { region: mapping.region, alloc: id, memory: key.1, map: mapping });
        if must_collect(mapping.backend) {
            self.shadows.entry(key.0).or_default().insert(mapping.region, (len, cached));
            if device_writes {
                self.refreshable.entry(key.0).or_default().insert(mapping.region);
            }
        }
    }

    /// Ends the allocation's mapping, if it has one: what to collect and untrack.
    pub fn unmap(&mut self, key: (u64, u64)) -> Option<Untracked> {
        let m = self.memories.get_mut(&key)?;
        let mapping = m.mapping.take()?;
        let alloc = m.id;
        if let Some(map) = self.mapped.get_mut(&key.0) {
            map.remove(&alloc);
        }
        self.forget_region(key.0, mapping.region);
        Some(Untracked { alloc, memory: key.1, mapping })
    }

    fn forget_region(&mut self, device: u64, region: RegionId) {
        self.regions.remove(&region);
        if let Some(sh) = self.shadows.get_mut(&device) {
            sh.remove(&region);
        }
        if let Some(r) = self.refreshable.get_mut(&device) {
            r.remove(&region);
        }
    }

    /// The allocation is freed (after [`Memories::unmap`]).
    pub fn free(&mut self, key: (u64, u64)) -> Option<Memory> {
        self.memories.remove(&key)
    }

    /// The device is destroyed: its mappings to untrack and the ids of all its allocations.
    pub fn device_destroyed(&mut self, device: u64) -> (Vec<Untracked>, Vec<u64>) {
        let mapped = self.mapped.remove(&device).unwrap_or_default();
        let mut untracked = Vec::new();
        for (_, mem) in mapped {
            let taken = self.memories.get_mut(&(device, mem)).and_then(|m| m.mapping.take().map(|mp| (m.id, mp)));
            if let Some((alloc, mapping)) = taken {
                self.forget_region(device, mapping.region);
                untracked.push(Untracked { alloc, memory: mem, mapping });
            }
        }
        self.shadows.remove(&device);
        self.refreshable.remove(&device);
        self.read_only.retain(|(d, _)| *d != device);
        let mut ids = Vec::new();
        self.memories.retain(|&(d, _), m| {
            if d == device {
                ids.push(m.id);
            }
            d != device
        });
        ids.sort_unstable();
        (untracked, ids)
    }

    /// Whether the device has a tracked mapping.
    pub fn has_mappings(&self, device: u64) -> bool {
        self.mapped.get(&device).is_some_and(|m| !m.is_empty())
    }

    pub fn region(&self, region: RegionId) -> Option<RegionRef> {
        self.regions.get(&region).copied()
    }

    /// The device's shadow regions (with their length) that `refresh(cached)` selects, of
    /// allocations the device may write (the others hold nothing a refresh could bring in).
    pub fn shadows(&self, device: u64, refresh: impl Fn(bool) -> bool) -> Vec<(RegionId, usize)> {
        let (Some(ids), Some(sh)) = (self.refreshable.get(&device), self.shadows.get(&device)) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|r| sh.get(r).filter(|&&(_, cached)| refresh(cached)).map(|&(len, _)| (*r, len)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(region: u64, offset: u64, size: u64, backend: BackendKind) -> Mapping {
        Mapping { region: RegionId(region), offset, size, backend }
    }

    #[test]
    fn flush_ranges_clip_to_the_mapping() {
        let m = mapping(1, 0x1000, 0x3000, BackendKind::AsyncWp);
        assert_eq!(clip(&m, 0x1000, 0x3000), Some((0..0x3000, (0x1000, 0x3000))));
        assert_eq!(clip(&m, 0x2000, WHOLE_SIZE), Some((0x1000..0x3000, (0x2000, 0x2000))));
        assert_eq!(clip(&m, 0, 0x1800), Some((0..0x800, (0x1000, 0x800))));
        assert_eq!(clip(&m, 0x3800, 0x10000), Some((0x2800..0x3000, (0x3800, 0x800))));
        assert_eq!(clip(&m, 0x4000, 0x100), None);
        assert_eq!(clip(&m, 0, 0x1000), None);
        assert_eq!(clip(&m, u64::MAX - 1, u64::MAX - 1), None);
    }

    #[test]
    fn only_shadow_backends_must_collect_at_every_submit() {
        assert!(must_collect(BackendKind::Shadow) && must_collect(BackendKind::ShadowWp));
        for b in [BackendKind::AsyncWp, BackendKind::Full, BackendKind::Assisted, BackendKind::OwnedWp] {
            assert!(!must_collect(b), "{b}");
        }
    }

    #[test]
    fn ids_follow_allocation_order_and_mappings_come_and_go() {
        let mut m = Memories::default();
        m.allocate((1, 10), 1, 4096, false);
        m.allocate((1, 11), 2, 8192, true);
        m.allocate((2, 10), 3, 4096, false);
        assert_eq!(m.get((1, 11)).map(|x| (x.id, x.size, x.cached)), Some((2, 8192, true)));
        assert!(!m.has_mappings(1));
        let ma = mapping(100, 0, 4096, BackendKind::AsyncWp);
        let mb = mapping(101, 4096, 4096, BackendKind::ShadowWp);
        m.map((1, 10), ma, 4096, false);
        m.map((1, 11), mb, 4096, false);
        assert!(m.has_mappings(1) && !m.has_mappings(2));
        assert_eq!(m.region(RegionId(101)).map(|r| (r.alloc, r.memory)), Some((2, 11)));
        // Only the shadow is refreshed at sync points, only when the policy selects it, and only
        // once the device may write it.
        assert_eq!(m.shadows(1, |_| true), vec![]);
        // The mapped region is named once, when the flag is newly set.
        assert_eq!(m.device_writes((1, 11)), vec![RegionId(101)]);
        assert_eq!(m.device_writes((1, 11)), vec![]);
        assert_eq!(m.shadows(1, |_| true), vec![(RegionId(101), 4096)]);
        assert_eq!(m.shadows(1, |cached| !cached), vec![]);
        assert_eq!(m.unmap((1, 11)), Some(Untracked { alloc: 2, memory: 11, mapping: mb }));
        assert_eq!(m.unmap((1, 11)), None, "unmapped twice");
        assert!(m.region(RegionId(101)).is_none() && m.shadows(1, |_| true).is_empty());
        // Mapped again after the flag was set: refreshed from the start.
        let mc = mapping(102, 0, 8192, BackendKind::ShadowWp);
        m.map((1, 11), mc, 8192, false);
        assert_eq!(m.shadows(1, |_| true), vec![(RegionId(102), 8192)]);
        assert_eq!(m.unmap((1, 11)).map(|u| u.mapping.region), Some(RegionId(102)));
        assert!(m.shadows(1, |_| true).is_empty());
        assert_eq!(m.free((1, 11)).map(|x| x.id), Some(2));
        assert!(m.get((1, 11)).is_none());
        // Mapping memory the bookkeeping does not know changes nothing.
        m.map((9, 9), ma, 4096, false);
        assert!(!m.has_mappings(9));
    }

    #[test]
    fn only_resources_known_read_only_leave_memory_unwritten_by_the_device() {
        let mut m = Memories::default();
        for mem in 10..14 {
            m.allocate((1, mem), mem, 4096, false);
        }
        m.resource_created(1, Resource::Buffer(5), true);
        m.resource_created(1, Resource::Image(5), false);
        m.bound((1, 10), Resource::Buffer(5));
        m.bound((1, 11), Resource::Image(5));
        // Never seen created: counts as writable.
        m.bound((1, 12), Resource::Buffer(6));
        let w = |m: &Memories, k| m.get((1, k)).unwrap().device_writes;
        assert!(!w(&m, 10) && w(&m, 11) && w(&m, 12) && !w(&m, 13));
        // A handle reused after its destruction is a new resource.
        m.resource_destroyed(1, Resource::Buffer(5));
        m.bound((1, 13), Resource::Buffer(5));
        assert!(w(&m, 13));
        // Once set, the mark stays (a later read-only binding changes nothing).
        m.resource_created(1, Resource::Buffer(7), true);
        m.bound((1, 11), Resource::Buffer(7));
        assert!(w(&m, 11));
        // Kept mappings: taken once, per device.
        let k = Kept { offset: 0, size: 4096, backend: BackendKind::OwnedWp, region: Some(RegionId(3)) };
        assert_eq!(m.keep((1, 10), k), None);
        // A kept (parked) region is named when the flag is newly set.
        assert_eq!(m.bound((1, 10), Resource::Buffer(6)), vec![RegionId(3)]);
        assert_eq!(m.bound((1, 10), Resource::Buffer(6)), vec![]);
        assert_eq!(m.keep((1, 10), k), Some(k), "the one kept before is handed back");
        assert_eq!(m.take_kept_of_device(2), vec![]);
        assert_eq!(m.take_kept_of_device(1), vec![k]);
        assert_eq!(m.take_kept((1, 10)), None);
    }

    #[test]
    fn an_application_import_stays_marked() {
        let mut m = Memories::default();
        m.allocate((1, 10), 1, 4096, false);
        m.map((1, 10), mapping(5, 0, 4096, BackendKind::Full), 4096, true);
        assert!(m.get((1, 10)).is_some_and(|x| x.app_import && x.mapping.is_some()));
    }

    #[test]
    fn destroying_a_device_untracks_only_its_mappings() {
        let mut m = Memories::default();
        m.allocate((1, 10), 1, 4096, false);
        m.allocate((1, 11), 2, 4096, false);
        m.allocate((2, 10), 3, 4096, false);
        let m1 = mapping(7, 0, 4096, BackendKind::Shadow);
        let m2 = mapping(8, 0, 4096, BackendKind::Shadow);
        m.map((1, 10), m1, 4096, false);
        m.map((2, 10), m2, 4096, false);
        m.device_writes((2, 10));
        let (untracked, ids) = m.device_destroyed(1);
        assert_eq!(untracked, vec![Untracked { alloc: 1, memory: 10, mapping: m1 }]);
        assert_eq!(ids, vec![1, 2]);
        assert!(m.get((1, 11)).is_none() && m.region(RegionId(7)).is_none());
        assert!(m.has_mappings(2) && m.region(RegionId(8)).is_some());
        assert_eq!(m.shadows(2, |_| true), vec![(RegionId(8), 4096)]);
    }
}
