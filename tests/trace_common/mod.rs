//! Helpers shared by the trace tests.
#![allow(dead_code)]

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use proptest::prelude::*;
use vkdirty::guard::BackendKind;
use vkdirty::trace::*;

/// A sink that keeps the bytes, readable while the writer owns the sink.
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
impl TraceSink for SharedBuf {}

impl SharedBuf {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().clone()
    }
}

/// An allocation record with nothing but its id and size set.
pub fn allocation(id: u64, size: u64) -> Event {
    Event::Allocation(Allocation { id, handle: 0, device: 0, size, memory_type: 0, property_flags: 0, heap: 0 })
}

pub fn opts(compression: Compression) -> WriterOptions {
    WriterOptions { compression, page_size: 4096, ..WriterOptions::default() }
}

/// Writes `events` through a writer and returns the file bytes.
pub fn write_trace(events: &[Event], o: WriterOptions) -> Vec<u8> {
    let buf = SharedBuf::default();
    let w = TraceWriter::with_sink(buf.clone(), "test", o).expect("writer");
    for e in events {
        w.record(e);
    }
    w.close().expect("close");
    buf.bytes()
}

/// A fresh path under the test target's temporary directory.
pub fn tmp_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("trace-tests");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(format!("{}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), name))
}

fn small_string() -> impl Strategy<Value = String> {
    prop::string::string_regex("[a-zA-Z0-9 é_.-]{0,24}").expect("regex")
}

fn ranges() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((any::<u64>(), any::<u64>()), 0..5)
}

/// Runs that are ascending and separated by gaps (so the writer does not merge them), with data.
pub fn dirty() -> impl Strategy<Value = Dirty> {
    (any::<u64>(), 1u64..1000, prop::collection::vec((1u64..3000, 1usize..3000, any::<u8>()), 0..6)).prop_map(
        |(alloc, submit, parts)| {
            let mut runs = Vec::new();
            let mut data = Vec::new();
            let mut off = 0u64;
            for (gap, len, seed) in parts {
                off += gap;
                runs.push((off, len as u64));
                // Mix compressible and incompressible bytes.
                data.extend((0..len).map(|i| {
                    if seed % 2 == 0 {
                        seed
                    } else {
                        (i as u8).wrapping_mul(seed) ^ (i >> 3) as u8
                    }
                }));
                off += len as u64;
            }
            Dirty { alloc, submit, runs, data }
        },
    )
}

pub fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (
            any::<u32>(),
            small_string(),
            small_string(),
            small_string(),
            small_string(),
            any::<[u32; 4]>(),
            proptest::collection::vec((small_string(), small_string(), small_string()), 0..4)
        )
            .prop_map(|(pid, p, a, e, d, n, st)| Event::Session(Session {
                pid,
                process_name: p,
                app_name: a,
                engine_name: e,
                device_name: d,
                vendor_id: n[0],
                device_id: n[1],
                driver_version: n[2],
                api_version: n[3],
                settings: st.into_iter().map(|(name, value, from)| SessionSetting { name, value, from }).collect(),
            })),
        (any::<[u64; 4]>(), any::<[u32; 3]>()).prop_map(|(a, b)| Event::Allocation(Allocation {
            id: a[0],
            handle: a[1],
            device: a[2],
            size: a[3],
            memory_type: b[0],
            property_flags: b[1],
            heap: b[2],
        })),
        (any::<[u64; 4]>(), 0..BackendKind::ALL.len(), small_string()).prop_map(|(a, k, reason)| Event::Map(Map {
            alloc: a[0],
            offset: a[1],
            size: a[2],
            app_ptr: a[3],
            backend: BackendKind::ALL[k],
            reason,
        })),
        any::<u64>().prop_map(|alloc| Event::Unmap { alloc }),
        any::<u64>().prop_map(|alloc| Event::Free { alloc }),
        (any::<u64>(), ranges()).prop_map(|(alloc, ranges)| Event::Flush { alloc, ranges }),
        (any::<[u64; 2]>(), ranges()).prop_map(|(a, ranges)| Event::Compared { alloc: a[0], submit: a[1], ranges }),
        (any::<[u64; 2]>(), ranges()).prop_map(|(a, ranges)| Event::Trusted { alloc: a[0], submit: a[1], ranges }),
        dirty().prop_map(Event::Dirty),
        (any::<[u64; 4]>(), any::<[u32; 3]>(), 0u8..3).prop_map(|(a, b, kind)| Event::Submit(Submit {
            device: a[0],
            queue: a[1],
            seq: a[2],
            timestamp_ns: a[3],
            command_buffers: b[0],
            waits: b[1],
            signals: b[2],
            kind,
        })),
        any::<[u64; 3]>().prop_map(|a| Event::Frame { frame: a[0], last_submit: a[1], timestamp_ns: a[2] }),
        any::<[u64; 2]>().prop_map(|a| Event::CaptureStart { frame: a[0], submit: a[1] }),
        any::<[u64; 2]>().prop_map(|a| Event::CaptureStop { frame: a[0], submit: a[1] }),
    ]
}

/// Pages of a list of Dirty events, counted as the format defines (per block).
pub fn pages_of(d: &Dirty, page: u64) -> u64 {
    vkdirty::trace::format::count_pages(&d.runs, page, &mut None)
}

/// A small trace with every block type, compressed and raw blocks, and real dirty data.
pub fn sample_events() -> Vec<Event> {
    let mut v = vec![
        Event::Session(Session {
            pid: 42,
            process_name: "sample".into(),
            app_name: "app".into(),
            engine_name: "engine".into(),
            device_name: "llvmpipe".into(),
            vendor_id: 0x10005,
            device_id: 0,
            driver_version: 1,
            api_version: (1 << 22) | (3 << 12),
            settings: vec![
                SessionSetting { name: "BACKEND".into(), value: "shadow".into(), from: "VKDIRTY_BACKEND".into() },
                SessionSetting { name: "FRAMES".into(), value: "all".into(), from: "default".into() },
            ],
        }),
        Event::Allocation(Allocation {
            id: 1,
            handle: 0xabc,
            device: 7,
            size: 3 * 4096,
            memory_type: 1,
            property_flags: 6,
            heap: 0,
        }),
        Event::Allocation(Allocation {
            id: 2,
            handle: 0xdef,
            device: 7,
            size: 8192,
            memory_type: 2,
            property_flags: 14,
            heap: 0,
        }),
        Event::Map(Map {
            alloc: 1,
            offset: 0,
            size: 3 * 4096,
            app_ptr: 0x7000_0000,
            backend: BackendKind::AsyncWp,
            reason: String::new(),
        }),
        Event::Map(Map {
            alloc: 2,
            offset: 0,
            size: 8192,
            app_ptr: 0x7100_0000,
            backend: BackendKind::Shadow,
            reason: "async-wp refused".into(),
        }),
        Event::CaptureStart { frame: 0, submit: 1 },
    ];
    v.push(Event::Dirty(Dirty { alloc: 1, submit: 1, runs: vec![(0, 4096)], data: vec![0x11; 4096] }));
    let noise: Vec<u8> = (0..512u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    v.push(Event::Dirty(Dirty { alloc: 2, submit: 1, runs: vec![(100, 512)], data: noise }));
    v.push(Event::Submit(Submit {
        device: 7,
        queue: 9,
        seq: 1,
        timestamp_ns: 1000,
        command_buffers: 1,
        waits: 0,
        signals: 1,
        kind: 0,
    }));
    v.push(Event::Flush { alloc: 1, ranges: vec![(4096, 4096)] });
    v.push(Event::Dirty(Dirty { alloc: 1, submit: 2, runs: vec![(4096, 100), (8192, 50)], data: vec![0x22; 150] }));
    v.push(Event::Submit(Submit {
        device: 7,
        queue: 9,
        seq: 2,
        timestamp_ns: 2000,
        command_buffers: 2,
        waits: 1,
        signals: 1,
        kind: 1,
    }));
    v.push(Event::Frame { frame: 1, last_submit: 2, timestamp_ns: 2500 });
    v.push(Event::CaptureStop { frame: 1, submit: 2 });
    v.push(Event::Unmap { alloc: 1 });
    v.push(Event::Free { alloc: 1 });
    v
}
