//! No import cycle between the data plane's modules.
//!
//! Reads `src/` (the library, not its binary), finds every path a module uses (`use` items,
//! and `crate::`/`super::`/`self::` paths in code), resolves each to the module that defines
//! the item (following `pub use` re-exports to their source), and checks that the "uses"
//! graph between modules has no cycle. Test modules, comments and doc links are left out:
//! they are not part of the architecture.
//!
//! A cycle is what made `io/worker.rs` and its four helper files hard to read: each needed
//! the others. Shared types belong in a module of their own that both sides use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (e.g. `crate::io::worker`) → its file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().unwrap() != "bin" {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
                parts.pop();
            }
            if parts.iter().any(|p| p == "tests") {
                continue;
            }
            let m = std::iter::once("crate".to_string())
                .chain(parts)
                .collect::<Vec<_>>()
                .join("::");
            out.insert(m, p);
        }
    }
    out
}

/// The file's code without comments and without its `#[cfg(test)]` modules.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let l = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(l);
        out.push('\n');
    }
    // Drop `#[cfg(test)] mod tests { ... }` (braces balanced; the code has no braces in
    // strings that matter here).
    let mut from = 0;
    while let Some(k) = out[from..].find("#[cfg(test)]\n") {
        let i = from + k;
        let after = &out[i + "#[cfg(test)]\n".len()..];
        let after = after.trim_start();
        let after = ["pub(crate) ", "pub(super) ", "pub "]
            .iter()
            .find_map(|v| after.strip_prefix(v))
            .unwrap_or(after);
        let Some(head) = after.strip_prefix("mod ") else {
            from = i + 1;
            continue;
        };
        let name_len = head.find(|c: char| !is_ident(c)).unwrap_or(0);
        if !head[name_len..].starts_with(" {") {
            // `mod tests;` in a file of its own: left out with the other test files.
            from = i + 1;
            continue;
        }
        let open = i + out[i..].find('{').unwrap_or(0);
        let mut depth = 0;
        let mut end = out.len();
        for (j, c) in out[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.replace_range(i..end, "");
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into full paths.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        let t = tree.split(" as ").next().unwrap_or(&tree);
        return vec![t.split("as").next().unwrap_or(t).to_string()];
    };
    let prefix = &tree[..open];
    let close = tree.rfind('}').filter(|c| *c > open).unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| {
            expand(p).into_iter().map(move |q| {
                if q == "self" {
                    prefix.trim_end_matches("::").to_string()
                } else {
                    format!("{prefix}{q}")
                }
            })
        })
        .collect()
}

/// Every path the code names: `use` trees expanded, plus inline `crate::`, `super::` and
/// `self::` paths.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    // rustfmt puts every `use` item at the start of a line.
    for (i, line) in code.lines().enumerate().map(|(i, l)| (i, l.trim_start())) {
        let item = ["pub use ", "pub(crate) use ", "pub(super) use ", "use "]
            .iter()
            .find_map(|k| line.strip_prefix(k));
        let Some(item) = item else { continue };
        let text: String = code.lines().skip(i).collect::<Vec<_>>().join("\n");
        let start = text.find(item).unwrap_or(0);
        if let Some(end) = text[start..].find(';') {
            out.extend(expand(&text[start..start + end]));
        }
    }
    for root in ["crate::", "super::", "self::"] {
        let mut at = 0;
        while let Some(i) = code[at..].find(root) {
            let s = at + i;
            at = s + root.len();
            if code[..s].chars().last().is_some_and(is_ident) {
                continue;
            }
            let end = code[s..]
                .find(|c: char| !(is_ident(c) || c == ':'))
                .map_or(code.len(), |e| s + e);
            out.push(code[s..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// `path` as seen from module `from`, made absolute (`crate::...`).
fn absolute(from: &str, path: &str) -> Option<String> {
    let mut segs: Vec<&str> = from.split("::").collect();
    let mut p = path;
    if let Some(r) = p.strip_prefix("crate::") {
        return Some(format!("crate::{r}"));
    }
    if let Some(r) = p.strip_prefix("self::") {
        return Some(format!("{from}::{r}"));
    }
    if !p.starts_with("super::") {
        return None;
    }
    while let Some(r) = p.strip_prefix("super::") {
        segs.pop()?;
        p = r;
    }
    Some(format!("{}::{p}", segs.join("::")))
}

/// Does `code` define an item called `name`?
fn defines(code: &str, name: &str) -> bool {
    [
        "struct", "enum", "fn", "trait", "type", "const", "static", "mod", "union",
    ]
    .iter()
    .any(|k| {
        let pat = format!("{k} {name}");
        code.match_indices(&pat).any(|(i, _)| {
            let after = code[i + pat.len()..].chars().next();
            !after.is_some_and(is_ident)
        })
    })
}

struct Graph {
    mods: BTreeMap<String, PathBuf>,
    code: BTreeMap<String, String>,
}

impl Graph {
    /// The module that defines what `path` (absolute) names, following re-exports.
    fn resolve(&self, path: &str, depth: usize) -> Option<String> {
        let segs: Vec<&str> = path.split("::").collect();
        let k = (1..=segs.len())
            .rev()
            .find(|&k| self.mods.contains_key(&segs[..k].join("::")))?;
        let module = segs[..k].join("::");
        let Some(item) = segs.get(k) else {
            return Some(module);
        };
        if item == &"*" || depth > 8 || defines(&self.code[&module], item) {
            return Some(module);
        }
        // A re-export: find `pub use ...::item` in the module and follow it.
        for p in paths(&self.code[&module]) {
            if p.rsplit("::").next() == Some(item) && p != path {
                if let Some(abs) = absolute(&module, &p) {
                    return self.resolve(&abs, depth + 1);
                }
                let local = format!("{module}::{p}");
                if let Some(m) = self.resolve(&local, depth + 1) {
                    return Some(m);
                }
            }
        }
        Some(module)
    }

    fn edges(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (m, code) in &self.code {
            let e = g.entry(m.clone()).or_default();
            for p in paths(code) {
                let abs = absolute(m, &p).or_else(|| {
                    // A path through a child declared here (`use child::X`).
                    let first = p.split("::").next()?;
                    let child = format!("{m}::{first}");
                    self.mods.contains_key(&child).then(|| format!("{m}::{p}"))
                });
                let Some(abs) = abs else { continue };
                if let Some(to) = self.resolve(&abs, 0) {
                    if &to != m {
                        e.insert(to);
                    }
                }
            }
            // Inline paths through a child module (`liveness::Liveness`).
            for child in self.mods.keys() {
                let Some(name) = child
                    .strip_prefix(m.as_str())
                    .and_then(|r| r.strip_prefix("::"))
                    .filter(|r| !r.contains("::"))
                else {
                    continue;
                };
                let pat = format!("{name}::");
                for (i, _) in code.match_indices(&pat) {
                    if code[..i]
                        .chars()
                        .last()
                        .is_some_and(|c| is_ident(c) || c == ':')
                    {
                        continue;
                    }
                    let end = code[i..]
                        .find(|c: char| !(is_ident(c) || c == ':'))
                        .map_or(code.len(), |x| i + x);
                    let abs = format!("{m}::{}", code[i..end].trim_end_matches(':'));
                    if let Some(to) = self.resolve(&abs, 0) {
                        if &to != m {
                            e.insert(to);
                        }
                    }
                }
            }
        }
        g
    }
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.g.get(v) {
            for w in ws {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let l = t.low[v].min(t.low[w]);
                    t.low.insert(v, l);
                } else if t.on.contains(w) {
                    let l = t.low[v].min(t.index[w]);
                    t.low.insert(v, l);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let code = mods.iter().map(|(m, p)| (m.clone(), code(p))).collect();
    Graph { mods, code }
}

#[test]
fn no_import_cycle_between_modules() {
    let g = graph();
    let edges = g.edges();
    let found = cycles(&edges);
    let show = |c: &Vec<String>| {
        c.iter()
            .map(|m| {
                let to: Vec<&str> = edges[m]
                    .iter()
                    .filter(|t| c.contains(t))
                    .map(String::as_str)
                    .collect();
                format!("  {m} -> {}", to.join(", "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        found.is_empty(),
        "import cycles:\n{}",
        found.iter().map(show).collect::<Vec<_>>().join("\n\n")
    );
}

#[test]
fn the_checker_sees_a_cycle() {
    // io::worker uses datapath; a datapath that used io::worker back would be a cycle.
    let mut g = graph();
    g.code
        .get_mut("crate::datapath")
        .unwrap()
        .push_str("\nuse crate::io::worker::Worker;\n");
    let found = cycles(&g.edges());
    assert!(
        found
            .iter()
            .any(|c| c.contains(&"crate::datapath".to_string())
                && c.contains(&"crate::io::worker".to_string())),
        "{found:?}"
    );
}

#[test]
fn use_trees_expand() {
    assert_eq!(
        expand("crate::switch::{self, fdb::Entry, tunnel::{decap, GreOptions}}"),
        vec![
            "crate::switch",
            "crate::switch::fdb::Entry",
            "crate::switch::tunnel::decap",
            "crate::switch::tunnel::GreOptions"
        ]
    );
    assert_eq!(
        absolute("crate::io::sys::mmsg", "super::msghdr::CmsgBuf").as_deref(),
        Some("crate::io::sys::msghdr::CmsgBuf")
    );
}
