//! Checks across blocks that no single block can make: allocation ids, sizes and offsets, and
//! which allocations a damaged range may have held data for.
//!
//! Feed it every block and every damaged range in file order ([`Checker::follow`] does this for
//! a salvaging [`TraceReader`]). Dirty data of submit N is written before the Submit record of
//! N, so everything up to the last Submit before a damaged range is intact; what the range held
//! can only belong to host-visible allocations that were live at that point, or to allocations
//! whose records were lost in it.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;

use super::reader::{Block, Damage, TraceReader};
use super::{Event, TraceError};

/// Largest allocation size taken as real (16 TiB, above any device heap); a larger one is a
/// damaged or crafted record.
pub const MAX_ALLOCATION_SIZE: u64 = 1 << 44;
/// `VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT`.
const HOST_VISIBLE: u32 = 0x2;

/// A record that contradicts the ones before it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// File offset of the block.
    pub offset: u64,
    /// The allocation it concerns, if any.
    pub alloc: Option<u64>,
    pub msg: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "inconsistent record at byte {}: {}", self.offset, self.msg)
    }
}

/// What one damaged range may have cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Impact {
    pub damage: Damage,
    /// The last submit recorded before the range (0: none): every allocation's contents as of
    /// this submit are intact.
    pub intact_through: u64,
    /// Allocations whose contents after `intact_through` may miss writes.
    pub allocations: BTreeSet<u64>,
}

struct Alloc {
    size: u64,
    host_visible: bool,
    live: bool,
}

#[derive(Default)]
pub struct Checker {
    allocs: HashMap<u64, Alloc>,
    last_submit: u64,
    problems: Vec<Problem>,
    impacts: Vec<Impact>,
}

impl Checker {
    pub fn new() -> Checker {
        Checker::default()
    }

    /// A damaged range, found just before the next block.
    pub fn damaged(&mut self, d: &Damage) {
        let allocations = self.allocs.iter().filter(|(_, a)| a.live && a.host_visible).map(|(&id, _)| id).collect();
        self.impacts.push(Impact { damage: d.clone(), intact_through: self.last_submit, allocations });
    }

    fn problem(&mut self, offset: u64, alloc: Option<u64>, msg: String) -> bool {
        self.problems.push(Problem { offset, alloc, msg });
        false
    }

    /// Checks the range `[off, off+len)` of allocation `id` (for a record at `offset`); an
    /// allocation unknown after damage is charged to the latest damaged range.
    fn within(&mut self, offset: u64, id: u64, what: &str, off: u64, len: u64) -> bool {
        let size = match self.allocs.get(&id) {
            Some(a) => a.size,
            None => {
                if let Some(last) = self.impacts.last_mut() {
                    // Its allocation record was lost in the damage.
                    last.allocations.insert(id);
                    self.allocs.insert(id, Alloc { size: u64::MAX, host_visible: true, live: true });
                    return true;
                }
                return self.problem(
                    offset,
                    Some(id),
                    format!("{what} for allocation {id}, which has no allocation record"),
                );
            }
        };
        match off.checked_add(len) {
            Some(end) if end <= size => true,
            _ => self.problem(
                offset,
                Some(id),
                format!("{what} {off:#x}+{len:#x} is outside allocation {id} of size {size:#x}"),
            ),
        }
    }

    /// Checks one block; `false` when it contradicts what came before (it is listed in
    /// [`Checker::problems`] and should not be applied).
    pub fn block(&mut self, b: &Block) -> bool {
        let Some(ev) = &b.event else { return true };
        let at = b.offset;
        match ev {
            Event::Allocation(a) => {
                if a.size == 0 || a.size > MAX_ALLOCATION_SIZE {
                    return self.problem(
                        at,
                        Some(a.id),
                        format!("allocation {} has an implausible size of {} bytes", a.id, a.size),
                    );
                }
                if self.allocs.get(&a.id).is_some_and(|x| x.size != u64::MAX) {
                    return self.problem(at, Some(a.id), format!("allocation id {} recorded twice", a.id));
                }
                let host_visible = a.property_flags & HOST_VISIBLE != 0;
                self.allocs.insert(a.id, Alloc { size: a.size, host_visible, live: true });
                true
            }
            Event::Map(m) => self.within(at, m.alloc, "mapping", m.offset, m.size),
            Event::Dirty(d) => {
                let mut ok = true;
                for &(o, l) in &d.runs {
                    ok &= self.within(at, d.alloc, "dirty run", o, l);
                    if !ok {
                        break;
                    }
                }
                ok
            }
            Event::Unmap { alloc } => self.within(at, *alloc, "unmap", 0, 0),
            Event::Free { alloc } => {
                let ok = self.within(at, *alloc, "free", 0, 0);
                if let Some(a) = self.allocs.get_mut(alloc) {
                    a.live = false;
                }
                ok
            }
            Event::Submit(s) => {
                self.last_submit = self.last_submit.max(s.seq);
                true
            }
            _ => true,
        }
    }

    /// Reads every block of `r` (best made salvaging), feeding blocks and damage in order;
    /// `each` sees every block and whether it is consistent. Stops at an I/O error (or, for a
    /// strict reader, the first damage).
    pub fn follow<R: Read>(
        &mut self,
        r: &mut TraceReader<R>,
        mut each: impl FnMut(&Block, bool) -> Result<(), TraceError>,
    ) -> Result<(), TraceError> {
        let mut seen = 0;
        while let Some(b) = r.next_block()? {
            for d in &r.damage()[seen..] {
                self.damaged(d);
            }
            seen = r.damage().len();
            let ok = self.block(&b);
            each(&b, ok)?;
        }
        for d in &r.damage()[seen..] {
            self.damaged(d);
        }
        Ok(())
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    pub fn impacts(&self) -> &[Impact] {
        &self.impacts
    }

    /// The damaged ranges that may have held data of `alloc` written after the submit `at`
    /// (`None`: the end of the trace).
    pub fn affecting(&self, alloc: u64, at: Option<u64>) -> Vec<&Impact> {
        self.impacts
            .iter()
            .filter(|i| i.allocations.contains(&alloc) && at.map_or(true, |n| n > i.intact_through))
            .collect()
    }
}
