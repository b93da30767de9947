//! The layer's own host memory and the allocations imported from it.

use super::*;

/// Page-aligned private anonymous memory from the layer's arenas (`vkdirty::guard::arena`).
/// Imported allocations lie next to each other, so a collection scans many with one
/// `PAGEMAP_SCAN`. Every page is populated (written with zeros by the kernel) before the driver
/// sees it, so a driver that pins the pages gets each allocation's own page, never the shared
/// zero page a later write would move away from. Across `fork()` the child gets a copy (pinned
/// pages are copied at the fork and stay the parent's; docs/design.md, "host-import's arenas:
/// private memory"). Given back (its pages returned to the system) on drop.
pub(super) struct HostBlock {
    pub(super) block: vkdirty::guard::arena::ArenaBlock,
    pub(super) len: usize,
}

impl HostBlock {
    /// `len` bytes aligned to `align` (a power of two, at least the page size).
    pub(super) fn new(len: usize, align: usize) -> std::io::Result<HostBlock> {
        let block = vkdirty::guard::arena::ArenaBlock::new(len, align)?;
        // SAFETY: the block's own pages, mapped read-write and used by nobody yet. Failure
        // (a kernel before 5.14, no memory now) leaves them to be populated on first touch.
        unsafe { libc::madvise(block.ptr().cast(), block.len(), libc::MADV_POPULATE_WRITE) };
        Ok(HostBlock { block, len })
    }

    pub(super) fn ptr(&self) -> *mut u8 {
        self.block.ptr()
    }
}

// ---------------------------------------------------------------------------------------------
// Allocation.

/// `vkAllocateMemory`: imports an eligible allocation, else calls `next` with the application's
/// arguments.
///
/// # Safety
/// Valid `vkAllocateMemory` arguments; `d` is host-import's state of `device`, `next` the next
/// layer's `vkAllocateMemory`.
pub unsafe fn allocate(
    d: Option<&ImportDevice>,
    next: vk::PFN_vkAllocateMemory,
    device: vk::Device,
    info: *const vk::MemoryAllocateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    p_memory: *mut vk::DeviceMemory,
) -> vk::Result {
    let Some(a) = d.and_then(|d| d.active.as_ref()).filter(|_| !info.is_null() && !p_memory.is_null()) else {
        // SAFETY: the application's arguments, passed down.
        return unsafe { next(device, info, allocator, p_memory) };
    };
    // SAFETY: checked non-null; valid by the caller contract.
    let ai = unsafe { &*info };
    // SAFETY: as above.
    let refusal = match unsafe { a.decide(ai) } {
        Decision::Skip => {
            // SAFETY: the application's arguments, passed down.
            return unsafe { next(device, info, allocator, p_memory) };
        }
        Decision::Refuse(why) => why,
        Decision::Import(len, drop_dedicated) => {
            // SAFETY: as above.
            match unsafe { a.import(next, device, ai, len, drop_dedicated, allocator, p_memory) } {
                Ok(r) => return r,
                Err(why) => why,
            }
        }
    };
    // SAFETY: the application's arguments, passed down.
    let r = unsafe { next(device, info, allocator, p_memory) };
    if r == vk::Result::SUCCESS {
        // SAFETY: valid on success.
        let memory = unsafe { *p_memory };
        a.st.lock().refused.insert(memory.as_raw(), refusal);
    }
    r
}

pub(super) enum Decision {
    /// Not host-visible: nothing to say about it.
    Skip,
    Refuse(String),
    /// Import this many bytes; `true`: without the application's dedicated structure.
    Import(u64, bool),
}

impl Active {
    /// # Safety
    /// `ai` is a valid `VkMemoryAllocateInfo` with a valid chain.
    pub(super) unsafe fn decide(&self, ai: &vk::MemoryAllocateInfo<'_>) -> Decision {
        let ty = ai.memory_type_index;
        let Some(&flags) = self.types.get(ty as usize) else {
            return Decision::Skip;
        };
        if !flags.contains(vk::MemoryPropertyFlags::HOST_VISIBLE) {
            return Decision::Skip;
        }
        if let Some(why) = type_refusal(flags, ty, self.no_video_memory) {
            return Decision::Refuse(why);
        }
        if self.importable_bits & (1 << ty) == 0 {
            return Decision::Refuse(format!("the driver imports no host memory into memory type {ty}"));
        }
        // SAFETY: caller contract.
        let drop_dedicated = match unsafe { plan_chain(ai.p_next) } {
            ChainPlan::Keep => false,
            ChainPlan::Refuse(why) => return Decision::Refuse(why.into()),
            ChainPlan::DropDedicated(buffer) => {
                if let Err(why) = self.dedicated_buffer_importable(buffer) {
                    return Decision::Refuse(format!("dedicated buffer allocation ({why})"));
                }
                true
            }
        };
        if let Some((what, why)) = self.st.lock().pending.blocking(ty) {
            return Decision::Refuse(format!("non-importable {what} pending ({why})"));
        }
        match round_up(ai.allocation_size, self.align) {
            Some(len) if ai.allocation_size > 0 && usize::try_from(len).is_ok() => {
                Decision::Import(len, drop_dedicated)
            }
            _ => Decision::Refuse(format!("size {} out of range", ai.allocation_size)),
        }
    }

    /// Whether a dedicated allocation for `buffer` may be an import without the dedicated
    /// structure: the buffer can be bound to imported memory and the driver does not require
    /// dedicated memory for it (preferring it is a hint).
    pub(super) fn dedicated_buffer_importable(&self, buffer: vk::Buffer) -> Result<(), &'static str> {
        if let Some(&why) = self.st.lock().non_importable.get(&Resource::Buffer(buffer.as_raw())) {
            return Err(why);
        }
        let f = self.requirements2.ok_or("no vkGetBufferMemoryRequirements2")?;
        let info = vk::BufferMemoryRequirementsInfo2 { buffer, ..Default::default() };
        let mut ded = vk::MemoryDedicatedRequirements::default();
        let mut req = vk::MemoryRequirements2 {
            p_next: &mut ded as *mut vk::MemoryDedicatedRequirements<'_> as *mut c_void,
            ..Default::default()
        };
        // SAFETY: a valid buffer of this device (the application's dedicated structure names
        // it, VUID-VkMemoryDedicatedAllocateInfo-buffer-parameter); the chain lives across the call.
        unsafe { f(self.device, &info, &mut req) };
        if ded.requires_dedicated_allocation == vk::TRUE {
            return Err("the driver requires it");
        }
        Ok(())
    }

    /// Allocates `len` bytes of our memory and imports it. `Err` says why the application's own
    /// allocation must be made instead.
    ///
    /// # Safety
    /// As [`allocate`].
    pub(super) unsafe fn import(
        &self,
        next: vk::PFN_vkAllocateMemory,
        device: vk::Device,
        ai: &vk::MemoryAllocateInfo<'_>,
        len: u64,
        drop_dedicated: bool,
        allocator: *const vk::AllocationCallbacks<'_>,
        p_memory: *mut vk::DeviceMemory,
    ) -> Result<vk::Result, String> {
        let ty = ai.memory_type_index;
        let block = HostBlock::new(len as usize, self.align as usize).map_err(|e| {
            log::once(LogLevel::Warn, &format!("host-import: no anonymous memory for an allocation: {e}"));
            format!("mmap failed: {e}")
        })?;
        // SAFETY: valid device with the extension; the block is aligned and mapped.
        match unsafe { host_pointer_bits(device, self.host_pointer_props, block.ptr()) } {
            Ok(bits) if bits & (1 << ty) != 0 => {}
            Ok(bits) => return Err(format!("the driver imports host memory into types {bits:#x}, not type {ty}")),
            Err(r) => return Err(format!("vkGetMemoryHostPointerPropertiesEXT: {r:?}")),
        }
        // SAFETY: `decide` found a chain CopiedChain can copy when it drops the structure.
        let mut copied = if drop_dedicated { unsafe { CopiedChain::copy(ai.p_next) } } else { CopiedChain::default() };
        let rest = if drop_dedicated { copied.link() } else { ai.p_next };
        let import = vk::ImportMemoryHostPointerInfoEXT {
            p_next: rest,
            handle_type: HOST_ALLOCATION,
            p_host_pointer: block.ptr().cast(),
            ..Default::default()
        };
        // The application's allocation, its chain kept behind the import; the size rounded up
        // to a multiple of minImportedHostPointerAlignment, as an import requires.
        let mut mine = *ai;
        mine.p_next = &import as *const vk::ImportMemoryHostPointerInfoEXT<'_> as *const c_void;
        mine.allocation_size = len;
        // SAFETY: the application's valid arguments with a valid import prepended.
        let r = unsafe { next(device, &mine, allocator, p_memory) };
        if r != vk::Result::SUCCESS {
            log::once(
                LogLevel::Warn,
                &format!("host-import: the driver refused an import ({r:?}); allocating normally"),
            );
            return Err(format!("the driver refused the import: {r:?}"));
        }
        // SAFETY: valid on success.
        let memory = unsafe { *p_memory };
        self.st.lock().imported.insert(memory.as_raw(), block);
        Ok(r)
    }
}

/// `vkFreeMemory` returned: our pages go after the driver's memory.
pub fn freed(d: Option<&ImportDevice>, memory: vk::DeviceMemory) {
    let Some(d) = d else { return };
    let Some(a) = d.active.as_ref() else { return };
    let block = {
        let mut st = a.st.lock();
        st.refused.remove(&memory.as_raw());
        st.imported.remove(&memory.as_raw())
    };
    drop(block);
}

/// The host-import side of mapping `memory` at `offset`.
pub fn mapping(d: Option<&ImportDevice>, memory: vk::DeviceMemory, offset: u64) -> Import {
    let Some(d) = d else {
        return Import::NotApplicable;
    };
    let Some(a) = d.active.as_ref() else {
        return d.off.clone().map_or(Import::NotApplicable, Import::NotImported);
    };
    let st = a.st.lock();
    if let Some(b) = st.imported.get(&memory.as_raw()) {
        return match usize::try_from(offset) {
            // SAFETY: offset is inside the block (checked), so the result is in the same mapping.
            Ok(off) if off < b.len => Import::Imported(unsafe { b.ptr().add(off) }),
            _ => Import::NotImported(format!("mapping offset {offset} is outside the memory")),
        };
    }
    match st.refused.get(&memory.as_raw()) {
        Some(why) => Import::NotImported(why.clone()),
        None => Import::NotImported("allocated before host-import was on".into()),
    }
}
