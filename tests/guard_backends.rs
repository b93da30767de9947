//! The generic page-guard checks, for every backend this build has, on private anonymous
//! memory, memfd `MAP_SHARED` and `/dev/zero` `MAP_SHARED`.

#[path = "common/guard.rs"]
mod harness;

use harness::{MemKind, BACKENDS, MEM_KINDS};
use vkdirty::guard::BackendKind;

fn each(check: fn(BackendKind, MemKind)) {
    for &kind in BACKENDS {
        for mem in MEM_KINDS {
            check(kind, mem);
        }
    }
}

#[test]
fn reported_set_equals_written_set() {
    each(harness::exact_set);
}

#[test]
fn reads_are_never_reported() {
    each(harness::reads_not_reported);
}

#[test]
fn page_written_twice_is_reported_once() {
    each(harness::written_twice_reported_once);
}

#[test]
fn unaligned_start_and_length() {
    each(harness::unaligned_region);
}

#[test]
fn range_collection_keeps_the_rest() {
    each(harness::range_collection);
}

#[test]
fn two_regions_sharing_a_page() {
    each(harness::shared_page);
}

#[test]
fn untrack_then_retrack() {
    each(harness::untrack_retrack);
}

/// ≥ 10,000 collections per backend while 4 threads write. Backends that track the real
/// memory run on every memory kind; for the others the kind of memory makes no difference.
#[test]
fn no_lost_write_under_concurrent_writers() {
    for &kind in BACKENDS {
        let mems: &[MemKind] = if harness::exact(kind) { &MEM_KINDS } else { &[MemKind::PrivateAnon] };
        for &mem in mems {
            harness::concurrent_writers(kind, mem, 10_000);
        }
    }
}
