//! The transports alone: one bulk stream between two processes over QUIC (quinn, with the
//! endpoint, socket and transport settings sekisho's client and broker use) and over TLS 1.3
//! on TCP (rustls, the same crypto provider), with no TCP legs and no relay around them.
//!
//! This is the floor under anything built on each transport: a relay can only add to it. It
//! answers "could tuning our relay, or our QUIC settings, ever reach `ssh -L`?": if QUIC
//! alone already costs more CPU per GB than `ssh -L`'s two relays with their TCP legs, no
//! change in sekisho's own code can.
//!
//! Each measurement starts a receiver (on the server side of the network) and a sender, lets
//! the sender connect, then reads both processes' CPU from `/proc` around the transfer. The
//! sender reports done only once the receiver has answered with the byte count it got.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::ValueEnum;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tunnel::udp::PacketSize;

use crate::netns::Network;
use crate::procs::{Child, cpu_snapshot, cpu_spent};
use crate::report::{Results, metric};

/// A transport measured alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Transport {
    /// QUIC, one stream (quinn, sekisho's settings, 1,452-byte packets).
    Quic,
    /// TLS 1.3 over TCP (rustls).
    Tls,
}

impl Transport {
    pub(crate) const ALL: [Transport; 2] = [Transport::Quic, Transport::Tls];

    /// The row's name in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Quic => "QUIC alone (quinn, sekisho's settings)",
            Transport::Tls => "TLS 1.3 over TCP alone (rustls)",
        }
    }
}

/// Bytes per write: what the splice hands quinn from one TCP read.
const CHUNK: usize = 64 * 1024;
/// The name on the receiver's certificate.
const SERVER_NAME: &str = "localhost";

/// A self-signed certificate and key for the receivers, as PEM files in a directory of their
/// own.
pub(crate) struct Credentials {
    dir: tempfile::TempDir,
}

impl Credentials {
    pub(crate) fn generate() -> anyhow::Result<Credentials> {
        let dir = tempfile::tempdir()?;
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])?;
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem())?;
        std::fs::write(
            dir.path().join("key.pem"),
            certified.signing_key.serialize_pem(),
        )?;
        Ok(Credentials { dir })
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

/// Measures one transfer of `bytes` over `transport` on `network` into `results`.
pub(crate) async fn measure(
    network: &Network,
    transport: Transport,
    bytes: u64,
    credentials: &Credentials,
    results: &mut Results,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let listen = network.listen_ip();
    let mut command = network.server_command(&exe);
    command
        .arg("transport-receive")
        .arg(transport_arg(transport))
        .arg("--ip")
        .arg(listen.to_string())
        .arg("--cert")
        .arg(credentials.cert())
        .arg("--key")
        .arg(credentials.key());
    let mut receiver = Child::spawn(&format!("{} receiver", transport.name()), command)?;
    let port: u16 = receiver.expect_stdout("LISTENING").await?.parse()?;

    let mut command = tokio::process::Command::new(&exe);
    command
        .arg("transport-send")
        .arg(transport_arg(transport))
        .arg("--to")
        .arg(SocketAddr::new(network.server_ip, port).to_string())
        .arg("--bytes")
        .arg(bytes.to_string())
        .arg("--ca")
        .arg(credentials.cert());
    let mut sender = Child::spawn(&format!("{} sender", transport.name()), command)?;
    sender.expect_stdout("CONNECTED").await?;

    let pids = [sender.pid, receiver.pid];
    let before = cpu_snapshot(&pids);
    sender.say("GO").await?;
    let seconds: f64 = sender.expect_stdout("SENT").await?.parse()?;
    let after = cpu_snapshot(&pids);
    sender.stop().await;
    receiver.stop().await;

    let spent = cpu_spent(&before, &after);
    let gigabytes = bytes as f64 / 1e9;
    let name = transport.name();
    results.add_transport(
        network.name,
        name,
        metric::BULK_1,
        "Gbit/s",
        gigabytes * 8.0 / seconds,
    );
    results.add_transport(
        network.name,
        name,
        metric::CPU_RELAY,
        "s/GB",
        spent.total() / gigabytes,
    );
    results.add_transport(
        network.name,
        name,
        metric::CPU_RELAY_USER,
        "s/GB",
        spent.user / gigabytes,
    );
    results.add_transport(
        network.name,
        name,
        metric::CPU_RELAY_KERNEL,
        "s/GB",
        spent.kernel / gigabytes,
    );
    Ok(())
}

fn transport_arg(transport: Transport) -> String {
    format!(
        "--transport={}",
        transport
            .to_possible_value()
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default()
    )
}

/// `sekisho-bench transport-receive`: accepts one connection on `ip`, reads one stream to its
/// end, answers with the byte count (8 bytes, big endian), and waits for stdin to close.
pub(crate) async fn receive(
    transport: Transport,
    ip: IpAddr,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<()> {
    let chain = vec![CertificateDer::from_pem_file(cert).context("the receiver's certificate")?];
    let key = PrivateKeyDer::from_pem_file(key).context("the receiver's key")?;
    match transport {
        Transport::Quic => {
            let mut config = quinn::ServerConfig::with_single_cert(chain, key)?;
            config.transport_config(Arc::new(tuned_transport()));
            let endpoint =
                tunnel::udp::endpoint(SocketAddr::new(ip, 0), Some(config), PacketSize::ETHERNET)?;
            println!("LISTENING {}", endpoint.local_addr()?.port());
            let incoming = endpoint
                .accept()
                .await
                .ok_or_else(|| anyhow!("the endpoint closed"))?;
            let connection = incoming.await?;
            let (mut send, mut recv) = connection.accept_bi().await?;
            let mut total = 0u64;
            while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
                total += chunk.bytes.len() as u64;
            }
            send.write_all(&total.to_be_bytes()).await?;
            send.finish()?;
            wait_for_stdin_to_close().await;
            connection.close(0u32.into(), b"");
        }
        Transport::Tls => {
            let config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0)).await?;
            println!("LISTENING {}", listener.local_addr()?.port());
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let mut buffer = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                match tls.read(&mut buffer).await? {
                    0 => break,
                    read => total += read as u64,
                }
            }
            tls.write_all(&total.to_be_bytes()).await?;
            tls.shutdown().await?;
            wait_for_stdin_to_close().await;
        }
    }
    Ok(())
}

/// `sekisho-bench transport-send`: connects to `to`, says `CONNECTED`, waits for a line on
/// stdin, sends `bytes` on one stream, waits for the receiver's count and says `SENT seconds`.
pub(crate) async fn send(
    transport: Transport,
    to: SocketAddr,
    bytes: u64,
    ca: &Path,
) -> anyhow::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca).context("the receiver's certificate")?)?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let chunk = Bytes::from(vec![0x5a; CHUNK]);
    let chunks = bytes.div_ceil(CHUNK as u64);
    let count = match transport {
        Transport::Quic => {
            let mut config = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
            config.transport_config(Arc::new(tuned_transport()));
            let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
            let endpoint = tunnel::udp::endpoint(unspecified, None, PacketSize::ETHERNET)?;
            let connection = endpoint.connect_with(config, to, SERVER_NAME)?.await?;
            let (mut send, mut recv) = connection.open_bi().await?;
            println!("CONNECTED");
            stdin.next_line().await?;
            let started = Instant::now();
            for _ in 0..chunks {
                send.write_chunk(chunk.clone()).await?;
            }
            send.finish()?;
            let mut count = [0u8; 8];
            recv.read_exact(&mut count).await?;
            (u64::from_be_bytes(count), started.elapsed())
        }
        Transport::Tls => {
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(to).await?;
            let mut tls = connector
                .connect(ServerName::try_from(SERVER_NAME)?, tcp)
                .await?;
            println!("CONNECTED");
            stdin.next_line().await?;
            let started = Instant::now();
            for _ in 0..chunks {
                tls.write_all(&chunk).await?;
            }
            // Close the sending side (TLS close_notify, then TCP FIN); the count comes back.
            tls.shutdown().await?;
            let mut count = [0u8; 8];
            tls.read_exact(&mut count).await?;
            (u64::from_be_bytes(count), started.elapsed())
        }
    };
    let (received, took) = count;
    if received != chunks * CHUNK as u64 {
        bail!(
            "the receiver got {received} bytes of {}",
            chunks * CHUNK as u64
        );
    }
    println!("SENT {}", took.as_secs_f64());
    wait_for_stdin_to_close().await;
    Ok(())
}

/// The transport settings sekisho's client and broker share (ACK frequency).
fn tuned_transport() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    tunnel::udp::tune_transport(
        &mut transport,
        PacketSize::ETHERNET,
        tunnel::udp::Congestion::default(),
    );
    transport
}

async fn wait_for_stdin_to_close() {
    let mut stdin = tokio::io::stdin();
    let mut buffer = [0u8; 64];
    while matches!(stdin.read(&mut buffer).await, Ok(read) if read > 0) {}
}
