//! Reads a gfxreconstruct capture file (`.gfxr`) far enough to size its memory data: the
//! fill-memory metadata blocks that carry mapped-memory bytes, next to everything else.
//!
//! Layout (all little-endian, packed to 4): file header `fourcc "GFXR", major u32, minor u32,
//! option count u32`, then `count` pairs of u32; then blocks, each `size u64` (bytes after this
//! 12-byte header), `type u32` (bit 31 = compressed payload). A metadata block (type 3) starts
//! with `meta id u32` (API family << 16 | kind; kind 2 = fill memory), and a fill-memory command
//! continues with `thread u64, memory u64, offset u64, memory_size u64` (uncompressed bytes).

use std::io::{self, Read};

const FOURCC: [u8; 4] = *b"GFXR";
const COMPRESSED: u32 = 0x8000_0000;
const BLOCK_METADATA: u32 = 3;
const BLOCK_FUNCTION_CALL: u32 = 4;
const BLOCK_METHOD_CALL: u32 = 6;
const META_FILL_MEMORY: u32 = 2;
const BLOCK_HEADER: u64 = 12;
/// Bytes of a fill-memory command after the block header, before its data.
const FILL_HEADER_BODY: usize = 4 + 8 * 4;

#[derive(Debug, thiserror::Error)]
pub enum GfxrError {
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("not a gfxreconstruct capture (magic {0:02x?})")]
    BadMagic([u8; 4]),
    #[error("truncated at byte {0}: {1}")]
    Truncated(u64, &'static str),
}

/// Sizes found in one capture.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GfxrStats {
    pub file_bytes: u64,
    pub format_version: (u32, u32),
    pub compressed_blocks: u64,
    pub blocks: u64,
    /// Fill-memory commands: mapped-memory contents written to the capture.
    pub fill_blocks: u64,
    /// Their uncompressed memory bytes (what was captured, like for like with vkdirty's
    /// dirty bytes).
    pub fill_memory_bytes: u64,
    /// Their bytes in the file, headers included (compressed where the capture was).
    pub fill_block_bytes: u64,
    /// API-call blocks (function and method calls).
    pub call_blocks: u64,
    pub call_block_bytes: u64,
    /// Everything else (other metadata, markers, annotations).
    pub other_block_bytes: u64,
}

/// Reads exactly `buf.len()` bytes, or reports where the file ended.
fn fill<R: Read>(r: &mut R, buf: &mut [u8], at: u64, what: &'static str) -> Result<(), GfxrError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => GfxrError::Truncated(at, what),
        _ => GfxrError::Io(e),
    })
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// Skips `n` bytes by reading them (works on pipes too).
fn skip<R: Read>(r: &mut R, n: u64, at: u64) -> Result<(), GfxrError> {
    let got = io::copy(&mut r.by_ref().take(n), &mut io::sink())?;
    if got != n {
        return Err(GfxrError::Truncated(at + got, "block payload"));
    }
    Ok(())
}

pub fn scan<R: Read>(mut r: R) -> Result<GfxrStats, GfxrError> {
    let mut st = GfxrStats::default();
    let mut head = [0u8; 16];
    fill(&mut r, &mut head, 0, "file header")?;
    let magic: [u8; 4] = head[0..4].try_into().expect("4 bytes");
    if magic != FOURCC {
        return Err(GfxrError::BadMagic(magic));
    }
    st.format_version = (u32_at(&head, 4), u32_at(&head, 8));
    let options = u32_at(&head, 12) as u64;
    let mut pos = 16u64;
    skip(&mut r, options * 8, pos)?;
    pos += options * 8;

    loop {
        let mut bh = [0u8; BLOCK_HEADER as usize];
        // A clean end is an end exactly between blocks.
        let n = read_up_to(&mut r, &mut bh)?;
        if n == 0 {
            break;
        }
        if n < bh.len() {
            return Err(GfxrError::Truncated(pos + n as u64, "block header"));
        }
        let size = u64_at(&bh, 0);
        let ty = u32_at(&bh, 8);
        let on_disk = BLOCK_HEADER + size;
        st.blocks += 1;
        if ty & COMPRESSED != 0 {
            st.compressed_blocks += 1;
        }
        let base = ty & !COMPRESSED;
        let mut consumed = 0u64;
        if base == BLOCK_METADATA && size >= 4 {
            let mut id = [0u8; 4];
            fill(&mut r, &mut id, pos + BLOCK_HEADER, "metadata id")?;
            consumed = 4;
            if u32_at(&id, 0) & 0xffff == META_FILL_MEMORY {
                if size < FILL_HEADER_BODY as u64 {
                    return Err(GfxrError::Truncated(pos, "fill-memory block shorter than its header"));
                }
                let mut rest = [0u8; FILL_HEADER_BODY - 4];
                fill(&mut r, &mut rest, pos + BLOCK_HEADER + 4, "fill-memory header")?;
                consumed = FILL_HEADER_BODY as u64;
                st.fill_blocks += 1;
                st.fill_memory_bytes += u64_at(&rest, 24);
                st.fill_block_bytes += on_disk;
            } else {
                st.other_block_bytes += on_disk;
            }
        } else if base == BLOCK_FUNCTION_CALL || base == BLOCK_METHOD_CALL {
            st.call_blocks += 1;
            st.call_block_bytes += on_disk;
        } else {
            st.other_block_bytes += on_disk;
        }
        skip(&mut r, size - consumed, pos + BLOCK_HEADER + consumed)?;
        pos += on_disk;
    }
    st.file_bytes = pos;
    Ok(st)
}

fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, GfxrError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(options: u32) -> Vec<u8> {
        let mut v = b"GFXR".to_vec();
        for x in [0u32, 1, options] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for _ in 0..options {
            v.extend_from_slice(&1u32.to_le_bytes());
            v.extend_from_slice(&1u32.to_le_bytes());
        }
        v
    }

    fn block(v: &mut Vec<u8>, ty: u32, body: &[u8]) {
        v.extend_from_slice(&(body.len() as u64).to_le_bytes());
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(body);
    }

    fn fill_body(memory_size: u64, payload: usize) -> Vec<u8> {
        let mut b = ((1u32 << 16) | META_FILL_MEMORY).to_le_bytes().to_vec();
        for x in [9u64, 42, 4096, memory_size] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.extend(std::iter::repeat(0xab).take(payload));
        b
    }

    #[test]
    fn counts_fill_memory_and_calls() {
        let mut f = header(1);
        block(&mut f, BLOCK_FUNCTION_CALL, &[0; 20]);
        block(&mut f, BLOCK_METADATA, &fill_body(8192, 8192));
        block(&mut f, BLOCK_METADATA | COMPRESSED, &fill_body(65536, 100));
        block(&mut f, BLOCK_METADATA, &((1u32 << 16) | 3).to_le_bytes());
        block(&mut f, 1, &[0; 12]);
        let st = scan(&f[..]).unwrap();
        assert_eq!(st.file_bytes, f.len() as u64);
        assert_eq!(st.blocks, 5);
        assert_eq!(st.compressed_blocks, 1);
        assert_eq!(st.fill_blocks, 2);
        assert_eq!(st.fill_memory_bytes, 8192 + 65536);
        assert_eq!(st.fill_block_bytes, (12 + 36 + 8192) + (12 + 36 + 100));
        assert_eq!(st.call_blocks, 1);
        assert_eq!(st.call_block_bytes, 32);
        assert_eq!(st.other_block_bytes, 16 + 24);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(scan(&b"NOPE0000000000000000"[..]), Err(GfxrError::BadMagic(_))));
        assert!(matches!(scan(&b"GFX"[..]), Err(GfxrError::Truncated(0, _))));
        let mut f = header(0);
        block(&mut f, BLOCK_METADATA, &fill_body(8192, 8192));
        f.truncate(f.len() - 10);
        assert!(matches!(scan(&f[..]), Err(GfxrError::Truncated(..))));
        let mut g = header(0);
        g.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(scan(&g[..]), Err(GfxrError::Truncated(..))));
        // A fill-memory id in a block too short to hold its header.
        let mut h = header(0);
        block(&mut h, BLOCK_METADATA, &((1u32 << 16) | META_FILL_MEMORY).to_le_bytes());
        assert!(matches!(scan(&h[..]), Err(GfxrError::Truncated(..))));
    }
}
