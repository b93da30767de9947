//! `vkdirty dump --diff --alloc ID --at-submit A --against B`: the byte ranges of one allocation
//! whose captured contents differ between submit A and submit B, and a hexdump of the changed
//! bytes (at most `--max-dump`). One pass over the trace rebuilds both states (only the chunks of
//! that allocation that were written are held).

use std::path::Path;
use std::process::ExitCode;

use vkdirty::trace::{Checker, Replay, TraceReader};

use super::progress::Progress;
use super::{human_bytes, out, warn, CliError};

const STEP: usize = 64 << 10;
/// Changed stretches closer than this are listed as one range (bytes rewritten with the same
/// value inside a changed stretch would otherwise split it).
const GAP: u64 = 16;
/// Ranges listed at most.
const MAX_RANGES: usize = 1000;

/// Half-open byte ranges `[start, end)` where `a` and `b` differ (gaps up to [`GAP`] bridged),
/// coalesced across calls; `bytes` counts the differing bytes exactly.
fn changed(a: &[u8], b: &[u8], base: u64, ranges: &mut Vec<(u64, u64)>, bytes: &mut u64) {
    let mut i = 0;
    while i < a.len() {
        if a[i] == b[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < a.len() && a[i] != b[i] {
            i += 1;
        }
        let (s, e) = (base + start as u64, base + i as u64);
        *bytes += e - s;
        match ranges.last_mut() {
            Some(last) if s - last.1 <= GAP => last.1 = e,
            _ => ranges.push((s, e)),
        }
    }
}

fn hex_line(o: &mut String, tag: char, off: u64, bytes: &[u8], other: &[u8]) {
    use std::fmt::Write;
    let _ = write!(o, "{tag} {off:010x} ");
    for (i, (x, y)) in bytes.iter().zip(other).enumerate() {
        if i == 8 {
            o.push(' ');
        }
        // Unchanged bytes are dimmed to dots so the changes stand out.
        if x == y {
            o.push_str(" ..");
        } else {
            let _ = write!(o, " {x:02x}");
        }
    }
    for i in bytes.len()..16 {
        if i == 8 {
            o.push(' ');
        }
        o.push_str("   ");
    }
    o.push_str("  |");
    o.extend(bytes.iter().map(|&c| if c.is_ascii_graphic() || c == b' ' { c as char } else { '.' }));
    o.push_str("|\n");
}

pub fn run(file: &Path, alloc: u64, a: u64, b: u64, max_dump: u64) -> Result<ExitCode, CliError> {
    let mut ra = Replay::new().only_alloc(alloc).up_to_submit(a);
    let mut rb = Replay::new().only_alloc(alloc).up_to_submit(b);
    // Salvaging, as `dump` reads: damaged ranges and inconsistent records are skipped.
    let mut r = TraceReader::open(file)?.salvage(true);
    let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let mut progress = Progress::new(len, "replaying");
    let mut checker = Checker::new();
    checker.follow(&mut r, |block, ok| {
        progress.set(block.offset + block.file_len());
        if let (Some(ev), true) = (&block.event, ok) {
            ra.apply(ev, block.offset)?;
            rb.apply(ev, block.offset)?;
        }
        Ok(())
    })?;
    drop(progress);
    for i in checker.affecting(alloc, Some(a.max(b))) {
        warn(format!(
            "{}: allocation {alloc} may miss writes after submit {}, so the difference may be incomplete",
            i.damage, i.intact_through
        ));
    }
    let Some(size) = ra.size(alloc) else {
        return Err(CliError::Msg(format!(
            "{}: no allocation {alloc} in the trace (it has {})",
            file.display(),
            super::dump::id_list(ra.recorded_allocations())
        )));
    };
    // A damaged trace may have lost submit records: then the numbers are taken as given.
    if checker.impacts().is_empty() {
        super::dump::check_submit(file, "--at-submit", a, ra.last_submit())?;
        super::dump::check_submit(file, "--against", b, ra.last_submit())?;
    }
    if let Some(t) = r.truncation() {
        warn(t);
    }
    let mut ranges = Vec::new();
    let mut total = 0u64;
    let (mut ba, mut bb) = (vec![0u8; STEP], vec![0u8; STEP]);
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(STEP as u64) as usize;
        ra.read(alloc, off, &mut ba[..n]);
        rb.read(alloc, off, &mut bb[..n]);
        changed(&ba[..n], &bb[..n], off, &mut ranges, &mut total);
        off += n as u64;
    }
    let mut o = format!(
        "allocation {alloc} ({}): {} bytes in {} ranges differ between submit {a} and submit {b}\n",
        human_bytes(size),
        total,
        ranges.len()
    );
    for &(s, e) in ranges.iter().take(MAX_RANGES) {
        o.push_str(&format!("  {s:#x}..{e:#x} ({} bytes)\n", e - s));
    }
    if ranges.len() > MAX_RANGES {
        o.push_str(&format!("  ... and {} more ranges\n", ranges.len() - MAX_RANGES));
    }
    // Hexdump: 16-byte lines holding changed bytes, "-" as of A, "+" as of B.
    let mut shown = 0u64;
    let mut line_a = [0u8; 16];
    let mut line_b = [0u8; 16];
    'outer: for &(s, e) in &ranges {
        o.push('\n');
        let mut line = s & !15;
        while line < e {
            if shown >= max_dump {
                o.push_str(&format!("... hexdump stops after {max_dump} changed bytes (--max-dump)\n"));
                break 'outer;
            }
            let n = (size - line).min(16) as usize;
            ra.read(alloc, line, &mut line_a[..n]);
            rb.read(alloc, line, &mut line_b[..n]);
            hex_line(&mut o, '-', line, &line_a[..n], &line_b[..n]);
            hex_line(&mut o, '+', line, &line_b[..n], &line_a[..n]);
            shown += line_a[..n].iter().zip(&line_b[..n]).filter(|(x, y)| x != y).count() as u64;
            line += 16;
        }
    }
    out(|w| w.write_all(o.as_bytes()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn changed_ranges_coalesce_across_chunks() {
        let (mut r, mut n) = (Vec::new(), 0);
        super::changed(&[0, 1, 1, 0], &[0, 2, 2, 2], 0, &mut r, &mut n);
        super::changed(&[5, 0, 3], &[6, 0, 3], 4, &mut r, &mut n);
        assert_eq!((r.clone(), n), (vec![(1, 5)], 4));
        // A one-byte equal gap is bridged; a long equal stretch is not.
        super::changed(&[1; 40], &[[2u8; 2].as_slice(), &[1; 30], &[2; 8]].concat(), 100, &mut r, &mut n);
        assert_eq!(r, vec![(1, 5), (100, 102), (132, 140)]);
        assert_eq!(n, 14);
    }
}
