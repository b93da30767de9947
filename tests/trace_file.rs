//! Opening trace files: never through a symlink, never onto a FIFO, device or another writer's
//! trace, never blocking; the name policy (next free name, refuse, overwrite).

mod trace_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use trace_common::tmp_path;
use vkdirty::trace::file::{is_being_written, numbered};
use vkdirty::trace::*;

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Runs `f` on a thread; fails the test if it does not return within 10 s (a blocked open).
fn promptly<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("{what} blocked"))
}

fn cleanup(paths: &[&Path]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn numbered_names() {
    assert_eq!(numbered(Path::new("/t/a.vkd"), 2), PathBuf::from("/t/a-2.vkd"));
    assert_eq!(numbered(Path::new("a"), 3), PathBuf::from("a-3"));
    assert_eq!(Existing::parse("overwrite"), Some(Existing::Overwrite));
    assert_eq!(Existing::parse("clobber"), None);
}

#[test]
fn a_new_name_is_created_0600_and_locked() {
    let p = tmp_path("new.vkd");
    let o = open_trace_file(&p, Existing::Refuse).unwrap();
    assert_eq!(o.path, p);
    assert!(o.note.is_none(), "{:?}", o.note);
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(is_being_written(&p), Some(true), "the writer holds the lock");
    drop(o);
    assert_eq!(is_being_written(&p), Some(false));
    cleanup(&[&p]);
}

#[test]
fn an_existing_file_gets_the_next_free_name() {
    let p = tmp_path("taken.vkd");
    std::fs::write(&p, b"someone else's").unwrap();
    std::fs::write(numbered(&p, 2), b"and another").unwrap();
    let o = open_trace_file(&p, Existing::Next).unwrap();
    assert_eq!(o.path, numbered(&p, 3));
    let note = o.note.clone().expect("the new name is reported");
    assert!(note.contains(&p.display().to_string()) && note.contains(&o.path.display().to_string()), "{note}");
    assert_eq!(read(&p), b"someone else's");
    assert_eq!(read(&numbered(&p, 2)), b"and another");
    cleanup(&[&p, &numbered(&p, 2), &numbered(&p, 3)]);
}

#[test]
fn refuse_leaves_the_existing_file_alone() {
    let p = tmp_path("refuse.vkd");
    std::fs::write(&p, b"keep").unwrap();
    let e = open_trace_file(&p, Existing::Refuse).unwrap_err().to_string();
    assert!(e.contains(&p.display().to_string()) && e.contains("refuse"), "{e}");
    assert_eq!(read(&p), b"keep");
    assert!(!numbered(&p, 2).exists());
    cleanup(&[&p]);
}

#[test]
fn overwrite_replaces_a_regular_file_but_not_its_hard_links() {
    let p = tmp_path("over.vkd");
    let link = tmp_path("over-link");
    std::fs::write(&p, b"old trace").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::hard_link(&p, &link).unwrap();
    let o = open_trace_file(&p, Existing::Overwrite).unwrap();
    assert_eq!(o.path, p);
    drop(o);
    assert_eq!(read(&p), b"", "a new, empty file");
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(read(&link), b"old trace", "the other name keeps its bytes");
    cleanup(&[&p, &link]);
}

#[test]
fn overwrite_refuses_a_trace_being_written() {
    let p = tmp_path("live.vkd");
    let live = TraceWriter::create(&p, WriterOptions::default()).unwrap();
    let e = open_trace_file(&p, Existing::Overwrite).unwrap_err().to_string();
    assert!(e.contains("being written"), "{e}");
    // The default policy gives the second writer its own file.
    let o = open_trace_file(&p, Existing::Next).unwrap();
    assert_eq!(o.path, numbered(&p, 2));
    live.close().unwrap();
    let (_, trunc) = TraceReader::open(&p).unwrap().events().unwrap();
    assert_eq!(trunc, None, "the live trace is whole");
    cleanup(&[&p, &numbered(&p, 2)]);
}

#[test]
fn symlinks_are_never_followed() {
    let target = tmp_path("victim");
    std::fs::write(&target, b"precious").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = tmp_path("link.vkd");
    std::os::unix::fs::symlink(&target, &p).unwrap();
    for policy in [Existing::Refuse, Existing::Overwrite] {
        let e = open_trace_file(&p, policy).unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()), "{policy:?}: {e}");
    }
    let o = open_trace_file(&p, Existing::Next).unwrap();
    assert_eq!(o.path, numbered(&p, 2));
    drop(o);
    // TraceWriter::create (overwrite) refuses it too.
    assert!(TraceWriter::create(&p, WriterOptions::default()).is_err());
    assert_eq!(read(&target), b"precious");
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o644, "not chmod'ed");
    // A dangling link: its target is not created.
    let dangling_target = tmp_path("never-created");
    let d = tmp_path("dangling.vkd");
    std::os::unix::fs::symlink(&dangling_target, &d).unwrap();
    let o = open_trace_file(&d, Existing::Next).unwrap();
    assert_eq!(o.path, numbered(&d, 2));
    assert!(!dangling_target.exists());
    cleanup(&[&target, &p, &numbered(&p, 2), &d, &numbered(&d, 2)]);
}

#[test]
fn a_fifo_never_blocks_and_is_never_written() {
    let p = tmp_path("fifo.vkd");
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for policy in [Existing::Refuse, Existing::Overwrite] {
        let p2 = p.clone();
        let r = promptly("opening a FIFO", move || open_trace_file(&p2, policy).map(|o| o.path));
        let e = r.unwrap_err().to_string();
        assert!(policy == Existing::Refuse || e.contains("FIFO"), "{e}");
    }
    let p2 = p.clone();
    let got = promptly("opening next to a FIFO", move || open_trace_file(&p2, Existing::Next).map(|o| o.path)).unwrap();
    assert_eq!(got, numbered(&p, 2));
    let p2 = p.clone();
    assert!(
        promptly("TraceWriter::create on a FIFO", move || TraceWriter::create(&p2, WriterOptions::default()).is_err())
    );
    cleanup(&[&p, &numbered(&p, 2)]);
}

#[test]
fn devices_and_directories_are_refused() {
    for policy in [Existing::Refuse, Existing::Overwrite] {
        assert!(open_trace_file(Path::new("/dev/null"), policy).is_err(), "{policy:?}");
    }
    let dir = tmp_path("a-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let e = open_trace_file(&dir, Existing::Overwrite).unwrap_err().to_string();
    assert!(e.contains("directory"), "{e}");
    std::fs::remove_dir(&dir).unwrap();
}

/// Many writers racing for one name (as a parent and its children do) each get their own file.
#[test]
fn racing_writers_never_share_a_file() {
    let p = tmp_path("race.vkd");
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let p = p.clone();
            std::thread::spawn(move || {
                let o = open_trace_file(&p, Existing::Next).unwrap();
                let w = TraceWriter::with_sink(o.file, o.path.display().to_string(), WriterOptions::default()).unwrap();
                w.record(&Event::Submit(Submit { seq: i + 1, ..Submit::default() }));
                w.close().unwrap();
                o.path
            })
        })
        .collect();
    let mut paths: Vec<PathBuf> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 16, "every writer has its own file");
    let mut seqs = Vec::new();
    for q in &paths {
        let (ev, trunc) = TraceReader::open(q).unwrap().events().unwrap();
        assert_eq!(trunc, None);
        match &ev[..] {
            [Event::Submit(s), Event::End(_)] => seqs.push(s.seq),
            other => panic!("{}: {other:?}", q.display()),
        }
        std::fs::remove_file(q).unwrap();
    }
    seqs.sort();
    assert_eq!(seqs, (1..=16).collect::<Vec<_>>());
}
