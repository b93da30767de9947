//! Streaming reader: one block at a time, every CRC checked, errors carrying the byte offset.
//!
//! A file that ends inside a block, or without the end block, is truncated (the application
//! crashed or was killed): the reader yields every complete block, then ends, and
//! [`TraceReader::truncation`] says where and why. Damage inside the file (bad CRC, impossible
//! length or field) is an error; after an error the reader yields nothing more.

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

pub struct TraceReader<R> {
    r: R,
    header: FileHeader,
    offset: u64,
    state: State,
    stored: Vec<u8>,
    raw: Vec<u8>,
}

impl TraceReader<BufReader<File>> {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TraceError> {
        let path = path.as_ref();
        let f = File::open(path).map_err(|e| TraceError::io(format!("cannot open {}", path.display()), e))?;
        TraceReader::new(BufReader::with_capacity(1 << 20, f))
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
        Ok(TraceReader { r, header, offset: len as u64, state: State::Reading, stored: Vec::new(), raw: Vec::new() })
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

    fn truncate(&mut self, offset: u64, reason: impl Into<String>) -> Result<Option<Block>, TraceError> {
        self.state = State::Truncated(Truncation { offset, reason: reason.into() });
        Ok(None)
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
        let at = self.offset;
        let io_err = |e| TraceError::io(format!("reading at byte {at}"), e);
        let mut hb = [0u8; BLOCK_HEADER_LEN];
        let n = read_full(&mut self.r, &mut hb).map_err(io_err)?;
        if n == 0 {
            return self.truncate(at, "no end-of-stream block (the writer did not close the trace)");
        }
        if n < BLOCK_HEADER_LEN {
            return self.truncate(at, format!("file ends inside a block header ({n} of {BLOCK_HEADER_LEN} bytes)"));
        }
        let h = BlockHeader::decode(&hb);
        if h.stored_len > MAX_PAYLOAD || h.raw_len > MAX_PAYLOAD {
            return Err(TraceError::corrupt(
                at,
                format!("block length {} (raw {}) exceeds the limit of {MAX_PAYLOAD}", h.stored_len, h.raw_len),
            ));
        }
        self.stored.clear();
        let got = (&mut self.r).take(h.stored_len as u64).read_to_end(&mut self.stored).map_err(io_err)?;
        if got < h.stored_len as usize {
            return self.truncate(at, format!("file ends inside a block ({got} of {} payload bytes)", h.stored_len));
        }
        let crc = BlockHeader::compute_crc(h.type_code, h.flags, h.stored_len, h.raw_len, &self.stored);
        if crc != h.crc {
            return Err(TraceError::corrupt(
                at,
                format!("block CRC mismatch (stored {:#010x}, computed {crc:#010x})", h.crc),
            ));
        }
        self.offset = at + BLOCK_HEADER_LEN as u64 + h.stored_len as u64;
        let ty = BlockType::from_code(h.type_code);
        let mut block = Block {
            offset: at,
            type_code: h.type_code,
            flags: h.flags,
            stored_len: h.stored_len,
            raw_len: h.raw_len,
            event: None,
        };
        let Some(ty) = ty else {
            // Unknown type: skipped by length (its CRC was checked).
            return Ok(Some(block));
        };
        if h.flags & !KNOWN_FLAGS != 0 {
            return Err(TraceError::corrupt(at, format!("unsupported block flags {:#06x}", h.flags)));
        }
        let payload: &[u8] = if h.flags & FLAG_LZ4 != 0 {
            self.raw.clear();
            self.raw.resize(h.raw_len as usize, 0);
            match lz4_flex::block::decompress_into(&self.stored, &mut self.raw) {
                Ok(n) if n == h.raw_len as usize => &self.raw,
                Ok(n) => {
                    return Err(TraceError::corrupt(at, format!("lz4 payload gave {n} bytes, header says {}", h.raw_len)))
                }
                Err(e) => return Err(TraceError::corrupt(at, format!("lz4 payload: {e}"))),
            }
        } else {
            if h.raw_len != h.stored_len {
                return Err(TraceError::corrupt(
                    at,
                    format!("uncompressed block with raw length {} != stored length {}", h.raw_len, h.stored_len),
                ));
            }
            &self.stored
        };
        let ev = decode_payload(ty, payload, at)?;
        if ty == BlockType::End {
            self.state = State::Ended;
            // The end block must be last.
            let mut probe = [0u8; 1];
            if read_full(&mut self.r, &mut probe).map_err(io_err)? != 0 {
                return Err(TraceError::corrupt(self.offset, "data after the end-of-stream block"));
            }
        }
        block.event = Some(ev);
        Ok(Some(block))
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
