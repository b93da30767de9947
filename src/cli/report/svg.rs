//! The heatmap and timeline as inline SVG. Cells and bins carry their numbers in `data-*`
//! attributes and `<title>` tooltips, so the page needs no script.

use std::fmt::Write;

use vkdirty::trace::stats::Stats;

use super::esc;
use super::view::{colour, scale, View};
use crate::cli::human_bytes;

const LABEL_W: f64 = 300.0;
const PLOT_W: f64 = 960.0;
const ROW_H: f64 = 18.0;
const TOP: f64 = 28.0;
/// Frame boundaries drawn at most; with more frames every n-th is drawn.
const MAX_FRAME_LINES: usize = 120;

/// Frame lines to draw: every n-th end, so at most `MAX_FRAME_LINES`.
fn frame_step(v: &View) -> usize {
    v.frame_ends.len().div_ceil(MAX_FRAME_LINES).max(1)
}

pub fn heatmap(v: &View) -> String {
    let nb = v.bins.len().max(1);
    let cw = PLOT_W / nb as f64;
    let h = TOP + v.rows.len().max(1) as f64 * ROW_H + 50.0;
    let w = LABEL_W + PLOT_W + 20.0;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="heatmap-svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11" data-bins="{nb}" data-bin-width="{}" data-columns="{}">"#,
        v.width,
        v.columns.name()
    );
    let _ = write!(
        o,
        r##"<rect x="{LABEL_W}" y="{TOP}" width="{PLOT_W}" height="{}" fill="#f2f2f2"/>"##,
        v.rows.len() as f64 * ROW_H
    );
    for (r, row) in v.rows.iter().enumerate() {
        let y = TOP + r as f64 * ROW_H;
        let id = row.alloc.map_or("other".to_string(), |a| a.to_string());
        let _ = write!(
            o,
            r#"<g class="row" data-alloc="{id}"><text x="{}" y="{}" text-anchor="end"><title>{}</title>{}</text>"#,
            LABEL_W - 6.0,
            y + ROW_H * 0.7,
            esc(&row.tooltip),
            esc(&row.label)
        );
        for (i, &(pages, bytes)) in row.cells.iter().enumerate() {
            if pages == 0 && bytes == 0 {
                continue;
            }
            let (cr, cg, cb) = colour(scale(pages.max(1), v.max_cell_pages));
            let _ = write!(
                o,
                r##"<rect class="cell" x="{:.2}" y="{y}" width="{:.2}" height="{}" fill="#{cr:02x}{cg:02x}{cb:02x}" data-bin="{i}" data-pages="{pages}" data-bytes="{bytes}"><title>{}, {}: {pages} dirty pages, {}</title></rect>"##,
                LABEL_W + i as f64 * cw,
                cw.max(0.5),
                ROW_H - 1.0,
                esc(&row.label),
                v.column_label(i),
                human_bytes(bytes)
            );
        }
        o.push_str("</g>");
    }
    let bottom = TOP + v.rows.len() as f64 * ROW_H;
    frame_lines(&mut o, v, TOP - 4.0, bottom);
    axis(&mut o, v, bottom);
    // Colour legend.
    let lx = LABEL_W;
    let ly = bottom + 30.0;
    for k in 0..100 {
        let (cr, cg, cb) = colour(k as f64 / 99.0);
        let _ = write!(
            o,
            r##"<rect x="{}" y="{ly}" width="2.2" height="10" fill="#{cr:02x}{cg:02x}{cb:02x}"/>"##,
            lx + k as f64 * 2.0
        );
    }
    let _ = write!(
        o,
        r#"<text x="{}" y="{}">1 page</text><text x="{}" y="{}">{} pages per cell (log scale); grey: nothing written</text>"#,
        lx - 44.0,
        ly + 9.0,
        lx + 206.0,
        ly + 9.0,
        v.max_cell_pages
    );
    o.push_str("</svg>");
    o
}

fn frame_lines(o: &mut String, v: &View, y0: f64, y1: f64) {
    let cw = PLOT_W / v.bins.len().max(1) as f64;
    let step = frame_step(v);
    for (k, &(last, frame)) in v.frame_ends.iter().enumerate() {
        if (k + 1) % step != 0 {
            continue;
        }
        let x = LABEL_W + v.pos(last + 1) * cw;
        if x > LABEL_W + PLOT_W + 0.01 {
            continue;
        }
        let _ = write!(
            o,
            r##"<line class="frame" x1="{x:.2}" y1="{y0}" x2="{x:.2}" y2="{y1}" stroke="#d62728" stroke-width="0.8" stroke-dasharray="3,2" data-frame="{frame}"><title>frame {frame} presented after submit {last}</title></line>"##
        );
    }
}

fn axis(o: &mut String, v: &View, y: f64) {
    let cw = PLOT_W / v.bins.len().max(1) as f64;
    let Some(last) = v.bins.last().map(|b| b.last) else { return };
    let first = v.first;
    let _ = write!(o, r##"<line x1="{LABEL_W}" y1="{y}" x2="{}" y2="{y}" stroke="#333"/>"##, LABEL_W + PLOT_W);
    let ticks = 8u64;
    let span = last.saturating_sub(first) + 1;
    let step = span.div_ceil(ticks).max(1);
    let mut s = first;
    while s <= last {
        let x = LABEL_W + v.pos(s) * cw;
        let _ = write!(
            o,
            r##"<line x1="{x:.1}" y1="{y}" x2="{x:.1}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" text-anchor="middle">{s}</text>"##,
            y + 4.0,
            y + 15.0
        );
        s += step;
    }
    let _ =
        write!(o, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, LABEL_W + PLOT_W, y + 28.0, v.columns.name());
}

pub fn timeline(st: &Stats, v: &View) -> String {
    let nb = v.bins.len().max(1);
    let cw = PLOT_W / nb as f64;
    let ph = 220.0;
    let h = TOP + ph + 50.0;
    let w = LABEL_W + PLOT_W + 20.0;
    let max = v.bins.iter().map(|b| b.dirty_bytes.max(b.trace_bytes)).max().unwrap_or(0).max(1);
    // One spike (an initial upload) would flatten every other bar: a square-root scale then.
    let mut nz: Vec<u64> = v.bins.iter().map(|b| b.dirty_bytes.max(b.trace_bytes)).filter(|&b| b > 0).collect();
    nz.sort_unstable();
    let sqrt = nz.get(nz.len() / 2).is_some_and(|&m| max > 20 * m);
    let frac = |b: u64| if sqrt { (b as f64 / max as f64).sqrt() } else { b as f64 / max as f64 };
    let y_of = |b: u64| TOP + ph - ph * frac(b);
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="timeline-svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    // Capture windows.
    for c in &st.captures {
        let (start, stop_at) = v.window(c);
        let x0 = LABEL_W + v.pos(start) * cw;
        let x1 = stop_at.map_or(LABEL_W + PLOT_W, |s| LABEL_W + v.pos(s) * cw);
        let stop = c.stop_submit.map_or("the end".into(), |s| format!("submit {s}"));
        let _ = write!(
            o,
            r##"<rect class="capture" x="{x0:.2}" y="{TOP}" width="{:.2}" height="{ph}" fill="#2ca02c" fill-opacity="0.12" data-start="{}"><title>capture window: submit {} (frame {}) to {stop}</title></rect>"##,
            (x1 - x0).max(1.0),
            c.start_submit,
            c.start_submit,
            c.start_frame
        );
    }
    // Y axis.
    for k in 0..=4u64 {
        let b = if sqrt { (max as f64 * (k * k) as f64 / 16.0) as u64 } else { max * k / 4 };
        let y = y_of(b);
        let _ = write!(
            o,
            r##"<line x1="{LABEL_W}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LABEL_W + PLOT_W,
            LABEL_W - 6.0,
            y + 4.0,
            human_bytes(b)
        );
    }
    let mut line = String::new();
    for (i, b) in v.bins.iter().enumerate() {
        let x = LABEL_W + i as f64 * cw;
        let y = y_of(b.dirty_bytes);
        let _ = write!(
            o,
            r##"<rect class="bin" x="{x:.2}" y="{y:.2}" width="{:.2}" height="{:.2}" fill="#1f77b4" data-bin="{i}" data-dirty-bytes="{}" data-dirty-pages="{}" data-trace-bytes="{}"><title>{}: {} dirty ({} pages), {} of trace</title></rect>"##,
            cw.max(0.5),
            TOP + ph - y,
            b.dirty_bytes,
            b.dirty_pages,
            b.trace_bytes,
            v.column_label(i),
            human_bytes(b.dirty_bytes),
            b.dirty_pages,
            human_bytes(b.trace_bytes)
        );
        let _ = write!(line, "{:.2},{:.2} ", x + cw / 2.0, y_of(b.trace_bytes));
    }
    let _ = write!(
        o,
        r##"<polyline class="trace-bytes" points="{}" fill="none" stroke="#ff7f0e" stroke-width="1.5"/>"##,
        line.trim_end()
    );
    frame_lines(&mut o, v, TOP, TOP + ph);
    axis(&mut o, v, TOP + ph);
    let _ = write!(
        o,
        r##"<rect x="{LABEL_W}" y="6" width="12" height="10" fill="#1f77b4"/><text x="{}" y="15">dirty bytes</text><line x1="{}" y1="11" x2="{}" y2="11" stroke="#ff7f0e" stroke-width="2"/><text x="{}" y="15">trace bytes written</text><rect x="{}" y="6" width="12" height="10" fill="#2ca02c" fill-opacity="0.25"/><text x="{}" y="15">capture window</text><line x1="{}" y1="6" x2="{}" y2="16" stroke="#d62728" stroke-dasharray="3,2"/><text x="{}" y="15">frame end</text>"##,
        LABEL_W + 16.0,
        LABEL_W + 100.0,
        LABEL_W + 116.0,
        LABEL_W + 120.0,
        LABEL_W + 240.0,
        LABEL_W + 256.0,
        LABEL_W + 360.0,
        LABEL_W + 360.0,
        LABEL_W + 366.0
    );
    let _ = write!(
        o,
        r#"<text x="{LABEL_W}" y="{}">per {} (bars: dirty data, line: trace bytes){}</text>"#,
        TOP + ph + 28.0,
        if v.width == 1 { v.columns.name().to_string() } else { format!("{} {}s", v.width, v.columns.name()) },
        if sqrt { "; square-root scale" } else { "" }
    );
    o.push_str("</svg>");
    o
}
