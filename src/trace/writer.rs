//! The background trace writer.
//!
//! Producers (application threads in the layer) encode records into buffers and put them on a
//! bounded queue; one background thread compresses, checksums and writes them. A full queue makes
//! the producer wait (counted in [`WriterStats::stalls`]); nothing is dropped while the writer
//! works. After the first I/O error the writer reports it once, stops accepting input, and every
//! producer call returns at once (the dropped records are counted, not written).
//!
//! ```no_run
//! # use vkdirty::trace::*;
//! let w = TraceWriter::create("app.vkd", WriterOptions::default())?;
//! // In the submit path, for each collected region of allocation 7:
//! let mut d = w.dirty(7, 42);
//! d.push(0x1000, &[1u8; 4096]); // allocation offset, bytes (copied)
//! d.finish();
//! w.record(&Event::Submit(Submit { seq: 42, ..Default::default() }));
//! let totals = w.close()?;
//! # Ok::<(), TraceError>(())
//! ```

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::file::{open_trace_file, Existing};
use super::format::{
    count_pages, encode_payload, BlockType, Compression, FileHeader, DIRTY_PREFIX_LEN, MAX_PAYLOAD, RUN_LEN,
};
use super::{Event, Totals, TraceError};

mod pool;
mod thread;
use pool::Pools;
use thread::writer_thread;

/// Where the writer thread puts the bytes. Files are the real case; tests use other sinks.
pub trait TraceSink: Write + Send + 'static {
    /// Makes everything written durable (fsync for files). Called once, at close.
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TraceSink for File {
    fn sync(&mut self) -> io::Result<()> {
        match self.sync_all() {
            // Character devices such as /dev/null cannot be synced; nothing to make durable.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
            r => r,
        }
    }
}

impl TraceSink for io::Sink {}

/// Called once, from the writer thread, with a one-line description of the first I/O error.
pub type ErrorCallback = Arc<dyn Fn(&str) + Send + Sync>;

/// Writer settings.
#[derive(Clone)]
pub struct WriterOptions {
    /// Per-block compression (lz4 by default). Blocks that do not shrink are stored raw.
    pub compression: Compression,
    /// With lz4: store blocks raw while the writer is behind (queue more than half full), so a
    /// burst costs trace size rather than application stalls. On by default.
    pub adaptive: bool,
    /// Hand everything queued to the OS (`write(2)`, not fsync) after each recorded Submit.
    pub flush_every_submit: bool,
    /// Bound on the memory of the blocks queued or being written (their buffers' capacity); a
    /// producer waits while it is exceeded.
    pub queue_bytes: usize,
    /// Dirty bytes per block (larger collections are split at page boundaries).
    pub block_bytes: usize,
    /// Page size recorded in the header and used to count dirty pages.
    pub page_size: u32,
    pub on_error: Option<ErrorCallback>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            compression: Compression::Lz4,
            adaptive: true,
            flush_every_submit: false,
            queue_bytes: 64 << 20,
            block_bytes: 1 << 20,
            page_size: crate::guard::page_size() as u32,
            on_error: None,
        }
    }
}

impl std::fmt::Debug for WriterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterOptions")
            .field("compression", &self.compression)
            .field("adaptive", &self.adaptive)
            .field("flush_every_submit", &self.flush_every_submit)
            .field("queue_bytes", &self.queue_bytes)
            .field("block_bytes", &self.block_bytes)
            .field("page_size", &self.page_size)
            .field("on_error", &self.on_error.is_some())
            .finish()
    }
}

/// Counters, readable at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records accepted (each Dirty block counts once).
    pub records: u64,
    /// Dirty bytes accepted from producers.
    pub dirty_bytes_in: u64,
    /// Blocks written to the sink.
    pub blocks_written: u64,
    /// Payload bytes of written blocks before compression.
    pub payload_bytes: u64,
    /// Blocks stored raw, without trying lz4, because the writer was behind.
    pub raw_behind: u64,
    /// Bytes written to the sink (header, block headers, stored payloads).
    pub bytes_out: u64,
    /// Times a producer waited because the queue was full.
    pub stalls: u64,
    /// Total time producers waited, in nanoseconds.
    pub stall_ns: u64,
    /// Records not written because the writer had stopped (I/O error or closed).
    pub dropped_records: u64,
    /// Dirty bytes among them.
    pub dropped_bytes: u64,
    /// Memory of the blocks queued or being written right now (buffer capacity).
    pub queued_bytes: u64,
    /// Records waiting in the queue (not counting the one being written).
    pub queued_records: u64,
    /// Buffers kept for reuse (a few once the queue has drained).
    pub pooled_buffers: u64,
}

enum Job {
    Block { ty: BlockType, payload: Vec<u8>, dirty_bytes: u64, pages: u64 },
    Flush,
    Close(mpsc::SyncSender<Result<Totals, String>>),
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Buffer capacity of the jobs queued plus the job being written.
    bytes: usize,
    /// Close was requested: accept nothing more.
    closed: bool,
    /// Open [`Held`] guards, and whether a job came in under one (the thread was not woken).
    held: usize,
    deferred: bool,
    /// How the writer thread waits for jobs.
    sleep: Sleep,
    /// The most `bytes` reached since the queue last drained: how much a burst left on the heap.
    high: usize,
}

/// What the writer thread is doing, as producers see it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sleep {
    /// Taking jobs off the queue: a job queued now is found without a wake-up.
    Working,
    /// The queue was drained a moment ago: the thread looks again after [`LINGER`] without
    /// being woken, so a steady stream of small records (a submit's) costs no wake-up each.
    Lingering,
    /// Asleep until woken: a producer must wake it.
    Idle,
}

/// How long the writer thread waits for more jobs, unwoken, after draining the queue before it
/// sleeps until woken. Bounds how long a record of a submit stays queued before it is written.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);
/// Queued bytes (buffer capacity) up to which producers leave a lingering thread alone. A
/// block-sized buffer is past it: large collections wake the thread at once, so a few hot
/// buffers circulate instead of a linger's worth of cold ones.
const LINGER_BYTES: usize = 1 << 20;

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    dirty_bytes_in: AtomicU64,
    blocks_written: AtomicU64,
    payload_bytes: AtomicU64,
    raw_behind: AtomicU64,
    bytes_out: AtomicU64,
    stalls: AtomicU64,
    stall_ns: AtomicU64,
    dropped_records: AtomicU64,
    dropped_bytes: AtomicU64,
}

/// Buffers the pool keeps once the queue is empty (steady state needs a handful).
const POOL_KEEP: usize = 8;
/// Freed pool memory above which the heap is trimmed, so it leaves the resident set.
const TRIM_AFTER_BYTES: usize = 8 << 20;

struct Shared {
    queue: Mutex<Queue>,
    not_empty: Condvar,
    not_full: Condvar,
    /// Set once the writer failed or was closed; producers then return at once.
    stopped: AtomicBool,
    error: Mutex<Option<String>>,
    /// Recycled buffers and run tables, so the submit path does not allocate per collection.
    pool: Pools,
    /// Bytes of queued copies (blocks smaller than a buffer) freed since the heap was last
    /// trimmed: after a burst they are heap memory glibc keeps unless trimmed.
    freed_copies: AtomicUsize,
    max_runs: usize,
    opts: WriterOptions,
    c: Counters,
}

/// The writer. `Send + Sync`: share it (e.g. in an `Arc` or a static) between submitting threads.
pub struct TraceWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    close_result: Mutex<Option<Result<Totals, String>>>,
}

impl TraceWriter {
    /// Creates `path` as a new 0600 regular file, replacing a regular file no live writer holds
    /// ([`Existing::Overwrite`]), and starts the writer thread. Errors here are about the path;
    /// later I/O errors go to [`WriterOptions::on_error`] and [`TraceWriter::failed`].
    pub fn create(path: impl AsRef<Path>, opts: WriterOptions) -> Result<TraceWriter, TraceError> {
        let path = path.as_ref();
        let opened = open_trace_file(path, Existing::Overwrite)?;
        TraceWriter::with_sink(opened.file, path.display().to_string(), opts)
    }

    /// Starts a writer on any sink; `name` appears in the error message.
    pub fn with_sink<S: TraceSink>(
        sink: S,
        name: impl Into<String>,
        mut opts: WriterOptions,
    ) -> Result<TraceWriter, TraceError> {
        opts.page_size = opts.page_size.max(1);
        let ps = opts.page_size as usize;
        // Whole pages per block, at least two, within what readers accept.
        let block = opts.block_bytes.clamp(2 * ps, MAX_PAYLOAD as usize / 2) / ps * ps;
        opts.block_bytes = block.max(ps);
        opts.queue_bytes = opts.queue_bytes.max(1);
        let max_runs = 4096;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                bytes: 0,
                closed: false,
                held: 0,
                deferred: false,
                sleep: Sleep::Working,
                high: 0,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            stopped: AtomicBool::new(false),
            error: Mutex::new(None),
            pool: Pools::new(
                DIRTY_PREFIX_LEN + opts.block_bytes + max_runs * RUN_LEN,
                opts.queue_bytes / opts.block_bytes + 4,
            ),
            freed_copies: AtomicUsize::new(0),
            max_runs,
            c: Counters::default(),
            opts,
        });
        let header = FileHeader::new(shared.opts.page_size).encode();
        let name = name.into();
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vkdirty-trace".into())
            .spawn(move || writer_thread(s2, Box::new(sink), name, header))
            .map_err(|e| TraceError::io("cannot start the trace writer thread", e))?;
        Ok(TraceWriter { shared, thread: Mutex::new(Some(thread)), close_result: Mutex::new(None) })
    }

    /// Queues one record. Dirty events go through [`TraceWriter::dirty`] (split into blocks as
    /// needed); `End` is ignored (written by [`TraceWriter::close`]). With `flush_every_submit`, a
    /// Submit also hands everything queued so far to the OS, so record it after its Dirty blocks.
    pub fn record(&self, ev: &Event) {
        match ev {
            Event::Dirty(d) => {
                let mut w = self.dirty(d.alloc, d.submit);
                let mut at = 0usize;
                for &(off, len) in &d.runs {
                    let end = at.saturating_add(len as usize).min(d.data.len());
                    w.push(off, &d.data[at..end]);
                    at = end;
                }
                w.finish();
            }
            Event::End(_) => {}
            _ => {
                if self.shared.stopped.load(Ordering::Acquire) {
                    self.shared.dropped(0);
                    return;
                }
                let mut payload = self.shared.pool.take_small(64);
                encode_payload(ev, &mut payload);
                if payload.len() > MAX_PAYLOAD as usize {
                    self.shared.dropped(0);
                    self.shared.recycle(payload);
                    return;
                }
                let ty = BlockType::of(ev);
                self.shared.enqueue(Job::Block { ty, payload, dirty_bytes: 0, pages: 0 });
                if ty == BlockType::Submit && self.shared.opts.flush_every_submit {
                    self.shared.enqueue(Job::Flush);
                }
            }
        }
    }

    /// Starts the dirty bytes of allocation `alloc` collected for submit `submit`. Push runs in
    /// ascending offset order; blocks are queued as they fill and at [`DirtyWriter::finish`].
    pub fn dirty(&self, alloc: u64, submit: u64) -> DirtyWriter<'_> {
        DirtyWriter { shared: &self.shared, alloc, submit, buf: None, runs: Vec::new(), pages: 0, last_page: None }
    }

    /// Defers waking the writer thread until the returned guard (and every other one) is dropped:
    /// the records of one submit (a dirty record per written allocation, then the submit) wake
    /// it once instead of once each, and not at all while it lingers after its last drain (it
    /// looks again within `LINGER`, 2 ms). Past an eighth of the queue (a large collection) records
    /// wake it as usual, so compression overlaps the collection.
    pub fn hold(&self) -> Held<'_> {
        self.shared.queue.lock().held += 1;
        Held(&self.shared)
    }

    /// Hands everything queued so far to the OS (not fsync).
    pub fn flush(&self) {
        self.shared.enqueue(Job::Flush);
    }

    /// Writes the end block (totals), flushes, fsyncs, and stops the thread. Waits for every
    /// queued record. Later calls return the same result; records after close are dropped.
    pub fn close(&self) -> Result<Totals, TraceError> {
        let mut result = self.close_result.lock();
        if result.is_none() {
            let (tx, rx) = mpsc::sync_channel(1);
            {
                let mut q = self.shared.queue.lock();
                q.closed = true;
                self.shared.stopped.store(true, Ordering::Release);
                q.jobs.push_back(Job::Close(tx));
                self.shared.not_empty.notify_one();
                self.shared.not_full.notify_all();
            }
            let r = rx.recv().unwrap_or_else(|_| Err("trace writer thread exited".into()));
            if let Some(t) = self.thread.lock().take() {
                let _ = t.join();
            }
            *result = Some(r);
        }
        match result.as_ref() {
            Some(Ok(t)) => Ok(t.clone()),
            Some(Err(e)) => Err(TraceError::Stopped(e.clone())),
            None => Err(TraceError::Stopped("not closed".into())),
        }
    }

    pub fn stats(&self) -> WriterStats {
        let c = &self.shared.c;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (queued_bytes, queued_records) = {
            let q = self.shared.queue.lock();
            (q.bytes as u64, q.jobs.len() as u64)
        };
        WriterStats {
            records: r(&c.records),
            dirty_bytes_in: r(&c.dirty_bytes_in),
            blocks_written: r(&c.blocks_written),
            payload_bytes: r(&c.payload_bytes),
            raw_behind: r(&c.raw_behind),
            bytes_out: r(&c.bytes_out),
            stalls: r(&c.stalls),
            stall_ns: r(&c.stall_ns),
            dropped_records: r(&c.dropped_records),
            dropped_bytes: r(&c.dropped_bytes),
            queued_bytes,
            queued_records,
            pooled_buffers: self.shared.pool.len() as u64,
        }
    }

    /// The first I/O error, as one line, once the writer has failed.
    pub fn failed(&self) -> Option<String> {
        self.shared.error.lock().clone()
    }

    /// Whether records are still accepted (not failed, not closed). One atomic load.
    pub fn is_active(&self) -> bool {
        !self.shared.stopped.load(Ordering::Acquire)
    }

    pub fn options(&self) -> &WriterOptions {
        &self.shared.opts
    }
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Shared {
    fn dropped(&self, bytes: u64) {
        self.c.dropped_records.fetch_add(1, Ordering::Relaxed);
        self.c.dropped_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn recycle(&self, buf: Vec<u8>) {
        let big = buf.capacity() >= self.pool.big_capacity();
        let dropped = self.pool.give(buf);
        if !big && dropped > 0 {
            self.freed_copies.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Once the queue has drained, keeps only a few buffers and trims the heap after a burst: a
    /// burst that filled the queue (the disk fell behind, or a submit's records waited under a
    /// hold) would otherwise keep up to `queue_bytes` resident for the rest of the run.
    /// `high`: the queue's high-water mark since it last drained; copies freed after a queue that
    /// stayed small are reused by the next ones, so only a burst makes them worth a trim.
    fn shrink_pool(&self, high: usize) {
        let spare_bytes = self.pool.shrink(POOL_KEEP);
        let copies = self.freed_copies.load(Ordering::Relaxed);
        if spare_bytes >= TRIM_AFTER_BYTES || (high >= TRIM_AFTER_BYTES && copies >= TRIM_AFTER_BYTES) {
            self.freed_copies.store(0, Ordering::Relaxed);
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only hands free heap memory back to the kernel; any thread may call it.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    /// Puts a job on the queue, waiting while it is full. Returns at once once stopped.
    fn enqueue(&self, job: Job) {
        let (cost, dirty) = match &job {
            Job::Block { payload, dirty_bytes, .. } => (payload.capacity(), *dirty_bytes),
            _ => (0, 0),
        };
        let reject = |job: Job| {
            if let Job::Block { payload, .. } = job {
                self.dropped(dirty);
                self.recycle(payload);
            }
        };
        if self.stopped.load(Ordering::Acquire) {
            return reject(job);
        }
        let mut q = self.queue.lock();
        let full = |q: &Queue| q.bytes > 0 && q.bytes + cost > self.opts.queue_bytes;
        if full(&q) && !q.closed && !self.stopped.load(Ordering::Acquire) {
            // The thread may be asleep with jobs queued under a hold.
            q.deferred = false;
            q.sleep = Sleep::Working;
            self.not_empty.notify_one();
            self.c.stalls.fetch_add(1, Ordering::Relaxed);
            let t0 = Instant::now();
            while full(&q) && !q.closed && !self.stopped.load(Ordering::Acquire) {
                self.not_full.wait(&mut q);
            }
            self.c.stall_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        if q.closed || self.stopped.load(Ordering::Acquire) {
            drop(q);
            return reject(job);
        }
        if matches!(job, Job::Block { .. }) {
            self.c.records.fetch_add(1, Ordering::Relaxed);
            self.c.dirty_bytes_in.fetch_add(dirty, Ordering::Relaxed);
        }
        q.bytes += cost;
        q.high = q.high.max(q.bytes);
        let urgent = !matches!(job, Job::Block { .. });
        q.jobs.push_back(job);
        // A hold only saves wake-ups for small submits: past an eighth of the queue the thread
        // must start, or the backlog reaches the adaptive threshold and blocks go out uncompressed.
        let small = q.bytes <= self.opts.queue_bytes / 8;
        if !urgent && q.bytes <= LINGER_BYTES && q.sleep != Sleep::Idle {
            // Working, or lingering: it finds the job within LINGER without a wake-up.
        } else if !urgent && small && q.held > 0 {
            q.deferred = true;
        } else if q.sleep != Sleep::Working {
            q.sleep = Sleep::Working;
            self.not_empty.notify_one();
        }
    }

    /// Records the first error, stops input and wakes every waiting producer.
    fn fail(&self, msg: String) {
        {
            let mut e = self.error.lock();
            if e.is_some() {
                return;
            }
            *e = Some(msg.clone());
        }
        {
            let _q = self.queue.lock();
            self.stopped.store(true, Ordering::Release);
            self.not_full.notify_all();
        }
        if let Some(cb) = &self.opts.on_error {
            cb(&msg);
        }
    }
}

/// Builds the Dirty blocks of one allocation for one submit. Dropping it is the same as
/// [`DirtyWriter::finish`].
pub struct DirtyWriter<'a> {
    shared: &'a Shared,
    alloc: u64,
    submit: u64,
    buf: Option<Vec<u8>>,
    runs: Vec<(u64, u64)>,
    /// Pages touched by the block being built.
    pages: u64,
    last_page: Option<u64>,
}

impl DirtyWriter<'_> {
    /// Copies `bytes`, which the application wrote at allocation offset `alloc_offset`.
    /// Contiguous pushes merge into one run. Returns at once when the writer has stopped.
    pub fn push(&mut self, alloc_offset: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // A run past the end of the offset space cannot be represented; it is a caller bug.
        if self.shared.stopped.load(Ordering::Acquire) || alloc_offset.checked_add(bytes.len() as u64).is_none() {
            self.shared.dropped(bytes.len() as u64);
            return;
        }
        let ps = self.shared.opts.page_size as u64;
        let block = self.shared.opts.block_bytes;
        let mut off = alloc_offset;
        let mut rest = bytes;
        while !rest.is_empty() {
            let buf = self.buf.get_or_insert_with(|| {
                let mut b = self.shared.pool.take_block(&mut self.runs);
                b.extend_from_slice(&self.alloc.to_le_bytes());
                b.extend_from_slice(&self.submit.to_le_bytes());
                b.extend_from_slice(&0u32.to_le_bytes());
                b
            });
            let room = block - (buf.len() - DIRTY_PREFIX_LEN);
            let mut n = rest.len();
            if n > room {
                // Split at a page boundary so no page spans two blocks.
                n = ((off.saturating_add(room as u64) / ps * ps).saturating_sub(off)) as usize;
                if n == 0 && self.runs.is_empty() {
                    // Only at the very top of the offset space; never loop on an empty block.
                    n = room;
                }
            }
            let merges = self.runs.last().is_some_and(|&(o, l)| o.checked_add(l) == Some(off));
            if n == 0 || (!merges && self.runs.len() >= self.shared.max_runs) {
                self.emit();
                continue;
            }
            buf.extend_from_slice(&rest[..n]);
            match self.runs.last_mut() {
                Some((_, l)) if merges => *l += n as u64,
                _ => self.runs.push((off, n as u64)),
            }
            self.pages += count_pages(&[(off, n as u64)], ps, &mut self.last_page);
            off = off.saturating_add(n as u64);
            rest = &rest[n..];
        }
    }

    /// Queues what is left. Waits only if the queue is full.
    pub fn finish(mut self) {
        self.emit();
    }

    fn emit(&mut self) {
        let Some(mut buf) = self.buf.take() else { return };
        if self.runs.is_empty() {
            self.shared.recycle(buf);
            return;
        }
        let dirty_bytes = (buf.len() - DIRTY_PREFIX_LEN) as u64;
        buf[16..20].copy_from_slice(&(self.runs.len() as u32).to_le_bytes());
        for &(o, l) in &self.runs {
            buf.extend_from_slice(&o.to_le_bytes());
            buf.extend_from_slice(&l.to_le_bytes());
        }
        // A block far smaller than its buffer (a small allocation's pages) travels in a copy of
        // its own size and the buffer stays in the pool: queued blocks then hold the memory the
        // queue's bound counts, not a block-sized buffer each (1000 queued 64 KiB blocks would
        // otherwise pin ~1 GB of buffers).
        if buf.len() <= buf.capacity() / 8 {
            let (small, dropped) = self.shared.pool.to_small(buf);
            buf = small;
            self.shared.freed_copies.fetch_add(dropped, Ordering::Relaxed);
        }
        let pages = self.pages;
        self.runs.clear();
        self.pages = 0;
        self.last_page = None;
        self.shared.enqueue(Job::Block { ty: BlockType::Dirty, payload: buf, dirty_bytes, pages });
    }
}

/// See [`TraceWriter::hold`].
pub struct Held<'a>(&'a Shared);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut q = self.0.queue.lock();
        q.held -= 1;
        if q.held == 0 && q.deferred {
            q.deferred = false;
            if q.sleep == Sleep::Idle || (q.sleep == Sleep::Lingering && q.bytes > LINGER_BYTES) {
                q.sleep = Sleep::Working;
                self.0.not_empty.notify_one();
            }
        }
    }
}

impl Drop for DirtyWriter<'_> {
    fn drop(&mut self) {
        self.emit();
        self.shared.pool.give_runs(std::mem::take(&mut self.runs));
    }
}
