//! Writes a large synthetic trace for measuring the trace readers (`vkdirty report`, `info`,
//! `export`) on traces with many allocations, submits and frames: every submit dirties a few
//! pages of a few allocations (random bytes, so lz4 keeps them about the same size).
//!
//! `cargo run --release --bin trace-synth -- OUT [--mib N] [--allocs A] [--pages-per-submit P]`

use std::process::ExitCode;

use vkdirty::guard::BackendKind;
use vkdirty::trace::{Allocation, Dirty, Event, Map, Session, Submit, TraceWriter, WriterOptions};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn arg(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).ok_or(format!("{name} needs a number")),
        None => Ok(default),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first().filter(|a| !a.starts_with("--")) else {
        eprintln!("usage: trace-synth OUT [--mib N] [--allocs A] [--pages-per-submit P]");
        return ExitCode::from(2);
    };
    let (mib, allocs, pps) =
        match (arg(&args, "--mib", 1024), arg(&args, "--allocs", 2000), arg(&args, "--pages-per-submit", 8)) {
            (Ok(a), Ok(b), Ok(c)) => (a, b.max(1), c.max(1)),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                eprintln!("trace-synth: {e}");
                return ExitCode::from(2);
            }
        };
    const PAGE: u64 = 4096;
    const ALLOC_PAGES: u64 = 256;
    let opts = WriterOptions { page_size: PAGE as u32, ..WriterOptions::default() };
    let w = match TraceWriter::create(out, opts) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("trace-synth: {e}");
            return ExitCode::FAILURE;
        }
    };
    w.record(&Event::Session(Session {
        app_name: "trace-synth".into(),
        process_name: "trace-synth".into(),
        ..Session::default()
    }));
    for id in 1..=allocs {
        w.record(&Event::Allocation(Allocation {
            id,
            handle: id,
            device: 1,
            size: ALLOC_PAGES * PAGE,
            memory_type: (id % 3) as u32,
            property_flags: 0x6,
            heap: 0,
        }));
        w.record(&Event::Map(Map {
            alloc: id,
            offset: 0,
            size: ALLOC_PAGES * PAGE,
            app_ptr: 0,
            backend: BackendKind::AsyncWp,
            reason: String::new(),
        }));
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut page = vec![0u8; PAGE as usize];
    let target = mib << 20;
    let (mut written, mut seq, mut frame) = (0u64, 0u64, 1u64);
    while written < target {
        seq += 1;
        for _ in 0..pps {
            let alloc = 1 + rng.next() % allocs;
            let off = (rng.next() % ALLOC_PAGES) * PAGE;
            for c in page.chunks_mut(8) {
                c.copy_from_slice(&rng.next().to_le_bytes());
            }
            w.record(&Event::Dirty(Dirty { alloc, submit: seq, runs: vec![(off, PAGE)], data: page.clone() }));
            written += PAGE;
        }
        w.record(&Event::Submit(Submit {
            seq,
            timestamp_ns: seq * 1_000_000,
            command_buffers: 1,
            ..Submit::default()
        }));
        if seq % 4 == 0 {
            w.record(&Event::Frame { frame, last_submit: seq, timestamp_ns: seq * 1_000_000 + 500_000 });
            frame += 1;
        }
    }
    match w.close() {
        Ok(t) => {
            println!(
                "{out}: {} submits, {} frames, {} allocations, {} dirty bytes",
                t.submits, t.frames, allocs, t.dirty_bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trace-synth: {e}");
            ExitCode::FAILURE
        }
    }
}
