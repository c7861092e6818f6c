//! The `deskhook` binary as an operator runs it: the private PostgreSQL default, bad settings,
//! missing server binaries.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_deskhook");

fn deskhook() -> Command {
    let mut command = Command::new(BIN);
    // The test run's own server must not leak into these commands.
    command.env_remove("DATABASE_URL").env("NO_COLOR", "1");
    command
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "deskhook-cli-{name}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher as _, RandomState};
    RandomState::new().hash_one(Instant::now())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Processes whose command line mentions `needle` (here: a cluster directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) && text.contains("postgres") {
                found.push(text);
            }
        }
    }
    found
}

async fn wait_ready(port: u16, child: &mut Child) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && response.status() == 200
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("deskhook exited early with {status}");
        }
        assert!(Instant::now() < deadline, "deskhook did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn serve(data_dir: &Path, port: u16, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    deskhook()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DESKHOOK_DATA_DIR", data_dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start deskhook")
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    use nix::{sys::signal, unistd::Pid};
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    signal::kill(pid, signal::Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "deskhook did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn serve_runs_its_own_postgres_reuses_it_and_stops_it_on_sigterm() {
    let data_dir = temp_dir("serve");
    let port = free_port();

    let first_log = data_dir.join("first.log");
    let mut first = serve(&data_dir, port, &first_log);
    wait_ready(port, &mut first).await;
    let cluster = std::fs::read_to_string(&first_log).expect("log");
    assert!(
        cluster.contains("created a private PostgreSQL cluster"),
        "{cluster}"
    );
    let status = terminate(&mut first);
    assert!(status.success(), "exit status {status}");
    let cluster_dir = data_dir.canonicalize().expect("dir").join("pg");
    let cluster_dir = cluster_dir.to_string_lossy();
    assert!(
        processes_mentioning(&cluster_dir).is_empty(),
        "PostgreSQL left running: {:?}",
        processes_mentioning(&cluster_dir)
    );

    // The second start reuses the same cluster (and so the same data).
    let second_log = data_dir.join("second.log");
    let mut second = serve(&data_dir, port, &second_log);
    wait_ready(port, &mut second).await;
    let log = std::fs::read_to_string(&second_log).expect("log");
    assert!(
        !log.contains("created a private PostgreSQL cluster"),
        "{log}"
    );
    let status = terminate(&mut second);
    assert!(status.success(), "exit status {status}");
    assert!(processes_mentioning(&cluster_dir).is_empty());
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn a_bad_setting_stops_the_start_with_one_line_naming_it() {
    let output = deskhook()
        .arg("serve")
        .env("DESKHOOK_LISTEN", "not-an-address")
        .output()
        .expect("run deskhook");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DESKHOOK_LISTEN"), "{stderr}");

    let output = deskhook()
        .args(["serve", "--retry-schedule", "5s,soon"])
        .output()
        .expect("run deskhook");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DESKHOOK_RETRY_SCHEDULE"), "{stderr}");
}

#[test]
fn missing_server_binaries_say_which_package_to_install() {
    let data_dir = temp_dir("nobin");
    let empty_bin = temp_dir("empty-bin");
    let output = deskhook()
        .arg("serve")
        .env("DESKHOOK_DATA_DIR", &data_dir)
        .env("DESKHOOK_POSTGRES_BIN", &empty_bin)
        .output()
        .expect("run deskhook");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.contains("apt-get install -y postgresql"), "{stderr}");
    assert!(last.contains("DATABASE_URL"), "{stderr}");
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&empty_bin);
}
