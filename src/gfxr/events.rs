//! A capture's memory story as vkdirty trace events: each successful `vkAllocateMemory` an
//! [`Event::Allocation`] (id: gfxreconstruct's memory id; handle: the 1-based allocation number,
//! since gfxreconstruct hands the application wrapped handles), each fill-memory command an
//! [`Event::Dirty`] at allocation offsets for the next submit, each queue submission an
//! [`Event::Submit`].

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::params::{self, Mapped};
use super::{call, Block, GfxrError, GfxrReader};
use crate::trace::{Allocation, Dirty, Event, Submit};

/// The events, in capture order. Fill-memory commands of memory the capture never allocated, or
/// of a mapping it never recorded, are errors: the capture would not replay them.
pub fn memory_events(path: &Path) -> Result<Vec<Event>, GfxrError> {
    memory_events_of(GfxrReader::open(path)?)
}

/// [`memory_events`] of a capture read from anywhere.
pub fn memory_events_of<R: Read>(mut r: GfxrReader<R>) -> Result<Vec<Event>, GfxrError> {
    let mut out = Vec::new();
    let mut allocations = 0u64;
    // memory id -> (size, mapping offset).
    let mut memories: HashMap<u64, (u64, Option<u64>)> = HashMap::new();
    let mut seq = 0u64;
    while let Some(b) = r.next_block()? {
        let at = r.block_offset();
        let damaged = |name: &str, msg: String| GfxrError::Corrupt { offset: at, msg: format!("{name}: {msg}") };
        match b {
            Block::Call { id: call::ALLOCATE_MEMORY, params } => {
                let (id, result) = params::allocated(&params).map_err(|m| damaged("vkAllocateMemory", m))?;
                if result != 0 {
                    continue;
                }
                allocations += 1;
                // Unknown size (a pNext chain): unbounded, so no write is refused for it.
                let size = params::allocation_size(&params).unwrap_or(u64::MAX / 2);
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
            Block::Call { id: id @ (call::MAP_MEMORY | call::MAP_MEMORY2 | call::MAP_MEMORY2_KHR), params } => {
                let (name, decoded) = match id {
                    call::MAP_MEMORY => ("vkMapMemory", params::map_memory(&params)),
                    call::MAP_MEMORY2 => ("vkMapMemory2", params::map_memory2(&params)),
                    _ => ("vkMapMemory2KHR", params::map_memory2(&params)),
                };
                let Mapped { memory, offset, result } = decoded.map_err(|m| damaged(name, m))?;
                // gfxreconstruct tracks only a successful mapping (PostProcess_vkMapMemory2).
                if let (0, Some(m)) = (result, memories.get_mut(&memory)) {
                    m.1 = Some(offset);
                }
            }
            // Unmapped: a later fill needs a later map to be placed. gfxreconstruct forgets the
            // mapping before the call goes down (PreProcess_vkUnmapMemory2), whatever it returns.
            Block::Call { id: id @ (call::UNMAP_MEMORY | call::UNMAP_MEMORY2 | call::UNMAP_MEMORY2_KHR), params } => {
                let (name, decoded) = match id {
                    call::UNMAP_MEMORY => ("vkUnmapMemory", params::unmap_memory(&params)),
                    call::UNMAP_MEMORY2 => ("vkUnmapMemory2", params::unmap_memory2(&params)),
                    _ => ("vkUnmapMemory2KHR", params::unmap_memory2(&params)),
                };
                let memory = decoded.map_err(|m| damaged(name, m))?;
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
                    return Err(damaged("fill-memory command", format!("memory {memory} is not allocated and mapped")));
                };
                out.push(Event::Dirty(Dirty {
                    alloc: memory,
                    submit: seq + 1,
                    runs: vec![(map_offset.saturating_add(offset), data.len() as u64)],
                    data,
                }));
            }
            _ => {}
        }
    }
    Ok(out)
}
