//! The writer thread: compresses, checksums and writes the queued blocks, and writes the end
//! record at close.

use super::{Job, Shared, Sleep, TraceSink, LINGER};
use crate::trace::format::{encode_payload, BlockHeader, BlockType, Compression, FLAG_LZ4};
use crate::trace::{Event, Totals};
use std::io::{self, BufWriter, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Compresses (when it helps), checksums and writes one block. Returns the bytes written.
fn write_block(
    sink: &mut impl Write,
    ty: BlockType,
    payload: &[u8],
    compression: Compression,
    scratch: &mut Vec<u8>,
) -> io::Result<usize> {
    let raw_len = payload.len() as u32;
    let mut stored: &[u8] = payload;
    let mut flags = 0;
    if compression == Compression::Lz4 && payload.len() >= 32 {
        let max = lz4_flex::block::get_maximum_output_size(payload.len());
        if scratch.len() < max {
            scratch.resize(max, 0);
        }
        if let Ok(n) = lz4_flex::block::compress_into(payload, &mut scratch[..max]) {
            if n < payload.len() {
                stored = &scratch[..n];
                flags = FLAG_LZ4;
            }
        }
    }
    let stored_len = stored.len() as u32;
    let crc = BlockHeader::compute_crc(ty.code(), flags, stored_len, raw_len, stored);
    let hdr = BlockHeader { type_code: ty.code(), flags, stored_len, raw_len, crc };
    sink.write_all(&hdr.encode())?;
    sink.write_all(stored)?;
    Ok(hdr.encode().len() + stored.len())
}

/// The background thread: takes jobs off the queue until `Close`.
pub(super) fn writer_thread(shared: Arc<Shared>, sink: Box<dyn TraceSink>, name: String, header: Vec<u8>) {
    let mut sink = BufWriter::with_capacity(256 << 10, sink);
    let mut scratch = Vec::new();
    let mut totals = Totals::default();
    let c = &shared.c;
    let fail = |e: io::Error| shared.fail(format!("writing trace {name} failed: {e}; capture stopped"));
    match sink.write_all(&header) {
        Ok(()) => {
            c.bytes_out.fetch_add(header.len() as u64, Ordering::Relaxed);
        }
        Err(e) => fail(e),
    }
    let ok = || shared.error.lock().is_none();
    loop {
        let (job, backlog) = {
            let mut q = shared.queue.lock();
            let mut lingered = false;
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    q.sleep = Sleep::Working;
                    break (j, q.bytes);
                }
                // Drained: look again after LINGER unwoken (producers then skip the wake-up),
                // and only if nothing came, sleep until woken.
                if lingered {
                    q.sleep = Sleep::Idle;
                    shared.not_empty.wait(&mut q);
                } else {
                    q.sleep = Sleep::Lingering;
                    shared.not_empty.wait_for(&mut q, LINGER);
                    lingered = true;
                }
            }
        };
        match job {
            Job::Block { ty, payload, dirty_bytes, pages } => {
                if ok() {
                    let mut compression = shared.opts.compression;
                    if compression == Compression::Lz4 && shared.opts.adaptive && backlog > shared.opts.queue_bytes / 2
                    {
                        compression = Compression::None;
                        c.raw_behind.fetch_add(1, Ordering::Relaxed);
                    }
                    match write_block(&mut sink, ty, &payload, compression, &mut scratch) {
                        Ok(n) => {
                            c.blocks_written.fetch_add(1, Ordering::Relaxed);
                            c.payload_bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
                            c.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                            match ty {
                                BlockType::Submit => totals.submits += 1,
                                BlockType::Frame => totals.frames += 1,
                                BlockType::Dirty => {
                                    totals.dirty_bytes += dirty_bytes;
                                    totals.dirty_pages += pages;
                                }
                                _ => {}
                            }
                        }
                        Err(e) => fail(e),
                    }
                }
                let len = payload.capacity();
                shared.recycle(payload);
                let drained = {
                    let mut q = shared.queue.lock();
                    q.bytes -= len;
                    shared.not_full.notify_all();
                    q.jobs.is_empty().then(|| std::mem::take(&mut q.high))
                };
                if let Some(high) = drained {
                    shared.shrink_pool(high);
                }
            }
            Job::Flush => {
                if ok() {
                    if let Err(e) = sink.flush() {
                        fail(e);
                    }
                }
            }
            Job::Close(reply) => {
                let r = if ok() {
                    totals.writer_stalls = c.stalls.load(Ordering::Relaxed);
                    let mut payload = Vec::new();
                    encode_payload(&Event::End(totals.clone()), &mut payload);
                    let res = write_block(&mut sink, BlockType::End, &payload, Compression::None, &mut scratch)
                        .and_then(|n| {
                            c.blocks_written.fetch_add(1, Ordering::Relaxed);
                            c.payload_bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
                            c.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                            sink.flush()
                        })
                        .and_then(|()| sink.get_mut().sync());
                    match res {
                        Ok(()) => Ok(totals.clone()),
                        Err(e) => {
                            fail(e);
                            Err(shared.error.lock().clone().unwrap_or_default())
                        }
                    }
                } else {
                    Err(shared.error.lock().clone().unwrap_or_default())
                };
                // Drain what raced in before close (nothing: close sets `closed` first).
                let _ = reply.send(r);
                return;
            }
        }
    }
}
