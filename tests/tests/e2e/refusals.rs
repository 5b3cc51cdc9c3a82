use std::sync::Arc;

use proto::{ErrorCode, Hello, Message};
use quinn::ConnectionError;
use sekisho_client::{ClientConfig, ConnectError, ForwardError, Session};
use std::time::Duration;

use sekisho_broker::approval::{DeskError, Until};
use sekisho_broker::session::RequestId;
use sekisho_e2e::{APPROVER, EchoServer, TestBroker, Vendor};
use tokio::net::TcpListener;
use tunnel::frames::{MessageReader, write_message};

fn refusal(
    result: Result<(tunnel::link::SendHalf, tunnel::link::RecvHalf), ForwardError>,
) -> proto::ErrorMessage {
    match result {
        Err(ForwardError::Refused(refusal)) => refusal,
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the forward was opened"),
    }
}

async fn two_vendors() -> (TestBroker, EchoServer, EchoServer) {
    let ours = EchoServer::start().await;
    let theirs = EchoServer::start().await;
    let broker = TestBroker::start(&[
        Vendor::new("acme-ehr").target("ehr-db", ours.addr()),
        Vendor::new("nihon-pacs").target("pacs", theirs.addr()),
    ])
    .await;
    (broker, ours, theirs)
}

#[tokio::test]
async fn an_unknown_target_name_is_refused_with_a_sentence_that_says_what_to_do() {
    let (broker, _ours, _theirs) = two_vendors().await;
    let session = broker.open_session("acme-ehr", "tanaka", &["ehr-db"]).await;
    let refused = refusal(session.open_forward("no-such-target").await);
    assert_eq!(refused.code, ErrorCode::TargetRefused);
    assert_eq!(
        refused.message,
        "`no-such-target` is not a target you may reach; check the name, or ask the hospital to add it to your vendor's agreement."
    );
    // The session is still usable after a refusal.
    assert!(session.open_forward("ehr-db").await.is_ok());
}

#[tokio::test]
async fn another_vendors_target_gets_exactly_the_answer_a_made_up_name_gets() {
    let (broker, _ours, _theirs) = two_vendors().await;
    let session = broker.open_session("acme-ehr", "tanaka", &["ehr-db"]).await;
    let theirs = refusal(session.open_forward("pacs").await);
    let made_up = refusal(session.open_forward("zzzz").await);
    assert_eq!(theirs.code, made_up.code);
    assert_eq!(theirs.message.replace("pacs", "zzzz"), made_up.message);
}

#[tokio::test]
async fn an_address_instead_of_a_target_name_is_refused() {
    let (broker, ours, _theirs) = two_vendors().await;
    let session = broker.open_session("acme-ehr", "tanaka", &["ehr-db"]).await;
    let refused = refusal(session.open_forward(&ours.addr().to_string()).await);
    assert_eq!(refused.code, ErrorCode::TargetRefused);
}

#[tokio::test]
async fn a_target_name_that_resolves_to_loopback_is_refused_unless_the_policy_allows_it() {
    let echo = EchoServer::start().await;
    let broker =
        TestBroker::start(&[Vendor::new("acme-ehr")
            .target_at("sneaky", &format!("localhost:{}", echo.addr().port()))])
        .await;
    // Names resolve when the request is approved: the approval is refused, and says why.
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let id = broker.request(&mut session, &["sneaky"]).await;
    let refused = broker
        .desk()
        .approve(
            &RequestId::parse(&id).unwrap(),
            APPROVER,
            Until::For(Duration::from_secs(600)),
        )
        .await
        .expect_err("a target that resolves to loopback is never pinned");
    match refused {
        DeskError::Refused(refusal) => {
            assert_eq!(refusal.code, ErrorCode::TargetAddressForbidden);
            assert!(refusal.message.contains("loopback"), "{}", refusal.message);
        }
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn a_target_that_does_not_answer_is_reported_as_unreachable() {
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("down", closed_port)]).await;
    let session = broker.open_session("acme-ehr", "tanaka", &["down"]).await;
    let refused = refusal(session.open_forward("down").await);
    assert_eq!(refused.code, ErrorCode::TargetUnreachable);
    assert!(
        refused.message.contains("`down` did not accept"),
        "{}",
        refused.message
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_rejected_at_the_handshake() {
    let (broker, _ours, _theirs) = two_vendors().await;
    let other = TestBroker::start(&[Vendor::new("acme-ehr")]).await;
    let foreign = other.credentials("acme-ehr", "tanaka").await;
    let config = ClientConfig::from_pem(
        &broker.addr().to_string(),
        broker.ca_pem().as_bytes(),
        foreign.certificate_pem.as_bytes(),
        foreign.private_key_pem.as_bytes(),
    )
    .unwrap();
    match Session::connect(&config).await {
        Err(ConnectError::CertificateRejected { reason }) => {
            assert_eq!(reason, "unknown certificate authority");
        }
        Err(other) => panic!("expected a certificate rejection, got: {other}"),
        Ok(_) => panic!("a foreign certificate was accepted"),
    }
    // The refusal is on the record, with the peer's address and the stage.
    let refused = broker
        .first_event(sekisho_broker::audit::EventKind::ConnectionRefused)
        .await;
    let details: std::collections::HashMap<_, _> = refused.event.details.into_iter().collect();
    assert_eq!(details["stage"], "handshake");
    assert!(details["peer"].starts_with("127.0.0.1:"), "{details:?}");
}

#[tokio::test]
async fn the_client_refuses_a_broker_whose_certificate_is_not_from_the_pinned_ca() {
    let (broker, _ours, _theirs) = two_vendors().await;
    let impostor = TestBroker::start(&[Vendor::new("acme-ehr")]).await;
    // Credentials from the real broker, pointed at the impostor's address.
    let ours = broker.credentials("acme-ehr", "tanaka").await;
    let config = ClientConfig::from_pem(
        &impostor.addr().to_string(),
        broker.ca_pem().as_bytes(),
        ours.certificate_pem.as_bytes(),
        ours.private_key_pem.as_bytes(),
    )
    .unwrap();
    let error = Session::connect(&config)
        .await
        .err()
        .expect("the impostor must be refused");
    assert!(
        matches!(error, ConnectError::BrokerNotTrusted { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("is not the hospital's broker"),
        "{error}"
    );
}

#[tokio::test]
async fn a_vendor_whose_policy_file_is_gone_is_refused_by_name_after_the_handshake() {
    let (mut broker, _ours, theirs) = two_vendors().await;
    // Enrolled while the agreement existed; then the hospital removed the vendor's file.
    broker.enroll("acme-ehr", "tanaka").await;
    broker.rewrite_policies(&[Vendor::new("nihon-pacs").target("pacs", theirs.addr())]);
    broker.restart().await;
    let error = broker
        .connect("acme-ehr", "tanaka")
        .await
        .err()
        .expect("refused");
    match error {
        ConnectError::Refused(refusal) => {
            assert_eq!(refusal.code, ErrorCode::UnknownIdentity);
            assert!(
                refusal.message.contains("`acme-ehr`"),
                "{}",
                refusal.message
            );
        }
        other => panic!("expected the broker's refusal, got: {other}"),
    }
}

/// A QUIC client with valid credentials from `broker` that offers `alpn` instead of ours.
async fn connect_with_alpn(broker: &TestBroker, alpn: &[u8]) -> ConnectionError {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let issued = broker.credentials("acme-ehr", "tanaka").await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(broker.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(tunnel::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(issued.private_key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let connecting = endpoint
        .connect(broker.addr(), proto::BROKER_SERVER_NAME)
        .unwrap();
    match connecting.await {
        Err(error) => error,
        Ok(connection) => connection.closed().await,
    }
}

#[tokio::test]
async fn a_client_speaking_another_protocol_is_refused() {
    let (broker, _ours, _theirs) = two_vendors().await;
    match connect_with_alpn(&broker, b"h3").await {
        // TLS alert no_application_protocol (120) as a QUIC crypto error.
        ConnectionError::ConnectionClosed(close) => {
            assert_eq!(u64::from(close.error_code), 0x100 + 120, "{close}");
        }
        other => panic!("expected the broker to close with no_application_protocol, got {other}"),
    }
}

#[tokio::test]
async fn a_client_of_another_protocol_version_is_told_to_install_the_right_client() {
    let (broker, _ours, _theirs) = two_vendors().await;
    let config = broker.client_config("acme-ehr", "tanaka").await;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config.quic_config().unwrap());
    let connection = endpoint
        .connect(broker.addr(), proto::BROKER_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (send, recv) = connection.open_bi().await.unwrap();
    let (mut send, mut recv) = (
        tunnel::link::SendHalf::Quic(send),
        tunnel::link::RecvHalf::Quic(recv),
    );
    let hello = Message::Hello(Hello {
        version: 99,
        client_software: "future".into(),
    });
    write_message(&mut send, &hello).await.unwrap();
    match MessageReader::new().expect(&mut recv).await.unwrap() {
        Message::Error(refusal) => {
            assert_eq!(refusal.code, ErrorCode::UnsupportedVersion);
            assert!(
                refusal
                    .message
                    .contains("speaks sekisho protocol version 1"),
                "{}",
                refusal.message
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_forward_that_does_not_start_with_connect_is_refused_as_a_protocol_violation() {
    let (broker, _ours, _theirs) = two_vendors().await;
    let session = broker.open_session("acme-ehr", "tanaka", &["ehr-db"]).await;
    let (mut send, mut recv) = session.link().open_bi().await.unwrap();
    send.write_all(&[0x10, 0, 0, 0, 3, 0, 9, b'x'])
        .await
        .unwrap();
    match MessageReader::new().expect(&mut recv).await.unwrap() {
        Message::Error(refusal) => assert_eq!(refusal.code, ErrorCode::ProtocolViolation),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // And nothing else follows the refusal.
    assert_eq!(recv.read_to_end(1024).await.unwrap(), Vec::<u8>::new());
}

#[tokio::test]
async fn a_vendor_limited_to_its_own_networks_is_refused_from_elsewhere() {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[
        Vendor::new("acme-ehr")
            .target("echo", echo.addr())
            .source_networks(&["203.0.113.0/24"]),
        Vendor::new("local-vendor")
            .target("echo", echo.addr())
            .source_networks(&["198.51.100.0/24", "127.0.0.0/8"]),
    ])
    .await;
    match broker.connect("acme-ehr", "tanaka").await {
        Err(ConnectError::Refused(refusal)) => {
            assert_eq!(refusal.code, ErrorCode::SourceNotAllowed);
            assert!(refusal.message.contains("127.0.0.1"), "{}", refusal.message);
        }
        Err(other) => panic!("expected the broker's refusal, got: {other}"),
        Ok(_) => panic!("a connection from outside the vendor's networks was accepted"),
    }
    let allowed = broker.open_session("local-vendor", "sato", &["echo"]).await;
    assert!(allowed.open_forward("echo").await.is_ok());
}

#[tokio::test]
async fn a_forward_before_any_session_is_open_is_refused() {
    let (broker, _ours, _theirs) = two_vendors().await;
    let session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let refused = refusal(session.open_forward("ehr-db").await);
    assert_eq!(refused.code, ErrorCode::NoSession);
    assert!(
        refused.message.contains("sekisho connect"),
        "{}",
        refused.message
    );
}

#[tokio::test]
async fn a_session_reaches_only_the_targets_it_was_approved_for() {
    let one = EchoServer::start().await;
    let two = EchoServer::start().await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr")
        .target("ehr-db", one.addr())
        .target("ehr-web", two.addr())])
    .await;
    let session = broker.open_session("acme-ehr", "tanaka", &["ehr-db"]).await;
    assert!(session.open_forward("ehr-db").await.is_ok());
    // The vendor may reach ehr-web, but this session was not approved for it: the answer is
    // the one any unknown name gets.
    assert_eq!(
        refusal(session.open_forward("ehr-web").await),
        refusal(
            session
                .open_forward("no-such-target")
                .await
                .map_err(|e| match e {
                    ForwardError::Refused(mut refusal) => {
                        refusal.message = refusal.message.replace("no-such-target", "ehr-web");
                        ForwardError::Refused(refusal)
                    }
                    other => other,
                })
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brokers_own_web_ui_is_never_a_target_on_any_of_its_addresses_unless_a_policy_says_why()
{
    let mut broker = sekisho_e2e::web::start_web_broker(&[Vendor::new("acme-ehr")], false).await;
    let web = broker.web_addr();
    // On the address it listens on, on another loopback address, and on 0.0.0.0 (which
    // Linux routes to this host).
    let on_other_loopback = std::net::SocketAddr::new("127.0.0.2".parse().unwrap(), web.port());
    let on_unspecified = std::net::SocketAddr::new("0.0.0.0".parse().unwrap(), web.port());
    broker.rewrite_policies(&[Vendor::new("acme-ehr")
        .target("console", web)
        .target("console-2", on_other_loopback)
        .broker_port_target(
            "console-3",
            on_unspecified,
            "the vendor maintains this host",
        )]);
    let asked = broker.request_reload().await;
    broker
        .event_after(&[sekisho_broker::audit::EventKind::PolicyLoaded], asked)
        .await;
    broker.reread_policies().await;
    let session = broker
        .open_session("acme-ehr", "tanaka", &["console", "console-2", "console-3"])
        .await;
    for target in ["console", "console-2"] {
        let refused = refusal(session.open_forward(target).await);
        assert_eq!(refused.code, ErrorCode::TargetAddressForbidden, "{target}");
        assert!(
            refused.message.contains("the broker itself"),
            "{target}: {}",
            refused.message
        );
    }
    // The target whose policy says why is carried: the web UI answers through it.
    let (mut send, mut recv) = session.open_forward("console-3").await.unwrap();
    send.write_all(b"GET /login HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    // No half-close: a web server may take an early end of the request for a client gone
    // away. HTTP/1.0 ends the answer by closing.
    let answer = recv.read_to_end(64 * 1024).await.unwrap();
    send.finish().unwrap();
    assert!(
        answer.starts_with(b"HTTP/1."),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}
