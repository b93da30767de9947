//! Placeholder until the backend lands.
use super::*;

pub struct Full;

impl Full {
    pub fn new() -> Full { Full }
}

impl Backend for Full {
    fn kind(&self) -> BackendKind { BackendKind::Full }
    unsafe fn track(&self, _: RegionId, _: *mut u8, _: usize, _: &TrackOptions) -> Result<*mut u8, GuardError> {
        Err(GuardError::Unavailable { backend: BackendKind::Full, reason: "not built yet".into() })
    }
    fn collect(&self, _: RegionId, _: Option<Range<usize>>, _: &mut dyn DirtySink) -> Result<CollectStats, GuardError> { unreachable!() }
    fn untrack(&self, _: RegionId, _: &mut dyn DirtySink) -> Result<CollectStats, GuardError> { unreachable!() }
}
