//! The arrows the architecture forbids (ARCHITECTURE.md), checked on the source: a forbidden
//! import anywhere fails this test with the file, the line and the rule it breaks.
//!
//! The check reads code lines (comments and doc comments are prose and may name anything) for
//! paths such as `axum::` or `crate::http`, so it needs no build graph and runs in a blink.

use std::path::{Path, PathBuf};

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
