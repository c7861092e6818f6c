//! A TCP proxy on loopback between the service and PostgreSQL, to cut and delay the database
//! connection the way a flaky network or a failover does (no packaged proxy exists here).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// A running proxy to one upstream address.
pub struct Proxy {
    /// Where clients connect.
    pub address: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (generation, _) = watch::channel(0_u64);
        let task = tokio::spawn({
            let delay_ms = delay_ms.clone();
            let generation = generation.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let cut = generation.subscribe();
                    tokio::spawn(pipe(client, server, delay_ms.clone(), cut));
                }
            }
        });
        Self {
            address,
            delay_ms,
            generation,
            task,
        }
    }

    /// Drops every open connection at once (new ones are accepted again).
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Holds every chunk this long before forwarding it (zero for none).
    pub fn delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    delay_ms: Arc<AtomicU64>,
    mut cut: watch::Receiver<u64>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = forward(&mut client_read, &mut server_write, &delay_ms);
    let down = forward(&mut server_read, &mut client_write, &delay_ms);
    tokio::select! {
        () = up => {}
        () = down => {}
        _ = cut.changed() => {}
    }
}

async fn forward(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    delay_ms: &AtomicU64,
) {
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            return;
        }
        let delay = delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
