//! Test support: start the real app on `127.0.0.1:0` against a fresh database, and talk to it.

pub mod hostile;
pub mod proxy;
pub mod receiver;

use std::{net::SocketAddr, time::Duration};

use deskhook::config::Config;
use deskhook_testkit::TestDatabase;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// The operator key of every instance a test starts, in process or as a process of its own,
/// so they open each other's sealed secrets as one deployment's instances do.
pub const OPERATOR_KEY: &str = "727dbe3bc55c849ef337710645afb908944f5ee02a8097f84ab6874b2b1f0425";

/// A running instance of the service.
pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    pub pool: sqlx::PgPool,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts the app with the default test configuration.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts an instance with the API role only: it accepts and stores, and nothing claims,
    /// rescues or sweeps, so a test can hold a backlog or drive the queue itself.
    pub async fn spawn_api_only() -> Self {
        Self::spawn_with(|config| {
            config.roles = deskhook::config::Roles {
                api: true,
                workers: false,
                timers: false,
            };
        })
        .await
    }

    /// Starts the app after `adjust` has changed its configuration.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let db = TestDatabase::create().await;
        Self::spawn_on(db, adjust).await
    }

    /// Starts another instance on the same database (several instances share one database).
    pub async fn spawn_on(db: TestDatabase, adjust: impl FnOnce(&mut Config)) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            deskhook::telemetry::init(deskhook::config::LogFormat::Pretty);
        }
        // The URL as `deskhook serve` resolves it: TLS preferred, plaintext when a node's
        // certificate is refused (Citus's are).
        let url = deskhook::database::prefer_tls_or_plaintext(db.url.clone()).await;
        let mut config = Config::for_database(url);
        config.allow_networks = deskhook::config::parse_networks("127.0.0.1/32").expect("cidr");
        config.rate_limit = deskhook::config::RateLimit::Off;
        // Every instance of a deployment shares the operator key.
        config.secret_box = deskhook::secret_box::SecretBox::new(
            deskhook::secret_box::SecretBox::parse_key(OPERATOR_KEY).expect("key"),
        );
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(deskhook::run(config, listener, shutdown.clone()));
        let app = Self {
            address,
            client: reqwest::Client::new(),
            pool: db.pool().await,
            db,
            shutdown,
            task: Some(task),
        };
        app.wait_ready().await;
        app
    }

    /// The URL of `path` on this instance.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = self.client.get(self.url("/readyz")).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the app did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the instance gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the app stops in time")
                .expect("the app task does not panic")
                .expect("the app stops cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A helpdesk API client of one workspace, for the helpdesk tests.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub key: String,
    pub workspace_id: i64,
}

impl TestApp {
    /// A new workspace and an admin key for it (bound to no user).
    pub async fn api(&self, name: &str) -> Api {
        let workspace_id = deskhook::auth::create_workspace(&self.pool, name)
            .await
            .expect("workspace");
        let key = deskhook::auth::create_key(
            &self.pool,
            workspace_id,
            &[deskhook::auth::Scope::Admin],
            None,
            None,
        )
        .await
        .expect("key")
        .key;
        Api {
            base: self.url("/v1"),
            client: self.client.clone(),
            key,
            workspace_id,
        }
    }
}

impl Api {
    /// Another key of the same workspace, with `scopes`, bound to `user_id` if given.
    pub async fn other_key(
        &self,
        pool: &sqlx::PgPool,
        scopes: &[deskhook::auth::Scope],
        user_id: Option<i64>,
    ) -> Self {
        let key = deskhook::auth::create_key(pool, self.workspace_id, scopes, None, user_id)
            .await
            .expect("key")
            .key;
        Self {
            base: self.base.clone(),
            client: self.client.clone(),
            key,
            workspace_id: self.workspace_id,
        }
    }

    /// A request to `/v1{path}` with the key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// Sends `request` and returns the status and the JSON body (`null` when empty).
    pub async fn send(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        Self::send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        Self::send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        Self::send(self.request(reqwest::Method::PATCH, path).json(&body)).await
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        Self::send(self.request(reqwest::Method::PUT, path).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        Self::send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// Sends a form body (`application/x-www-form-urlencoded`), as the seeds' curl `-d` does.
    pub async fn form(
        &self,
        method: reqwest::Method,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let body = serde_urlencoded::to_string(fields).expect("form");
        Self::send(
            self.request(method, path)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await
    }

    /// Creates a ticket for `email` and returns it (asserting 201).
    pub async fn ticket(&self, subject: &str, email: &str) -> serde_json::Value {
        let (status, body) = self
            .post(
                "/tickets",
                serde_json::json!({
                    "subject": subject,
                    "requester": {"email": email, "name": "Customer"},
                    "message": format!("About {subject}"),
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["data"].clone()
    }

    /// Creates an agent and returns it.
    pub async fn user(&self, name: &str, email: &str) -> serde_json::Value {
        let (status, body) = self
            .post("/users", serde_json::json!({"name": name, "email": email}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["data"].clone()
    }

    /// The event rows of this workspace: (type, data as JSON), oldest first.
    pub async fn events(&self, pool: &sqlx::PgPool) -> Vec<(String, serde_json::Value)> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT event_type, data FROM event WHERE workspace_id = $1 ORDER BY id",
        )
        .bind(self.workspace_id)
        .fetch_all(pool)
        .await
        .expect("events");
        rows.into_iter()
            .map(|(kind, data)| (kind, serde_json::from_str(&data).expect("event data")))
            .collect()
    }
}

/// The key behind a public id (`usr_…`), for binding keys to users in tests.
pub fn key_of(kind: deskhook::ids::Kind, id: &serde_json::Value) -> i64 {
    deskhook::ids::decode(kind, id.as_str().expect("an id string")).expect("a public id")
}
