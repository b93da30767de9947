//! Pure decisions of host-import, tested without a driver: which memory types and resources may be
//! imported (the allocation chain's plan is in `chain.rs`).

use super::*;

/// The memory types whose allocations may be imported, by property flags alone.
pub fn eligible_types(types: &[vk::MemoryPropertyFlags], no_video_memory: bool) -> u32 {
    let mut bits = 0u32;
    for (i, f) in types.iter().enumerate().take(32) {
        if type_refusal(*f, i as u32, no_video_memory).is_none() {
            bits |= 1 << i;
        }
    }
    bits
}

/// Why memory of type `ty` (flags `f`) is not imported; `None` when it may be.
pub(super) fn type_refusal(f: vk::MemoryPropertyFlags, ty: u32, no_video_memory: bool) -> Option<String> {
    use vk::MemoryPropertyFlags as M;
    if !f.contains(M::HOST_VISIBLE) {
        return Some(format!("memory type {ty} is not host-visible"));
    }
    if f.intersects(M::LAZILY_ALLOCATED | M::PROTECTED) {
        return Some(format!("memory type {ty} is lazily allocated or protected"));
    }
    if f.contains(M::DEVICE_LOCAL) && !no_video_memory {
        return Some(format!("memory type {ty} is device-local (video memory)"));
    }
    None
}

/// Whether the device has no memory of its own: every heap is system memory.
pub fn has_no_video_memory(t: vk::PhysicalDeviceType) -> bool {
    matches!(t, vk::PhysicalDeviceType::CPU | vk::PhysicalDeviceType::INTEGRATED_GPU)
}

/// Whether resources of one kind may be made external, given the memory types the driver
/// reports for them plain and external. They may not gain types (the application would choose
/// among types it never saw), and may lose only types in `may_hide`: with
/// `VKDIRTY_HOST_IMPORT=1` those both device-local and host-visible (what the application would
/// have put there goes to the other types it is offered); with `strict` none.
pub(super) fn keeps_types(
    what: &str,
    usage: u64,
    flags: u32,
    plain: u32,
    external: u32,
    may_hide: u32,
) -> Result<(), &'static str> {
    let lost = plain & !external;
    if plain == external || (external & !plain == 0 && lost & !may_hide == 0 && external != 0) {
        if lost != 0 {
            log::once(
                LogLevel::Info,
                &format!(
                    "host-import: external {what} cannot use the device-local host-visible memory types {lost:#x}; \
                     the application's {what} (usage {usage:#x}, flags {flags:#x}) go to the other types it is \
                     offered ({external:#x}); VKDIRTY_HOST_IMPORT=strict keeps every type"
                ),
            );
        }
        return Ok(());
    }
    log::once(
        LogLevel::Info,
        &format!(
            "host-import: external {what} (usage {usage:#x}, flags {flags:#x}) would have memory types \
             {external:#x} instead of {plain:#x}; such {what} stay as the application creates them"
        ),
    );
    Err("external ones would have other memory types")
}

/// The memory types `keeps_types` may hide from external resources under `policy`.
pub fn hideable_types(types: &[vk::MemoryPropertyFlags], policy: HostImport) -> u32 {
    use vk::MemoryPropertyFlags as M;
    if policy != HostImport::On {
        return 0;
    }
    let both = M::DEVICE_LOCAL | M::HOST_VISIBLE;
    types.iter().take(32).enumerate().filter(|(_, f)| f.contains(both)).fold(0, |bits, (i, _)| bits | 1 << i)
}

/// Whether external memory properties allow binding to imported host memory.
pub(super) fn importable(p: &vk::ExternalMemoryProperties) -> bool {
    p.compatible_handle_types.contains(HOST_ALLOCATION)
        && p.external_memory_features.contains(vk::ExternalMemoryFeatureFlags::IMPORTABLE)
        // A dedicated-only resource cannot live in a host-pointer import.
        && !p.external_memory_features.contains(vk::ExternalMemoryFeatureFlags::DEDICATED_ONLY)
}

/// `n` rounded up to a multiple of `align` (a power of two); `None` on overflow.
pub(super) fn round_up(n: u64, align: u64) -> Option<u64> {
    Some(n.checked_add(align - 1)? & !(align - 1))
}
