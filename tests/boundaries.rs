//! The arrows the architecture forbids (ARCHITECTURE.md), checked on the source: a forbidden
//! import anywhere fails this test with the file, the line and the rule it breaks.
//!
//! The check reads code lines (comments and doc comments are prose and may name anything) for
//! paths such as `axum::` or `crate::http`, so it needs no build graph and runs in a blink.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Where a rule applies, what may not appear there, and why.
struct Rule {
    under: &'static str,
    forbidden: &'static [&'static str],
    why: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        under: "crates/tickets/src",
        forbidden: &["axum::", "reqwest::", "deskhook::", "hyper::"],
        why: "the ticket core is a library of the helpdesk domain: it never reaches HTTP or delivery",
    },
    Rule {
        under: "src/queue",
        forbidden: &[
            "crate::http",
            "crate::delivery",
            "crate::signing",
            "reqwest::",
            "axum::",
        ],
        why: "the queue stores and hands out work: it never signs, sends or knows HTTP",
    },
    Rule {
        under: "src/delivery",
        forbidden: &["crate::http", "axum::"],
        why: "workers never call the API layer",
    },
    Rule {
        under: "src/sla",
        forbidden: &["crate::http", "crate::delivery", "axum::", "reqwest::"],
        why: "SLA timers emit events through the outbox; they never serve or send",
    },
    Rule {
        under: "src/ingest",
        forbidden: &["crate::delivery", "reqwest::"],
        why: "ingest stores events; delivery is the workers' business",
    },
    Rule {
        under: "src/http",
        forbidden: &[".invalidate()", ".notify_local()"],
        why: "handlers are thin: the module that changes an endpoint or the queue tells this \
              instance (the dispatcher's cached settings, its wake-up) after its commit",
    },
    Rule {
        under: "src/signing",
        forbidden: &["crate::", "sqlx::", "reqwest::", "axum::"],
        why: "signing is pure: bytes and secrets in, headers out",
    },
];

/// Outbound HTTP clients: deliveries go through `delivery/client.rs` only (its SSRF guard and
/// no environment proxies). The bench and the demo call Deskhook's own API on loopback.
const CLIENT_BUILDERS: &[&str] = &[
    "reqwest::Client::builder",
    "reqwest::Client::new",
    "ClientBuilder",
];
const CLIENT_BUILDERS_ALLOWED_IN: &[&str] = &["src/delivery/client.rs", "src/bench/", "src/demo/"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code lines of a file, numbered from 1, without comments, up to its test module (tests,
/// at the end of a file by convention, may use whatever checks the code).
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).expect("source");
    text.lines()
        .enumerate()
        .take_while(|(_, line)| line.trim() != "#[cfg(test)]")
        .filter_map(|(i, line)| {
            let code = line.split("//").next().unwrap_or_default().trim();
            (!code.is_empty()).then(|| (i + 1, code.to_owned()))
        })
        .collect()
}

#[test]
fn no_module_reaches_where_the_architecture_forbids() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    for rule in RULES {
        let mut files = Vec::new();
        rust_files(&root.join(rule.under), &mut files);
        assert!(!files.is_empty(), "{} holds no Rust file", rule.under);
        for file in files {
            for (number, line) in code_lines(&file) {
                for forbidden in rule.forbidden {
                    if line.contains(forbidden) {
                        broken.push(format!(
                            "{}:{number}: `{forbidden}` ({})",
                            file.strip_prefix(root).unwrap_or(&file).display(),
                            rule.why
                        ));
                    }
                }
            }
        }
    }
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for file in files {
        let relative = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        if CLIENT_BUILDERS_ALLOWED_IN
            .iter()
            .any(|allowed| relative.starts_with(allowed))
        {
            continue;
        }
        for (number, line) in code_lines(&file) {
            if CLIENT_BUILDERS.iter().any(|builder| line.contains(builder)) {
                broken.push(format!(
                    "{relative}:{number}: builds an HTTP client (outbound requests go through src/delivery/client.rs)"
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "forbidden arrows:\n{}",
        broken.join("\n")
    );
}

/// The top-level modules of `src/` (a directory or a file beside `lib.rs`) and the others each
/// one's code names: `crate::name` paths and the names in `use crate::{...}` groups.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = std::fs::read_dir(src)
        .expect("src")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_stem()?.to_str()?.to_owned();
            (path.is_dir() || path.extension().is_some_and(|e| e == "rs"))
                .then_some(name)
                .filter(|name| name != "lib" && name != "main")
        })
        .collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut files = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file);
        }
        let mut names = BTreeSet::new();
        for file in files {
            let code: Vec<String> = code_lines(&file).into_iter().map(|(_, l)| l).collect();
            names.extend(crate_paths(&code.join(" ")));
        }
        names.retain(|name| name != module && modules.contains(name));
        graph.insert(module.clone(), names);
    }
    graph
}

/// The first segment of every `crate::` path in `code`, groups included.
fn crate_paths(code: &str) -> Vec<String> {
    let identifier = |text: &str| -> String {
        text.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: those after `{` or a `,` at depth zero.
            let mut depth = 0;
            let mut expect_name = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect_name = true,
                    c if expect_name && !c.is_whitespace() => {
                        names.push(identifier(&group[i..]));
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.push(identifier(rest));
        }
    }
    names
}

/// A cycle through `start` in `graph`, if there is one, as the modules along it.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let here = path.last().expect("a path").clone();
        for next in graph.get(&here).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    walk(graph, start, &mut path, &mut BTreeSet::new()).then(|| {
        path.push(start.to_owned());
        path
    })
}

#[test]
fn the_modules_of_src_import_each_other_without_a_cycle() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 10, "found only {graph:?}");
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|module| cycle_from(&graph, module))
        .map(|cycle| cycle.join(" -> "))
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles between the modules of src/ (each module should be a layer \
         over the ones it names):\n{}",
        cycles.join("\n")
    );
}
