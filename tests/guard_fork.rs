//! async-wp across `fork()`: the child gets its own userfaultfd and `/proc/self/pagemap` (the
//! inherited ones belong to the parent), and neither process sees the other's writes.
//! One test in this file: the child of a multi-threaded test runner must stay simple.

#[path = "common/guard.rs"]
mod harness;

use harness::{Mapping, MemKind, Subject};
use vkdirty::guard::{page_size, BackendKind, GuardManager};

#[test]
fn forked_child_tracks_with_its_own_descriptors() {
    let p = page_size();
    let m = Mapping::new(MemKind::PrivateAnon, 8);
    m.fill(4);
    let mgr = GuardManager::new();
    let mut s = Subject::track(&mgr, BackendKind::AsyncWp, m.ptr, m.len, "fork");
    s.write(p, &[1]);
    // SAFETY: the child only runs the checks below and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Writes before the child re-armed are unknown: everything is reported once.
            let c = s.collect();
            assert_eq!(s.pages_of(&c), s.all_pages(), "child: first collection reports all");
            s.write(5 * p + 3, &[2]);
            let c = s.collect();
            s.expect(&c, &[5 * p + 3]);
            s.assert_mirror();
            let c = s.collect();
            s.expect(&c, &[]);
        }));
        // SAFETY: leaves the child without running the parent's exit handlers.
        unsafe { libc::_exit(if ok.is_ok() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: status {status:#x}");
    // The parent's state is untouched by the child: its own write from before the fork, plus
    // the one after.
    s.write(2 * p, &[3]);
    let c = s.collect();
    s.expect(&c, &[p, 2 * p]);
    s.assert_mirror();
    s.untrack();
}
