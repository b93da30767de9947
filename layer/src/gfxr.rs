//! vkdirty as gfxreconstruct's memory tracker (`VKDIRTY_GFXR_FLUSH`): gfxreconstruct below in
//! `GFXRECON_MEMORY_TRACKING_MODE=assisted` writes one fill-memory command with the bytes of each
//! range passed to `vkFlushMappedMemoryRanges`. After collecting a mapping, the layer flushes its
//! dirty pages down the chain, so that capture holds exactly what the CPU wrote, at the right
//! place in the call stream (before the submit, signal, unmap or free that made it matter).

use ash::vk;

use crate::dispatch::DeviceState;
use crate::log;
use vkdirty::config::LogLevel;

/// The range (offset, size) vkdirty maps down the chain for an application mapping of `size`
/// bytes (`VK_WHOLE_SIZE` resolved) at `offset` of an allocation of `alloc_size` bytes: widened to
/// whole pages counted from the allocation's start, the end clamped to the allocation. A flush
/// range must start on a multiple of `nonCoherentAtomSize` and end on one (or at the
/// allocation's end) inside the mapped range (`VUID-VkMappedMemoryRange-offset-00687`,
/// `size-01390`, `size-00685`); a page is a multiple of any atom size, so whole pages inside this
/// range always qualify, also for a mapping that starts or ends between two atoms. (A flush with
/// `VK_WHOLE_SIZE` would not do for the end: gfxreconstruct 0.9.18 then records up to the
/// allocation's end, past a mapping that ends before it.) The application still gets a pointer
/// to its own offset.
pub fn chain_range(offset: u64, size: u64, alloc_size: u64, page: u64) -> (u64, u64) {
    let start = offset / page * page;
    let end = offset
        .saturating_add(size)
        .div_ceil(page)
        .saturating_mul(page)
        .min(alloc_size.max(offset.saturating_add(size)));
    (start, end - start)
}

/// The ranges to flush for dirty `runs` (allocation offsets) of a mapping of `map_size` bytes at
/// allocation offset `map_offset` (the range mapped down the chain, [`chain_range`]): whole pages
/// counted from the allocation's start (a multiple of any `nonCoherentAtomSize`), clipped to the
/// mapping, merged, ascending.
pub fn flush_ranges(runs: &[(u64, u64)], map_offset: u64, map_size: u64, page: u64) -> Vec<(u64, u64)> {
    let map_end = map_offset.saturating_add(map_size);
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut sorted: Vec<(u64, u64)> = runs.iter().copied().filter(|r| r.1 > 0).collect();
    sorted.sort_unstable();
    for (o, l) in sorted {
        let start = (o / page * page).max(map_offset);
        let end = o.saturating_add(l).div_ceil(page).saturating_mul(page).min(map_end);
        if start >= end {
            continue;
        }
        match out.last_mut() {
            Some(last) if start <= last.0 + last.1 => last.1 = last.1.max(end - last.0),
            _ => out.push((start, end - start)),
        }
    }
    out
}

/// Flushes `ranges` (memory, allocation offset, size) down the chain in one call. The
/// application's own flushes pass through on their own; these only add what it did not flush.
pub fn flush_down(dev: &DeviceState, ranges: &[(u64, u64, u64)]) {
    if ranges.is_empty() {
        return;
    }
    let Some(next) = dev.next.vkFlushMappedMemoryRanges else {
        log::once(LogLevel::Error, "gfxreconstruct flushes: the next layer has no vkFlushMappedMemoryRanges");
        return;
    };
    let list: Vec<vk::MappedMemoryRange<'_>> = ranges
        .iter()
        .map(|&(m, o, l)| {
            vk::MappedMemoryRange::default().memory(<vk::DeviceMemory as vk::Handle>::from_raw(m)).offset(o).size(l)
        })
        .collect();
    // SAFETY: valid device; each memory is mapped over its ranges (clipped to the mapping);
    // `list` lives across the call.
    let r = unsafe { next(dev.handle, list.len() as u32, list.as_ptr()) };
    if r != vk::Result::SUCCESS {
        log::once(LogLevel::Error, &format!("gfxreconstruct flushes: vkFlushMappedMemoryRanges returned {r:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_become_page_ranges_inside_the_mapping() {
        let p = 4096;
        assert_eq!(flush_ranges(&[], 0, 8 * p, p), vec![]);
        assert_eq!(flush_ranges(&[(10, 5)], 0, 8 * p, p), vec![(0, p)]);
        // Adjacent and overlapping pages merge; order does not matter.
        assert_eq!(flush_ranges(&[(3 * p + 1, 1), (p, 2 * p), (5 * p, 10)], 0, 8 * p, p), vec![(p, 3 * p), (5 * p, p)]);
        // A mapping at an offset: clipped to it, pages still counted from the allocation.
        assert_eq!(flush_ranges(&[(p + 100, 10)], p + 64, 2 * p, p), vec![(p + 64, p - 64)]);
        assert_eq!(flush_ranges(&[(3 * p - 1, 1)], 0, 3 * p - 100, p), vec![(2 * p, p - 100)]);
        assert_eq!(flush_ranges(&[(9 * p, 1), (0, 0)], 0, 8 * p, p), vec![]);
    }

    #[test]
    fn unaligned_mappings_are_widened_to_pages_inside_the_allocation() {
        let p = 4096;
        // Aligned: unchanged.
        assert_eq!(chain_range(0, 8 * p, 8 * p, p), (0, 8 * p));
        assert_eq!(chain_range(p, 2 * p, 8 * p, p), (p, 2 * p));
        // Start and end between atoms: whole pages.
        assert_eq!(chain_range(p + 100, 1000, 8 * p, p), (p, p));
        assert_eq!(chain_range(130_038, 5386, 40 * p, p), (31 * p, 3 * p));
        // The end clamped to an allocation that ends off a page.
        assert_eq!(chain_range(p + 64, 2 * p, 3 * p + 200, p), (p, 2 * p + 200));
        assert_eq!(chain_range(10, 90, 100, p), (0, 100));
        // Every flush range of a widened mapping starts and ends on a page or the allocation end.
        for (off, size, alloc) in [(100u64, 5000u64, 3 * p), (p - 1, 2, 2 * p + 7), (3 * p + 64, p, 9 * p)] {
            let (o, s) = chain_range(off, size, alloc, p);
            for (fo, fs) in flush_ranges(&[(off, size)], o, s, p) {
                assert_eq!(fo % p, 0);
                assert!((fo + fs) % p == 0 || fo + fs == alloc, "{off} {size} {alloc}: {fo}+{fs}");
                assert!(fo >= o && fo + fs <= o + s);
            }
        }
    }
}
