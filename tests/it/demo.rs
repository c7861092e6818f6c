//! `deskhook demo` as a newcomer runs it: the built binary, no `DATABASE_URL`, a fresh data
//! directory. It must finish on its own, exit 0, show each delivery arriving with its
//! signature verified, say honestly what it cannot show yet, and leave no PostgreSQL running.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_deskhook");

/// Runs `deskhook demo` on `data_dir`, killing it if it outlives `limit`.
fn run_demo(data_dir: &Path, limit: Duration) -> Output {
    let mut child = Command::new(BIN)
        .arg("demo")
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env("DESKHOOK_DATA_DIR", data_dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start deskhook demo");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "deskhook demo ran longer than {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "deskhook-demo-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// PostgreSQL processes whose command line names `dir`.
fn postgres_processes_in(dir: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(dir) && text.contains("postgres") {
                found.push(text);
            }
        }
    }
    found
}

#[test]
fn the_demo_shows_signed_deliveries_then_exits_and_stops_its_database() {
    let data_dir = temp_dir();
    for run in ["first", "second (the data directory is reused)"] {
        let output = run_demo(&data_dir, Duration::from_secs(170));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{run} run exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
        for event in [
            "ticket.created",
            "ticket.replied",
            "ticket.closed",
            "sla.at_risk",
        ] {
            let line = stdout
                .lines()
                .find(|line| line.contains(&format!("← {event} evt_")))
                .unwrap_or_else(|| panic!("{run} run: no {event} arrival in\n{stdout}"));
            assert!(line.contains("signature verified"), "{line}");
        }
        assert!(
            stdout.contains("5 deliveries arrived, every signature verified"),
            "{stdout}"
        );
        // Where to look next: the live URLs, a curl with the key, the metrics.
        assert!(stdout.contains("Where to look next"), "{stdout}");
        assert!(stdout.contains("/metrics"), "{stdout}");
        assert!(
            stdout.contains("curl -s -H 'Authorization: Bearer dhk_"),
            "{stdout}"
        );
        assert!(
            stdout.contains(
                r#"deskhook_delivery_attempts_total{outcome="success",status_class="2xx"} 5"#
            ),
            "{stdout}"
        );
    }
    let cluster = data_dir.canonicalize().expect("dir").join("pg");
    let cluster = cluster.to_string_lossy();
    assert!(
        postgres_processes_in(&cluster).is_empty(),
        "the demo left PostgreSQL running"
    );
    assert!(!data_dir.join("pg/postmaster.pid").exists());
    let _ = std::fs::remove_dir_all(&data_dir);
}
