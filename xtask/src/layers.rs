//! `cargo xtask layers`: the import structure the compiler does not check.
//!
//! Three rules, all run by `cargo xtask test`:
//! 1. No import cycle between the top-level modules of any workspace crate. A
//!    module `a` imports `b` when code in `src/a.rs` or `src/a/**` names
//!    `crate::b` (paths, `use` groups). Comments and test code (`tests.rs`
//!    files, and everything after a top-level `#[cfg(test)]`) do not count:
//!    tests may reach across layers.
//! 2. The pure core crate (`provisioner-core`) depends on no async runtime,
//!    database or HTTP server (`cargo tree`, normal edges).
//! 3. `cargo build -p provisioner` builds without the `testing` feature (the test
//!    double `bmc::fake_redfish`): only dev-dependencies turn it on.
//!
//! The scan reads source text (no parser): a `crate::x` inside a string literal
//! counts too, which errs on the side of reporting.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The crate whose dependencies must stay pure, and what it must never pull in.
const CORE: &str = "provisioner-core";
const FORBIDDEN_IN_CORE: [&str; 6] = ["tokio", "sqlx", "axum", "hyper", "reqwest", "tower"];

/// Where a module names another: file and line, for the report.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Site {
    pub file: PathBuf,
    pub line: usize,
}

/// Top-level module -> the modules it imports, with where.
pub type Graph = BTreeMap<String, BTreeMap<String, Site>>;

/// The top-level modules a crate root (`lib.rs`/`main.rs`) declares with `mod x;`.
pub fn declared_modules(root_source: &str) -> BTreeSet<String> {
    let mut mods = BTreeSet::new();
    for line in code_lines(root_source) {
        let line = line.trim();
        let rest = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("pub(crate) mod "))
            .or_else(|| line.strip_prefix("mod "));
        if let Some(rest) = rest
            && let Some(name) = rest.strip_suffix(';')
        {
            mods.insert(name.trim().to_owned());
        }
    }
    mods
}

/// The source lines that are code: comments blanked, everything from a line-start
/// `#[cfg(test)]` on dropped (the test module closes each file by convention).
fn code_lines(source: &str) -> Vec<&str> {
    let mut out = vec![];
    for line in source.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push(code);
    }
    out
}

/// The top-level modules named as `crate::x` in `source`, with their line numbers
/// (`use crate::{...}` groups may span lines).
pub fn crate_refs(source: &str) -> Vec<(String, usize)> {
    let code = code_lines(source).join("\n");
    let line_of = |offset: usize| code[..offset].matches('\n').count() + 1;
    let mut refs = vec![];
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let at = from + found;
        from = at + "crate::".len();
        // `foo_crate::x` is another path; only a path that starts at `crate` counts.
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let after = &code[from..];
        if let Some(group) = after.strip_prefix('{') {
            for name in group_heads(group) {
                refs.push((name, line_of(at)));
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.push((name, line_of(at)));
            }
        }
    }
    refs
}

/// The first segment of each path in a `use crate::{a::b, c, d::{e, f}}` group
/// (the text after the opening brace, up to its closing brace).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = vec![];
    let mut depth = 0;
    let mut at_start = true;
    let mut current = String::new();
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                at_start = true;
                if !current.is_empty() {
                    heads.push(std::mem::take(&mut current));
                }
            }
            c if depth == 0 && at_start && (c.is_alphanumeric() || c == '_') => current.push(c),
            c if depth == 0 && at_start && !c.is_whitespace() => {
                at_start = false;
                if !current.is_empty() {
                    heads.push(std::mem::take(&mut current));
                }
            }
            c if c.is_whitespace() && !current.is_empty() => {
                at_start = false;
                heads.push(std::mem::take(&mut current));
            }
            _ => {}
        }
    }
    if !current.is_empty() {
        heads.push(current);
    }
    heads
}

/// The import graph of a crate's top-level modules, from its `src` directory.
pub fn crate_graph(src: &Path, root_file: &str) -> Result<Graph> {
    let root = std::fs::read_to_string(src.join(root_file))
        .with_context(|| format!("reading {}", src.join(root_file).display()))?;
    let modules = declared_modules(&root);
    let mut graph = Graph::new();
    for module in &modules {
        let mut files = vec![];
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file);
        }
        let dir = src.join(module);
        if dir.is_dir() {
            collect_rs(&dir, &mut files)?;
        }
        let edges = graph.entry(module.clone()).or_default();
        for file in files {
            if file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            for (name, line) in crate_refs(&text) {
                if name != *module && modules.contains(&name) {
                    edges.entry(name).or_insert_with(|| Site {
                        file: file.clone(),
                        line,
                    });
                }
            }
        }
    }
    Ok(graph)
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The import cycles of a graph: its strongly connected components of more than
/// one module (Tarjan's algorithm), each sorted, in a stable order.
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flat_map(|e| e.keys()) {
                let w = w.as_str();
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
                let mut component = vec![];
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on_stack: BTreeSet::new(),
        out: vec![],
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// A cycle in words: each edge inside it with where it is made.
fn describe(graph: &Graph, cycle: &[String], root: &Path) -> String {
    let mut lines = vec![format!("import cycle between {}:", cycle.join(", "))];
    for from in cycle {
        for (to, site) in &graph[from] {
            if cycle.contains(to) {
                let file = site.file.strip_prefix(root).unwrap_or(&site.file);
                lines.push(format!(
                    "  {from} -> {to}  ({}:{})",
                    file.display(),
                    site.line
                ));
            }
        }
    }
    lines.join("\n")
}

/// Every workspace crate's source roots: (crate name, src dir, root file).
fn crate_roots() -> Result<Vec<(String, PathBuf, String)>> {
    let out = crate::workspace::cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running `cargo metadata`")?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut roots = vec![];
    for package in meta["packages"].as_array().context("no packages")? {
        let name = package["name"].as_str().unwrap_or("?").to_owned();
        for target in package["targets"].as_array().into_iter().flatten() {
            let kinds: Vec<&str> = target["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str())
                .collect();
            if !kinds.iter().any(|k| *k == "lib" || *k == "bin") {
                continue;
            }
            let path = PathBuf::from(target["src_path"].as_str().context("src_path")?);
            let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
            // Crate roots whose modules live beside them (src/lib.rs, src/main.rs);
            // single-file binaries in src/bin/ have no top-level modules of their own.
            if file == "lib.rs" || file == "main.rs" {
                let dir = path.parent().context("src dir")?.to_owned();
                roots.push((format!("{name} ({file})"), dir, file.to_owned()));
            }
        }
    }
    Ok(roots)
}

/// The core crate's normal dependencies that it must not have.
fn core_violations() -> Result<Vec<String>> {
    let out = crate::workspace::cargo()
        .args([
            "tree", "-p", CORE, "-e", "normal", "--prefix", "none", "--locked",
        ])
        .output()
        .context("running `cargo tree`")?;
    if !out.status.success() {
        bail!(
            "`cargo tree -p {CORE}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut bad: BTreeSet<String> = BTreeSet::new();
    for line in text.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if FORBIDDEN_IN_CORE.contains(&name) {
            bad.insert(line.trim().to_owned());
        }
    }
    Ok(bad.into_iter().collect())
}

/// The crate whose build must not carry its test doubles, and the feature holding them.
const RELEASE: &str = "provisioner";
const TESTING_FEATURE: &str = "testing";

/// Whether `cargo build -p provisioner` (normal edges only, default features) turns on
/// the `testing` feature, by a default feature or a normal dependency on itself.
fn testing_in_release() -> Result<bool> {
    let out = crate::workspace::cargo()
        .args([
            "tree",
            "-p",
            RELEASE,
            "-e",
            "normal,features",
            // Inverted: the features of the package itself that are on, with why.
            "-i",
            RELEASE,
            "--prefix",
            "none",
            "--locked",
        ])
        .output()
        .context("running `cargo tree`")?;
    if !out.status.success() {
        bail!(
            "`cargo tree -p {RELEASE}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let wanted = format!("{RELEASE} feature \"{TESTING_FEATURE}\"");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim_start().starts_with(&wanted)))
}

/// Checks the three rules; prints a short summary, fails naming every violation.
pub fn check() -> Result<()> {
    let root = crate::workspace::root();
    let mut problems = vec![];
    let mut checked = 0;
    for (name, dir, file) in crate_roots()? {
        let graph = crate_graph(&dir, &file)?;
        checked += 1;
        for cycle in cycles(&graph) {
            problems.push(format!("{name}: {}", describe(&graph, &cycle, root)));
        }
    }
    if !problems.is_empty() {
        problems.push(format!(
            "fix: move the shared piece below both modules (or into {CORE}), so the \
             imports point one way"
        ));
    }
    let bad = core_violations()?;
    if !bad.is_empty() {
        problems.push(format!(
            "{CORE} must not depend on an async runtime, database or HTTP stack, but \
             `cargo tree -p {CORE} -e normal` lists: {}; move the code that needs it to the \
             `provisioner` crate",
            bad.join(", ")
        ));
    }
    if testing_in_release()? {
        problems.push(format!(
            "`cargo build -p {RELEASE}` turns on its `{TESTING_FEATURE}` feature, so the \
             release binary carries the fake BMCs; enable it only from [dev-dependencies] \
             (or a test-only crate), never from `default` or a normal dependency"
        ));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    println!(
        "layers: no import cycle in {checked} crate roots; {CORE} has none of {}; \
         `cargo build -p {RELEASE}` leaves `{TESTING_FEATURE}` off",
        FORBIDDEN_IN_CORE.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_paths_and_use_groups_but_not_comments_or_tests() {
        let src = "use crate::store::{Store, Job};\n\
                   use crate::{app::App, lifecycle::{self, Event}, metrics};\n\
                   // crate::daemon is only named in a comment\n\
                   fn f() { let _ = crate::plan::plan(); let _ = my_crate::x; }\n\
                   #[cfg(test)]\n\
                   mod tests { use crate::executor; }\n";
        let names: Vec<String> = crate_refs(src).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["store", "app", "lifecycle", "metrics", "plan"]);
        assert_eq!(crate_refs(src)[4].1, 4, "line numbers are 1-based");
        let multi = "use crate::{\n    bmc::{self, Bmc},\n    site,\n};\n";
        let names: Vec<String> = crate_refs(multi).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["bmc", "site"]);
    }

    #[test]
    fn declared_modules_skip_reexports() {
        let lib = "//! doc\npub use other::{a, b};\npub mod api;\nmod store;\npub(crate) mod x;\n";
        let mods: Vec<String> = declared_modules(lib).into_iter().collect();
        assert_eq!(mods, ["api", "store", "x"]);
    }

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry((*a).to_owned()).or_default().insert(
                (*b).to_owned(),
                Site {
                    file: PathBuf::from(format!("src/{a}.rs")),
                    line: 1,
                },
            );
            g.entry((*b).to_owned()).or_default();
        }
        g
    }

    #[test]
    fn a_layered_graph_has_no_cycle_and_a_loop_is_reported_whole() {
        let layered = graph(&[("api", "app"), ("app", "store"), ("executor", "app")]);
        assert!(cycles(&layered).is_empty());
        let looped = graph(&[
            ("store", "executor"),
            ("executor", "app"),
            ("app", "store"),
            ("api", "app"),
        ]);
        assert_eq!(cycles(&looped), vec![vec!["app", "executor", "store"]]);
        let text = describe(&looped, &cycles(&looped)[0], Path::new(""));
        assert!(
            text.contains("store -> executor  (src/store.rs:1)"),
            "{text}"
        );
    }

    #[test]
    fn reads_a_crate_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
        std::fs::write(src.join("a.rs"), "use crate::b::X;\n").unwrap();
        std::fs::create_dir(src.join("b")).unwrap();
        std::fs::write(src.join("b/inner.rs"), "fn f() { crate::a::g() }\n").unwrap();
        std::fs::write(src.join("b/tests.rs"), "use crate::a;\n").unwrap();
        let g = crate_graph(src, "lib.rs").unwrap();
        assert_eq!(cycles(&g), vec![vec!["a", "b"]]);
        std::fs::write(src.join("b/inner.rs"), "fn f() {}\n").unwrap();
        let g = crate_graph(src, "lib.rs").unwrap();
        assert!(cycles(&g).is_empty(), "a tests.rs file does not count");
    }
}
