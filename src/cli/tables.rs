//! The per-allocation, per-frame and per-submit tables of `vkdirty info --by`.

use serde_json::Value;
use vkdirty::trace::stats::{AllocStats, Stats};

use super::human_bytes;

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_and_flags() {
        assert_eq!(super::id_ranges(&[1, 2, 3, 5, 7, 8]), "1-3, 5, 7-8");
        assert_eq!(super::id_ranges(&[]), "");
        assert_eq!(super::short_flags(0xf), "DL HV HC HCa");
        assert_eq!(super::short_flags(0x21), "DL PROTECTED");
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    Allocation,
    Frame,
    Submit,
}

impl By {
    pub fn key(self) -> &'static str {
        match self {
            By::Allocation => "by_allocation",
            By::Frame => "by_frame",
            By::Submit => "by_submit",
        }
    }
}

/// The summary's JSON object plus the chosen table as an array.
pub fn json(st: &Stats, by: By) -> serde_json::Result<Value> {
    let mut v = serde_json::to_value(&st.summary)?;
    let rows = match by {
        By::Allocation => serde_json::to_value(&st.allocations)?,
        By::Frame => serde_json::to_value(&st.frames)?,
        By::Submit => serde_json::to_value(&st.submits)?,
    };
    if let Value::Object(m) = &mut v {
        m.insert(by.key().into(), rows);
        if by == By::Submit || by == By::Frame {
            m.insert("capture_windows".into(), serde_json::to_value(&st.captures)?);
        }
    }
    Ok(v)
}

/// "opt" for a submit number.
fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |n| n.to_string())
}

/// Backends of an allocation's mappings: "async-wp x3" or "none".
pub fn backends(a: &AllocStats) -> String {
    if a.backends.is_empty() {
        return "unmapped".into();
    }
    let mut names: Vec<(String, u64)> = Vec::new();
    for b in &a.backends {
        match names.iter_mut().find(|n| n.0 == b.backend) {
            Some(n) => n.1 += b.maps,
            None => names.push((b.backend.clone(), b.maps)),
        }
    }
    names.iter().map(|(n, c)| if *c == 1 { n.clone() } else { format!("{n} x{c}") }).collect::<Vec<_>>().join(", ")
}

/// "1-7, 9, 11-12" from ascending ids.
fn id_ranges(ids: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { ids[i].to_string() } else { format!("{}-{}", ids[i], ids[j]) });
        i = j + 1;
    }
    parts.join(", ")
}

/// Short `VkMemoryPropertyFlags` for the terminal: DL HV HC HCa (device-local, host-visible,
/// host-coherent, host-cached), then the rarer ones by name.
fn short_flags(flags: u32) -> String {
    const SHORT: [(u32, &str); 4] = [(0x1, "DL"), (0x2, "HV"), (0x4, "HC"), (0x8, "HCa")];
    let mut v: Vec<String> = SHORT.iter().filter(|(b, _)| flags & b != 0).map(|(_, n)| n.to_string()).collect();
    let rest = flags & !0xf;
    if rest != 0 {
        v.push(vkdirty::trace::stats::memory_flags(rest));
    }
    if v.is_empty() {
        "-".into()
    } else {
        v.join(" ")
    }
}

/// Left-aligned first column, the others right-aligned.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            let pad = w[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if i == 0 || head[i] == "backend" || head[i] == "flags" {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut o = line(&mut head.iter().copied());
    for r in rows {
        o.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    o
}

pub fn render(st: &Stats, by: By) -> String {
    match by {
        By::Allocation => {
            let head = [
                "alloc",
                "size",
                "type",
                "heap",
                "flags",
                "maps",
                "dirty pages",
                "dirty bytes",
                "first",
                "last",
                "share",
                "backend",
            ];
            let rows: Vec<Vec<String>> = st
                .allocations
                .iter()
                .map(|a| {
                    vec![
                        a.id.to_string(),
                        human_bytes(a.size),
                        a.memory_type.to_string(),
                        a.heap.to_string(),
                        short_flags(a.property_flags),
                        a.maps.to_string(),
                        a.dirty_pages.to_string(),
                        human_bytes(a.dirty_bytes),
                        opt(a.first_submit),
                        opt(a.last_submit),
                        format!("{:.1}%", a.share * 100.0),
                        backends(a),
                    ]
                })
                .collect();
            let mut o = table(&head, &rows);
            o.push_str("flags: DL device-local, HV host-visible, HC host-coherent, HCa host-cached\n");
            // Each distinct (backend, why) once, with the allocations that got it.
            let mut why: Vec<(&str, &str, Vec<u64>)> = Vec::new();
            for a in &st.allocations {
                for b in &a.backends {
                    match why.iter_mut().find(|w| w.0 == b.backend && w.1 == b.reason) {
                        Some(w) => w.2.push(a.id),
                        None => why.push((&b.backend, &b.reason, vec![a.id])),
                    }
                }
            }
            if !why.is_empty() {
                o.push_str("\nwhy these backends:\n");
                for (backend, reason, ids) in why {
                    let reason = if reason.is_empty() { "no reason recorded" } else { reason };
                    o.push_str(&format!("  {backend}: {reason} (allocations {})\n", id_ranges(&ids)));
                }
            }
            o
        }
        By::Frame => {
            let head = ["frame", "submits", "first", "last", "dirty pages", "dirty bytes", "trace bytes"];
            let rows: Vec<Vec<String>> = st
                .frames
                .iter()
                .map(|f| {
                    vec![
                        f.frame.to_string(),
                        f.submits.to_string(),
                        f.first_submit.to_string(),
                        f.last_submit.to_string(),
                        f.dirty_pages.to_string(),
                        human_bytes(f.dirty_bytes),
                        human_bytes(f.trace_bytes),
                    ]
                })
                .collect();
            table(&head, &rows)
        }
        By::Submit => {
            let t0 = st.submits.iter().find_map(|s| s.timestamp_ns);
            let head = ["submit", "frame", "time ms", "dirty pages", "dirty bytes", "trace bytes"];
            let rows: Vec<Vec<String>> = st
                .submits
                .iter()
                .map(|s| {
                    let ms = match (s.timestamp_ns, t0) {
                        (Some(t), Some(t0)) => format!("{:.3}", t.saturating_sub(t0) as f64 / 1e6),
                        _ => "-".into(),
                    };
                    vec![
                        s.seq.to_string(),
                        s.frame.to_string(),
                        ms,
                        s.dirty_pages.to_string(),
                        human_bytes(s.dirty_bytes),
                        human_bytes(s.trace_bytes),
                    ]
                })
                .collect();
            table(&head, &rows)
        }
    }
}
