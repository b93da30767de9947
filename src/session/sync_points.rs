//! Which host synchronisation points may show the application GPU work it has not seen yet, so
//! shadows are refreshed there and not again at every poll of the same fence or semaphore value.
//!
//! A point needs a refresh unless it only re-observes completion that an earlier refreshed
//! point already observed: a fence seen signalled and not submitted since, a timeline value at or
//! below one already refreshed for, a queue or device with no submit since its last idle wait.
//! Forgetting is always safe (it costs a refresh), so the tables are simply cleared when large.

use std::collections::{HashMap, HashSet};

/// Entries kept per table before it is cleared.
const LIMIT: usize = 4096;

#[derive(Default)]
pub struct SyncFilter {
    /// Fences seen signalled (and refreshed for) since their last submit.
    seen_fences: HashSet<u64>,
    /// Per timeline semaphore, the highest value refreshed for.
    semaphores: HashMap<u64, u64>,
    /// Queues with a submit since their last refreshed idle wait, with their device.
    busy_queues: HashMap<u64, u64>,
    /// Devices with a submit since their last refreshed idle wait.
    busy_devices: HashSet<u64>,
}

impl SyncFilter {
    /// A submit (or sparse bind) to `queue` of `device`, signalling `fence` (0: none).
    pub fn submitted(&mut self, device: u64, queue: u64, fence: u64) {
        if fence != 0 {
            self.seen_fences.remove(&fence);
        }
        if self.busy_queues.len() >= LIMIT {
            self.busy_queues.clear();
        }
        self.busy_queues.insert(queue, device);
        self.busy_devices.insert(device);
    }

    /// `vkWaitForFences` succeeded (`all`: every fence is signalled; otherwise at least one) or
    /// `vkGetFenceStatus` returned `VK_SUCCESS` (one fence, `all`). Whether to refresh.
    pub fn fences(&mut self, fences: &[u64], all: bool) -> bool {
        let need = fences.iter().any(|f| !self.seen_fences.contains(f));
        if all {
            if self.seen_fences.len() + fences.len() > LIMIT {
                self.seen_fences.clear();
            }
            self.seen_fences.extend(fences.iter().copied().filter(|&f| f != 0));
        }
        need
    }

    /// `vkWaitSemaphores` succeeded (`all`: every semaphore reached its value) or
    /// `vkGetSemaphoreCounterValue` returned a value (one pair, `all`). Whether to refresh.
    pub fn semaphores(&mut self, values: &[(u64, u64)], all: bool) -> bool {
        let need = values.iter().any(|(s, v)| self.semaphores.get(s).map_or(true, |seen| v > seen));
        if all {
            if self.semaphores.len() + values.len() > LIMIT {
                self.semaphores.clear();
            }
            for &(s, v) in values {
                let e = self.semaphores.entry(s).or_insert(v);
                *e = (*e).max(v);
            }
        }
        need
    }

    /// `vkQueueWaitIdle` succeeded. Whether to refresh.
    pub fn queue_idle(&mut self, queue: u64) -> bool {
        self.busy_queues.remove(&queue).is_some()
    }

    /// `vkDeviceWaitIdle` succeeded. Whether to refresh.
    pub fn device_idle(&mut self, device: u64) -> bool {
        self.busy_queues.retain(|_, d| *d != device);
        self.busy_devices.remove(&device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_refreshes_once_per_submit() {
        let mut f = SyncFilter::default();
        f.submitted(1, 10, 7);
        assert!(f.fences(&[7], true));
        assert!(!f.fences(&[7], true), "polling a signalled fence again");
        f.submitted(1, 10, 7);
        assert!(f.fences(&[7], true), "submitted again");
        // Waiting for any of several marks none of them seen.
        f.submitted(1, 10, 8);
        assert!(f.fences(&[7, 8], false));
        assert!(f.fences(&[8], true));
        assert!(!f.fences(&[7, 8], true));
    }

    #[test]
    fn a_timeline_value_refreshes_once() {
        let mut f = SyncFilter::default();
        assert!(f.semaphores(&[(3, 5)], true));
        assert!(!f.semaphores(&[(3, 5)], true));
        assert!(!f.semaphores(&[(3, 4)], true));
        assert!(f.semaphores(&[(3, 6)], true));
        assert!(f.semaphores(&[(3, 9), (4, 1)], false));
        assert!(f.semaphores(&[(3, 9)], true), "a wait for any did not record 9");
        assert!(f.semaphores(&[(3, 9), (4, 1)], true));
        assert!(!f.semaphores(&[(4, 1)], true));
    }

    #[test]
    fn idle_waits_refresh_after_submits_only() {
        let mut f = SyncFilter::default();
        assert!(!f.queue_idle(10));
        assert!(!f.device_idle(1));
        f.submitted(1, 10, 0);
        f.submitted(1, 11, 0);
        assert!(f.queue_idle(10));
        assert!(!f.queue_idle(10));
        assert!(f.device_idle(1));
        assert!(!f.queue_idle(11), "device idle covered queue 11");
        assert!(!f.device_idle(1));
    }

    #[test]
    fn tables_stay_bounded() {
        let mut f = SyncFilter::default();
        for i in 1..=3 * LIMIT as u64 {
            f.fences(&[i], true);
            f.semaphores(&[(i, 1)], true);
            f.submitted(1, i, 0);
        }
        assert!(f.seen_fences.len() <= LIMIT && f.semaphores.len() <= LIMIT && f.busy_queues.len() <= LIMIT);
        // Forgotten entries only cost a refresh.
        assert!(f.fences(&[1], true));
    }
}
