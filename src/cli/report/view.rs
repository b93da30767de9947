//! What the pictures show, shared by the SVG and PNG renderings: the heatmap rows (the
//! allocations with the most dirty data, the rest folded into one row), the colour scale and the
//! timeline bins.

use vkdirty::trace::stats::{AllocStats, CaptureWindow, Stats};

use crate::cli::human_bytes;
use crate::cli::tables::backends;

/// Heatmap rows shown at most; further allocations are summed into one "other" row.
pub const MAX_ROWS: usize = 40;

pub struct Row {
    /// `None` for the "other allocations" row.
    pub alloc: Option<u64>,
    pub label: String,
    pub tooltip: String,
    /// `(pages, bytes)` per bin.
    pub cells: Vec<(u64, u64)>,
}

/// One column of the timeline (the heatmap's bins): submits or frames `first..=last`.
#[derive(Clone, Copy, Default)]
pub struct Bin {
    pub first: u64,
    pub last: u64,
    pub dirty_pages: u64,
    pub dirty_bytes: u64,
    pub trace_bytes: u64,
}

/// What a column counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Columns {
    Submit,
    Frame,
}

impl Columns {
    pub fn name(self) -> &'static str {
        match self {
            Columns::Submit => "submit",
            Columns::Frame => "frame",
        }
    }
}

pub struct View {
    pub columns: Columns,
    /// First submit (or frame) of column 0, and submits (or frames) per column.
    pub first: u64,
    pub width: u64,
    pub rows: Vec<Row>,
    pub bins: Vec<Bin>,
    /// Largest pages in one cell (the top of the colour scale).
    pub max_cell_pages: u64,
    /// Submit numbers after which a frame ended (`vkQueuePresentKHR`), with the frame number
    /// (none with frame columns: every column edge is one).
    pub frame_ends: Vec<(u64, u64)>,
}

pub fn short_label(a: &AllocStats) -> String {
    format!("#{} {} type {} {}", a.id, human_bytes(a.size), a.memory_type, backends(a))
}

impl View {
    pub fn new(st: &Stats, columns: Columns) -> View {
        let h = match columns {
            Columns::Submit => &st.heatmap,
            Columns::Frame => &st.frame_heatmap,
        };
        let nbins = h.bins.max(1);
        let mut dirty: Vec<&AllocStats> = st.allocations.iter().filter(|a| h.rows.contains_key(&a.id)).collect();
        // Keep the allocations with the most dirty data, shown in id order.
        dirty.sort_by(|a, b| b.dirty_bytes.cmp(&a.dirty_bytes).then(a.id.cmp(&b.id)));
        let rest = if dirty.len() > MAX_ROWS { dirty.split_off(MAX_ROWS - 1) } else { Vec::new() };
        dirty.sort_by_key(|a| a.id);
        let cells_of = |id: u64| {
            let mut v = h.rows.get(&id).cloned().unwrap_or_default();
            v.resize(nbins, (0, 0));
            v
        };
        let mut rows: Vec<Row> = dirty
            .iter()
            .map(|a| Row {
                alloc: Some(a.id),
                label: short_label(a),
                tooltip: format!(
                    "allocation {}: {} bytes, memory type {} ({}), heap {}, {}",
                    a.id,
                    a.size,
                    a.memory_type,
                    a.flags,
                    a.heap,
                    backends(a)
                ),
                cells: cells_of(a.id),
            })
            .collect();
        // Dirty data of allocations with no allocation record (damaged or cut traces).
        let orphans: Vec<u64> =
            h.rows.keys().copied().filter(|id| !st.allocations.iter().any(|a| a.id == *id)).collect();
        if !rest.is_empty() || !orphans.is_empty() {
            let mut cells = vec![(0u64, 0u64); nbins];
            for id in rest.iter().map(|a| a.id).chain(orphans.iter().copied()) {
                for (c, x) in cells.iter_mut().zip(cells_of(id)) {
                    c.0 += x.0;
                    c.1 += x.1;
                }
            }
            let n = rest.len() + orphans.len();
            rows.push(Row {
                alloc: None,
                label: format!("{n} other allocations"),
                tooltip: format!("{n} allocations with less dirty data, summed"),
                cells,
            });
        }
        let mut bins: Vec<Bin> = (0..nbins)
            .map(|i| {
                let first = h.bin_start(i);
                Bin { first, last: first + h.width.max(1) - 1, ..Bin::default() }
            })
            .collect();
        if columns == Columns::Submit {
            for s in &st.submits {
                let b = &mut bins[h.bin_index(s.seq)];
                b.dirty_pages += s.dirty_pages;
                b.dirty_bytes += s.dirty_bytes;
                b.trace_bytes += s.trace_bytes;
            }
        } else {
            for f in &st.frames {
                let b = &mut bins[h.bin_index(f.frame)];
                b.dirty_pages += f.dirty_pages;
                b.dirty_bytes += f.dirty_bytes;
                b.trace_bytes += f.trace_bytes;
            }
        }
        // The scale comes from single allocations; the summed row would wash them out (its
        // cells are clamped to the top colour).
        let max_cell_pages = rows
            .iter()
            .filter(|r| r.alloc.is_some())
            .flat_map(|r| r.cells.iter().map(|c| c.0))
            .max()
            .or_else(|| rows.iter().flat_map(|r| r.cells.iter().map(|c| c.0)).max())
            .unwrap_or(0);
        let mut frame_ends: Vec<(u64, u64)> = match columns {
            Columns::Submit => {
                st.frames.iter().filter(|f| f.timestamp_ns.is_some()).map(|f| (f.last_submit, f.frame)).collect()
            }
            Columns::Frame => Vec::new(),
        };
        frame_ends.sort_unstable();
        View { columns, first: h.first_submit.max(1), width: h.width.max(1), rows, bins, max_cell_pages, frame_ends }
    }

    /// Position of the start of submit (or frame) `x` in columns (fractional).
    pub fn pos(&self, x: u64) -> f64 {
        x.saturating_sub(self.first) as f64 / self.width as f64
    }

    /// "submit 3", "frames 4-7": what column `i` holds.
    pub fn column_label(&self, i: usize) -> String {
        let b = &self.bins[i];
        let unit = self.columns.name();
        if b.first == b.last {
            format!("{unit} {}", b.first)
        } else {
            format!("{unit}s {}-{}", b.first, b.last)
        }
    }

    /// Where capture window `c` starts and stops, in this view's unit.
    pub fn window(&self, c: &CaptureWindow) -> (u64, Option<u64>) {
        match self.columns {
            Columns::Submit => (c.start_submit, c.stop_submit),
            Columns::Frame => (c.start_frame, c.stop_frame),
        }
    }
}

/// Viridis-like colour for `t` in [0, 1].
pub fn colour(t: f64) -> (u8, u8, u8) {
    const STOPS: [(u8, u8, u8); 5] = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * f).round() as u8;
    (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Log-scaled position of `pages` between 1 and `max`, clamped (empty cells are not drawn).
pub fn scale(pages: u64, max: u64) -> f64 {
    if max <= 1 {
        return 1.0;
    }
    ((pages.max(1) as f64).ln() / (max as f64).ln()).min(1.0)
}
