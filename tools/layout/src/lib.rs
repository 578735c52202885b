//! Checks two rules of the source layout, for every crate of the workspace:
//!
//! - **no circle of imports between files**: a file that names an item of
//!   another file of the same crate (`use crate::a::X`, `super::X`, `a::f()`
//!   for a child module `a`) depends on it; those dependencies must form no
//!   cycle. A `pub use` re-export is followed to the file that defines the
//!   item, so a folder's `mod.rs` that re-exports its children is not a cycle
//!   with them. Test code (`#[cfg(test)]` items and test-only modules) is left
//!   out, since tests may import anything.
//! - **no oversized file**: a source file's lines outside its test items stay
//!   within [`MAX_LINES`].
//!
//! The module tree is read from `mod name;` declarations starting at each
//! crate root (`src/lib.rs`, `src/main.rs`, `src/bin/*.rs`), the way rustc
//! finds files. The reading is lexical (comments and literals are blanked
//! first); it does not expand macros or resolve glob imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod lex;
mod paths;
mod token;

use paths::UseTree;

/// The most lines of non-test code a source file may hold.
pub const MAX_LINES: usize = 800;

/// One source file of a crate, as a module.
#[derive(Debug)]
struct Module {
    /// The file, relative to the workspace root.
    file: PathBuf,
    /// Module path from the crate root (`[]` for the root).
    path: Vec<String>,
    /// Child modules declared with `mod name;` outside test code.
    children: BTreeSet<String>,
    /// Paths this file names (its `use` trees and paths in code).
    uses: Vec<UseTree>,
    /// Names its `use` declarations bind (public or not): name → the path
    /// it stands for, followed when another file names the item through it.
    bindings: BTreeMap<String, UseTree>,
    /// Lines outside test items.
    code_lines: usize,
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Each cycle as the files it goes through.
    pub cycles: Vec<Vec<PathBuf>>,
    /// Files over [`MAX_LINES`] with their line count.
    pub oversized: Vec<(PathBuf, usize)>,
    /// How many files were read.
    pub files: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.cycles.is_empty() && self.oversized.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.cycles {
            let names: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
            writeln!(f, "import cycle: {} -> {}", names.join(" -> "), names[0])?;
        }
        for (file, n) in &self.oversized {
            writeln!(
                f,
                "{}: {n} lines of non-test code (at most {MAX_LINES})",
                file.display()
            )?;
        }
        write!(
            f,
            "{} files read: {} import cycles, {} oversized files",
            self.files,
            self.cycles.len(),
            self.oversized.len()
        )
    }
}

/// Check every crate listed in the workspace's `members`.
pub fn check_workspace(root: &Path) -> std::io::Result<Report> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let mut report = Report::default();
    for member in workspace_members(&manifest) {
        let src = root.join(&member).join("src");
        for crate_root in crate_roots(&src)? {
            check_crate(root, &crate_root, &mut report)?;
        }
    }
    Ok(report)
}

/// The `members = [...]` list of a workspace manifest.
fn workspace_members(manifest: &str) -> Vec<String> {
    let Some(start) = manifest.find("members") else {
        return Vec::new();
    };
    let rest = &manifest[start..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return Vec::new();
    };
    rest[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `lib.rs`, `main.rs` and every binary under `bin/`.
fn crate_roots(src: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut roots = Vec::new();
    for name in ["lib.rs", "main.rs"] {
        if src.join(name).is_file() {
            roots.push(src.join(name));
        }
    }
    let bin = src.join("bin");
    if bin.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&bin)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.extension().is_some_and(|e| e == "rs") {
                roots.push(p);
            } else if p.join("main.rs").is_file() {
                roots.push(p.join("main.rs"));
            }
        }
    }
    Ok(roots)
}

fn check_crate(ws: &Path, root: &Path, report: &mut Report) -> std::io::Result<()> {
    let modules = read_tree(ws, root)?;
    report.files += modules.len();
    for m in modules.values() {
        if m.code_lines > MAX_LINES {
            report.oversized.push((m.file.clone(), m.code_lines));
        }
    }
    let edges = dependencies(&modules);
    for cycle in cycles(&edges) {
        report
            .cycles
            .push(cycle.iter().map(|p| modules[p].file.clone()).collect());
    }
    Ok(())
}

/// Read the module tree from a crate root, keyed by module path.
fn read_tree(ws: &Path, root: &Path) -> std::io::Result<BTreeMap<Vec<String>, Module>> {
    let mut out = BTreeMap::new();
    // (file, module path, whether the file owns a folder for its children)
    let mut todo = vec![(root.to_path_buf(), Vec::<String>::new(), true)];
    while let Some((file, path, owns_dir)) = todo.pop() {
        let text = std::fs::read_to_string(&file)?;
        let parsed = lex::parse_file(&text);
        let dir = if owns_dir {
            file.parent().unwrap_or(Path::new(".")).to_path_buf()
        } else {
            file.with_extension("")
        };
        for child in &parsed.children {
            let flat = dir.join(format!("{child}.rs"));
            let nested = dir.join(child).join("mod.rs");
            let mut child_path = path.clone();
            child_path.push(child.clone());
            if flat.is_file() {
                todo.push((flat, child_path, false));
            } else if nested.is_file() {
                todo.push((nested, child_path, true));
            }
        }
        let rel = file.strip_prefix(ws).unwrap_or(&file).to_path_buf();
        out.insert(
            path.clone(),
            Module {
                file: rel,
                path,
                children: parsed.children.into_iter().collect(),
                uses: parsed.uses,
                bindings: parsed.bindings,
                code_lines: parsed.code_lines,
            },
        );
    }
    Ok(out)
}

type Edges = BTreeMap<Vec<String>, BTreeSet<Vec<String>>>;

/// File-to-file dependencies: each path a file names, resolved to the file
/// that defines it.
fn dependencies(modules: &BTreeMap<Vec<String>, Module>) -> Edges {
    let mut edges = Edges::new();
    for m in modules.values() {
        let set = edges.entry(m.path.clone()).or_default();
        for u in &m.uses {
            if let Some(target) = resolve(modules, &m.path, u, 0) {
                if target != m.path {
                    set.insert(target);
                }
            }
        }
    }
    edges
}

/// The module that defines what `u` names, seen from module `from`.
fn resolve(
    modules: &BTreeMap<Vec<String>, Module>,
    from: &[String],
    u: &UseTree,
    depth: usize,
) -> Option<Vec<String>> {
    let mut segs = u.segments.iter().map(String::as_str).peekable();
    let mut at: Vec<String> = match segs.peek().copied()? {
        "crate" => {
            segs.next();
            Vec::new()
        }
        "self" => {
            segs.next();
            from.to_vec()
        }
        "super" => {
            let mut p = from.to_vec();
            while segs.peek() == Some(&"super") {
                segs.next();
                p.pop()?;
            }
            p
        }
        first if modules.get(from)?.children.contains(first) => from.to_vec(),
        _ => return None, // another crate, a local name or a std path
    };
    for seg in segs {
        let module = modules.get(&at)?;
        if module.children.contains(seg) {
            at.push(seg.to_string());
            continue;
        }
        // An item of `at`: follow a `use` binding to where it is defined.
        if let Some(origin) = module.bindings.get(seg) {
            if depth < 8 {
                if let Some(t) = resolve(modules, &at, origin, depth + 1) {
                    return Some(t);
                }
            }
        }
        break;
    }
    Some(at)
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(edges: &Edges) -> Vec<Vec<Vec<String>>> {
    struct Tarjan<'a> {
        edges: &'a Edges,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a Vec<String>) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                let Some((w, _)) = self.edges.get_key_value(w) else {
                    continue;
                };
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    comp.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.reverse();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

#[cfg(test)]
mod tests;
