//! On-disk layout: file header, block header, and the payload encoding of each [`Event`].
//! docs/trace-format.md is the normative description; this file must match it.

use super::{Allocation, Dirty, Event, Map, Session, SessionSetting, Submit, Totals, TraceError};
use crate::guard::BackendKind;

/// First 8 bytes of every trace.
pub const MAGIC: [u8; 8] = *b"VKDIRTY\0";
/// Format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of a block header: type u16, flags u16, stored length u32, raw length u32, CRC u32.
pub const BLOCK_HEADER_LEN: usize = 16;
/// Largest stored or raw payload a reader accepts; bounds the memory a corrupt length can claim.
pub const MAX_PAYLOAD: u32 = 64 << 20;
/// Block flag: the stored payload is one lz4 block (raw length in the header).
pub const FLAG_LZ4: u16 = 1;
/// Flags this build understands.
pub const KNOWN_FLAGS: u16 = FLAG_LZ4;
/// Fixed part of a Dirty payload: alloc u64, submit u64, run count u32.
pub const DIRTY_PREFIX_LEN: usize = 20;
/// Bytes of one run in the Dirty runs table: offset u64, length u64.
pub const RUN_LEN: usize = 16;

/// Block type codes. Readers skip codes they do not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum BlockType {
    Session = 1,
    Allocation = 2,
    Map = 3,
    Unmap = 4,
    Free = 5,
    Flush = 6,
    Dirty = 7,
    Submit = 8,
    Frame = 9,
    CaptureStart = 10,
    CaptureStop = 11,
    End = 12,
    Compared = 13,
    Trusted = 14,
}

impl BlockType {
    pub const ALL: [BlockType; 14] = [
        BlockType::Session,
        BlockType::Allocation,
        BlockType::Map,
        BlockType::Unmap,
        BlockType::Free,
        BlockType::Flush,
        BlockType::Dirty,
        BlockType::Submit,
        BlockType::Frame,
        BlockType::CaptureStart,
        BlockType::CaptureStop,
        BlockType::End,
        BlockType::Compared,
        BlockType::Trusted,
    ];

    pub fn code(self) -> u16 {
        self as u16
    }

    pub fn from_code(code: u16) -> Option<BlockType> {
        BlockType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Lower-case name used by `vkdirty events`.
    pub fn name(self) -> &'static str {
        match self {
            BlockType::Session => "session",
            BlockType::Allocation => "allocation",
            BlockType::Map => "map",
            BlockType::Unmap => "unmap",
            BlockType::Free => "free",
            BlockType::Flush => "flush",
            BlockType::Dirty => "dirty",
            BlockType::Submit => "submit",
            BlockType::Frame => "frame",
            BlockType::CaptureStart => "capture-start",
            BlockType::CaptureStop => "capture-stop",
            BlockType::End => "end",
            BlockType::Compared => "compared",
            BlockType::Trusted => "trusted",
        }
    }

    pub fn of(ev: &Event) -> BlockType {
        match ev {
            Event::Session(_) => BlockType::Session,
            Event::Allocation(_) => BlockType::Allocation,
            Event::Map(_) => BlockType::Map,
            Event::Unmap { .. } => BlockType::Unmap,
            Event::Free { .. } => BlockType::Free,
            Event::Flush { .. } => BlockType::Flush,
            Event::Dirty(_) => BlockType::Dirty,
            Event::Submit(_) => BlockType::Submit,
            Event::Frame { .. } => BlockType::Frame,
            Event::CaptureStart { .. } => BlockType::CaptureStart,
            Event::CaptureStop { .. } => BlockType::CaptureStop,
            Event::End(_) => BlockType::End,
            Event::Compared { .. } => BlockType::Compared,
            Event::Trusted { .. } => BlockType::Trusted,
        }
    }
}

/// Per-block compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    None,
    #[default]
    Lz4,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
        }
    }

    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "none" => Some(Compression::None),
            "lz4" => Some(Compression::Lz4),
            _ => None,
        }
    }
}

/// The decoded file header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub version: u16,
    /// Page size of the machine that wrote the trace.
    pub page_size: u32,
    /// Nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// E.g. "vkdirty 0.1.0".
    pub writer_version: String,
    /// Encoded length of the header, i.e. the file offset of the first block.
    pub len: u32,
}

/// Fixed part of the header before the writer version string.
const HEADER_FIXED: usize = 26;

impl FileHeader {
    /// A header for a trace written now by this build.
    pub fn new(page_size: u32) -> FileHeader {
        let created_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let writer_version = format!("vkdirty {}", env!("CARGO_PKG_VERSION"));
        let len = (HEADER_FIXED + writer_version.len() + 4) as u32;
        FileHeader { version: FORMAT_VERSION, page_size, created_ns, writer_version, len }
    }

    pub fn encode(&self) -> Vec<u8> {
        let ver = &self.writer_version.as_bytes()[..self.writer_version.len().min(u16::MAX as usize)];
        let len = HEADER_FIXED + ver.len() + 4;
        let mut b = Vec::with_capacity(len);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&(len as u16).to_le_bytes());
        b.extend_from_slice(&self.page_size.to_le_bytes());
        b.extend_from_slice(&self.created_ns.to_le_bytes());
        b.extend_from_slice(&(ver.len() as u16).to_le_bytes());
        b.extend_from_slice(ver);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Bytes needed before [`FileHeader::decode`] can know the full length.
    pub const PREFIX_LEN: usize = 12;

    /// Length of the whole header, from its first [`FileHeader::PREFIX_LEN`] bytes.
    pub fn decode_len(prefix: &[u8]) -> Result<usize, TraceError> {
        if prefix.len() < Self::PREFIX_LEN || prefix[..8] != MAGIC {
            return Err(TraceError::BadMagic);
        }
        let version = u16::from_le_bytes([prefix[8], prefix[9]]);
        if version != FORMAT_VERSION {
            return Err(TraceError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
        }
        let len = u16::from_le_bytes([prefix[10], prefix[11]]) as usize;
        if len < HEADER_FIXED + 4 {
            return Err(TraceError::corrupt(10, format!("file header length {len} is too small")));
        }
        Ok(len)
    }

    /// Decodes a complete header (`bytes.len()` as given by [`FileHeader::decode_len`]).
    pub fn decode(bytes: &[u8]) -> Result<FileHeader, TraceError> {
        let len = Self::decode_len(bytes)?;
        if bytes.len() != len {
            return Err(TraceError::corrupt(0, "file header incomplete"));
        }
        let stored = u32::from_le_bytes(bytes[len - 4..].try_into().expect("4 bytes"));
        let computed = crc32fast::hash(&bytes[..len - 4]);
        if stored != computed {
            return Err(TraceError::corrupt(
                (len - 4) as u64,
                format!("file header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"),
            ));
        }
        let mut c = Cursor::new(&bytes[12..len - 4], 12);
        let page_size = c.u32()?;
        let created_ns = c.u64()?;
        let vlen = c.u16()? as usize;
        let writer_version = c.str_bytes(vlen)?;
        // Bytes after the version string are reserved for later fields.
        Ok(FileHeader { version: FORMAT_VERSION, page_size, created_ns, writer_version, len: len as u32 })
    }
}

/// A block header as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    pub type_code: u16,
    pub flags: u16,
    pub stored_len: u32,
    pub raw_len: u32,
    pub crc: u32,
}

impl BlockHeader {
    pub fn encode(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut b = [0u8; BLOCK_HEADER_LEN];
        b[0..2].copy_from_slice(&self.type_code.to_le_bytes());
        b[2..4].copy_from_slice(&self.flags.to_le_bytes());
        b[4..8].copy_from_slice(&self.stored_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.raw_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; BLOCK_HEADER_LEN]) -> BlockHeader {
        BlockHeader {
            type_code: u16::from_le_bytes([b[0], b[1]]),
            flags: u16::from_le_bytes([b[2], b[3]]),
            stored_len: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            raw_len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            crc: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }

    /// CRC-32 over the header's first 12 bytes and the stored payload, so a damaged type or
    /// length is caught as surely as damaged data.
    pub fn compute_crc(type_code: u16, flags: u16, stored_len: u32, raw_len: u32, stored: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        let mut pre = [0u8; 12];
        pre[0..2].copy_from_slice(&type_code.to_le_bytes());
        pre[2..4].copy_from_slice(&flags.to_le_bytes());
        pre[4..8].copy_from_slice(&stored_len.to_le_bytes());
        pre[8..12].copy_from_slice(&raw_len.to_le_bytes());
        h.update(&pre);
        h.update(stored);
        h.finalize()
    }
}

/// Pages of `page_size` touched by `runs` (allocation offsets). `last_page` carries the last
/// page counted across calls, so a page shared by consecutive runs (or consecutive blocks of the
/// same allocation and submit) counts once.
pub fn count_pages(runs: &[(u64, u64)], page_size: u64, last_page: &mut Option<u64>) -> u64 {
    let ps = page_size.max(1);
    let mut n = 0;
    for &(off, len) in runs {
        if len == 0 {
            continue;
        }
        let first = off / ps;
        let last = off.saturating_add(len - 1) / ps;
        n += last - first + 1;
        if *last_page == Some(first) {
            n -= 1;
        }
        *last_page = Some(last);
    }
    n
}

// ---- payload encoding ----

/// The map record's backend code. Stable: traces written by every version read alike (4, the
/// `host-import` code, is [`BackendKind::OwnedWp`]).
fn backend_code(k: BackendKind) -> u8 {
    match k {
        BackendKind::AsyncWp => 1,
        BackendKind::Shadow => 2,
        BackendKind::ShadowWp => 3,
        BackendKind::OwnedWp => 4,
        BackendKind::Full => 5,
        BackendKind::Assisted => 6,
    }
}

fn backend_of_code(c: u8) -> Option<BackendKind> {
    BackendKind::ALL.into_iter().find(|k| backend_code(*k) == c)
}

fn put_u8(b: &mut Vec<u8>, v: u8) {
    b.push(v);
}
fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_str(b: &mut Vec<u8>, s: &str) {
    put_u32(b, s.len() as u32);
    b.extend_from_slice(s.as_bytes());
}
fn put_ranges(b: &mut Vec<u8>, r: &[(u64, u64)]) {
    put_u32(b, r.len() as u32);
    for &(o, l) in r {
        put_u64(b, o);
        put_u64(b, l);
    }
}

/// Appends the payload of `ev` to `out`.
pub fn encode_payload(ev: &Event, out: &mut Vec<u8>) {
    match ev {
        Event::Session(s) => {
            put_u32(out, s.pid);
            put_u32(out, s.vendor_id);
            put_u32(out, s.device_id);
            put_u32(out, s.driver_version);
            put_u32(out, s.api_version);
            put_str(out, &s.process_name);
            put_str(out, &s.app_name);
            put_str(out, &s.engine_name);
            put_str(out, &s.device_name);
            // Later field: absent in older traces.
            put_u32(out, s.settings.len() as u32);
            for x in &s.settings {
                put_str(out, &x.name);
                put_str(out, &x.value);
                put_str(out, &x.from);
            }
        }
        Event::Allocation(a) => {
            put_u64(out, a.id);
            put_u64(out, a.handle);
            put_u64(out, a.device);
            put_u64(out, a.size);
            put_u32(out, a.memory_type);
            put_u32(out, a.property_flags);
            put_u32(out, a.heap);
        }
        Event::Map(m) => {
            put_u64(out, m.alloc);
            put_u64(out, m.offset);
            put_u64(out, m.size);
            put_u64(out, m.app_ptr);
            put_u8(out, backend_code(m.backend));
            put_str(out, &m.reason);
        }
        Event::Unmap { alloc } | Event::Free { alloc } => put_u64(out, *alloc),
        Event::Compared { alloc, submit, ranges } | Event::Trusted { alloc, submit, ranges } => {
            put_u64(out, *alloc);
            put_u64(out, *submit);
            put_ranges(out, ranges);
        }
        Event::Flush { alloc, ranges } => {
            put_u64(out, *alloc);
            put_ranges(out, ranges);
        }
        Event::Dirty(d) => {
            put_u64(out, d.alloc);
            put_u64(out, d.submit);
            put_u32(out, d.runs.len() as u32);
            out.extend_from_slice(&d.data);
            for &(o, l) in &d.runs {
                put_u64(out, o);
                put_u64(out, l);
            }
        }
        Event::Submit(s) => {
            put_u64(out, s.device);
            put_u64(out, s.queue);
            put_u64(out, s.seq);
            put_u64(out, s.timestamp_ns);
            put_u32(out, s.command_buffers);
            put_u32(out, s.waits);
            put_u32(out, s.signals);
            put_u8(out, s.kind);
        }
        Event::Frame { frame, last_submit, timestamp_ns } => {
            put_u64(out, *frame);
            put_u64(out, *last_submit);
            put_u64(out, *timestamp_ns);
        }
        Event::CaptureStart { frame, submit } | Event::CaptureStop { frame, submit } => {
            put_u64(out, *frame);
            put_u64(out, *submit);
        }
        Event::End(t) => {
            put_u64(out, t.submits);
            put_u64(out, t.frames);
            put_u64(out, t.dirty_pages);
            put_u64(out, t.dirty_bytes);
            put_u64(out, t.writer_stalls);
        }
    }
}

/// Bounds-checked little-endian reads from a payload; errors name the file offset.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    /// File offset of `b[0]` (payload offsets are exact only for uncompressed blocks).
    base: u64,
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8], base: u64) -> Self {
        Cursor { b, pos: 0, base }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TraceError> {
        if self.b.len() - self.pos < n {
            return Err(TraceError::corrupt(
                self.base,
                format!(
                    "payload too short: need {n} bytes at payload offset {}, {} left",
                    self.pos,
                    self.b.len() - self.pos
                ),
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, TraceError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, TraceError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, TraceError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, TraceError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn str_bytes(&mut self, n: usize) -> Result<String, TraceError> {
        let base = self.base;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| TraceError::corrupt(base, "string is not UTF-8"))
    }
    fn str(&mut self) -> Result<String, TraceError> {
        let n = self.u32()? as usize;
        self.str_bytes(n)
    }
    fn ranges(&mut self) -> Result<Vec<(u64, u64)>, TraceError> {
        let n = self.u32()? as usize;
        if n.checked_mul(RUN_LEN).map_or(true, |b| b > self.b.len() - self.pos) {
            return Err(TraceError::corrupt(self.base, format!("range count {n} exceeds the payload")));
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push((self.u64()?, self.u64()?));
        }
        Ok(v)
    }
}

/// Decodes the payload of a block of known type `ty`. `base` is the block's file offset, used in
/// error messages. Bytes after the known fields are ignored (room for later fields), except in
/// Dirty blocks whose layout is exact.
pub fn decode_payload(ty: BlockType, p: &[u8], base: u64) -> Result<Event, TraceError> {
    let mut c = Cursor::new(p, base);
    let ev = match ty {
        BlockType::Session => Event::Session(Session {
            pid: c.u32()?,
            vendor_id: c.u32()?,
            device_id: c.u32()?,
            driver_version: c.u32()?,
            api_version: c.u32()?,
            process_name: c.str()?,
            app_name: c.str()?,
            engine_name: c.str()?,
            device_name: c.str()?,
            settings: if c.pos < c.b.len() {
                let n = c.u32()? as usize;
                // Each entry takes at least 12 bytes: a corrupt count cannot claim much memory.
                if n.saturating_mul(12) > c.b.len() - c.pos {
                    return Err(TraceError::corrupt(base, format!("setting count {n} exceeds the payload")));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(SessionSetting { name: c.str()?, value: c.str()?, from: c.str()? });
                }
                v
            } else {
                Vec::new()
            },
        }),
        BlockType::Allocation => Event::Allocation(Allocation {
            id: c.u64()?,
            handle: c.u64()?,
            device: c.u64()?,
            size: c.u64()?,
            memory_type: c.u32()?,
            property_flags: c.u32()?,
            heap: c.u32()?,
        }),
        BlockType::Map => {
            let alloc = c.u64()?;
            let offset = c.u64()?;
            let size = c.u64()?;
            let app_ptr = c.u64()?;
            let code = c.u8()?;
            let backend = backend_of_code(code)
                .ok_or_else(|| TraceError::corrupt(base, format!("unknown backend code {code}")))?;
            Event::Map(Map { alloc, offset, size, app_ptr, backend, reason: c.str()? })
        }
        BlockType::Unmap => Event::Unmap { alloc: c.u64()? },
        BlockType::Free => Event::Free { alloc: c.u64()? },
        BlockType::Flush => Event::Flush { alloc: c.u64()?, ranges: c.ranges()? },
        BlockType::Compared => Event::Compared { alloc: c.u64()?, submit: c.u64()?, ranges: c.ranges()? },
        BlockType::Trusted => Event::Trusted { alloc: c.u64()?, submit: c.u64()?, ranges: c.ranges()? },
        BlockType::Dirty => return decode_dirty(p, base).map(Event::Dirty),
        BlockType::Submit => Event::Submit(Submit {
            device: c.u64()?,
            queue: c.u64()?,
            seq: c.u64()?,
            timestamp_ns: c.u64()?,
            command_buffers: c.u32()?,
            waits: c.u32()?,
            signals: c.u32()?,
            kind: c.u8()?,
        }),
        BlockType::Frame => Event::Frame { frame: c.u64()?, last_submit: c.u64()?, timestamp_ns: c.u64()? },
        BlockType::CaptureStart => Event::CaptureStart { frame: c.u64()?, submit: c.u64()? },
        BlockType::CaptureStop => Event::CaptureStop { frame: c.u64()?, submit: c.u64()? },
        BlockType::End => Event::End(Totals {
            submits: c.u64()?,
            frames: c.u64()?,
            dirty_pages: c.u64()?,
            dirty_bytes: c.u64()?,
            writer_stalls: c.u64()?,
        }),
    };
    Ok(ev)
}

/// Dirty payload: prefix (alloc, submit, run count), the runs' bytes, then the runs table. The
/// table sits at the end so the writer can stream bytes in before it knows the run count.
fn decode_dirty(p: &[u8], base: u64) -> Result<Dirty, TraceError> {
    let mut c = Cursor::new(p, base);
    let alloc = c.u64()?;
    let submit = c.u64()?;
    let n = c.u32()? as usize;
    let body = &p[DIRTY_PREFIX_LEN..];
    let table_len = n
        .checked_mul(RUN_LEN)
        .filter(|&t| t <= body.len())
        .ok_or_else(|| TraceError::corrupt(base, format!("dirty run count {n} exceeds the payload")))?;
    let data = &body[..body.len() - table_len];
    let mut t = Cursor::new(&body[data.len()..], base);
    let mut runs = Vec::with_capacity(n);
    let mut total: u64 = 0;
    for _ in 0..n {
        let (o, l) = (t.u64()?, t.u64()?);
        if o.checked_add(l).is_none() {
            return Err(TraceError::corrupt(base, format!("dirty run {o:#x}+{l:#x} overflows")));
        }
        total = total.saturating_add(l);
        runs.push((o, l));
    }
    if total != data.len() as u64 {
        return Err(TraceError::corrupt(
            base,
            format!("dirty runs cover {total} bytes but the block holds {}", data.len()),
        ));
    }
    Ok(Dirty { alloc, submit, runs, data: data.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_settings_are_a_later_field() {
        let s = Session {
            pid: 1,
            process_name: "p".into(),
            settings: vec![SessionSetting {
                name: "BACKEND".into(),
                value: "full".into(),
                from: "VKDIRTY_BACKEND".into(),
            }],
            ..Session::default()
        };
        let mut with = Vec::new();
        encode_payload(&Event::Session(s.clone()), &mut with);
        assert_eq!(decode_payload(BlockType::Session, &with, 0).unwrap(), Event::Session(s.clone()));
        // A trace written before settings were recorded ends after the device name.
        let mut old = Vec::new();
        encode_payload(&Event::Session(Session { settings: Vec::new(), ..s.clone() }), &mut old);
        old.truncate(old.len() - 4);
        assert_eq!(
            decode_payload(BlockType::Session, &old, 0).unwrap(),
            Event::Session(Session { settings: Vec::new(), ..s })
        );
        // A count the payload cannot hold is an error, not an allocation.
        let mut bad = old.clone();
        bad.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_payload(BlockType::Session, &bad, 0).is_err());
    }

    #[test]
    fn backend_codes_are_stable() {
        // Traces store these numbers: they may never change.
        let pinned = [
            (1, BackendKind::AsyncWp, "async-wp"),
            (2, BackendKind::Shadow, "shadow"),
            (3, BackendKind::ShadowWp, "shadow-wp"),
            (4, BackendKind::OwnedWp, "host-import"),
            (5, BackendKind::Full, "full"),
            (6, BackendKind::Assisted, "assisted"),
        ];
        assert_eq!(pinned.len(), BackendKind::ALL.len());
        for (code, kind, name) in pinned {
            let m = Map { alloc: 1, offset: 2, size: 3, app_ptr: 4, backend: kind, reason: "r".into() };
            let mut p = Vec::new();
            encode_payload(&Event::Map(m.clone()), &mut p);
            assert_eq!(p[32], code, "{kind:?}");
            assert_eq!(decode_payload(BlockType::Map, &p, 0).unwrap(), Event::Map(m));
            assert_eq!(kind.name(), name);
        }
        let mut p = Vec::new();
        let m = Map { alloc: 1, offset: 2, size: 3, app_ptr: 4, backend: BackendKind::Full, reason: String::new() };
        encode_payload(&Event::Map(m), &mut p);
        p[32] = 7;
        assert!(decode_payload(BlockType::Map, &p, 0).is_err(), "an unknown code is an error");
    }
}
