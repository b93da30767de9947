//! A capture's memory story as vkdirty trace events: each successful `vkAllocateMemory` an
//! [`Event::Allocation`] (id: gfxreconstruct's memory id; handle: the 1-based allocation number,
//! since gfxreconstruct hands the application wrapped handles), each fill-memory command an
//! [`Event::Dirty`] at allocation offsets for the next submit, each queue submission an
//! [`Event::Submit`].

use std::collections::HashMap;
use std::path::Path;

use super::{call, Block, GfxrError, GfxrReader};
use crate::trace::{Allocation, Dirty, Event, Submit};

/// Pointer attribute `kIsNull`, `kHasAddress` (`PointerAttributes`).
const IS_NULL: u32 = 0x1;
const HAS_ADDRESS: u32 = 0x40;

/// The `VkMemoryAllocateInfo::allocationSize` of `vkAllocateMemory` parameters, when the struct
/// has no `pNext` chain (whose encoding this reader does not follow).
fn allocation_size(p: &[u8]) -> Option<u64> {
    // device id u64, pAllocateInfo attributes u32, [address u64], sType u32, pNext attributes u32.
    let attrs = u32::from_le_bytes(p.get(8..12)?.try_into().ok()?);
    if attrs & IS_NULL != 0 {
        return None;
    }
    let mut at = 12 + if attrs & HAS_ADDRESS != 0 { 8 } else { 0 } + 4;
    let next = u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?);
    if next & IS_NULL == 0 {
        return None;
    }
    at += 4;
    Some(u64::from_le_bytes(p.get(at..at + 8)?.try_into().ok()?))
}

/// The memory id and result of `vkAllocateMemory` parameters: they end with `pMemory`'s id and
/// the `VkResult`.
fn allocated_id(p: &[u8]) -> Option<(u64, i32)> {
    let n = p.len();
    let id = u64::from_le_bytes(p.get(n.checked_sub(12)?..n - 4)?.try_into().ok()?);
    let r = i32::from_le_bytes(p.get(n - 4..)?.try_into().ok()?);
    Some((id, r))
}

/// The events, in capture order. Fill-memory commands of memory the capture never allocated, or
/// of a mapping it never recorded, are errors: the capture would not replay them.
pub fn memory_events(path: &Path) -> Result<Vec<Event>, GfxrError> {
    let mut r = GfxrReader::open(path)?;
    let mut out = Vec::new();
    let mut allocations = 0u64;
    // memory id -> (size, mapping offset).
    let mut memories: HashMap<u64, (u64, Option<u64>)> = HashMap::new();
    let mut seq = 0u64;
    let corrupt = |msg: String| GfxrError::Corrupt { offset: 0, msg };
    while let Some(b) = r.next_block()? {
        match b {
            Block::Call { id: call::ALLOCATE_MEMORY, params } => {
                let Some((id, result)) = allocated_id(&params) else {
                    return Err(corrupt("a vkAllocateMemory call too short to hold its memory".into()));
                };
                if result != 0 {
                    continue;
                }
                allocations += 1;
                // Unknown size (a pNext chain): unbounded, so no write is refused for it.
                let size = allocation_size(&params).unwrap_or(u64::MAX / 2);
                memories.insert(id, (size, None));
                out.push(Event::Allocation(Allocation {
                    id,
                    handle: allocations,
                    device: 0,
                    size,
                    memory_type: 0,
                    property_flags: 0,
                    heap: 0,
                }));
            }
            Block::Call { id: call::MAP_MEMORY, params } if params.len() >= 24 => {
                let memory = u64::from_le_bytes(params[8..16].try_into().unwrap_or_default());
                let offset = u64::from_le_bytes(params[16..24].try_into().unwrap_or_default());
                if let Some(m) = memories.get_mut(&memory) {
                    m.1 = Some(offset);
                }
            }
            // Unmapped: a later fill needs a later map (one the reader understands) to be placed.
            Block::Call { id: call::UNMAP_MEMORY, params } if params.len() >= 16 => {
                let memory = u64::from_le_bytes(params[8..16].try_into().unwrap_or_default());
                if let Some(m) = memories.get_mut(&memory) {
                    m.1 = None;
                }
            }
            Block::Call {
                id: call::QUEUE_SUBMIT | call::QUEUE_SUBMIT2 | call::QUEUE_SUBMIT2_KHR | call::QUEUE_BIND_SPARSE,
                ..
            } => {
                seq += 1;
                out.push(Event::Submit(Submit { seq, ..Submit::default() }));
            }
            Block::Fill { memory, offset, data } => {
                let Some(&(_, Some(map_offset))) = memories.get(&memory) else {
                    return Err(corrupt(format!(
                        "fill-memory command for memory {memory}, which is not allocated and mapped"
                    )));
                };
                let at = map_offset.saturating_add(offset);
                out.push(Event::Dirty(Dirty {
                    alloc: memory,
                    submit: seq + 1,
                    runs: vec![(at, data.len() as u64)],
                    data,
                }));
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_memory_parameters() {
        // device 7; pAllocateInfo: attributes (single, struct, address, data), address; sType 5;
        // pNext null; size 0x3000; type 2; pAllocator null; pMemory: attributes, address, id 42;
        // VK_SUCCESS.
        let mut p = Vec::new();
        p.extend(7u64.to_le_bytes());
        p.extend((0x2u32 | 0x20 | 0x40 | 0x80).to_le_bytes());
        p.extend(0xdead_beefu64.to_le_bytes());
        p.extend(5u32.to_le_bytes());
        p.extend(IS_NULL.to_le_bytes());
        p.extend(0x3000u64.to_le_bytes());
        p.extend(2u32.to_le_bytes());
        p.extend(IS_NULL.to_le_bytes());
        p.extend((0x2u32 | 0x40 | 0x80).to_le_bytes());
        p.extend(0x1234u64.to_le_bytes());
        p.extend(42u64.to_le_bytes());
        p.extend(0i32.to_le_bytes());
        assert_eq!(allocation_size(&p), Some(0x3000));
        assert_eq!(allocated_id(&p), Some((42, 0)));
        assert_eq!(allocated_id(&p[..8]), None);
        // A pNext chain: size unknown.
        let mut q = p.clone();
        q[24..28].copy_from_slice(&(0x2u32 | 0x20 | 0x40 | 0x80).to_le_bytes());
        assert_eq!(allocation_size(&q), None);
    }
}
