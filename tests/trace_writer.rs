//! Writer behaviour: back-pressure, I/O errors, file mode, flushing, concurrent producers.

mod trace_common;

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use trace_common::*;
use vkdirty::trace::*;

/// Generous bound for "eventually" (never a performance assertion).
const PATIENCE: Duration = Duration::from_secs(60);

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `f` on a thread and fails the test if it has not returned within `PATIENCE`.
fn returns_promptly<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("{what} blocked"))
}

#[test]
fn writer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<TraceWriter>();
}

/// A sink whose writes block until the gate opens.
#[derive(Clone, Default)]
struct GateSink {
    open: Arc<(Mutex<bool>, Condvar)>,
    /// Set once a write is waiting at the closed gate.
    blocked: Arc<AtomicBool>,
    buf: SharedBuf,
}

impl Write for GateSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let (m, cv) = &*self.open;
        let mut open = m.lock();
        while !*open {
            self.blocked.store(true, Ordering::SeqCst);
            cv.wait(&mut open);
        }
        self.buf.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
impl TraceSink for GateSink {}

impl GateSink {
    fn open(&self) {
        let (m, cv) = &*self.open;
        *m.lock() = true;
        cv.notify_all();
    }
}

/// Opens the gate when dropped, so a failing assertion cannot leave the writer stuck.
struct OpenOnDrop(GateSink);
impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// A writer on a closed gate, with allocation 1 (1 GiB) recorded. Bind it as
/// `let (sink, w, _unstick) = gated(..)`: `_unstick` is dropped first and opens the gate before
/// `w` would wait on it.
fn gated(compression: Compression, queue_bytes: usize, block_bytes: usize) -> (GateSink, Arc<TraceWriter>, OpenOnDrop) {
    let sink = GateSink::default();
    let mut o = opts(compression);
    o.queue_bytes = queue_bytes;
    o.block_bytes = block_bytes;
    let w = Arc::new(TraceWriter::with_sink(sink.clone(), "gate", o).unwrap());
    w.record(&allocation(1, 1 << 30));
    (sink.clone(), w, OpenOnDrop(sink))
}

/// Replays a whole trace, every block strictly; returns the memory and where the trace ends
/// early, if it does.
fn replay(bytes: &[u8]) -> (Replay, Option<Truncation>) {
    let mut r = Replay::new();
    let mut rd = TraceReader::new(bytes).unwrap();
    while let Some(b) = rd.next_block().unwrap() {
        r.apply(b.event.as_ref().unwrap(), b.offset).unwrap();
    }
    (r, rd.truncation().cloned())
}

/// Allocation 1 holds `want(i)` at `i * len`, for each `i < n`.
fn assert_runs(r: &Replay, n: u64, len: usize, want: impl Fn(u64) -> Vec<u8>) {
    for i in 0..n {
        let mut got = vec![0u8; len];
        r.read(1, i * len as u64, &mut got).unwrap();
        assert!(got == want(i), "run {i} intact");
    }
}

#[test]
fn full_queue_makes_the_producer_wait_and_drops_nothing() {
    let (sink, w, _unstick) = gated(Compression::Lz4, 512 << 10, 16 << 10);
    const N: u64 = 200;
    let page = |i: u64| -> Vec<u8> { (0..16384u64).map(|j| (i * 31 + j / 5) as u8).collect() };
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (w, done) = (w.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..N {
                let mut d = w.dirty(1, i + 1);
                d.push(i * 16384, &page(i));
                d.finish();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // The writer thread is stuck in the sink; the producer must stall rather than drop or grow.
    // Each record is one Dirty block in a buffer of its own (~80 KiB with room for the runs
    // table, counted whole): once the writer is stuck in the sink and the queue has no room for
    // another, a correct writer accepts nothing more.
    wait_until("a full queue", || {
        let s = w.stats();
        let each = s.queued_bytes / (s.queued_records + 1);
        sink.blocked.load(Ordering::SeqCst) && s.queued_records >= 2 && s.queued_bytes + each > 512 << 10
    });
    let s1 = w.stats();
    // Give a broken queue time to misbehave.
    std::thread::sleep(Duration::from_millis(200));
    let s = w.stats();
    assert!(!done.load(Ordering::SeqCst), "the producer waits while the queue is full");
    assert_eq!(s.records, s1.records, "nothing accepted while the sink is stuck");
    assert!(s.stalls >= 1);
    assert!(s.queued_bytes <= 512 << 10, "queue stays bounded: {}", s.queued_bytes);
    assert!(s.queued_bytes >= 2 * 16384, "the queue holds several blocks: {}", s.queued_bytes);
    assert_eq!(s.dropped_records, 0);
    // Open the gate: everything drains.
    sink.open();
    producer.join().unwrap();
    let totals = w.close().unwrap();
    let s = w.stats();
    assert!(s.stall_ns > 0);
    assert_eq!(s.dropped_records, 0);
    // While behind (queue over half full), compressible blocks were stored raw (adaptive mode).
    assert!(s.raw_behind > 0);
    assert_eq!(totals.writer_stalls, s.stalls);
    assert_eq!(totals.dirty_bytes, N * 16384);
    let bytes = sink.buf.bytes();
    let (r, trunc) = replay(&bytes);
    assert_eq!(trunc, None);
    let raw = TraceReader::new(&bytes[..]).unwrap().filter(|b| b.as_ref().unwrap().flags == 0).count() as u64;
    assert!(raw >= s.raw_behind, "{raw} raw blocks, {} stored raw while behind", s.raw_behind);
    assert_runs(&r, N, 16384, page);
}

/// Small collections (a 64 KiB allocation's pages, as `full` reports at each free) queue in
/// buffers of their own size: a stuck sink lets the queue take many of them within its bound
/// instead of one block-sized (1 MiB) buffer each, which pinned ~1 GB for 1000 queued frees.
#[test]
fn small_blocks_queue_in_buffers_of_their_size() {
    let (sink, w, _unstick) = gated(Compression::None, 1 << 20, 1 << 20);
    const N: u64 = 200;
    let producer = {
        let w = w.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                let mut d = w.dirty(1, i + 1);
                d.push(i * 8192, &[i as u8; 8192]);
                d.finish();
            }
        })
    };
    wait_until("a full queue", || sink.blocked.load(Ordering::SeqCst) && w.stats().stalls >= 1);
    let s = w.stats();
    assert!(s.queued_bytes <= 1 << 20, "bounded: {}", s.queued_bytes);
    assert!(s.records >= 100, "{} blocks of 8 KiB queued in 1 MiB", s.records);
    sink.open();
    producer.join().unwrap();
    let totals = w.close().unwrap();
    assert_eq!(totals.dirty_bytes, N * 8192);
    let (r, trunc) = replay(&sink.buf.bytes());
    assert_eq!(trunc, None);
    assert_runs(&r, N, 8192, |i| vec![i as u8; 8192]);
}

/// A burst that fills the queue (the sink fell behind) must not keep the queue's worth of
/// buffers resident once it has drained.
#[test]
fn buffers_of_a_burst_are_given_back_once_the_queue_drains() {
    let (sink, w, _unstick) = gated(Compression::None, 1 << 20, 16 << 10);
    const N: u64 = 48;
    let producer = {
        let w = w.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                let mut d = w.dirty(1, i + 1);
                d.push(i * 16384, &[i as u8; 16384]);
                d.finish();
            }
        })
    };
    // Many buffers in flight at once: more than the pool keeps after draining.
    wait_until("a filled queue", || w.stats().queued_bytes >= 32 * 16384);
    sink.open();
    producer.join().unwrap();
    wait_until("the queue to drain", || w.stats().queued_bytes == 0);
    wait_until("the pool to shrink", || w.stats().pooled_buffers <= 8);
    let totals = w.close().unwrap();
    assert_eq!(totals.dirty_bytes, N * 16384);
}

#[test]
fn dev_full_reports_one_error_and_stops_blocking() {
    let errors = Arc::new(AtomicUsize::new(0));
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut o = opts(Compression::None);
    o.queue_bytes = 1 << 20;
    o.block_bytes = 256 << 10;
    {
        let (errors, messages) = (errors.clone(), messages.clone());
        o.on_error = Some(Arc::new(move |m: &str| {
            errors.fetch_add(1, Ordering::SeqCst);
            messages.lock().push(m.to_string());
        }));
    }
    // Trace files are regular files only; a sink on the device shows the same failure.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("open /dev/full");
    let w = Arc::new(TraceWriter::with_sink(full, "/dev/full", o).expect("writer on /dev/full"));
    let data: Vec<u8> = (0..256u32 << 10).map(|i| i as u8).collect();
    // Far more than the queue and the writer's buffer hold: the error must come, and the producer
    // must keep returning after it.
    let w2 = w.clone();
    let data2 = data.clone();
    returns_promptly("producing into a failing writer", move || {
        for i in 0..200u64 {
            let mut d = w2.dirty(1, i);
            d.push(0, &data2);
            d.finish();
            w2.record(&Event::Submit(Submit { seq: i, ..Submit::default() }));
        }
    });
    wait_until("the error", || w.failed().is_some());
    assert!(!w.is_active());
    // After the failure nothing blocks, however much is pushed.
    let w3 = w.clone();
    returns_promptly("producing after the failure", move || {
        for i in 0..10_000u64 {
            let mut d = w3.dirty(1, i);
            d.push(0, &data);
            d.finish();
        }
    });
    let msg = w.failed().unwrap();
    assert!(msg.contains("/dev/full") && msg.contains("No space left"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(matches!(w.close(), Err(TraceError::Stopped(_))));
    assert_eq!(errors.load(Ordering::SeqCst), 1, "reported once: {:?}", messages.lock());
    let s = w.stats();
    assert!(s.dropped_records >= 10_000);
    assert!(s.dropped_bytes >= 10_000 * (256 << 10));
}

#[test]
fn unwritable_path_is_an_error_at_create() {
    let err = TraceWriter::create("/nonexistent-dir/x.vkd", WriterOptions::default()).err().expect("error");
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent-dir/x.vkd"), "{msg}");
}

#[test]
fn trace_files_are_created_0600() {
    let path = tmp_path("mode.vkd");
    let w = TraceWriter::create(&path, WriterOptions::default()).unwrap();
    w.close().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    // An existing, more open file is narrowed when reused.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let w = TraceWriter::create(&path, WriterOptions::default()).unwrap();
    w.close().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let (events, trunc) = TraceReader::open(&path).unwrap().events().unwrap();
    assert_eq!(trunc, None);
    assert!(matches!(events[..], [Event::End(_)]));
    std::fs::remove_file(&path).unwrap();
}

/// Counts flushes of the sink.
#[derive(Clone, Default)]
struct FlushCounter {
    buf: SharedBuf,
    flushes: Arc<AtomicUsize>,
}
impl Write for FlushCounter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
impl TraceSink for FlushCounter {}

#[test]
fn flush_every_submit_hands_data_to_the_os() {
    let sink = FlushCounter::default();
    let mut o = opts(Compression::Lz4);
    o.flush_every_submit = true;
    let w = TraceWriter::with_sink(sink.clone(), "flush", o).unwrap();
    let mut d = w.dirty(1, 1);
    d.push(0, &[7; 4096]);
    d.finish();
    w.record(&Event::Submit(Submit { seq: 1, ..Submit::default() }));
    // Before close: the dirty block and the submit are already in the sink.
    wait_until("a flush", || sink.flushes.load(Ordering::SeqCst) >= 1);
    let bytes = sink.buf.bytes();
    let mut r = TraceReader::new(&bytes[..]).unwrap();
    let types: Vec<_> = std::iter::from_fn(|| r.next_block().unwrap()).map(|b| b.block_type().unwrap()).collect();
    assert_eq!(types, [BlockType::Dirty, BlockType::Submit]);
    w.close().unwrap();

    // Without the option, an explicit flush does the same.
    let sink = FlushCounter::default();
    let w = TraceWriter::with_sink(sink.clone(), "noflush", opts(Compression::Lz4)).unwrap();
    w.record(&Event::Submit(Submit { seq: 1, ..Submit::default() }));
    w.flush();
    wait_until("an explicit flush", || sink.flushes.load(Ordering::SeqCst) >= 1);
    w.close().unwrap();
}

#[test]
fn concurrent_producers() {
    let buf = SharedBuf::default();
    let mut o = opts(Compression::Lz4);
    o.queue_bytes = 256 << 10;
    o.block_bytes = 64 << 10;
    let w = Arc::new(TraceWriter::with_sink(buf.clone(), "mt", o).unwrap());
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 50;
    for t in 0..THREADS {
        w.record(&allocation(t, 1 << 20));
    }
    let fill = |t: u64, r: u64| -> Vec<u8> { (0..100_000u64).map(|i| (t * 7 + r * 13 + i / 100) as u8).collect() };
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                for r in 0..ROUNDS {
                    let mut d = w.dirty(t, r + 1);
                    let data = fill(t, r);
                    // As an engine would: several runs per collection.
                    d.push(0, &data[..40_000]);
                    d.push(50_000, &data[40_000..]);
                    d.finish();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let totals = w.close().unwrap();
    assert_eq!(totals.dirty_bytes, THREADS * ROUNDS * 100_000);
    let bytes = buf.bytes();
    for t in 0..THREADS {
        let mut r = Replay::new().only_alloc(t);
        for b in TraceReader::new(&bytes[..]).unwrap() {
            let b = b.unwrap();
            r.apply(b.event.as_ref().unwrap(), b.offset).unwrap();
        }
        let last = fill(t, ROUNDS - 1);
        let mut got = vec![0u8; 40_000];
        r.read(t, 0, &mut got).unwrap();
        assert!(got == last[..40_000]);
        let mut got = vec![0u8; 60_000];
        r.read(t, 50_000, &mut got).unwrap();
        assert!(got == last[40_000..]);
    }
}

#[test]
fn records_after_close_are_counted_not_written() {
    let buf = SharedBuf::default();
    let w = TraceWriter::with_sink(buf.clone(), "closed", opts(Compression::None)).unwrap();
    w.record(&Event::Unmap { alloc: 1 });
    let t1 = w.close().unwrap();
    w.record(&Event::Unmap { alloc: 2 });
    let mut d = w.dirty(1, 1);
    d.push(0, &[1; 100]);
    d.finish();
    assert_eq!(w.close().unwrap(), t1, "close is idempotent");
    assert_eq!(w.stats().dropped_records, 2);
    let (events, _) = TraceReader::new(&buf.bytes()[..]).unwrap().events().unwrap();
    assert_eq!(events.len(), 2);
}

/// Records queued under a hold wake an idle writer thread once, when the last hold ends; a
/// producer that fills the queue under a hold wakes it anyway (no deadlock), and nothing is
/// lost. A writer that drained its queue a moment ago finds records on its own, unwoken.
#[test]
fn a_hold_defers_the_wake_and_never_blocks_a_full_queue() {
    let sink = SharedBuf::default();
    let mut o = opts(Compression::Lz4);
    o.queue_bytes = 64 << 10;
    o.block_bytes = 16 << 10;
    let w = Arc::new(TraceWriter::with_sink(sink.clone(), "hold", o).unwrap());
    w.record(&allocation(1, 1 << 30));
    w.record(&Event::Submit(Submit { seq: 1, ..Submit::default() }));
    wait_until("the first blocks written", || w.stats().blocks_written == 2 && w.stats().queued_bytes == 0);
    // Past its linger after the drain (2 ms), the thread sleeps until woken.
    std::thread::sleep(Duration::from_millis(50));
    {
        let outer = w.hold();
        let inner = w.hold();
        w.record(&Event::Submit(Submit { seq: 2, ..Submit::default() }));
        drop(inner);
        // The writer sleeps on an empty queue and nobody woke it.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(w.stats().blocks_written, 2, "woken only when the last hold ends");
        drop(outer);
    }
    wait_until("the held block written", || w.stats().blocks_written == 3);
    // Lingering after that drain, it takes a record queued without any wake-up: a producer's
    // call does not notify a thread that will look again anyway.
    w.record(&Event::Submit(Submit { seq: 3, ..Submit::default() }));
    wait_until("a record found by the lingering thread", || w.stats().blocks_written == 4);
    w.close().unwrap();
    // More than the queue holds, all under one hold, with the sink stuck: the writer is woken
    // while the hold lasts (it takes a block and waits in the sink) and the producer waits at
    // the full queue; once the sink moves the producer returns, and nothing is lost.
    let (sink, w, _unstick) = gated(Compression::Lz4, 64 << 10, 16 << 10);
    const N: u64 = 64;
    let page = |i: u64| -> Vec<u8> { (0..16384u64).map(|j| (i * 13 + j / 3) as u8).collect() };
    let w2 = w.clone();
    let producer = std::thread::spawn(move || {
        let _held = w2.hold();
        for i in 0..N {
            let mut d = w2.dirty(1, 3);
            d.push(i * 16384, &page(i));
            d.finish();
        }
    });
    wait_until("the writer in the sink and the producer at a full queue", || {
        sink.blocked.load(Ordering::SeqCst) && w.stats().stalls >= 1
    });
    sink.open();
    returns_promptly("a producer filling the queue under a hold", move || producer.join().unwrap());
    let totals = w.close().unwrap();
    assert_eq!(totals.dirty_bytes, N * 16384);
    assert_eq!(w.stats().dropped_records, 0);
    let (r, trunc) = replay(&sink.buf.bytes());
    assert_eq!(trunc, None);
    assert_runs(&r, N, 16384, page);
}
