//! `vkdirty events FILE`: one JSON object per block, one per line.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Map, Value};
use vkdirty::trace::{Block, BlockType, Event, TraceReader};

use super::{warn, CliError, Run};

#[derive(clap::Args)]
pub struct Args {
    /// The trace file.
    file: PathBuf,
}

impl Run for Args {
    fn run(self) -> Result<ExitCode, CliError> {
        let mut r = TraceReader::open(&self.file)?;
        let stdout = std::io::stdout();
        let mut lock = std::io::BufWriter::new(stdout.lock());
        let result = (|| -> Result<(), CliError> {
            while let Some(b) = r.next_block()? {
                let line = block_json(&b).to_string();
                out_line(&mut lock, &line)?;
            }
            Ok(())
        })();
        // Blocks before a damaged one are still printed.
        let flushed = std::io::Write::flush(&mut lock).map_err(|e| CliError::io("writing to stdout", e));
        result?;
        flushed?;
        if let Some(t) = r.truncation() {
            warn(t);
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn out_line(w: &mut impl std::io::Write, line: &str) -> Result<(), CliError> {
    writeln!(w, "{line}").map_err(|e| CliError::io("writing to stdout", e))
}

fn ranges(r: &[(u64, u64)]) -> Value {
    Value::Array(r.iter().map(|&(o, l)| json!([o, l])).collect())
}

/// The block's framing plus its record's fields (Dirty data as a byte count, not the bytes).
pub fn block_json(b: &Block) -> Value {
    let mut m = Map::new();
    m.insert("offset".into(), json!(b.offset));
    let ty = b.block_type().map_or("unknown", BlockType::name);
    m.insert("type".into(), json!(ty));
    if b.block_type().is_none() {
        m.insert("type_code".into(), json!(b.type_code));
    }
    m.insert("flags".into(), json!(b.flags));
    m.insert("stored_len".into(), json!(b.stored_len));
    m.insert("raw_len".into(), json!(b.raw_len));
    let fields = match &b.event {
        None => json!({}),
        Some(Event::Session(s)) => json!({
            "pid": s.pid, "process": s.process_name, "app": s.app_name, "engine": s.engine_name,
            "device": s.device_name, "vendor_id": s.vendor_id, "device_id": s.device_id,
            "driver_version": s.driver_version, "api_version": s.api_version,
            "settings": s.settings,
        }),
        Some(Event::Allocation(a)) => json!({
            "id": a.id, "handle": a.handle, "device": a.device, "size": a.size,
            "memory_type": a.memory_type, "property_flags": a.property_flags, "heap": a.heap,
        }),
        Some(Event::Map(x)) => json!({
            "alloc": x.alloc, "offset_in_alloc": x.offset, "size": x.size, "app_ptr": x.app_ptr,
            "backend": x.backend.name(), "reason": x.reason,
        }),
        Some(Event::Unmap { alloc }) | Some(Event::Free { alloc }) => json!({ "alloc": alloc }),
        Some(Event::Flush { alloc, ranges: r }) => json!({ "alloc": alloc, "ranges": ranges(r) }),
        Some(Event::Compared { alloc, submit, ranges: r }) | Some(Event::Trusted { alloc, submit, ranges: r }) => {
            json!({ "alloc": alloc, "submit": submit, "ranges": ranges(r) })
        }
        Some(Event::Dirty(d)) => json!({
            "alloc": d.alloc, "submit": d.submit, "runs": ranges(&d.runs), "bytes": d.data.len(),
        }),
        Some(Event::Submit(s)) => json!({
            "device": s.device, "queue": s.queue, "seq": s.seq, "timestamp_ns": s.timestamp_ns,
            "command_buffers": s.command_buffers, "waits": s.waits, "signals": s.signals, "kind": s.kind,
        }),
        Some(Event::Frame { frame, last_submit, timestamp_ns }) => json!({
            "frame": frame, "last_submit": last_submit, "timestamp_ns": timestamp_ns,
        }),
        Some(Event::CaptureStart { frame, submit }) | Some(Event::CaptureStop { frame, submit }) => {
            json!({ "frame": frame, "submit": submit })
        }
        Some(Event::End(t)) => json!({
            "submits": t.submits, "frames": t.frames, "dirty_pages": t.dirty_pages,
            "dirty_bytes": t.dirty_bytes, "writer_stalls": t.writer_stalls,
        }),
    };
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    Value::Object(m)
}
