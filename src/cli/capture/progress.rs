//! The progress line of `vkdirty capture`: follows the trace as the layer writes it, reading only
//! block headers (16 bytes each), and counts submits and frames.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use vkdirty::trace::format::{BlockHeader, BlockType, FileHeader, BLOCK_HEADER_LEN, MAX_PAYLOAD};

/// Counts of the blocks seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub submits: u64,
    pub frames: u64,
    pub bytes: u64,
}

pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    /// Offset of the next block header (0: the file header is not read yet).
    next: u64,
    pub counts: Counts,
}

impl Follower {
    pub fn new(path: PathBuf) -> Follower {
        Follower { path, file: None, next: 0, counts: Counts::default() }
    }

    /// Reads whatever whole blocks were added since the last call. A file that is not there yet,
    /// or a partly written block, just ends this round.
    pub fn poll(&mut self) -> Counts {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else { return self.counts };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        self.counts.bytes = len;
        if self.next == 0 {
            let mut prefix = [0u8; FileHeader::PREFIX_LEN];
            if f.seek(SeekFrom::Start(0)).is_err() || f.read_exact(&mut prefix).is_err() {
                return self.counts;
            }
            match FileHeader::decode_len(&prefix) {
                Ok(n) => self.next = n as u64,
                Err(_) => return self.counts,
            }
        }
        while self.next + BLOCK_HEADER_LEN as u64 <= len {
            let mut h = [0u8; BLOCK_HEADER_LEN];
            if f.seek(SeekFrom::Start(self.next)).is_err() || f.read_exact(&mut h).is_err() {
                break;
            }
            let h = BlockHeader::decode(&h);
            if h.stored_len > MAX_PAYLOAD {
                break; // not a block: stop counting rather than guess
            }
            let end = self.next + BLOCK_HEADER_LEN as u64 + h.stored_len as u64;
            if end > len {
                break;
            }
            if h.type_code == BlockType::Submit.code() {
                self.counts.submits += 1;
            } else if h.type_code == BlockType::Frame.code() {
                self.counts.frames += 1;
            }
            self.next = end;
        }
        self.counts
    }
}

/// `1234 submits, 56 frames, 12.3 MiB written`.
pub fn line(c: Counts) -> String {
    format!("{} submits, {} frames, {} written", c.submits, c.frames, super::super::human_bytes(c.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vkdirty::trace::{Event, Submit, TraceWriter, WriterOptions};

    #[test]
    fn follows_a_trace_as_it_grows_and_stops_at_a_partial_block() {
        let dir = std::env::temp_dir().join(format!("vkdirty-progress-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.vkd");
        let mut f = Follower::new(path.clone());
        assert_eq!(f.poll(), Counts::default(), "no file yet");
        let w =
            TraceWriter::create(&path, WriterOptions { flush_every_submit: true, ..WriterOptions::default() }).unwrap();
        for seq in 1..=5 {
            w.record(&Event::Submit(Submit { seq, ..Submit::default() }));
            if seq % 2 == 0 {
                w.record(&Event::Frame { frame: seq / 2, last_submit: seq, timestamp_ns: 0 });
            }
        }
        w.close().unwrap();
        let c = f.poll();
        assert_eq!((c.submits, c.frames), (5, 2));
        assert_eq!(c.bytes, std::fs::metadata(&path).unwrap().len());
        // A block cut short is not counted until it is whole.
        let whole = std::fs::read(&path).unwrap();
        let cut = dir.join("cut.vkd");
        std::fs::write(&cut, &whole[..whole.len() - 3]).unwrap();
        let mut g = Follower::new(cut);
        let c = g.poll();
        assert_eq!((c.submits, c.frames), (5, 2), "the cut is in the end record");
        assert!(line(c).starts_with("5 submits, 2 frames, "));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
