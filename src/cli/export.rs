//! `vkdirty export TRACE --format csv|perfetto -o FILE`: the dirty data as CSV rows for pandas
//! and the like, or as Chrome trace-event JSON that Perfetto's UI (and chrome://tracing) opens.
//! Both stream: what is held is one submit's rows (not its bytes) at a time.
//!
//! CSV: one row per dirty run, `submit,frame,allocation,offset,pages,bytes` (pages counted as
//! `vkdirty info` does: a page shared by two runs of one block counts once, on the first).
//!
//! Perfetto: process "vkdirty: APP"; thread "submits" has one slice per submit (lasting until the
//! next, args: dirty and trace bytes); one counter track "alloc N dirty bytes" per allocation
//! (its dirty bytes at each submit, back to 0 at the next); global instant events "frame N" at
//! each present; thread "memory" has instant events for map, unmap and free. The trace records no
//! time for map, unmap and free: they are placed at the time of the submit before them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};
use vkdirty::trace::format::count_pages;
use vkdirty::trace::stats::FrameTracker;
use vkdirty::trace::{Block, Checker, Event, TraceError, TraceReader};

use super::progress::Progress;
use super::{out, warn, CliError, Run};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Perfetto,
}

#[derive(clap::Args)]
pub struct Args {
    /// The trace file.
    file: PathBuf,
    /// csv: one row per dirty run; perfetto: Chrome trace-event JSON.
    #[arg(long, value_enum)]
    format: Format,
    /// The file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
}

/// Dirty data of one allocation, waiting for its submit's record (which gives the frame and time).
struct Pending {
    submit: u64,
    alloc: u64,
    /// `(offset, pages, bytes)` per run.
    runs: Vec<(u64, u64, u64)>,
}

trait Sink {
    fn header(&mut self, _app: &str) -> std::io::Result<()> {
        Ok(())
    }
    /// Submit `seq` was recorded (`ts` None: dirty data after the last submit record).
    fn submit(
        &mut self,
        seq: u64,
        frame: u64,
        ts: Option<u64>,
        dirty: &[Pending],
        trace_bytes: u64,
    ) -> std::io::Result<()>;
    fn other(&mut self, _ev: &Event) -> std::io::Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> std::io::Result<()>;
}

struct Csv<W: Write>(W);

impl<W: Write> Sink for Csv<W> {
    fn header(&mut self, _app: &str) -> std::io::Result<()> {
        writeln!(self.0, "submit,frame,allocation,offset,pages,bytes")
    }
    fn submit(&mut self, seq: u64, frame: u64, _ts: Option<u64>, dirty: &[Pending], _tb: u64) -> std::io::Result<()> {
        for p in dirty {
            for &(off, pages, bytes) in &p.runs {
                writeln!(self.0, "{seq},{frame},{},{off},{pages},{bytes}", p.alloc)?;
            }
        }
        Ok(())
    }
    fn finish(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

const PID: u64 = 1;
const TID_SUBMITS: u64 = 1;
const TID_MEMORY: u64 = 2;

struct Perfetto<W: Write> {
    w: W,
    first: bool,
    /// Time zero (ns since the epoch): the trace's creation.
    t0: u64,
    /// The last submit's time (ns), where untimed records are placed.
    last_ts: u64,
    /// Submit slice waiting for the next submit's time (its end).
    open: Option<Value>,
    /// Allocations whose counter is not 0.
    nonzero: Vec<u64>,
}

impl<W: Write> Perfetto<W> {
    fn us(&self, ns: u64) -> f64 {
        ns.saturating_sub(self.t0) as f64 / 1000.0
    }

    fn emit(&mut self, v: &Value) -> std::io::Result<()> {
        if !self.first {
            self.w.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut self.w, v).map_err(std::io::Error::other)
    }

    fn close_slice(&mut self, end_ns: u64) -> std::io::Result<()> {
        if let Some(mut s) = self.open.take() {
            let start = s["ts"].as_f64().unwrap_or(0.0);
            s["dur"] = json!((self.us(end_ns) - start).max(0.0));
            self.emit(&s)?;
        }
        Ok(())
    }
}

impl<W: Write> Sink for Perfetto<W> {
    fn header(&mut self, app: &str) -> std::io::Result<()> {
        self.w.write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n")?;
        for v in [
            json!({"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "ts": 0, "args": {"name": format!("vkdirty: {app}")}}),
            json!({"ph": "M", "name": "thread_name", "pid": PID, "tid": TID_SUBMITS, "ts": 0, "args": {"name": "submits"}}),
            json!({"ph": "M", "name": "thread_name", "pid": PID, "tid": TID_MEMORY, "ts": 0, "args": {"name": "memory (map, unmap, free)"}}),
        ] {
            self.emit(&v)?;
        }
        Ok(())
    }

    fn submit(
        &mut self,
        seq: u64,
        frame: u64,
        ts: Option<u64>,
        dirty: &[Pending],
        trace_bytes: u64,
    ) -> std::io::Result<()> {
        let ns = ts.unwrap_or(self.last_ts).max(self.last_ts);
        self.close_slice(ns)?;
        self.last_ts = ns;
        let t = self.us(ns);
        // Counters of the previous submit go back to 0.
        let mut per_alloc: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for p in dirty {
            let e = per_alloc.entry(p.alloc).or_default();
            for &(_, pages, bytes) in &p.runs {
                e.0 += pages;
                e.1 += bytes;
            }
        }
        for a in std::mem::take(&mut self.nonzero) {
            if !per_alloc.contains_key(&a) {
                let v = json!({"ph": "C", "name": format!("alloc {a} dirty bytes"), "pid": PID, "tid": 0, "ts": t, "args": {"dirty_bytes": 0}});
                self.emit(&v)?;
            }
        }
        let (mut pages, mut bytes) = (0, 0);
        for (&a, &(p, b)) in &per_alloc {
            pages += p;
            bytes += b;
            let v = json!({"ph": "C", "name": format!("alloc {a} dirty bytes"), "pid": PID, "tid": 0, "ts": t, "args": {"dirty_bytes": b}});
            self.emit(&v)?;
            self.nonzero.push(a);
        }
        let name =
            if ts.is_some() { format!("submit {seq}") } else { format!("after submit {}", seq.saturating_sub(1)) };
        self.open = Some(json!({
            "ph": "X", "name": name, "cat": "submit", "pid": PID, "tid": TID_SUBMITS, "ts": t, "dur": 0,
            "args": {"submit": seq, "frame": frame, "dirty_pages": pages, "dirty_bytes": bytes, "trace_bytes": trace_bytes},
        }));
        Ok(())
    }

    fn other(&mut self, ev: &Event) -> std::io::Result<()> {
        let t = self.us(self.last_ts);
        let v = match ev {
            Event::Frame { frame, last_submit, timestamp_ns } => json!({
                "ph": "i", "s": "g", "name": format!("frame {frame}"), "cat": "frame", "pid": PID, "tid": TID_SUBMITS,
                "ts": self.us(*timestamp_ns), "args": {"frame": frame, "last_submit": last_submit},
            }),
            Event::Map(m) => json!({
                "ph": "i", "s": "t", "name": format!("map alloc {}", m.alloc), "cat": "memory", "pid": PID, "tid": TID_MEMORY, "ts": t,
                "args": {"alloc": m.alloc, "offset": m.offset, "size": m.size, "backend": m.backend.name(), "reason": m.reason},
            }),
            Event::Unmap { alloc } => json!({
                "ph": "i", "s": "t", "name": format!("unmap alloc {alloc}"), "cat": "memory", "pid": PID, "tid": TID_MEMORY, "ts": t,
                "args": {"alloc": alloc},
            }),
            Event::Free { alloc } => json!({
                "ph": "i", "s": "t", "name": format!("free alloc {alloc}"), "cat": "memory", "pid": PID, "tid": TID_MEMORY, "ts": t,
                "args": {"alloc": alloc},
            }),
            _ => return Ok(()),
        };
        self.emit(&v)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        let end = self.last_ts;
        self.close_slice(end)?;
        self.w.write_all(b"\n]}\n")?;
        self.w.flush()
    }
}

/// The stream state between blocks: frame, dirty data waiting for its submit record, trace bytes
/// per submit.
struct Exporter {
    page: u64,
    frames: FrameTracker,
    pending: Vec<Pending>,
    trace_bytes: BTreeMap<u64, u64>,
    last_seq: u64,
    started: bool,
}

impl Exporter {
    fn block(&mut self, b: &Block, sink: &mut dyn Sink) -> std::io::Result<()> {
        // Every block's bytes belong to a submit, as in `info --by submit`.
        let owner = match &b.event {
            Some(Event::Dirty(d)) => d.submit,
            Some(Event::Submit(s)) => s.seq,
            Some(Event::Frame { last_submit, .. }) => *last_submit,
            Some(Event::End(_)) => self.last_seq,
            _ => self.last_seq + 1,
        };
        *self.trace_bytes.entry(owner.max(1)).or_default() += b.file_len();
        let Some(ev) = &b.event else { return Ok(()) };
        if !self.started {
            // The session record, when there is one, comes first.
            let app = match ev {
                Event::Session(s) => s.app_name.clone(),
                _ => String::new(),
            };
            sink.header(&app)?;
            self.started = true;
        }
        self.frames.see(ev);
        match ev {
            Event::Dirty(d) => {
                let mut last_page = None;
                let runs =
                    d.runs.iter().map(|&(o, l)| (o, count_pages(&[(o, l)], self.page, &mut last_page), l)).collect();
                self.pending.push(Pending { submit: d.submit, alloc: d.alloc, runs });
            }
            Event::Submit(s) => {
                self.last_seq = self.last_seq.max(s.seq);
                // Dirty data of this and earlier submits is complete.
                let (now, later): (Vec<Pending>, Vec<Pending>) =
                    self.pending.drain(..).partition(|p| p.submit <= s.seq);
                self.pending = later;
                let tb = self.trace_bytes.remove(&s.seq).unwrap_or(0);
                sink.submit(s.seq, self.frames.current(), Some(s.timestamp_ns), &now, tb)?;
            }
            ev => sink.other(ev)?,
        }
        Ok(())
    }

    fn finish(mut self, sink: &mut dyn Sink) -> std::io::Result<()> {
        if !self.started {
            sink.header("")?;
        }
        // Dirty data collected, and records written, after the last submit record.
        let mut rest: BTreeMap<u64, Vec<Pending>> = BTreeMap::new();
        for &seq in self.trace_bytes.keys() {
            rest.entry(seq).or_default();
        }
        for p in self.pending.drain(..) {
            rest.entry(p.submit).or_default().push(p);
        }
        for (seq, ps) in rest {
            let tb = self.trace_bytes.remove(&seq).unwrap_or(0);
            sink.submit(seq, self.frames.current(), None, &ps, tb)?;
        }
        sink.finish()
    }
}

/// Reads salvaging, as `info` does: damaged ranges and inconsistent records are skipped.
fn export(a: &Args, sink: &mut dyn Sink, r: &mut TraceReader<impl std::io::Read>) -> Result<Checker, CliError> {
    let ctx = || format!("writing {}", a.output.display());
    let len = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    let mut progress = Progress::new(len, "exporting");
    let mut x = Exporter {
        page: r.header().page_size as u64,
        frames: FrameTracker::default(),
        pending: Vec::new(),
        trace_bytes: BTreeMap::new(),
        last_seq: 0,
        started: false,
    };
    let mut checker = Checker::new();
    checker.follow(r, |b, ok| {
        progress.set(b.offset + b.file_len());
        if ok {
            x.block(b, sink).map_err(|e| TraceError::io(ctx(), e))?;
        }
        Ok(())
    })?;
    x.finish(sink).map_err(|e| CliError::io(ctx(), e))?;
    Ok(checker)
}

impl Run for Args {
    fn run(self) -> Result<ExitCode, CliError> {
        let mut r = TraceReader::open(&self.file)?.salvage(true);
        let ctx = || format!("writing {}", self.output.display());
        let f = File::create(&self.output).map_err(|e| CliError::io(ctx(), e))?;
        let w = BufWriter::with_capacity(1 << 20, f);
        let checker = match self.format {
            Format::Csv => export(&self, &mut Csv(w), &mut r)?,
            Format::Perfetto => {
                let t0 = r.header().created_ns;
                let mut p = Perfetto { w, first: true, t0, last_ts: t0, open: None, nonzero: Vec::new() };
                export(&self, &mut p, &mut r)?
            }
        };
        out(|o| writeln!(o, "wrote {}", self.output.display()))?;
        if let Some(t) = r.truncation() {
            warn(t);
        }
        for i in checker.impacts() {
            warn(format!("{}; skipped ({})", i.damage, super::verify::impact_line(i)));
        }
        for p in checker.problems() {
            warn(format!("skipped: {p}"));
        }
        Ok(ExitCode::SUCCESS)
    }
}
