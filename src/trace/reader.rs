//! Streaming reader: one block at a time, every CRC checked, errors carrying the byte offset.
//!
//! A file that ends inside a block, or without the end block, is truncated (the application
//! crashed or was killed): the reader yields every complete block, then ends, and
//! [`TraceReader::truncation`] says where and why.
//!
//! Damage inside the file (bad CRC, impossible length or field): by default an error, after
//! which the reader yields nothing more. With [`TraceReader::salvage`], the reader records the
//! damaged byte range ([`TraceReader::damage`]) and resynchronises on the next offset that holds
//! a whole, valid block (known type and flags, lengths within bounds and within the file, CRC
//! over header and payload, payload decodes), then goes on yielding blocks.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::format::{
    decode_payload, BlockHeader, BlockType, FileHeader, BLOCK_HEADER_LEN, FLAG_LZ4, KNOWN_FLAGS, MAX_PAYLOAD,
};
use super::{Event, TraceError};

/// One block as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// File offset of the block header.
    pub offset: u64,
    pub type_code: u16,
    pub flags: u16,
    /// Payload bytes on disk.
    pub stored_len: u32,
    /// Payload bytes after decompression.
    pub raw_len: u32,
    /// The decoded record; `None` for a type this build does not know (skipped).
    pub event: Option<Event>,
}

impl Block {
    pub fn block_type(&self) -> Option<BlockType> {
        BlockType::from_code(self.type_code)
    }

    /// Bytes the block takes in the file.
    pub fn file_len(&self) -> u64 {
        BLOCK_HEADER_LEN as u64 + self.stored_len as u64
    }
}

/// A byte range of the file that holds no readable block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// File offset of the first damaged byte (where a block was expected).
    pub offset: u64,
    /// Bytes skipped up to the next valid block (or the end of the file).
    pub len: u64,
    /// What was wrong with the block expected at `offset`.
    pub reason: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bytes {}..{} ({} bytes) damaged: {}", self.offset, self.offset + self.len, self.len, self.reason)
    }
}

/// Why a trace is incomplete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// Where the complete data ends.
    pub offset: u64,
    pub reason: String,
}

impl std::fmt::Display for Truncation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "trace truncated at byte {}: {}", self.offset, self.reason)
    }
}

enum State {
    Reading,
    /// Saw the end block at this offset.
    Ended,
    Truncated(Truncation),
    Failed,
}

/// What is at one offset.
enum Parsed {
    /// A valid block; the next one starts at `.1`.
    Block(Block, u64),
    /// The file ends before a whole block.
    Short(String),
    /// Something is there but it is not a valid block.
    Bad(TraceError),
}

/// Bytes read from the file at a time.
const READ_CHUNK: usize = 64 << 10;
/// Payload bytes one resynchronisation may checksum before it gives up (the rest of the file
/// is then one damaged range): crafted data can make every offset look like a long block.
const RESYNC_BUDGET: u64 = 1 << 30;
/// Consumed bytes kept before the window is compacted.
const COMPACT: u64 = 1 << 20;

pub struct TraceReader<R> {
    r: R,
    header: FileHeader,
    /// Bytes of the file from offset `base` on, read but not yet consumed.
    buf: Vec<u8>,
    base: u64,
    eof: bool,
    offset: u64,
    state: State,
    raw: Vec<u8>,
    salvage: bool,
    damage: Vec<Damage>,
}

impl TraceReader<BufReader<File>> {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TraceError> {
        let path = path.as_ref();
        let f = File::open(path).map_err(|e| TraceError::io(format!("cannot open {}", path.display()), e))?;
        TraceReader::new(BufReader::with_capacity(64 << 10, f))
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The message of a corruption error without its "corrupt trace at byte N" prefix.
fn reason(e: &TraceError) -> String {
    match e {
        TraceError::Corrupt { msg, .. } | TraceError::Inconsistent { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

impl<R: Read> TraceReader<R> {
    /// Reads and checks the file header.
    pub fn new(mut r: R) -> Result<Self, TraceError> {
        let io_err = |e| TraceError::io("reading the file header", e);
        let mut buf = vec![0u8; FileHeader::PREFIX_LEN];
        let n = read_full(&mut r, &mut buf).map_err(io_err)?;
        if n < buf.len() {
            return Err(if n > 0 && buf[..n.min(8)] == super::format::MAGIC[..n.min(8)] {
                TraceError::corrupt(n as u64, "file ends inside the file header")
            } else {
                TraceError::BadMagic
            });
        }
        let len = FileHeader::decode_len(&buf)?;
        buf.resize(len, 0);
        let n = read_full(&mut r, &mut buf[FileHeader::PREFIX_LEN..]).map_err(io_err)?;
        if n < len - FileHeader::PREFIX_LEN {
            return Err(TraceError::corrupt((FileHeader::PREFIX_LEN + n) as u64, "file ends inside the file header"));
        }
        let header = FileHeader::decode(&buf)?;
        Ok(TraceReader {
            r,
            header,
            buf: Vec::new(),
            base: len as u64,
            eof: false,
            offset: len as u64,
            state: State::Reading,
            raw: Vec::new(),
            salvage: false,
            damage: Vec::new(),
        })
    }

    /// Skips damaged ranges instead of failing at the first one (see the module doc).
    pub fn salvage(mut self, on: bool) -> Self {
        self.salvage = on;
        self
    }

    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// File offset of the next block.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// After the reader has ended: why the trace is incomplete, if it is.
    pub fn truncation(&self) -> Option<&Truncation> {
        match &self.state {
            State::Truncated(t) => Some(t),
            _ => None,
        }
    }

    /// Whether the end block was read.
    pub fn saw_end(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// Damaged ranges skipped so far (salvage mode), in file order. A range recorded while
    /// looking for a block lies just before the block that call returned.
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// Reads until the window covers `[base, upto)` or the file ends.
    fn fill(&mut self, upto: u64) -> io::Result<()> {
        while !self.eof && self.base + (self.buf.len() as u64) < upto {
            let want = (upto - self.base - self.buf.len() as u64).min(MAX_PAYLOAD as u64 + 64) as usize;
            let old = self.buf.len();
            self.buf.resize(old + want.max(READ_CHUNK), 0);
            let n = loop {
                match self.r.read(&mut self.buf[old..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => break r,
                }
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            };
            self.buf.truncate(old + n);
            self.eof = n == 0;
        }
        Ok(())
    }

    /// Bytes available at file offset `at` (after [`Self::fill`]).
    fn avail(&self, at: u64) -> &[u8] {
        let i = (at.saturating_sub(self.base) as usize).min(self.buf.len());
        &self.buf[i..]
    }

    /// Forgets bytes before `to`, now and then.
    fn consume(&mut self, to: u64) {
        if to > self.base + COMPACT {
            let n = ((to - self.base) as usize).min(self.buf.len());
            self.buf.drain(..n);
            self.base += n as u64;
        }
    }

    /// Reads the whole rest of the file; its length.
    fn file_end(&mut self) -> io::Result<u64> {
        loop {
            let end = self.base + self.buf.len() as u64;
            self.consume(end);
            if self.eof {
                return Ok(self.base + self.buf.len() as u64);
            }
            self.fill(self.base + self.buf.len() as u64 + READ_CHUNK as u64)?;
        }
    }

    /// What is at `at`.
    fn parse_at(&mut self, at: u64) -> io::Result<Parsed> {
        self.fill(at + BLOCK_HEADER_LEN as u64)?;
        let n = self.avail(at).len();
        if n == 0 {
            return Ok(Parsed::Short("no end-of-stream block (the writer did not close the trace)".into()));
        }
        if n < BLOCK_HEADER_LEN {
            return Ok(Parsed::Short(format!("file ends inside a block header ({n} of {BLOCK_HEADER_LEN} bytes)")));
        }
        let h = BlockHeader::decode(self.avail(at)[..BLOCK_HEADER_LEN].try_into().expect("16 bytes"));
        if h.stored_len > MAX_PAYLOAD || h.raw_len > MAX_PAYLOAD {
            return Ok(Parsed::Bad(TraceError::corrupt(
                at,
                format!("block length {} (raw {}) exceeds the limit of {MAX_PAYLOAD}", h.stored_len, h.raw_len),
            )));
        }
        let next = at + BLOCK_HEADER_LEN as u64 + h.stored_len as u64;
        self.fill(next)?;
        let got = self.avail(at).len() - BLOCK_HEADER_LEN;
        if got < h.stored_len as usize {
            return Ok(Parsed::Short(format!("file ends inside a block ({got} of {} payload bytes)", h.stored_len)));
        }
        let start = (at - self.base) as usize + BLOCK_HEADER_LEN;
        let stored = &self.buf[start..start + h.stored_len as usize];
        let crc = BlockHeader::compute_crc(h.type_code, h.flags, h.stored_len, h.raw_len, stored);
        if crc != h.crc {
            return Ok(Parsed::Bad(TraceError::corrupt(
                at,
                format!("block CRC mismatch (stored {:#010x}, computed {crc:#010x})", h.crc),
            )));
        }
        let mut block = Block {
            offset: at,
            type_code: h.type_code,
            flags: h.flags,
            stored_len: h.stored_len,
            raw_len: h.raw_len,
            event: None,
        };
        let Some(ty) = BlockType::from_code(h.type_code) else {
            // Unknown type: skipped by length (its CRC was checked).
            return Ok(Parsed::Block(block, next));
        };
        if h.flags & !KNOWN_FLAGS != 0 {
            return Ok(Parsed::Bad(TraceError::corrupt(at, format!("unsupported block flags {:#06x}", h.flags))));
        }
        let payload: &[u8] = if h.flags & FLAG_LZ4 != 0 {
            self.raw.clear();
            self.raw.resize(h.raw_len as usize, 0);
            match lz4_flex::block::decompress_into(stored, &mut self.raw) {
                Ok(n) if n == h.raw_len as usize => &self.raw,
                Ok(n) => {
                    let msg = format!("lz4 payload gave {n} bytes, header says {}", h.raw_len);
                    return Ok(Parsed::Bad(TraceError::corrupt(at, msg)));
                }
                Err(e) => return Ok(Parsed::Bad(TraceError::corrupt(at, format!("lz4 payload: {e}")))),
            }
        } else {
            if h.raw_len != h.stored_len {
                return Ok(Parsed::Bad(TraceError::corrupt(
                    at,
                    format!("uncompressed block with raw length {} != stored length {}", h.raw_len, h.stored_len),
                )));
            }
            stored
        };
        match decode_payload(ty, payload, at) {
            Ok(ev) => {
                block.event = Some(ev);
                Ok(Parsed::Block(block, next))
            }
            Err(e) => Ok(Parsed::Bad(e)),
        }
    }

    /// The first offset at or after `from` that holds a valid block of a known type.
    fn resync(&mut self, from: u64) -> io::Result<Option<u64>> {
        let mut c = from;
        let mut budget = RESYNC_BUDGET;
        loop {
            self.consume(c);
            self.fill(c + BLOCK_HEADER_LEN as u64)?;
            let a = self.avail(c);
            if a.len() < BLOCK_HEADER_LEN {
                return Ok(None);
            }
            // Cheap checks first: most offsets fail on the type code.
            let h = BlockHeader::decode(a[..BLOCK_HEADER_LEN].try_into().expect("16 bytes"));
            let plausible = BlockType::from_code(h.type_code).is_some()
                && h.flags & !KNOWN_FLAGS == 0
                && h.stored_len <= MAX_PAYLOAD
                && h.raw_len <= MAX_PAYLOAD
                && (h.flags & FLAG_LZ4 != 0 || h.raw_len == h.stored_len);
            if plausible {
                let Some(left) = budget.checked_sub(h.stored_len as u64 + BLOCK_HEADER_LEN as u64) else {
                    return Ok(None);
                };
                budget = left;
                if let Parsed::Block(..) = self.parse_at(c)? {
                    return Ok(Some(c));
                }
            }
            c += 1;
        }
    }

    /// The next block; `Ok(None)` at the end (check [`TraceReader::truncation`]).
    pub fn next_block(&mut self) -> Result<Option<Block>, TraceError> {
        if !matches!(self.state, State::Reading) {
            return Ok(None);
        }
        let r = self.read_block();
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    fn read_block(&mut self) -> Result<Option<Block>, TraceError> {
        loop {
            let at = self.offset;
            let io_err = |e| TraceError::io(format!("reading at byte {at}"), e);
            match self.parse_at(at).map_err(io_err)? {
                Parsed::Block(block, next) => {
                    self.offset = next;
                    self.consume(next);
                    if block.block_type() == Some(BlockType::End) {
                        self.state = State::Ended;
                        // The end block must be last.
                        self.fill(next + 1).map_err(io_err)?;
                        if !self.avail(next).is_empty() {
                            if !self.salvage {
                                return Err(TraceError::corrupt(next, "data after the end-of-stream block"));
                            }
                            let end = self.file_end().map_err(io_err)?;
                            self.damage.push(Damage {
                                offset: next,
                                len: end - next,
                                reason: "data after the end-of-stream block".into(),
                            });
                        }
                    }
                    return Ok(Some(block));
                }
                Parsed::Short(why) => {
                    // A damaged length can make a block look cut short: look for a valid block
                    // after it before calling the file truncated.
                    if self.salvage && self.avail(at).len() >= BLOCK_HEADER_LEN {
                        if let Some(c) = self.resync(at + 1).map_err(io_err)? {
                            self.damage.push(Damage { offset: at, len: c - at, reason: why });
                            self.offset = c;
                            continue;
                        }
                    }
                    self.state = State::Truncated(Truncation { offset: at, reason: why });
                    return Ok(None);
                }
                Parsed::Bad(e) => {
                    if !self.salvage {
                        return Err(e);
                    }
                    let why = reason(&e);
                    match self.resync(at + 1).map_err(io_err)? {
                        Some(c) => {
                            self.damage.push(Damage { offset: at, len: c - at, reason: why });
                            self.offset = c;
                        }
                        None => {
                            let end = self.file_end().map_err(io_err)?;
                            self.damage.push(Damage { offset: at, len: end - at, reason: why });
                            self.offset = end;
                            self.state = State::Truncated(Truncation {
                                offset: at,
                                reason: "no valid block after the damage (no end-of-stream block)".into(),
                            });
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    /// Every remaining event (unknown blocks skipped); stops at the first error.
    pub fn events(mut self) -> Result<(Vec<Event>, Option<Truncation>), TraceError> {
        let mut v = Vec::new();
        while let Some(b) = self.next_block()? {
            if let Some(e) = b.event {
                v.push(e);
            }
        }
        Ok((v, self.truncation().cloned()))
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Result<Block, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_block().transpose()
    }
}
