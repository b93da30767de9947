//! The parameters of the calls the reader follows, decoded as gfxreconstruct's `ParameterEncoder`
//! writes them (`framework/encode/parameter_encoder.h`): values little-endian at their encode
//! type's width (handles as 64-bit ids, enums and flags 32 bits, `VkDeviceSize` 64), and a pointer
//! as a `u32` of `PointerAttributes`, then its address when `kHasAddress`, then its data when
//! `kHasData` (`framework/format/format.h`). A struct pointer's data is the struct's members in
//! order; its `pNext` is a struct pointer of the chained struct, or a null one.

/// `PointerAttributes` (`framework/format/format.h`).
pub const IS_NULL: u32 = 0x1;
pub const HAS_ADDRESS: u32 = 0x40;
pub const HAS_DATA: u32 = 0x80;

/// `VK_STRUCTURE_TYPE_MEMORY_MAP_PLACED_INFO_EXT`, the one struct `VkMemoryMapInfo` chains.
pub const MEMORY_MAP_PLACED_INFO_EXT: u32 = 1_000_272_002;

/// What a map call says: which memory, at which offset, and whether it succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub memory: u64,
    pub offset: u64,
    pub result: i32,
}

/// A cursor over a call's encoded parameters; every read says what was missing.
struct Params<'a> {
    p: &'a [u8],
    at: usize,
}

impl<'a> Params<'a> {
    fn new(p: &'a [u8]) -> Params<'a> {
        Params { p, at: 0 }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.p.len());
        let Some(end) = end else {
            return Err(format!("{} bytes of parameters end before {what} (byte {})", self.p.len(), self.at));
        };
        let b = &self.p[self.at..end];
        self.at = end;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        let mut v = [0u8; 8];
        v.copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    }

    /// A pointer's attributes and address (`EncodeStructPtrPreamble`, `EncodePointerConverted`):
    /// whether its data follows.
    fn pointer(&mut self, what: &str) -> Result<bool, String> {
        let attrs = self.u32(what)?;
        if attrs & IS_NULL != 0 {
            return Ok(false);
        }
        if attrs & HAS_ADDRESS != 0 {
            self.u64(what)?;
        }
        Ok(attrs & HAS_DATA != 0)
    }

    /// A struct pointer that must carry its struct.
    fn struct_data(&mut self, what: &str) -> Result<(), String> {
        if self.pointer(what)? {
            Ok(())
        } else {
            Err(format!("{what} is null or was not recorded"))
        }
    }

    /// A `pNext` chain (`EncodePNextStruct`): each chained struct's own `pNext` comes before
    /// its members, so the members of the whole chain follow its last, null, pointer.
    fn skip_chain(&mut self, what: &str, known: &[(u32, usize)]) -> Result<(), String> {
        let mut members = 0usize;
        while self.pointer(what)? {
            let s_type = self.u32(what)?;
            let Some(&(_, size)) = known.iter().find(|(t, _)| *t == s_type) else {
                return Err(format!("{what} chains a struct of type {s_type}, which this reader does not follow"));
            };
            members = members.saturating_add(size);
        }
        self.take(members, what).map(|_| ())
    }

    /// The `VkResult` every call that returns one ends with.
    fn result(&mut self) -> Result<i32, String> {
        Ok(self.u32("the result")? as i32)
    }
}

/// `vkAllocateMemory(device, pAllocateInfo, pAllocator, pMemory) -> VkResult`: the memory id and
/// the result. The call ends with `pMemory`'s id and the result.
pub fn allocated(p: &[u8]) -> Result<(u64, i32), String> {
    let n = p.len();
    if n < 12 {
        return Err(format!("{n} bytes of parameters cannot end with a memory id and a result"));
    }
    let mut q = Params::new(&p[n - 12..]);
    Ok((q.u64("pMemory")?, q.result()?))
}

/// `VkMemoryAllocateInfo::allocationSize` of `vkAllocateMemory` parameters, when the struct has
/// no `pNext` chain (whose many structs this reader does not follow).
pub fn allocation_size(p: &[u8]) -> Option<u64> {
    let mut q = Params::new(p);
    q.u64("device").ok()?;
    if !q.pointer("pAllocateInfo").ok()? {
        return None;
    }
    q.u32("sType").ok()?;
    if q.pointer("pNext").ok()? {
        return None;
    }
    q.u64("allocationSize").ok()
}

/// `vkMapMemory(device, memory, offset, size, flags, ppData) -> VkResult`.
pub fn map_memory(p: &[u8]) -> Result<Mapped, String> {
    let mut q = Params::new(p);
    q.u64("device")?;
    let memory = q.u64("memory")?;
    let offset = q.u64("offset")?;
    q.u64("size")?;
    q.u32("flags")?;
    pointer_to_pointer(&mut q)?;
    Ok(Mapped { memory, offset, result: q.result()? })
}

/// `vkMapMemory2(device, pMemoryMapInfo, ppData) -> VkResult` and its KHR alias;
/// `VkMemoryMapInfo { sType, pNext, flags, memory, offset, size }`.
pub fn map_memory2(p: &[u8]) -> Result<Mapped, String> {
    let mut q = Params::new(p);
    q.u64("device")?;
    q.struct_data("pMemoryMapInfo")?;
    q.u32("VkMemoryMapInfo::sType")?;
    // VkMemoryMapPlacedInfoEXT { sType, pNext, pPlacedAddress }: the address, 8 bytes.
    q.skip_chain("VkMemoryMapInfo::pNext", &[(MEMORY_MAP_PLACED_INFO_EXT, 8)])?;
    q.u32("VkMemoryMapInfo::flags")?;
    let memory = q.u64("VkMemoryMapInfo::memory")?;
    let offset = q.u64("VkMemoryMapInfo::offset")?;
    q.u64("VkMemoryMapInfo::size")?;
    pointer_to_pointer(&mut q)?;
    Ok(Mapped { memory, offset, result: q.result()? })
}

/// `vkUnmapMemory(device, memory)`: the memory.
pub fn unmap_memory(p: &[u8]) -> Result<u64, String> {
    let mut q = Params::new(p);
    q.u64("device")?;
    q.u64("memory")
}

/// `vkUnmapMemory2(device, pMemoryUnmapInfo) -> VkResult` and its KHR alias;
/// `VkMemoryUnmapInfo { sType, pNext, flags, memory }`: the memory.
pub fn unmap_memory2(p: &[u8]) -> Result<u64, String> {
    let mut q = Params::new(p);
    q.u64("device")?;
    q.struct_data("pMemoryUnmapInfo")?;
    q.u32("VkMemoryUnmapInfo::sType")?;
    q.skip_chain("VkMemoryUnmapInfo::pNext", &[])?;
    q.u32("VkMemoryUnmapInfo::flags")?;
    let memory = q.u64("VkMemoryUnmapInfo::memory")?;
    q.result()?;
    Ok(memory)
}

/// `ppData` (`EncodeVoidPtrPtr`): attributes, address, and the mapped address unless the call
/// failed.
fn pointer_to_pointer(q: &mut Params) -> Result<(), String> {
    if q.pointer("ppData")? {
        q.u64("*ppData")?;
    }
    Ok(())
}
