//! The tree's data flows one way: `cmd` → `sim` → {`scenario`, `check`, `shard`, `raft`,
//! `storage`} → `rt`, and no module imports one that imports it back.
//!
//! This test reads every file under `src/`, collects the modules each refers to (`use` lines
//! and paths written inline, through `crate::` and `super::`), and checks two things:
//! - every reference from one top-level module to another is one [`ALLOWED`] lists;
//! - no cycle among the file modules. A module's references to its own children (their
//!   declarations and re-exports in `mod.rs`) are not counted: a parent owns its children.
//!   A `tests` module counts as its parent.
//!
//! Run it alone with `cargo test --test layering`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may refer to (besides itself).
const ALLOWED: &[(&str, &[&str])] = &[
    ("rt", &[]),
    ("bugs", &[]),
    ("coverage", &[]),
    ("probe", &[]),
    ("check", &["probe"]),
    ("net", &["rt", "coverage"]),
    ("storage", &["rt", "bugs", "coverage"]),
    (
        "raft",
        &["storage", "net", "rt", "bugs", "coverage", "probe"],
    ),
    (
        "shard",
        &["raft", "storage", "net", "rt", "bugs", "coverage", "probe"],
    ),
    ("scenario", &["shard", "raft", "storage", "bugs"]),
    (
        "sim",
        &[
            "scenario", "check", "shard", "raft", "storage", "net", "rt", "bugs", "coverage",
            "probe",
        ],
    ),
    (
        "cmd",
        &[
            "sim", "scenario", "check", "shard", "raft", "storage", "net", "rt", "bugs",
            "coverage", "probe",
        ],
    ),
];

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src/ is readable") {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a file under `src/` defines (`src/a/b.rs` and `src/a/b/mod.rs`: `a::b`); a
/// `tests` module counts as its parent.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src/");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    if parts.last().is_some_and(|l| l == "tests") {
        parts.pop();
    }
    parts
}

/// Code without comments and string literals (a path in a doc comment is not a reference).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths written after `start` in `code` (from a `::`-path start such as `crate::`),
/// with `{ ... }` groups expanded.
fn paths_after(code: &str, start: usize) -> Vec<Vec<String>> {
    fn parse(code: &[char], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            while *i < code.len() && code[*i].is_whitespace() {
                *i += 1;
            }
            if *i < code.len() && code[*i] == '{' {
                *i += 1;
                loop {
                    parse(code, i, &path, out);
                    while *i < code.len() && code[*i].is_whitespace() {
                        *i += 1;
                    }
                    match code.get(*i) {
                        Some(',') => *i += 1,
                        Some('}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    while *i < code.len() && code[*i].is_whitespace() {
                        *i += 1;
                    }
                    if code.get(*i) == Some(&'}') {
                        *i += 1;
                        return;
                    }
                }
            }
            let s = *i;
            while *i < code.len() && ident_char(code[*i]) {
                *i += 1;
            }
            if s == *i {
                out.push(path);
                return;
            }
            path.push(code[s..*i].iter().collect());
            if code.get(*i) == Some(&':') && code.get(*i + 1) == Some(&':') {
                *i += 2;
            } else {
                out.push(path);
                return;
            }
        }
    }
    let chars: Vec<char> = code[start..].chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    parse(&chars, &mut i, &[], &mut out);
    out
}

/// The modules `code` (of module `me`) refers to, resolved against `modules`.
fn references(code: &str, me: &Module, modules: &BTreeSet<Module>) -> BTreeSet<Module> {
    let mut out = BTreeSet::new();
    let mut resolve = |base: Module, path: Vec<String>| {
        let mut full = base;
        full.extend(path);
        // The longest prefix that is a module.
        while !full.is_empty() && !modules.contains(&full) {
            full.pop();
        }
        if !full.is_empty() {
            out.insert(full);
        }
    };
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && code[..at].ends_with(|c: char| ident_char(c) || c == '$') {
            continue;
        }
        for p in paths_after(code, at + "crate::".len()) {
            resolve(Vec::new(), p);
        }
    }
    let mut at = 0;
    while let Some(found) = code[at..].find("super::") {
        let start = at + found;
        at = start + 1;
        if start > 0 && code[..start].ends_with(|c: char| ident_char(c) || c == ':') {
            continue;
        }
        let mut base = me.clone();
        let mut rest = start;
        while code[rest..].starts_with("super::") {
            base.pop();
            rest += "super::".len();
        }
        for p in paths_after(code, rest) {
            resolve(base.clone(), p);
        }
        at = rest;
    }
    out
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| !f.ends_with("main.rs"));
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut g: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for f in &files {
        let me = module_of(&src, f);
        let code = code_only(&std::fs::read_to_string(f).expect("readable"));
        let refs = references(&code, &me, &modules);
        let entry = g.entry(me.clone()).or_default();
        for r in refs {
            // Itself, its own children (declared and re-exported by the parent), the root.
            if r.starts_with(&me) || me.is_empty() {
                continue;
            }
            entry.insert(r);
        }
    }
    g
}

#[test]
fn top_level_modules_refer_only_downward() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (from, refs) in graph() {
        let Some(top) = from.first() else { continue };
        let may = allowed
            .get(top.as_str())
            .unwrap_or_else(|| panic!("src/{top} is not in ALLOWED: place it in a layer"));
        for to in refs {
            let target = to[0].as_str();
            if target != top && !may.contains(&target) {
                wrong.push(format!("{} -> {}", from.join("::"), to.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "references against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    // Tarjan's strongly connected components; a component of two or more is a cycle.
    struct T<'g> {
        g: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        on: BTreeSet<&'g Module>,
        cycles: Vec<Vec<String>>,
    }
    impl<'g> T<'g> {
        fn visit(&mut self, v: &'g Module) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let Some((w, _)) = self.g.get_key_value(w) else {
                    continue;
                };
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[v].min(self.low[w]);
                    self.low.insert(v, l);
                } else if self.on.contains(w) {
                    let l = self.low[v].min(self.index[w]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.join("::"));
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.cycles.push(comp);
                }
            }
        }
    }
    let mut t = T {
        g: &g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        cycles: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    assert!(
        t.cycles.is_empty(),
        "modules that import each other (each line one cycle):\n{}",
        t.cycles
            .iter()
            .map(|c| c.join(" <-> "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The reader finds what it must: grouped imports, `super::super::`, inline paths, and not
/// paths in comments or strings. Without this the two checks above could pass by reading
/// nothing.
#[test]
fn the_reader_sees_references_in_every_form() {
    let modules: BTreeSet<Module> = [
        vec!["a"],
        vec!["a", "b"],
        vec!["a", "c"],
        vec!["d"],
        vec!["d", "e"],
    ]
    .into_iter()
    .map(|m| m.into_iter().map(String::from).collect())
    .collect();
    let me: Module = vec!["a".into(), "b".into()];
    let code = code_only(
        "use crate::{d::e::Thing, a::c};\n// crate::x::y in a comment\nlet s = \"crate::d\";\n\
         fn f() { super::super::d::e::g(); super::c::h(); }",
    );
    let refs = references(&code, &me, &modules);
    let want: BTreeSet<Module> = [vec!["d", "e"], vec!["a", "c"]]
        .into_iter()
        .map(|m| m.into_iter().map(String::from).collect())
        .collect();
    assert_eq!(refs, want);
    // The real tree: cmd refers to sim, sim to check.
    let g = graph();
    let refers = |from: &[&str], to: &str| {
        let from: Module = from.iter().map(|s| s.to_string()).collect();
        g[&from].iter().any(|m| m[0] == to)
    };
    assert!(refers(&["cmd", "run"], "sim"));
    assert!(refers(&["sim", "report"], "check"));
}
