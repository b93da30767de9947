//! Host memory the application imports itself (`VkImportMemoryHostPointerInfoEXT` at
//! `vkAllocateMemory`, as emulators do with guest memory): it writes through its own pointer
//! and may never call `vkMapMemory`, so the range is tracked from the allocation on, like a
//! mapping of the whole allocation that lasts until `vkFreeMemory`. The pages are the GPU's
//! memory, so no shadow: `async-wp` where the kernel allows, else `full`, also when `assisted`
//! is chosen (memory that is never mapped cannot be flushed); a refusal is logged once. The
//! trace records it as a map record whose reason starts with [`IMPORT_REASON`].

use super::*;

/// How the map record of an application import starts.
pub const IMPORT_REASON: &str = "application-imported host memory";

/// The host pointer of the application's `VkImportMemoryHostPointerInfoEXT`, if it passed one.
pub(super) fn host_pointer(info: &vk::MemoryAllocateInfo<'_>) -> Option<*mut std::ffi::c_void> {
    let mut p = info.p_next as *const vk::BaseInStructure<'_>;
    while !p.is_null() {
        // SAFETY: the application's pNext chain, valid for the duration of the call.
        let s = unsafe { &*p };
        if s.s_type == vk::StructureType::IMPORT_MEMORY_HOST_POINTER_INFO_EXT {
            // SAFETY: the structure type says what it is.
            let imp = unsafe { &*(p as *const vk::ImportMemoryHostPointerInfoEXT<'_>) };
            return (!imp.p_host_pointer.is_null()).then_some(imp.p_host_pointer);
        }
        p = s.p_next;
    }
    None
}

impl Capture {
    /// Tracks an application import of `size` bytes at `ptr` as allocation `id` (the device's
    /// lock held).
    pub(super) fn track_app_import(
        &self,
        mem: &mut Memories,
        writer: Option<&TraceWriter>,
        key: (u64, u64),
        id: u64,
        ptr: *mut std::ffi::c_void,
        size: u64,
    ) {
        if writer.is_none() && !self.settings.gfxr_flush {
            return;
        }
        let Ok(len) = usize::try_from(size) else { return };
        if self.settings.backend == config::BackendChoice::Fixed(BackendKind::Assisted) {
            log::once(
                vkdirty::config::LogLevel::Info,
                &format!(
                    "{IMPORT_REASON} is tracked by its pages, not by flushes as the assisted backend tracks \
                     mappings (it need not be mapped, so it cannot be flushed)"
                ),
            );
        }
        let mut order = self.settings.backend.app_import_order().to_vec();
        let forced = refuse_for_testing(&mut order, ptr as usize, len);
        // Collected with its device's mappings.
        let opts = TrackOptions { group: key.0, ..Default::default() };
        // SAFETY: the driver accepted `ptr..ptr+size` as the memory of this allocation; the
        // application keeps it mapped until the allocation is freed (VK_EXT_external_memory_host).
        let tracked = unsafe { self.guards.track_first(ptr.cast(), len, &order, &opts) };
        let tracked = match tracked {
            Ok((t, r)) => Ok((t, forced.into_iter().chain(r).collect::<Vec<_>>())),
            Err(r) => Err(forced.into_iter().chain(r).collect::<Vec<_>>()),
        };
        match tracked {
            Ok((t, refusals)) => {
                let why: Vec<String> = refusals.iter().map(refusal_key).collect();
                let mut reason = format!("{IMPORT_REASON}, tracked from allocation with {}", t.backend);
                if !why.is_empty() {
                    reason = format!("{reason} ({})", why.join("; "));
                }
                log::once(vkdirty::config::LogLevel::Info, &format!("{IMPORT_REASON} is tracked with {}", t.backend));
                let mapping = Mapping { region: t.id, offset: 0, size, backend: t.backend };
                mem.map(key, mapping, len, true);
                if let Some(w) = writer {
                    w.record(&Event::Map(trace::Map {
                        alloc: id,
                        offset: 0,
                        size,
                        app_ptr: ptr as u64,
                        backend: t.backend,
                        reason,
                    }));
                }
            }
            Err(refusals) => {
                let why: Vec<String> = refusals.iter().map(refusal_key).collect();
                log::once(
                    vkdirty::config::LogLevel::Warn,
                    &format!("{IMPORT_REASON} is not captured: {}", why.join("; ")),
                );
            }
        }
    }
}
