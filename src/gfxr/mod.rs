//! A reader of gfxreconstruct capture files (`.gfxr`), as far as memory is concerned: block
//! headers, compressed blocks (LZ4, zstd, zlib), the fill-memory commands that carry the bytes the CPU wrote into
//! mapped memory, and the calls that place them (allocation, mapping, submits). The layout is
//! gfxreconstruct's `framework/format/format.h` (file format 0.0; every struct packed to 4 bytes,
//! little-endian).
//!
//! [`memory_events`] turns a capture into the vkdirty trace events that say the same about memory,
//! so a capture is checked with the same oracle as a vkdirty trace (`vkdirty check-sidecar`).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

pub mod events;
pub mod params;

pub use events::{memory_events, memory_events_of};

/// `GFXR` as gfxreconstruct's little-endian FOURCC.
pub const FOURCC: u32 = u32::from_le_bytes(*b"GFXR");

const COMPRESSED_BIT: u32 = 0x8000_0000;
const META_DATA_BLOCK: u32 = 3;
const FUNCTION_CALL_BLOCK: u32 = 4;
const FILL_MEMORY_COMMAND: u32 = 2;
/// `FileOption::kCompressionType`.
const OPTION_COMPRESSION: u32 = 1;
/// Blocks larger than this are refused as corrupt rather than allocated.
const MAX_BLOCK: u64 = 1 << 34;

/// Vulkan API call ids (`framework/format/api_call_id.h`: family 1 in the high half).
pub mod call {
    pub const QUEUE_SUBMIT: u32 = 0x1_1012;
    pub const ALLOCATE_MEMORY: u32 = 0x1_1015;
    pub const FREE_MEMORY: u32 = 0x1_1016;
    pub const MAP_MEMORY: u32 = 0x1_1017;
    pub const UNMAP_MEMORY: u32 = 0x1_1018;
    pub const FLUSH_MAPPED_MEMORY_RANGES: u32 = 0x1_1019;
    pub const QUEUE_BIND_SPARSE: u32 = 0x1_1022;
    pub const QUEUE_SUBMIT2_KHR: u32 = 0x1_1230;
    pub const QUEUE_SUBMIT2: u32 = 0x1_1257;
    pub const MAP_MEMORY2_KHR: u32 = 0x1_12c5;
    pub const UNMAP_MEMORY2_KHR: u32 = 0x1_12c6;
    pub const MAP_MEMORY2: u32 = 0x1_12fe;
    pub const UNMAP_MEMORY2: u32 = 0x1_12ff;
}

#[derive(Debug, thiserror::Error)]
pub enum GfxrError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a gfxreconstruct capture (no GFXR signature)")]
    BadMagic,
    #[error("corrupt capture at byte {offset}: {msg}")]
    Corrupt { offset: u64, msg: String },
}

/// How a capture's blocks are compressed (`CompressionType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
    Zlib,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

/// One block, decoded as far as this reader needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Block {
    /// A Vulkan call with its encoded parameters (decompressed).
    Call { id: u32, params: Vec<u8> },
    /// `FillMemoryCommand`: `data` goes to `offset` bytes past the start of the memory's mapping.
    Fill { memory: u64, offset: u64, data: Vec<u8> },
    /// Any other block (markers, other metadata, annotations, method calls).
    Other { block_type: u32 },
}

/// Reads a capture block by block, from a file ([`GfxrReader::open`]) or any reader
/// ([`GfxrReader::new`]).
pub struct GfxrReader<R = BufReader<File>> {
    r: R,
    pub major: u32,
    pub minor: u32,
    pub compression: Compression,
    /// File offset of the next block.
    offset: u64,
    /// File offset of the block [`GfxrReader::next_block`] returned last.
    block_start: u64,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// Whether the file starts with gfxreconstruct's signature.
pub fn is_gfxr(path: &Path) -> bool {
    let mut b = [0u8; 4];
    File::open(path).and_then(|mut f| f.read_exact(&mut b)).is_ok() && u32::from_le_bytes(b) == FOURCC
}

impl GfxrReader {
    pub fn open(path: &Path) -> Result<GfxrReader, GfxrError> {
        let f = File::open(path)
            .map_err(|e| GfxrError::Io { context: format!("opening {}", path.display()), source: e })?;
        GfxrReader::new(BufReader::with_capacity(1 << 20, f))
    }
}

impl<R: Read> GfxrReader<R> {
    /// Reads the file header from `r`.
    pub fn new(r: R) -> Result<GfxrReader<R>, GfxrError> {
        let mut r = GfxrReader { r, major: 0, minor: 0, compression: Compression::None, offset: 0, block_start: 0 };
        let mut h = [0u8; 16];
        if !r.fill(&mut h)? {
            return Err(GfxrError::BadMagic);
        }
        if le32(&h, 0) != FOURCC {
            return Err(GfxrError::BadMagic);
        }
        r.major = le32(&h, 4);
        r.minor = le32(&h, 8);
        let options = le32(&h, 12);
        if options > 1024 {
            return Err(GfxrError::Corrupt { offset: 12, msg: format!("{options} file options") });
        }
        for _ in 0..options {
            let mut o = [0u8; 8];
            if !r.fill(&mut o)? {
                return Err(r.corrupt("the file header ends inside its options"));
            }
            if le32(&o, 0) == OPTION_COMPRESSION {
                r.compression = match le32(&o, 4) {
                    0 => Compression::None,
                    1 => Compression::Lz4,
                    2 => Compression::Zlib,
                    3 => Compression::Zstd,
                    v => return Err(r.corrupt(format!("unknown compression type {v}"))),
                };
            }
        }
        Ok(r)
    }

    /// The file offset of the block [`GfxrReader::next_block`] returned last.
    pub fn block_offset(&self) -> u64 {
        self.block_start
    }

    fn corrupt(&self, msg: impl Into<String>) -> GfxrError {
        GfxrError::Corrupt { offset: self.offset, msg: msg.into() }
    }

    /// Reads exactly `buf.len()` bytes; `false` at a clean end of file before the first byte.
    fn fill(&mut self, buf: &mut [u8]) -> Result<bool, GfxrError> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(self.corrupt(format!("truncated: {} of {} bytes", got, buf.len()))),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(GfxrError::Io { context: format!("reading at byte {}", self.offset), source: e }),
            }
        }
        self.offset += buf.len() as u64;
        Ok(true)
    }

    fn decompress(&self, data: &[u8], size: u64) -> Result<Vec<u8>, GfxrError> {
        let n = usize::try_from(size).map_err(|_| self.corrupt("uncompressed size too large"))?;
        if size > MAX_BLOCK {
            return Err(self.corrupt(format!("uncompressed size {size}")));
        }
        match self.compression {
            // An LZ4 block expands at most ~255 times; refuse a size it cannot reach before
            // allocating it.
            Compression::Lz4 if size > (data.len() as u64).saturating_mul(255) + 64 => {
                Err(self.corrupt(format!("an lz4 block of {} bytes cannot hold {size}", data.len())))
            }
            Compression::Lz4 => {
                let out = lz4_flex::block::decompress(data, n).map_err(|e| self.corrupt(format!("lz4: {e}")))?;
                if out.len() != n {
                    return Err(self.corrupt(format!("lz4 block decodes to {} bytes, not {n}", out.len())));
                }
                Ok(out)
            }
            Compression::Zstd => {
                let mut out = Vec::new();
                ruzstd::StreamingDecoder::new(data)
                    .map_err(|e| self.corrupt(format!("zstd: {e}")))?
                    .take(size + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| self.corrupt(format!("zstd: {e}")))?;
                if out.len() != n {
                    return Err(self.corrupt(format!("zstd block decodes to {} bytes, not {n}", out.len())));
                }
                Ok(out)
            }
            Compression::Zlib => {
                // gfxreconstruct compresses with zlib's compress2: a zlib stream (header, Adler-32).
                let out = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(data, n)
                    .map_err(|e| self.corrupt(format!("zlib: {e}")))?;
                if out.len() != n {
                    return Err(self.corrupt(format!("zlib block decodes to {} bytes, not {n}", out.len())));
                }
                Ok(out)
            }
            Compression::None => Err(self.corrupt("a compressed block in a capture without compression")),
        }
    }

    /// The next block, `None` at the end of the file.
    pub fn next_block(&mut self) -> Result<Option<Block>, GfxrError> {
        let start = self.offset;
        self.block_start = start;
        let mut h = [0u8; 12];
        if !self.fill(&mut h)? {
            return Ok(None);
        }
        let size = le64(&h, 0);
        let block_type = le32(&h, 8);
        if size > MAX_BLOCK {
            return Err(GfxrError::Corrupt { offset: start, msg: format!("block size {size}") });
        }
        // Read as the data arrives: a damaged size allocates no more than the file holds.
        let mut body = Vec::new();
        (&mut self.r)
            .take(size)
            .read_to_end(&mut body)
            .map_err(|e| GfxrError::Io { context: format!("reading the block at byte {start}"), source: e })?;
        self.offset += body.len() as u64;
        if (body.len() as u64) < size {
            return Err(GfxrError::Corrupt {
                offset: start,
                msg: format!("truncated: the block holds {} of its {size} bytes", body.len()),
            });
        }
        let base = block_type & !COMPRESSED_BIT;
        let compressed = block_type & COMPRESSED_BIT != 0;
        let short = |need: usize| -> Result<(), GfxrError> {
            if body.len() < need {
                Err(GfxrError::Corrupt {
                    offset: start,
                    msg: format!("block of type {block_type:#x} has {} bytes, needs {need}", body.len()),
                })
            } else {
                Ok(())
            }
        };
        match base {
            FUNCTION_CALL_BLOCK => {
                // api_call_id u32, thread_id u64, [uncompressed_size u64], parameters.
                let id = {
                    short(12)?;
                    le32(&body, 0)
                };
                let params = if compressed {
                    short(20)?;
                    self.decompress(&body[20..], le64(&body, 12))?
                } else {
                    body[12..].to_vec()
                };
                Ok(Some(Block::Call { id, params }))
            }
            META_DATA_BLOCK => {
                short(4)?;
                if le32(&body, 0) & 0xffff != FILL_MEMORY_COMMAND {
                    return Ok(Some(Block::Other { block_type }));
                }
                // meta_data_id u32, thread_id u64, memory_id u64, memory_offset u64, memory_size u64.
                short(36)?;
                let (memory, offset, len) = (le64(&body, 12), le64(&body, 20), le64(&body, 28));
                let data = if compressed {
                    self.decompress(&body[36..], len)?
                } else {
                    if body.len() as u64 - 36 != len {
                        return Err(GfxrError::Corrupt {
                            offset: start,
                            msg: format!("fill-memory command of {len} bytes carries {}", body.len() - 36),
                        });
                    }
                    body[36..].to_vec()
                };
                Ok(Some(Block::Fill { memory, offset, data }))
            }
            _ => Ok(Some(Block::Other { block_type })),
        }
    }
}

/// What a capture holds, memory-wise.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub compression: String,
    pub blocks: u64,
    pub calls: u64,
    pub submits: u64,
    pub flush_calls: u64,
    pub fill_commands: u64,
    pub fill_bytes: u64,
    pub file_bytes: u64,
}

/// Counts a capture's blocks, submits and fill-memory commands.
pub fn summarize(path: &Path) -> Result<Summary, GfxrError> {
    let mut r = GfxrReader::open(path)?;
    let mut s = Summary { compression: r.compression.name().into(), ..Summary::default() };
    s.file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    while let Some(b) = r.next_block()? {
        s.blocks += 1;
        match b {
            Block::Call { id, .. } => {
                s.calls += 1;
                if matches!(
                    id,
                    call::QUEUE_SUBMIT | call::QUEUE_SUBMIT2 | call::QUEUE_SUBMIT2_KHR | call::QUEUE_BIND_SPARSE
                ) {
                    s.submits += 1;
                }
                if id == call::FLUSH_MAPPED_MEMORY_RANGES {
                    s.flush_calls += 1;
                }
            }
            Block::Fill { data, .. } => {
                s.fill_commands += 1;
                s.fill_bytes += data.len() as u64;
            }
            Block::Other { .. } => {}
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
