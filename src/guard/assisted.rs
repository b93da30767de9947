//! Placeholder until the backend lands.
use super::*;

pub struct Assisted;

impl Assisted {
    pub fn new() -> Assisted { Assisted }
}

impl Backend for Assisted {
    fn kind(&self) -> BackendKind { BackendKind::Assisted }
    unsafe fn track(&self, _: RegionId, _: *mut u8, _: usize, _: &TrackOptions) -> Result<*mut u8, GuardError> {
        Err(GuardError::Unavailable { backend: BackendKind::Assisted, reason: "not built yet".into() })
    }
    fn collect(&self, _: RegionId, _: Option<Range<usize>>, _: &mut dyn DirtySink) -> Result<CollectStats, GuardError> { unreachable!() }
    fn untrack(&self, _: RegionId, _: &mut dyn DirtySink) -> Result<CollectStats, GuardError> { unreachable!() }
}
