//! Placeholder until the backend lands.
use super::*;

pub struct AsyncWp;

impl AsyncWp {
    pub fn new(_kind: BackendKind) -> Result<AsyncWp, GuardError> {
        Err(GuardError::Unavailable { backend: BackendKind::AsyncWp, reason: "not built yet".into() })
    }
}

impl Backend for AsyncWp {
    fn kind(&self) -> BackendKind { unreachable!() }
    unsafe fn track(&self, _: RegionId, _: *mut u8, _: usize, _: &TrackOptions) -> Result<*mut u8, GuardError> { unreachable!() }
    fn collect(&self, _: RegionId, _: Option<Range<usize>>, _: &mut dyn DirtySink) -> Result<CollectStats, GuardError> { unreachable!() }
    fn untrack(&self, _: RegionId, _: &mut dyn DirtySink) -> Result<CollectStats, GuardError> { unreachable!() }
}
