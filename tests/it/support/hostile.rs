//! Receivers that misbehave at the TCP and HTTP level, on loopback: they count the requests
//! they get and answer each in their one bad way.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

/// How a hostile receiver answers.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Reads the request and never answers.
    Hang,
    /// Reads the start of the request and resets the connection.
    Reset,
    /// Answers `200` one byte every 100 ms.
    ByteByByte,
    /// Answers `200` with a 100 MB body.
    HugeBody,
    /// Answers `302` to this URL.
    Redirect(String),
    /// Answers `429` with `Retry-After: 0`.
    TooManyRetryNow,
}

/// A running hostile receiver.
pub struct Hostile {
    /// Its URL.
    pub url: String,
    requests: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<tokio::time::Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    /// Starts one on `127.0.0.1:0`.
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let requests = Arc::new(AtomicUsize::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let requests = requests.clone();
            let arrivals = arrivals.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let behaviour = behaviour.clone();
                    let requests = requests.clone();
                    let arrivals = arrivals.clone();
                    tokio::spawn(async move {
                        serve(stream, &behaviour, &requests, &arrivals).await;
                    });
                }
            }
        });
        Self {
            url,
            requests,
            arrivals,
            task,
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// When each request arrived.
    pub fn arrivals(&self) -> Vec<tokio::time::Instant> {
        self.arrivals.lock().expect("lock").clone()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request's head (and as much body as came with it).
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut buffer = vec![0_u8; 64 * 1024];
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) => {
                seen.extend_from_slice(&buffer[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    return true;
                }
            }
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    behaviour: &Behaviour,
    requests: &AtomicUsize,
    arrivals: &Mutex<Vec<tokio::time::Instant>>,
) {
    // One request per connection: every answer closes it.
    if !read_request(&mut stream).await {
        return;
    }
    requests.fetch_add(1, Ordering::SeqCst);
    arrivals
        .lock()
        .expect("lock")
        .push(tokio::time::Instant::now());
    match behaviour {
        Behaviour::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
        Behaviour::Reset => {
            // Linger zero: closing sends a RST instead of a FIN.
            let _ = stream.set_zero_linger();
        }
        Behaviour::ByteByByte => {
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
            for byte in answer {
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Behaviour::HugeBody => {
            let size = 100 * 1024 * 1024;
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < size {
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
                sent += chunk.len();
            }
        }
        Behaviour::Redirect(to) => {
            let answer = format!(
                "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
        Behaviour::TooManyRetryNow => {
            let answer = "HTTP/1.1 429 Too Many Requests\r\nretry-after: 0\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    }
}
