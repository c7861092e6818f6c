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

/// `serve` on `data_dir` with extra settings, its stderr in `log`.
fn serve_with(data_dir: &Path, port: u16, log: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    let mut command = deskhook();
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DESKHOOK_DATA_DIR", data_dir)
        .env("DESKHOOK_ALLOW_NETWORKS", "127.0.0.0/8")
        .stdout(Stdio::null())
        .stderr(log);
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().expect("start deskhook")
}

async fn revealed_secret(port: u16, key: &str, webhook: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{port}/v1/webhooks/{webhook}/secret"
        ))
        .bearer_auth(key)
        .send()
        .await
        .expect("reveal")
}

#[tokio::test]
async fn changing_the_operator_key_keeps_every_endpoint_and_a_wrong_key_stops_the_start() {
    let data_dir = temp_dir("rekey");
    let port = free_port();
    let created = deskhook()
        .args(["workspace", "create", "rekey"])
        .env("DESKHOOK_DATA_DIR", &data_dir)
        .output()
        .expect("workspace create");
    assert!(created.status.success(), "{created:?}");
    let created: serde_json::Value =
        serde_json::from_slice(&created.stdout).expect("one JSON line");
    let api_key = created["api_key"].as_str().expect("api_key").to_owned();

    // 1. The generated key (no DESKHOOK_SECRET_KEY): an endpoint and its secret.
    let mut service = serve_with(&data_dir, port, &data_dir.join("1.log"), &[]);
    wait_ready(port, &mut service).await;
    let endpoint: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/webhooks"))
        .bearer_auth(&api_key)
        .json(&serde_json::json!({"url": "http://127.0.0.1:9/hook"}))
        .send()
        .await
        .expect("create webhook")
        .json()
        .await
        .expect("json");
    let webhook = endpoint["data"]["id"].as_str().expect("id").to_owned();
    let secret = endpoint["data"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert!(terminate(&mut service).success());

    // 2. The operator sets their own key, as the README says: the endpoint keeps its secret.
    let own_key = hex::encode(rand::random::<[u8; 32]>());
    let mut service = serve_with(
        &data_dir,
        port,
        &data_dir.join("2.log"),
        &[("DESKHOOK_SECRET_KEY", &own_key)],
    );
    wait_ready(port, &mut service).await;
    let answer = revealed_secret(port, &api_key, &webhook).await;
    assert_eq!(
        answer.status(),
        200,
        "the secret is lost after setting a key"
    );
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(body["data"]["secret"], secret.as_str());
    assert!(terminate(&mut service).success());

    // 3. A key that opens nothing stops the start with one clear line.
    std::fs::remove_file(data_dir.join("secret.key")).expect("remove the generated key");
    let other_key = hex::encode(rand::random::<[u8; 32]>());
    let output = deskhook()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DESKHOOK_DATA_DIR", &data_dir)
        .env("DESKHOOK_SECRET_KEY", &other_key)
        .output()
        .expect("run deskhook");
    assert!(
        !output.status.success(),
        "started with a key that opens nothing"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.contains("DESKHOOK_SECRET_KEY_PREVIOUS"), "{stderr}");
    assert!(!stderr.contains(&own_key), "the key was printed: {stderr}");

    // 4. Rotating on: the read in step 2 re-sealed the secret under the operator's key, so
    // listing that one as previous is enough without the generated key file.
    let mut service = serve_with(
        &data_dir,
        port,
        &data_dir.join("4.log"),
        &[
            ("DESKHOOK_SECRET_KEY", &other_key),
            ("DESKHOOK_SECRET_KEY_PREVIOUS", &own_key),
        ],
    );
    wait_ready(port, &mut service).await;
    let answer = revealed_secret(port, &api_key, &webhook).await;
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(body["data"]["secret"], secret.as_str());
    assert!(terminate(&mut service).success());
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn a_placeholder_operator_key_stops_the_start_with_one_clear_line() {
    let output = deskhook()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DESKHOOK_SECRET_KEY", "0".repeat(64))
        .output()
        .expect("run deskhook");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("placeholder"), "{stderr}");
    assert!(stderr.contains("openssl rand -hex 32"), "{stderr}");
    assert!(
        !stderr.contains(&"0".repeat(64)),
        "the key is never echoed: {stderr}"
    );
}

/// Makes `postgres` present a self-signed X.509 v1 certificate, as Citus does for its nodes.
async fn serve_a_v1_certificate(postgres: &deskhook_local_postgres::LocalPostgres) {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let dir = postgres.cluster_dir().to_path_buf();
    let key = dir.join("server.key");
    let cert = dir.join("server.crt");
    let csr = dir.join("server.csr");
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    openssl(&["genrsa", "-out", &path(&key), "2048"]);
    openssl(&[
        "req",
        "-new",
        "-key",
        &path(&key),
        "-subj",
        "/CN=localhost",
        "-out",
        &path(&csr),
    ]);
    // `x509 -req` with no extensions writes a version 1 certificate.
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path(&csr),
        "-signkey",
        &path(&key),
        "-days",
        "2",
        "-out",
        &path(&cert),
    ]);
    let owner = std::fs::metadata(&dir).expect("cluster dir").uid();
    for file in [&key, &cert] {
        nix::unistd::chown(file, Some(nix::unistd::Uid::from_raw(owner)), None).expect("chown");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let url = format!(
        "{}?sslmode=disable",
        postgres.connect_info().url("postgres")
    );
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("admin connection");
    for statement in [
        "ALTER SYSTEM SET ssl = on",
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
        "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        "SELECT pg_reload_conf()",
    ] {
        sqlx::query(statement)
            .execute(&mut admin)
            .await
            .expect(statement);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while sqlx::query_scalar::<_, String>("SHOW ssl")
        .fetch_one(&mut admin)
        .await
        .expect("ssl")
        != "on"
    {
        assert!(Instant::now() < deadline, "ssl did not turn on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_server_certificate_tls_cannot_use_falls_back_under_prefer_and_is_explained_otherwise() {
    let dir = temp_dir("tls-v1");
    let postgres = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || deskhook_local_postgres::LocalPostgres::start(&dir).expect("private postgres")
    })
    .await
    .expect("join");
    serve_a_v1_certificate(&postgres).await;
    let url = postgres.connect_info().url("postgres");

    // The default (prefer), as libpq does: TLS cannot be had, so plaintext, said once.
    let migrated = deskhook()
        .args(["migrate"])
        .env("DATABASE_URL", &url)
        .env("DESKHOOK_DATA_DIR", &dir)
        .output()
        .expect("run");
    let log = String::from_utf8_lossy(&migrated.stderr).to_string()
        + &String::from_utf8_lossy(&migrated.stdout);
    assert!(migrated.status.success(), "{log}");
    assert!(log.contains("X.509 v1"), "{log}");

    // Asked for TLS, it stops with the fix in one line.
    let required = deskhook()
        .args(["migrate"])
        .env("DATABASE_URL", format!("{url}?sslmode=require"))
        .env("DESKHOOK_DATA_DIR", &dir)
        .output()
        .expect("run");
    let log = String::from_utf8_lossy(&required.stderr).to_string();
    assert!(!required.status.success());
    assert!(
        log.contains("X.509 v1") && log.contains("ssl_cert_file"),
        "{log}"
    );
    tokio::task::spawn_blocking(move || postgres.stop())
        .await
        .expect("stop");
    let _ = std::fs::remove_dir_all(&dir);
}
