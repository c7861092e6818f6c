//! Test support: start the real app on `127.0.0.1:0` against a fresh database, and talk to it.

use std::{net::SocketAddr, time::Duration};

use deskhook::config::Config;
use deskhook_testkit::TestDatabase;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

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

    /// Starts the app after `adjust` has changed its configuration.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let db = TestDatabase::create().await;
        Self::spawn_on(db, adjust).await
    }

    /// Starts another instance on the same database (several instances share one database).
    pub async fn spawn_on(db: TestDatabase, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_database(&db.url);
        config.allow_networks = deskhook::config::parse_networks("127.0.0.1/32").expect("cidr");
        config.rate_limit = deskhook::config::RateLimit::Off;
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
