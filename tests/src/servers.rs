//! Targets for tests: small TCP servers on `127.0.0.1:0` whose behaviour a test can check.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Echoes every byte back on every connection, and half-closes after the client does.
pub struct EchoServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = tcp.split();
                    if tokio::io::copy(&mut read, &mut write).await.is_ok() {
                        let _ = write.shutdown().await;
                    }
                });
            }
        });
        EchoServer { addr, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections and hands them to the test, which decides what to do with them.
pub struct ManualServer {
    addr: SocketAddr,
    accepted: mpsc::Receiver<TcpStream>,
    task: JoinHandle<()>,
}

impl ManualServer {
    pub async fn start() -> ManualServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, accepted) = mpsc::channel(16);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if sender.send(tcp).await.is_err() {
                    break;
                }
            }
        });
        ManualServer {
            addr,
            accepted,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next connection the broker made to this server.
    pub async fn accept(&mut self) -> TcpStream {
        self.accepted
            .recv()
            .await
            .expect("the server task is alive")
    }
}

impl Drop for ManualServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads until the peer finishes, returning everything.
pub async fn read_to_end(tcp: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await?;
    Ok(out)
}
