//! `vkdirty report TRACE [-o report.html] [--png heatmap.png]`: one self-contained HTML page
//! (inline SVG and CSS, no script, nothing fetched) showing which memory the application wrote
//! when: the allocation × submit heatmap, the timeline of dirty and trace bytes, the allocation
//! table and the session. The numbers are those of `vkdirty info --json --by allocation`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use vkdirty::trace::stats::Stats;

use super::info::utc;
use super::progress::Progress;
use super::{human_bytes, out, warn, CliError, Run};

mod png;
mod svg;
mod view;

#[derive(clap::Args)]
pub struct Args {
    /// The trace file.
    file: PathBuf,
    /// The HTML file to write [default: the trace's name with .html].
    #[arg(short = 'o', long = "output", value_name = "HTML")]
    output: Option<PathBuf>,
    /// Also write the heatmap as a PNG image.
    #[arg(long, value_name = "PNG")]
    png: Option<PathBuf>,
    /// Columns of the heatmap and timeline: submits (frame ends marked) or frames.
    #[arg(long, value_enum, default_value = "submit")]
    columns: view::Columns,
}

impl Run for Args {
    fn run(self) -> Result<ExitCode, CliError> {
        let len = std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
        let mut p = Progress::new(len, "reading");
        let st = Stats::from_file(&self.file, |o| p.set(o))?;
        drop(p);
        let v = view::View::new(&st, self.columns);
        let output = self.output.clone().unwrap_or_else(|| self.file.with_extension("html"));
        let html = page(&self.file.display().to_string(), &st, &v);
        let ctx = || format!("writing {}", output.display());
        let f = File::create(&output).map_err(|e| CliError::io(ctx(), e))?;
        let mut w = BufWriter::new(f);
        w.write_all(html.as_bytes()).and_then(|()| w.flush()).map_err(|e| CliError::io(ctx(), e))?;
        if let Some(png_path) = &self.png {
            png::write(png_path, &st, &v)?;
        }
        out(|o| {
            writeln!(o, "wrote {}", output.display())?;
            if let Some(p) = &self.png {
                writeln!(o, "wrote {}", p.display())?;
            }
            Ok(())
        })?;
        if let Some(t) = &st.summary.truncation {
            warn(t);
        }
        if !st.summary.damage.is_empty() || !st.summary.problems.is_empty() {
            warn(format!(
                "{} damaged ranges and {} inconsistent records skipped (listed in the report)",
                st.summary.damage.len(),
                st.summary.problems.len()
            ));
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1320px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:12px}td,th{padding:3px 8px;border-bottom:1px solid #e4e4e4;text-align:right;vertical-align:top;white-space:nowrap}\
th{background:#f4f4f4}td.l,th.l{text-align:left;white-space:normal}dl{display:grid;grid-template-columns:max-content auto;gap:3px 16px;font-size:13px;margin:0}\
dt{color:#666}dd{margin:0}.bad{color:#b00;font-weight:bold}.ok{color:#070}.share{display:inline-block;height:9px;background:#1f77b4;margin-right:4px}\
td.sh{text-align:left;min-width:140px}.note{color:#666;font-size:12px}svg{display:block;margin:6px 0}";

fn kv(o: &mut String, k: &str, v: &str) {
    let _ = write!(o, "<dt>{}</dt><dd>{}</dd>", esc(k), v);
}

fn driver_version(vendor: u32, v: u32) -> String {
    // NVIDIA packs 10.8.8.6 bits; everyone else uses the Vulkan version encoding.
    if vendor == 0x10de {
        format!("{}.{}.{}.{} ({v:#x})", v >> 22, (v >> 14) & 0xff, (v >> 6) & 0xff, v & 0x3f)
    } else {
        format!("{}.{}.{} ({v:#x})", v >> 22, (v >> 12) & 0x3ff, v & 0xfff)
    }
}

fn session(o: &mut String, name: &str, st: &Stats) {
    let s = &st.summary;
    o.push_str(r#"<section id="session"><h2>Session</h2><dl>"#);
    match &s.session {
        Some(x) => {
            kv(o, "application", &esc(&format!("{} (engine {})", x.app, x.engine)));
            kv(o, "process", &esc(&format!("{} (pid {})", x.process, x.pid)));
            kv(o, "device", &esc(&format!("{} (vendor {:#x}, device {:#x})", x.device, x.vendor_id, x.device_id)));
            kv(o, "driver", &esc(&driver_version(x.vendor_id, x.driver_version)));
            kv(o, "Vulkan API", &esc(&x.api_version));
            if x.settings.is_empty() {
                kv(o, "settings", "not recorded (trace from an older layer)");
            } else {
                // Settings changed from their defaults first, then the defaults in one line.
                let mut set = String::new();
                for v in x.settings.iter().filter(|v| v.from != "default") {
                    let _ = write!(
                        set,
                        r#"<span class="setting" data-name="{}">{}={}</span> <span class="note">({})</span><br/>"#,
                        esc(&v.name),
                        esc(&v.name),
                        esc(&v.value),
                        esc(&v.from)
                    );
                }
                let defaults: Vec<String> = x
                    .settings
                    .iter()
                    .filter(|v| v.from == "default")
                    .map(|v| format!("{}={}", v.name, if v.value.is_empty() { "(unset)" } else { &v.value }))
                    .collect();
                if !defaults.is_empty() {
                    let _ = write!(set, r#"<span class="note">defaults: {}</span>"#, esc(&defaults.join(", ")));
                }
                kv(o, "settings", &set);
            }
        }
        None => kv(o, "session", "no session record in the trace"),
    }
    kv(o, "trace", &esc(&format!("{name}: {} on disk, {}", human_bytes(s.file_bytes), s.writer_version)));
    kv(
        o,
        "format",
        &esc(&format!(
            "version {}, page size {} B, created {}, {} blocks, payload {} stored as {} ({:.2}x)",
            s.format_version,
            s.page_size,
            utc(s.created_ns),
            s.blocks,
            human_bytes(s.payload_bytes),
            human_bytes(s.stored_bytes),
            s.compression_ratio
        )),
    );
    let mut b = String::new();
    for r in &s.backend_reasons {
        let why = if r.reason.is_empty() { String::new() } else { format!(": {}", r.reason) };
        let _ = write!(b, "{} &times;{}{}<br/>", esc(&r.backend), r.maps, esc(&why));
    }
    kv(o, "backends", if b.is_empty() { "no mappings" } else { &b });
    let win = if st.captures.is_empty() {
        "whole run (no capture window)".to_string()
    } else {
        st.captures
            .iter()
            .map(|c| {
                let stop = c
                    .stop_submit
                    .map_or("the end".into(), |x| format!("submit {x} (frame {})", c.stop_frame.unwrap_or(0)));
                format!("submit {} (frame {}) to {stop}", c.start_submit, c.start_frame)
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    kv(o, "capture window", &esc(&win));
    kv(
        o,
        "totals",
        &format!(
            r#"<span id="totals" data-allocations="{}" data-submits="{}" data-frames="{}" data-dirty-pages="{}" data-dirty-bytes="{}" data-file-bytes="{}">{} allocations ({}), {} maps, {} submits, {} frames, {} dirty pages, {} dirty in {} blocks</span>"#,
            s.allocations,
            s.submits,
            s.frames,
            s.dirty_pages,
            s.dirty_bytes,
            s.file_bytes,
            s.allocations,
            human_bytes(s.allocated_bytes),
            s.maps,
            s.submits,
            s.frames,
            s.dirty_pages,
            human_bytes(s.dirty_bytes),
            s.dirty_blocks
        ),
    );
    let stalls = match s.writer_stalls {
        Some(0) => r#"<span class="ok">0 stalls</span>"#.to_string(),
        Some(n) => format!(r#"<span class="bad">{n} stalls</span> (the application waited on a full writer queue)"#),
        None => "unknown (no end block)".into(),
    };
    kv(o, "writer", &stalls);
    let status = match &s.truncation {
        Some(t) => format!(r#"<span class="bad">{}</span>"#, esc(t)),
        None => r#"<span class="ok">complete</span>"#.into(),
    };
    kv(o, "status", &status);
    if !s.damage.is_empty() {
        let mut d = String::new();
        for x in &s.damage {
            let ids: Vec<String> = x.allocations.iter().map(|a| a.to_string()).collect();
            let hit = if ids.is_empty() {
                "no live host-visible allocation affected".to_string()
            } else {
                format!("allocations {} may miss writes after submit {}", ids.join(", "), x.intact_through_submit)
            };
            let _ = write!(
                d,
                r#"<span class="bad damage" data-offset="{}" data-len="{}">bytes {}..{} skipped: {}</span>; {}<br/>"#,
                x.offset,
                x.len,
                x.offset,
                x.offset + x.len,
                esc(&x.reason),
                esc(&hit)
            );
        }
        kv(o, "damage", &d);
    }
    if !s.problems.is_empty() {
        let mut d = String::new();
        for p in s.problems.iter().take(50) {
            let _ = write!(d, "{}<br/>", esc(&p.to_string()));
        }
        if s.problems.len() > 50 {
            let _ = write!(d, "and {} more (vkdirty verify lists them)", s.problems.len() - 50);
        }
        kv(o, "inconsistent records", &format!(r#"<span class="bad">skipped</span><br/>{d}"#));
    }
    if s.unknown_blocks > 0 {
        kv(o, "unknown blocks", &format!("{} (skipped; written by a newer vkdirty)", s.unknown_blocks));
    }
    o.push_str("</dl></section>");
}

fn alloc_table(o: &mut String, st: &Stats) {
    o.push_str(r#"<section id="allocations"><h2>Allocations</h2><table id="alloc-table"><thead><tr><th>id</th><th>size</th><th>type</th><th>heap</th><th class="l">flags</th><th class="l">backend and why</th><th>maps</th><th>unmaps</th><th>flushes</th><th>dirty pages</th><th>dirty bytes</th><th>first submit</th><th>last submit</th><th class="l">share</th></tr></thead><tbody>"#);
    let opt = |v: Option<u64>| v.map_or("&ndash;".to_string(), |n| n.to_string());
    for a in &st.allocations {
        let mut why = String::new();
        for b in &a.backends {
            let r = if b.reason.is_empty() { String::new() } else { format!(": {}", b.reason) };
            let _ = write!(why, "{} &times;{}{}<br/>", esc(&b.backend), b.maps, esc(&r));
        }
        if why.is_empty() {
            why = "never mapped".into();
        }
        let _ = write!(
            o,
            r#"<tr data-alloc="{}" data-size="{}" data-maps="{}" data-dirty-pages="{}" data-dirty-bytes="{}" data-first="{}" data-last="{}"><td>{}</td><td title="{} bytes">{}</td><td>{}</td><td>{}</td><td class="l">{}</td><td class="l">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td title="{} bytes">{}</td><td>{}</td><td>{}</td><td class="sh"><span class="share" style="width:{:.0}px"></span>{:.1}%</td></tr>"#,
            a.id,
            a.size,
            a.maps,
            a.dirty_pages,
            a.dirty_bytes,
            a.first_submit.map_or(String::new(), |n| n.to_string()),
            a.last_submit.map_or(String::new(), |n| n.to_string()),
            a.id,
            a.size,
            human_bytes(a.size),
            a.memory_type,
            a.heap,
            esc(&a.flags.replace('|', " ")),
            why,
            a.maps,
            a.unmaps,
            a.flushes,
            a.dirty_pages,
            a.dirty_bytes,
            human_bytes(a.dirty_bytes),
            opt(a.first_submit),
            opt(a.last_submit),
            a.share * 100.0,
            a.share * 100.0
        );
    }
    o.push_str("</tbody></table></section>");
}

fn page(name: &str, st: &Stats, v: &view::View) -> String {
    let mut o = String::with_capacity(1 << 20);
    let _ = write!(
        o,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/><title>vkdirty report: {}</title><style>{STYLE}</style></head><body>"#,
        esc(name)
    );
    let app = st.summary.session.as_ref().map_or(String::new(), |s| format!(" of {}", s.app));
    let _ = write!(
        o,
        r#"<h1>vkdirty report{}</h1><p class="note">{} &mdash; {} dirty in {} submits and {} frames; {} of trace on disk</p>"#,
        esc(&app),
        esc(name),
        human_bytes(st.summary.dirty_bytes),
        st.summary.submits,
        st.summary.frames,
        human_bytes(st.summary.file_bytes)
    );
    let unit = v.columns.name();
    let binning =
        if v.width == 1 { format!("one column per {unit}") } else { format!("one column per {} {unit}s", v.width) };
    let _ = write!(
        o,
        r#"<section id="heatmap"><h2>Dirty pages by allocation and {unit}</h2><p class="note">Rows: allocations with dirty data (id, size, memory type, backend; hover for details{}). Columns: {binning}. {}</p>{}</section>"#,
        if v.rows.iter().any(|r| r.alloc.is_none()) {
            format!("; the {} with the most data, the rest summed in the last row, whose colours stop at the top of the scale", view::MAX_ROWS - 1)
        } else {
            String::new()
        },
        match v.frame_ends.len() {
            0 => String::new(),
            n if n > 120 => format!(" Dashed lines: frame ends (one in {}).", n.div_ceil(120)),
            _ => " Dashed lines: frame ends.".to_string(),
        },
        svg::heatmap(v)
    );
    let _ = write!(
        o,
        r#"<section id="timeline"><h2>Dirty bytes and trace bytes over time</h2>{}</section>"#,
        svg::timeline(st, v)
    );
    alloc_table(&mut o, st);
    session(&mut o, name, st);
    let _ = write!(
        o,
        r#"<p class="note">Written by vkdirty {}. Machine-readable: <code>vkdirty info --json --by allocation|frame|submit</code>, <code>vkdirty export --format csv|perfetto</code>.</p></body></html>"#,
        env!("CARGO_PKG_VERSION")
    );
    o.push('\n');
    o
}
