use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use proto::{EnrollCsr, EnrollStart, ErrorCode, Message};
use sekisho_broker::audit::EventKind;
use sekisho_broker::clock::Clock;
use sekisho_broker::identity;
use sekisho_broker::otp;
use sekisho_broker::pki::{self, TechnicianIdentity};
use sekisho_broker::store::StoreLocation;
use sekisho_client::enroll::{self, EnrollError};
use sekisho_client::{ConnectError, Session, SessionEvent};
use sekisho_e2e::{EchoServer, TestBroker, Vendor, echo_once};
use tunnel::frames::{MessageReader, write_message};

/// Disabling must reach a live session within this.
const REACH: Duration = Duration::from_secs(1);

async fn broker() -> (TestBroker, EchoServer) {
    let echo = EchoServer::start().await;
    let broker = TestBroker::start(&[
        Vendor::new("acme-ehr").target("echo", echo.addr()),
        Vendor::new("nihon-pacs").target("pacs", echo.addr()),
    ])
    .await;
    (broker, echo)
}

fn enroll_refusal(result: Result<enroll::Enrollment, EnrollError>) -> proto::ErrorMessage {
    match result {
        Err(EnrollError::Refused(refusal)) => refusal,
        Err(other) => panic!("expected the broker's refusal, got: {other}"),
        Ok(_) => panic!("the enrollment went through"),
    }
}

fn connect_refusal(result: Result<Session, ConnectError>) -> proto::ErrorMessage {
    match result {
        Err(ConnectError::Refused(refusal)) => refusal,
        Err(other) => panic!("expected the broker's refusal, got: {other}"),
        Ok(_) => panic!("the connection was let in"),
    }
}

async fn ended_within(session: &mut Session, within: Duration) -> (String, String) {
    match tokio::time::timeout(within, session.next_event()).await {
        Ok(SessionEvent::Ended { reason, message }) => (reason, message),
        Ok(other) => panic!("expected the end of the session, got {other:?}"),
        Err(_) => panic!("the session did not end within {within:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_technician_opens_a_session_with_the_secret_the_client_was_shown() {
    let (broker, _echo) = broker().await;
    let token = broker.add_technician("acme-ehr", "tanaka").await;
    let laptop = broker.dir().join("laptop");
    let enrollment = enroll::enroll(&broker.enroll_args(&token, &laptop))
        .await
        .unwrap();
    assert_eq!(enrollment.offer.vendor, "acme-ehr");
    assert_eq!(enrollment.offer.technician, "tanaka");

    // The key was made here, is readable by its owner only, and is the certificate's key.
    let key_mode = std::fs::metadata(laptop.join("client.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let config = sekisho_client::ClientConfig::from_dir(&laptop)
        .unwrap()
        .unwrap();

    // A whole session: the certificate from enrollment, a code from the URI it showed.
    let secret = otp::secret_from_uri(&enrollment.otpauth_uri).unwrap();
    let mut session = Session::connect(&config).await.unwrap();
    assert_eq!(session.welcome().technician, "tanaka");
    let id = broker.request(&mut session, &["echo"]).await;
    broker.approve(&id).await;
    broker.clock().advance(Duration::from_secs(30));
    let code = otp::code_at(&secret, broker.clock().now()).unwrap();
    session.open(&id, &code).await.unwrap();
    echo_once(&session, "echo").await;

    // The broker recorded the enrollment and the certificate it issued.
    let enrolled = broker.first_event(EventKind::TechnicianEnrolled).await;
    assert_eq!(enrolled.event.technician.as_deref(), Some("tanaka"));
    let issued = broker.first_event(EventKind::CertificateIssued).await;
    let certificate = std::fs::read_to_string(laptop.join("client.pem")).unwrap();
    let record = identity::certificate_record(&certificate).unwrap();
    assert!(
        issued
            .event
            .details
            .contains(&("fingerprint".to_owned(), record.fingerprint.clone())),
        "{:?}",
        issued.event.details
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_once_expires_and_a_changed_one_is_unknown_each_refusal_recorded() {
    let (broker, _echo) = broker().await;
    let token = broker.add_technician("acme-ehr", "tanaka").await;
    let dir = broker.dir().to_owned();

    // A token with one letter changed is not one the broker issued.
    let mut changed: Vec<char> = token.chars().collect();
    changed[0] = if changed[0] == 'A' { 'B' } else { 'A' };
    let changed: String = changed.into_iter().collect();
    let refusal =
        enroll_refusal(enroll::enroll(&broker.enroll_args(&changed, &dir.join("a"))).await);
    assert_eq!(refusal.code, ErrorCode::EnrollmentTokenRefused);
    assert!(
        refusal.message.contains("not one the broker issued"),
        "{}",
        refusal.message
    );
    assert!(
        !dir.join("a/client.key").exists(),
        "nothing is kept after a refusal"
    );

    enroll::enroll(&broker.enroll_args(&token, &dir.join("b")))
        .await
        .unwrap();
    let refusal = enroll_refusal(enroll::enroll(&broker.enroll_args(&token, &dir.join("c"))).await);
    assert_eq!(refusal.code, ErrorCode::EnrollmentTokenRefused);
    assert!(
        refusal.message.contains("already used"),
        "{}",
        refusal.message
    );

    // A token older than its 24 hours.
    let late = broker.add_technician("acme-ehr", "sato").await;
    broker.clock().advance(Duration::from_secs(24 * 3600 + 1));
    let refusal = enroll_refusal(enroll::enroll(&broker.enroll_args(&late, &dir.join("d"))).await);
    assert!(refusal.message.contains("expired"), "{}", refusal.message);

    let refused = broker
        .desk()
        .store()
        .audit_events(&sekisho_broker::store::AuditFilter {
            kinds: vec![EventKind::EnrollmentRefused],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(refused.len(), 3, "{refused:?}");
    // The used and the expired token name whom they were for; the changed one cannot.
    assert_eq!(refused[0].event.technician, None);
    assert_eq!(refused[1].event.technician.as_deref(), Some("tanaka"));
    assert_eq!(refused[2].event.technician.as_deref(), Some("sato"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_request_for_another_name_or_a_malformed_one_is_refused_and_spends_nothing() {
    let (broker, _echo) = broker().await;
    let token = broker.add_technician("acme-ehr", "tanaka").await;

    let sato = TechnicianIdentity::new("acme-ehr", "sato").unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let other_name = pki::certificate_request(&sato, &key).unwrap();
    let refusal = raw_enrollment(&broker, &token, &other_name).await;
    assert_eq!(refusal.code, ErrorCode::CertificateRequestRefused);
    assert!(
        refusal
            .message
            .contains("is for acme-ehr/sato, but this token enrolls acme-ehr/tanaka"),
        "{}",
        refusal.message
    );
    let refusal = raw_enrollment(
        &broker,
        &token,
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    )
    .await;
    assert_eq!(refusal.code, ErrorCode::CertificateRequestRefused);

    // A request signed by one key for another key's identity: its signature does not verify.
    let tanaka = TechnicianIdentity::new("acme-ehr", "tanaka").unwrap();
    let good = pki::certificate_request(&tanaka, &key).unwrap();
    let tampered = tamper_signature(&good);
    let refusal = raw_enrollment(&broker, &token, &tampered).await;
    assert_eq!(refusal.code, ErrorCode::CertificateRequestRefused);
    assert!(
        refusal.message.contains("not signed"),
        "{}",
        refusal.message
    );

    // None of it spent the token: the real client still enrolls with it.
    enroll::enroll(&broker.enroll_args(&token, &broker.dir().join("laptop")))
        .await
        .unwrap();
    let refused = broker.first_event(EventKind::EnrollmentRefused).await;
    assert_eq!(refused.event.technician.as_deref(), Some("tanaka"));
}

/// The last byte of a PEM request's signature flipped.
fn tamper_signature(pem: &str) -> String {
    use rustls_pki_types::pem::PemObject;
    let der =
        rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
    let mut bytes = der.as_ref().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    pem_encode("CERTIFICATE REQUEST", &bytes)
}

/// PEM by hand (base64 in lines of 64), so a test can write DER it has changed.
fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    let lines: Vec<String> = text
        .as_bytes()
        .chunks(64)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Speaks the enrollment protocol by hand (trusting the broker CA directly) and sends
/// `csr_pem` whatever it is; returns the broker's refusal.
async fn raw_enrollment(broker: &TestBroker, token: &str, csr_pem: &str) -> proto::ErrorMessage {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(broker.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(tunnel::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![proto::ENROLL_ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
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
    let mut reader = MessageReader::new();
    write_message(
        &mut send,
        &Message::EnrollStart(EnrollStart {
            version: proto::PROTOCOL_VERSION,
            token: token.to_owned(),
        }),
    )
    .await
    .unwrap();
    match reader.expect(&mut recv).await.unwrap() {
        Message::EnrollOffer(offer) => assert_eq!(offer.technician, "tanaka"),
        other => panic!("expected an offer, got {other:?}"),
    }
    write_message(
        &mut send,
        &Message::EnrollCsr(EnrollCsr {
            csr_pem: csr_pem.to_owned(),
        }),
    )
    .await
    .unwrap();
    match reader.expect(&mut recv).await.unwrap() {
        Message::Error(refusal) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_technician_ends_their_session_within_a_second_and_refuses_them_at_the_handshake()
 {
    let (broker, _echo) = broker().await;
    let mut session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    // Another technician of the same vendor is not touched.
    let colleague = broker.open_session("acme-ehr", "sato", &["echo"]).await;
    let tanaka = TechnicianIdentity::new("acme-ehr", "tanaka").unwrap();
    let store = broker.desk().store().clone();
    let ended = identity::set_technician_enabled(
        &store,
        &tanaka,
        false,
        "left the company",
        "yamada",
        broker.clock().now(),
    )
    .await
    .unwrap();
    assert_eq!(ended, 1);
    let (reason, message) = ended_within(&mut session, REACH).await;
    assert_eq!(reason, "technician-disabled");
    assert!(message.contains("left the company"), "{message}");
    echo_once(&colleague, "echo").await;

    let refusal = connect_refusal(broker.connect("acme-ehr", "tanaka").await);
    assert_eq!(refusal.code, ErrorCode::IdentityDisabled);
    let refused = broker.first_event(EventKind::ConnectionRefused).await;
    assert_eq!(refused.event.technician.as_deref(), Some("tanaka"));

    // Enabled again, they are let in (the certificate itself was never revoked).
    identity::set_technician_enabled(&store, &tanaka, true, "", "yamada", broker.clock().now())
        .await
        .unwrap();
    broker.connect("acme-ehr", "tanaka").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_vendor_ends_all_its_sessions_and_refuses_its_technicians() {
    let (broker, _echo) = broker().await;
    let mut tanaka = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let mut sato = broker.open_session("acme-ehr", "sato", &["echo"]).await;
    let other_vendor = broker.open_session("nihon-pacs", "kato", &["pacs"]).await;
    let store = broker.desk().store().clone();
    let ended = identity::set_vendor_enabled(
        &store,
        "acme-ehr",
        false,
        "contract ended",
        "yamada",
        broker.clock().now(),
    )
    .await
    .unwrap();
    assert_eq!(ended, 2);
    assert_eq!(
        ended_within(&mut tanaka, REACH).await.0,
        "technician-disabled"
    );
    assert_eq!(
        ended_within(&mut sato, REACH).await.0,
        "technician-disabled"
    );
    let refusal = connect_refusal(broker.connect("acme-ehr", "tanaka").await);
    assert_eq!(refusal.code, ErrorCode::IdentityDisabled);
    assert!(
        refusal.message.contains("`acme-ehr`"),
        "{}",
        refusal.message
    );
    // Another vendor carries on.
    echo_once(&other_vendor, "pacs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_revokes_the_certificate_ends_the_session_and_a_new_enrollment_works() {
    let (broker, _echo) = broker().await;
    let old_config = broker.client_config("acme-ehr", "tanaka").await;
    let mut session = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    let tanaka = TechnicianIdentity::new("acme-ehr", "tanaka").unwrap();
    let store = broker.desk().store().clone();
    let (token, ended) = identity::reset_technician(
        &store,
        &tanaka,
        identity::DEFAULT_TOKEN_VALIDITY,
        "yamada",
        broker.clock().now(),
    )
    .await
    .unwrap();
    assert_eq!(ended, 1);
    assert_eq!(
        ended_within(&mut session, REACH).await.0,
        "credentials-revoked"
    );

    // The old certificate is refused at the handshake, on every new connection.
    let refusal = connect_refusal(Session::connect(&old_config).await);
    assert_eq!(refusal.code, ErrorCode::CertificateRevoked);
    assert!(refusal.message.contains("revoked"), "{}", refusal.message);

    // The new token enrolls a new key; the old secret is gone with the old certificate.
    let laptop = broker.dir().join("new-laptop");
    let enrollment = enroll::enroll(&broker.enroll_args(token.text.expose_secret(), &laptop))
        .await
        .unwrap();
    let config = sekisho_client::ClientConfig::from_dir(&laptop)
        .unwrap()
        .unwrap();
    let mut session = Session::connect(&config).await.unwrap();
    let id = broker.request(&mut session, &["echo"]).await;
    broker.approve(&id).await;
    let old_secret = broker.enroll("acme-ehr", "tanaka").await;
    broker.clock().advance(Duration::from_secs(30));
    let old_code = otp::code_at(&old_secret, broker.clock().now()).unwrap();
    assert!(
        session.open(&id, &old_code).await.is_err(),
        "the old secret must not work"
    );
    broker.clock().advance(Duration::from_secs(30));
    let secret = otp::secret_from_uri(&enrollment.otpauth_uri).unwrap();
    let code = otp::code_at(&secret, broker.clock().now()).unwrap();
    session.open(&id, &code).await.unwrap();
    echo_once(&session, "echo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_by_the_registry() {
    let (broker, _echo) = broker().await;
    let config = broker.client_config("acme-ehr", "tanaka").await;
    let [_, certificate, _] = broker.client_files("acme-ehr", "tanaka").await;
    let not_after = identity::certificate_record(&std::fs::read_to_string(certificate).unwrap())
        .unwrap()
        .not_after;
    // Issued for at most the longest validity from the real time of issue (the broker's
    // test clock stands elsewhere).
    let from_issue = not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(from_issue <= pki::MAX_CLIENT_VALIDITY + Duration::from_secs(3600));
    // The registry reads the broker's clock; move it a day past the certificate's end.
    let left = not_after
        .duration_since(broker.clock().now())
        .unwrap_or_default();
    broker
        .clock()
        .advance(left + Duration::from_secs(24 * 3600));
    let refusal = connect_refusal(Session::connect(&config).await);
    assert_eq!(refusal.code, ErrorCode::CertificateRevoked);
    assert!(refusal.message.contains("expired"), "{}", refusal.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_our_ca_that_no_enrollment_registered_is_refused() {
    let (broker, _echo) = broker().await;
    broker.enroll("acme-ehr", "tanaka").await;
    let refusal = connect_refusal(broker.connect_unregistered("acme-ehr", "tanaka").await);
    assert_eq!(refusal.code, ErrorCode::UnknownIdentity);
    assert!(
        refusal.message.contains("not one this broker issued"),
        "{}",
        refusal.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_holds_no_totp_secret_token_or_private_key_in_the_clear() {
    let (broker, _echo) = broker().await;
    let token = broker.add_technician("acme-ehr", "tanaka").await;
    let laptop = broker.dir().join("laptop");
    let enrollment = enroll::enroll(&broker.enroll_args(&token, &laptop))
        .await
        .unwrap();
    let secret = otp::secret_from_uri(&enrollment.otpauth_uri).unwrap();
    let base32 = sekisho_broker::encoding::base32_encode(secret.expose_secret());
    let hex = sekisho_broker::encoding::hex(secret.expose_secret());
    let key_pem = std::fs::read_to_string(laptop.join("client.key")).unwrap();
    let key_body: String = key_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let token_letters: String = token.chars().filter(|c| *c != '-').collect();

    // Whatever the store, the sealed column is not the secret in any spelling.
    let row = broker
        .desk()
        .store()
        .technician("acme-ehr", "tanaka")
        .await
        .unwrap()
        .unwrap();
    for clear in [&base32, &hex] {
        assert!(!row.sealed_totp_secret.contains(clear.as_str()));
    }
    // And in a SQLite file, not anywhere: the secret's bytes and spellings, the token, the
    // private key.
    if let StoreLocation::Sqlite(path) = broker.config().store_location() {
        broker.halt().await;
        let mut bytes = std::fs::read(&path).unwrap();
        if let Ok(wal) = std::fs::read(path.with_extension("db-wal")) {
            bytes.extend(wal);
        }
        let needles: [&[u8]; 6] = [
            secret.expose_secret(),
            base32.as_bytes(),
            hex.as_bytes(),
            token.as_bytes(),
            token_letters.as_bytes(),
            key_body.as_bytes(),
        ];
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|window| window == needle),
                "the database file holds a secret in the clear"
            );
        }
        // The search can find things: the token's hash is there.
        let token_bytes =
            sekisho_broker::encoding::base32_decode(token_letters.as_bytes()).unwrap();
        let token_hash = sekisho_broker::encoding::hex(
            ring::digest::digest(&ring::digest::SHA256, &token_bytes).as_ref(),
        );
        assert!(
            bytes
                .windows(token_hash.len())
                .any(|window| window == token_hash.as_bytes()),
            "the scan must see what is stored"
        );
    } else {
        println!("PostgreSQL: the database file check runs on SQLite only");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_another_fingerprint_gets_nothing_and_the_aborted_handshake_is_recorded() {
    let (broker, _echo) = broker().await;
    let token = broker.add_technician("acme-ehr", "tanaka").await;
    let laptop = broker.dir().join("laptop");
    let mut args = broker.enroll_args(&token, &laptop);
    // The fingerprint of another broker's CA.
    let other = TestBroker::start(&[Vendor::new("acme-ehr")]).await;
    args.ca_fingerprint = other.enroll_args("", &laptop).ca_fingerprint;
    match enroll::enroll(&args).await {
        Err(EnrollError::FingerprintMismatch { seen, expected, .. }) => {
            assert_eq!(seen, broker.enroll_args("", &laptop).ca_fingerprint);
            assert_eq!(expected, args.ca_fingerprint);
        }
        Err(other) => panic!("expected a fingerprint mismatch, got: {other}"),
        Ok(_) => panic!("enrolled against the wrong fingerprint"),
    }
    assert!(!laptop.join("client.key").exists(), "nothing is saved");
    // The token was never sent, so it still works.
    let refused = broker.first_event(EventKind::ConnectionRefused).await;
    assert!(
        refused
            .event
            .details
            .contains(&("stage".to_owned(), "handshake".to_owned())),
        "{:?}",
        refused.event.details
    );
    enroll::enroll(&broker.enroll_args(&token, &laptop))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_technicians_never_share_a_secret_or_a_key() {
    let (broker, _echo) = broker().await;
    let tanaka = broker.enroll("acme-ehr", "tanaka").await;
    let sato = broker.enroll("acme-ehr", "sato").await;
    assert_ne!(tanaka.expose_secret(), sato.expose_secret());
    assert_eq!(tanaka.expose_secret().len(), 20, "160 bits");
    let [_, _, tanaka_key] = broker.client_files("acme-ehr", "tanaka").await;
    let [_, _, sato_key] = broker.client_files("acme-ehr", "sato").await;
    assert_ne!(
        std::fs::read(tanaka_key).unwrap(),
        std::fs::read(sato_key).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_technician_without_a_session_is_disconnected_at_once() {
    let (broker, _echo) = broker().await;
    // Connected, waiting on nothing: no session to end, only the connection.
    let waiting = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let store = broker.desk().store().clone();
    let tanaka = TechnicianIdentity::new("acme-ehr", "tanaka").unwrap();
    identity::set_technician_enabled(
        &store,
        &tanaka,
        false,
        "left the company",
        "yamada",
        broker.clock().now(),
    )
    .await
    .unwrap();
    let end = tokio::time::timeout(REACH, waiting.forwarder().ended())
        .await
        .expect("the connection was closed within a second");
    assert!(!end.by_technician);
    assert!(end.reason.contains("left the company"), "{}", end.reason);
    let refusal = connect_refusal(broker.connect("acme-ehr", "tanaka").await);
    assert_eq!(refusal.code, ErrorCode::IdentityDisabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_vendor_disconnects_its_technicians_and_says_why() {
    let (broker, _echo) = broker().await;
    let waiting = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let other_vendor = broker.connect("nihon-pacs", "ito").await.unwrap();
    identity::set_vendor_enabled(
        &broker.desk().store().clone(),
        "acme-ehr",
        false,
        "contract ended",
        "yamada",
        broker.clock().now(),
    )
    .await
    .unwrap();
    let end = tokio::time::timeout(REACH, waiting.forwarder().ended())
        .await
        .expect("the connection was closed within a second");
    assert!(end.reason.contains("acme-ehr"), "{}", end.reason);
    assert!(end.reason.contains("contract ended"), "{}", end.reason);
    let refusal = connect_refusal(broker.connect("acme-ehr", "tanaka").await);
    assert_eq!(refusal.code, ErrorCode::IdentityDisabled);
    assert!(
        refusal.message.contains("vendor `acme-ehr`"),
        "{}",
        refusal.message
    );
    // The other vendor's technician is untouched.
    let mut other_vendor = other_vendor;
    other_vendor.status().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_a_vendor_disabled_meanwhile_cannot_be_approved_and_the_page_says_why() {
    use sekisho_broker::staff::Role;
    use sekisho_e2e::web::{StaffAccount, WebClient, start_web_broker};
    let echo = EchoServer::start().await;
    let broker = start_web_broker(
        &[Vendor::new("acme-ehr").target("echo", echo.addr())],
        false,
    )
    .await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let mut session = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let request = broker.request(&mut session, &["echo"]).await;
    // A disabling that raced with the request: the vendor row changed, the request stayed.
    broker
        .execute_sql("UPDATE vendors SET enabled = 0, disabled_reason = 'contract ended' WHERE vendor = 'acme-ehr'")
        .await;
    let refused = broker
        .desk()
        .approve(
            &sekisho_broker::session::RequestId::parse(&request).unwrap(),
            "suzuki",
            sekisho_broker::approval::Until::For(Duration::from_secs(600)),
        )
        .await;
    match refused {
        Err(sekisho_broker::approval::DeskError::Refused(refusal)) => {
            assert_eq!(refusal.code, ErrorCode::IdentityDisabled);
            assert!(
                refusal
                    .message
                    .contains("Vendor `acme-ehr` is disabled (contract ended)"),
                "{}",
                refusal.message
            );
        }
        other => panic!("the approval went through: {other:?}"),
    }
    let mut web = WebClient::new(broker.web_addr());
    web.login(&broker, &approver).await;
    let page = web.get("/requests").await;
    assert!(
        page.body
            .contains("Vendor acme-ehr is disabled (contract ended)"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(&format!("/requests/{request}/approve")));
}
