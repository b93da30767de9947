//! The layer's import graph has no circle: reads every file under layer/src, takes the modules
//! each top-level module names (`crate::x`, `use crate::{x, y::z}`, and in the crate root its
//! own modules by name), and fails on a cycle, printing it. The expected order (docs/ARCHITECTURE.md):
//! crate root and `entry` → `hooks` → `capture`, `host_import`, ... → `dispatch` (the registry)
//! → `next`, `ffi`, `log`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level module a file under src/ belongs to ("lib" for the crate root).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Code without comments (line and doc comments; the layer has no block comments).
fn code(text: &str) -> String {
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

/// The top-level module names a file refers to through `crate::`.
fn crate_refs(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let text = code(text);
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        // `$crate::` in a macro counts as the macro's module's own reference.
        if text[..i].ends_with(is_ident) {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the first name of each top-level item.
            let mut depth = 0;
            let mut at_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_start = true,
                    c if at_start && is_ident(c) => {
                        let name: String = group[j..].chars().take_while(|&c| is_ident(c)).collect();
                        out.insert(name);
                        at_start = false;
                    }
                    c if !c.is_whitespace() => at_start = false,
                    _ => {}
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            out.insert(name);
        }
    }
    // A name that is not a module is an item of the crate root.
    out.into_iter().map(|n| if modules.contains(&n) { n } else { "lib".to_string() }).collect()
}

/// In the crate root, the modules it uses by their bare name (`entry::x`, `use loader::y`).
fn root_refs(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let text = code(text);
    let mut out = BTreeSet::new();
    for m in modules {
        let pat = format!("{m}::");
        for (i, _) in text.match_indices(&pat) {
            let before = text[..i].chars().next_back();
            if !matches!(before, Some(c) if is_ident(c) || c == ':') {
                out.insert(m.clone());
            }
        }
    }
    out
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).filter(|m| m != "lib").collect();
    let mut g: Graph = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    g.insert("lib".into(), BTreeSet::new());
    for f in &files {
        let from = module_of(src, f);
        let text = std::fs::read_to_string(f).unwrap();
        let mut to = crate_refs(&text, &modules);
        if from == "lib" {
            to.extend(root_refs(&text, &modules));
        }
        to.remove(&from);
        g.get_mut(&from).unwrap().extend(to);
    }
    g
}

/// A cycle of the graph, if it has one (depth-first search; the path from the first node seen
/// twice on the stack).
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(n: &str, g: &Graph, state: &mut BTreeMap<String, u8>, stack: &mut Vec<String>) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let i = stack.iter().position(|s| s == n).unwrap();
                let mut c = stack[i..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// Whether `from` imports `to`, directly or through other modules.
fn reaches(g: &Graph, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(n) = todo.pop() {
        if n == to {
            return true;
        }
        if seen.insert(n.clone()) {
            todo.extend(g.get(&n).into_iter().flatten().cloned());
        }
    }
    false
}

#[test]
fn layer_modules_import_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    let report: Vec<String> =
        g.iter().map(|(m, to)| format!("{m} -> {}", to.iter().cloned().collect::<Vec<_>>().join(", "))).collect();
    eprintln!("{}", report.join("\n"));
    // The graph was read: the registry is used by the hooks, the hooks by the entry table.
    assert!(g["hooks"].contains("dispatch") && g["entry"].contains("hooks") && g["lib"].contains("entry"), "{g:?}");
    if let Some(c) = find_cycle(&g) {
        panic!("import cycle in layer/src: {}", c.join(" -> "));
    }
    // The layering the architecture names: hooks below the entry table, capture below the hooks,
    // the registry below capture, host-import's state below the registry (which keeps it).
    for (low, high) in [
        ("hooks", "entry"),
        ("capture", "hooks"),
        ("dispatch", "capture"),
        ("dispatch", "hooks"),
        ("host_import", "dispatch"),
        ("host_import", "capture"),
        ("next", "dispatch"),
    ] {
        assert!(!reaches(&g, low, high), "{low} imports {high}, directly or not");
    }
}

#[test]
fn the_parser_and_the_check_see_a_cycle() {
    let modules: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let refs = crate_refs(
        "use crate::{a::X, b, c::{d, e}};\n// crate::zzz in a comment\nlet x = ncrate::q; $crate::c::f()",
        &modules,
    );
    assert_eq!(refs, modules);
    assert_eq!(crate_refs("use crate::LAYER_NAME;", &modules), BTreeSet::from(["lib".to_string()]));
    let mut g: Graph = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default();
    assert_eq!(find_cycle(&g), None);
    assert!(reaches(&g, "a", "c") && !reaches(&g, "c", "a"));
    g.get_mut("c").unwrap().insert("a".into());
    assert_eq!(find_cycle(&g).map(|c| c.len()), Some(4));
}
