//! The crate's shape, checked from its source: the modules import one another
//! without cycles (a leaf stays a leaf), and the README's feature table names
//! every cargo feature.
//!
//! `cargo test -p opskit --test layering -- --nocapture` prints the module
//! graph: an edge for every `crate::<module>` path (or a name `lib.rs`
//! re-exports from it) outside test code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `text` without its test-only items (an attribute `#[cfg(test)]` or
/// `#[cfg(all(test, …))]` and the item after it, up to its matching brace,
/// its `;`, or its `,` for a field) and without its comment lines.
fn without_tests(text: &str) -> String {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut out = String::new();
    let mut rest = code.as_str();
    loop {
        let at = ["#[cfg(test)]", "#[cfg(all(test"]
            .iter()
            .filter_map(|m| rest.find(m))
            .min();
        let Some(at) = at else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        let mut depth = 0usize;
        let mut end = rest.len();
        // Past the attribute's own brackets.
        let body = rest[at..].find(']').map_or(rest.len(), |i| at + i + 1);
        for (i, c) in rest[body..].char_indices() {
            match c {
                '{' => depth += 1,
                // The enclosing item closes: the test-only item was a field.
                '}' if depth == 0 => {
                    end = body + i;
                    break;
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = body + i + 1;
                        break;
                    }
                }
                ';' | ',' if depth == 0 => {
                    end = body + i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifiers right after each `prefix` in `text`.
fn idents_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(prefix) {
        let start = from + i;
        let before = text[..start].chars().next_back();
        from = start + prefix.len();
        if before.is_some_and(is_ident) {
            continue;
        }
        let len = text[from..].find(|c| !is_ident(c)).unwrap_or(0);
        if len > 0 {
            found.push(&text[from..from + len]);
        }
    }
    found
}

/// The names in the braces of every `use crate::{…}` (first segment of each).
fn grouped_uses(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("use crate::{") {
        let open = from + i + "use crate::{".len();
        let close = text[open..].find(';').map_or(text.len(), |j| open + j);
        let group = &text[open..close];
        let mut depth = 0;
        let mut item = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    names.push(std::mem::take(&mut item));
                    continue;
                }
                _ => {}
            }
            if depth == 0 {
                item.push(c);
            }
        }
        names.push(item);
        from = close;
    }
    names
        .iter()
        .filter_map(|n| n.trim().split(|c| !is_ident(c)).next().map(str::to_owned))
        .filter(|n| !n.is_empty())
        .collect()
}

/// Names `lib.rs` re-exports (`crate::Problem`), by the module defining them.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub use "))
    {
        let Some((module, rest)) = line.trim_end_matches(';').split_once("::") else {
            continue;
        };
        let rest = rest.trim_start_matches('{').trim_end_matches('}');
        for name in rest.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            names.insert(name.to_owned(), module.to_owned());
        }
    }
    names
}

fn graph() -> Graph {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let lib = std::fs::read_to_string(root.join("lib.rs")).expect("lib.rs");
    let names = reexports(&lib);
    let is_module = |m: &str| root.join(format!("{m}.rs")).exists() || root.join(m).is_dir();
    let mut graph = Graph::new();
    for file in files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let rel = file.strip_prefix(&root).expect("under src");
        let first = rel.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let text = without_tests(&std::fs::read_to_string(&file).expect("read"));
        let mut targets: Vec<String> = idents_after(&text, "crate::")
            .into_iter()
            .chain(idents_after(&text, "super::super::"))
            .map(str::to_owned)
            .collect();
        targets.extend(grouped_uses(&text));
        let edges = graph.entry(module.clone()).or_default();
        for t in targets {
            let t = names.get(&t).cloned().unwrap_or(t);
            if t != module && is_module(&t) {
                edges.insert(t);
            }
        }
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let at = s.stack.iter().rposition(|x| *x == v).unwrap_or(0);
            let component: Vec<String> = s.stack.drain(at..).map(str::to_owned).collect();
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

fn show(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, to)| {
            format!(
                "{m} -> {}\n",
                to.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect()
}

#[test]
fn modules_import_one_another_without_cycles() {
    let graph = graph();
    println!("{}", show(&graph));
    // The graph is read at all: start-up reads the configuration.
    assert!(graph["ops"].contains("config"), "{}", show(&graph));
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "import cycles: {found:?}\n{}",
        show(&graph)
    );
}

#[test]
fn leaf_modules_import_nothing_of_the_crate() {
    let graph = graph();
    for leaf in ["request", "service", "decimal", "secret", "trace"] {
        assert!(
            graph[leaf].is_empty(),
            "`{leaf}` is a leaf but imports {:?}",
            graph[leaf]
        );
    }
}

#[test]
fn the_readme_lists_every_cargo_feature() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("README.md");
    let features: Vec<&str> = manifest
        .lines()
        .skip_while(|l| l.trim() != "[features]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .filter(|k| !k.is_empty() && !k.starts_with('#') && !k.starts_with('_') && *k != "default")
        .collect();
    assert!(features.contains(&"full"), "{features:?}");
    for feature in features {
        assert!(
            readme.contains(&format!("| `{feature}` |")),
            "the README's feature table has no row for `{feature}`"
        );
    }
}

/// The checks above can fail: a cycle is found, and test code is left out.
#[test]
fn the_checks_see_what_they_look_for() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    let text = "use crate::{x, y::z};\nfn f() { crate::w::g() }\n#[cfg(test)]\nmod tests {\n    use crate::t;\n    fn g() { if true {} }\n}\n// crate::c\n";
    let kept = without_tests(text);
    assert_eq!(idents_after(&kept, "crate::"), ["w"]);
    assert_eq!(grouped_uses(&kept), ["x", "y"]);
}
