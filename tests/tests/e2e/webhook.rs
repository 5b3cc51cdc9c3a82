//! The approvers' webhook against a real relay (hyper, over HTTP on loopback or HTTPS with a
//! certificate from the hospital's CA or the broker's): what each event sends, the signature
//! a receiver checks, which certificates are trusted, retries, and failures on the audit
//! record. Refusals at start are in `broker/tests/cli.rs` (the binary) and the webhook
//! module's unit tests.

use std::time::Duration;

use sekisho_broker::audit::EventKind;
use sekisho_broker::session::RequestId;
use sekisho_broker::web::{WebConfig, WebTls};
use sekisho_broker::webhook::{RetryPolicy, WebhookConfig};
use sekisho_e2e::servers::ManualServer;
use sekisho_e2e::web::request;
use sekisho_e2e::webhook::{HospitalCa, Posted, RelaySocket, WebhookRelay};
use sekisho_e2e::{APPROVER, EchoServer, TestBroker, Vendor, detail};

const SECRET: &str = "9c1f0e6a27b4d8c3a5e7f90b1d2c3e4f";

/// Tries again after 20 ms instead of seconds, so a test of retries takes no time.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        backoff: vec![Duration::from_millis(20); 3],
        attempt_timeout: Duration::from_secs(5),
    }
}

async fn broker_with(webhook: WebhookConfig, echo: &EchoServer) -> TestBroker {
    TestBroker::start_with(
        &[Vendor::new("acme").target("echo", echo.addr())],
        |config| {
            config.webhook = Some(webhook);
        },
    )
    .await
}

/// A relay over plain HTTP that answers with `statuses` first (then 204), and a broker
/// posting to it with quick retries.
async fn http_relay_answering(statuses: &[u16], echo: &EchoServer) -> (WebhookRelay, TestBroker) {
    let socket = RelaySocket::bind().await;
    let url = socket.url("http");
    let relay = socket.serve_http(statuses);
    let broker = broker_with(
        WebhookConfig {
            retry: quick_retries(),
            ..WebhookConfig::new(url)
        },
        echo,
    )
    .await;
    (relay, broker)
}

/// What a receiver does: the signature over the raw body, with the shared secret.
fn signature_verifies(posted: &Posted, secret: &[u8]) -> bool {
    let Some(hex) = posted
        .header("x-sekisho-signature")
        .and_then(|value| value.strip_prefix("sha256="))
    else {
        return false;
    };
    let Some(tag) = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, &posted.body, &tag).is_ok()
}

/// The headers say what the signed body says.
fn assert_headers_match_body(posted: &Posted, event: &str) {
    let json = posted.json();
    assert_eq!(json["event"], event);
    assert_eq!(posted.header("x-sekisho-event"), Some(event));
    assert_eq!(
        posted.header("x-sekisho-delivery"),
        json["delivery"].as_str()
    );
    assert_eq!(
        posted.header("x-sekisho-timestamp"),
        Some(json["timestamp"].to_string().as_str())
    );
    assert_eq!(json["delivery"].as_str().map(str::len), Some(64));
}

#[tokio::test]
async fn each_new_request_is_posted_to_a_relay_on_this_host_as_json() {
    let echo = EchoServer::start().await;
    let socket = RelaySocket::bind().await;
    let url = socket.url("http");
    let mut relay = socket.serve_http(&[]);
    // With the web UI, as most hospitals run it: the page and the webhook both tell.
    let broker = TestBroker::start_with(
        &[Vendor::new("acme").target("echo", echo.addr())],
        |config| {
            let mut web = WebConfig::new("127.0.0.1:0".parse().unwrap());
            web.tls = WebTls::PlainHttpOnLoopback;
            config.web = Some(web);
            config.webhook = Some(WebhookConfig::new(url));
        },
    )
    .await;
    let id = request(&broker, "tanaka", "patch <5.2.1>").await;
    let posted = relay.next().await;
    assert_eq!(posted.method, "POST");
    assert_eq!(posted.path, "/sekisho");
    assert_eq!(posted.header("content-type"), Some("application/json"));
    assert_eq!(
        posted.header("x-sekisho-signature"),
        None,
        "no secret given"
    );
    assert_headers_match_body(&posted, "request-made");
    let json = posted.json();
    assert_eq!(json["request"], id.as_str());
    assert_eq!(json["vendor"], "acme");
    assert_eq!(json["technician"], "tanaka");
    assert_eq!(json["by"], "technician:acme/tanaka");
    assert_eq!(json["targets"], serde_json::json!(["echo"]));
    assert_eq!(json["purpose"], "patch <5.2.1>");
    assert_eq!(json["ticket"], "INC-1");
    assert_eq!(json["wanted_secs"], 3600);
    let made = broker.first_event(EventKind::RequestMade).await;
    assert_eq!(json["delivery"], made.hash.as_str());
    assert_eq!(json["audit_seq"], made.seq);
}

#[tokio::test]
async fn approvals_denials_and_revocations_reach_an_https_relay_signed() {
    let echo = EchoServer::start().await;
    let files = tempfile::tempdir().unwrap();
    let hospital = HospitalCa::new("Hospital Internal CA");
    let secret_file = files.path().join("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let socket = RelaySocket::bind().await;
    let url = socket.url("https");
    let (chain, key) = hospital.issue_server(&["127.0.0.1"]);
    let mut relay = socket.serve_https(chain, key, &[]);
    let broker = broker_with(
        WebhookConfig {
            ca_file: Some(hospital.write_pem(files.path())),
            secret_file: Some(secret_file),
            ..WebhookConfig::new(url)
        },
        &echo,
    )
    .await;
    let desk = broker.desk();

    let first = request(&broker, "tanaka", "patch").await;
    let made = relay.next_of("request-made").await;
    broker.approve(&first).await;
    let approved = relay.next_of("request-approved").await;
    desk.revoke(&RequestId::parse(&first).unwrap(), APPROVER, "wrong server")
        .await
        .unwrap();
    let revoked = relay.next_of("session-revoked").await;
    let second = request(&broker, "sato", "reboot").await;
    relay.next_of("request-made").await;
    desk.deny(&RequestId::parse(&second).unwrap(), APPROVER, "not today")
        .await
        .unwrap();
    let denied = relay.next_of("request-denied").await;

    for (posted, event) in [
        (&made, "request-made"),
        (&approved, "request-approved"),
        (&revoked, "session-revoked"),
        (&denied, "request-denied"),
    ] {
        assert_headers_match_body(posted, event);
        assert!(
            signature_verifies(posted, SECRET.as_bytes()),
            "{event}: the signature verifies with the shared secret"
        );
        assert!(
            !signature_verifies(posted, b"another secret, not the one shared"),
            "{event}: and with no other"
        );
        let mut forged = posted.clone();
        forged.body = String::from_utf8(posted.body.clone())
            .unwrap()
            .replace(r#""vendor":"acme""#, r#""vendor":"evil""#)
            .into_bytes();
        assert_ne!(forged.body, posted.body);
        assert!(
            !signature_verifies(&forged, SECRET.as_bytes()),
            "{event}: a changed body does not verify"
        );
    }
    assert_eq!(made.json()["request"], first.as_str());
    let approved = approved.json();
    assert_eq!(approved["request"], first.as_str());
    assert_eq!(approved["by"], format!("staff:{APPROVER}"));
    assert_eq!(approved["approvals"], 1);
    assert_eq!(approved["approvals_needed"], 1);
    assert!(approved["until"].as_str().unwrap().ends_with('Z'));
    let revoked = revoked.json();
    assert_eq!(revoked["reason"], "wrong server");
    assert_eq!(revoked["was"], "approved");
    let denied = denied.json();
    assert_eq!(denied["request"], second.as_str());
    assert_eq!(denied["technician"], "sato");
    assert_eq!(denied["reason"], "not today");

    // The README's check, with openssl, where it is installed.
    match openssl_signature(&made.body) {
        Some(signature) => assert_eq!(made.header("x-sekisho-signature"), Some(signature.as_str())),
        None => eprintln!("openssl is not installed: the README's shell check was not run"),
    }
}

/// `sha256=` and the HMAC as the README computes it: `openssl dgst -sha256 -hmac KEY -r`.
fn openssl_signature(body: &[u8]) -> Option<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", SECRET, "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hex = String::from_utf8(output.stdout).unwrap();
    Some(format!("sha256={}", hex.split_whitespace().next().unwrap()))
}

#[tokio::test]
async fn a_relay_with_a_certificate_from_the_brokers_own_ca_is_trusted_without_a_ca_file() {
    let echo = EchoServer::start().await;
    let socket = RelaySocket::bind().await;
    let broker = broker_with(WebhookConfig::new(socket.url("https")), &echo).await;
    // The broker's CA exists once the broker has started; the relay's certificate comes
    // from it, as the web UI's does.
    let (chain, key) = broker
        .pki()
        .issue_web_certificate(&["127.0.0.1".to_owned()])
        .unwrap();
    let mut relay = socket.serve_https(chain, key, &[]);
    let id = request(&broker, "tanaka", "patch").await;
    let posted = relay.next().await;
    assert_eq!(posted.json()["request"], id.as_str());
}

#[tokio::test]
async fn a_relay_whose_certificate_another_ca_issued_gets_nothing_and_the_failure_is_audited() {
    let echo = EchoServer::start().await;
    let files = tempfile::tempdir().unwrap();
    let hospital = HospitalCa::new("Hospital Internal CA");
    let impostor = HospitalCa::new("Hospital Internal CA");
    let socket = RelaySocket::bind().await;
    let url = socket.url("https");
    let (chain, key) = impostor.issue_server(&["127.0.0.1"]);
    let mut relay = socket.serve_https(chain, key, &[]);
    let broker = broker_with(
        WebhookConfig {
            ca_file: Some(hospital.write_pem(files.path())),
            retry: quick_retries(),
            ..WebhookConfig::new(url)
        },
        &echo,
    )
    .await;
    let id = request(&broker, "tanaka", "patch").await;
    let failed = broker.first_event(EventKind::WebhookFailed).await;
    // The broker reached the relay and refused its certificate: the body never went out.
    let refused = relay.next_tls_failure().await;
    assert!(!refused.is_empty());
    assert!(relay.received().is_empty(), "the relay got nothing");
    assert_eq!(failed.event.request.as_deref(), Some(id.as_str()));
    assert_eq!(failed.event.vendor.as_deref(), Some("acme"));
    assert_eq!(failed.event.technician.as_deref(), Some("tanaka"));
    assert!(failed.event.actor.to_string().starts_with("broker:"));
    assert_eq!(detail(&failed, "event"), "request-made");
    assert_eq!(
        detail(&failed, "attempts"),
        "1",
        "a certificate refused is not asked again"
    );
    let error = detail(&failed, "error");
    assert!(error.contains("certificate"), "{error}");
    let url = detail(&failed, "url");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert!(
        !url.contains("/sekisho"),
        "the path is never recorded: {url}"
    );
    assert_eq!(
        detail(&failed, "delivery"),
        broker.first_event(EventKind::RequestMade).await.hash
    );
    // Once: nothing more is recorded or sent after the broker stops (which waits for every
    // delivery under way).
    broker.halt().await;
    assert_eq!(broker.events_of(EventKind::WebhookFailed).await.len(), 1);
    assert!(relay.received().is_empty());
}

#[tokio::test]
async fn a_503_is_tried_again_and_the_message_delivered_exactly_once() {
    let echo = EchoServer::start().await;
    let (mut relay, broker) = http_relay_answering(&[503], &echo).await;
    request(&broker, "tanaka", "patch").await;
    let refused = relay.next().await;
    let delivered = relay.next().await;
    assert_eq!(
        refused.header("x-sekisho-delivery"),
        delivered.header("x-sekisho-delivery"),
        "the same delivery, tried again"
    );
    assert_eq!(delivered.json()["event"], "request-made");
    // Stopping waits for every delivery under way: after it, nothing else was sent and no
    // failure recorded.
    broker.halt().await;
    assert_eq!(relay.received().len(), 0, "delivered once, not again");
    assert!(broker.events_of(EventKind::WebhookFailed).await.is_empty());
}

#[tokio::test]
async fn a_400_is_not_tried_again_and_the_failure_is_audited_once() {
    let echo = EchoServer::start().await;
    let (mut relay, broker) = http_relay_answering(&[400], &echo).await;
    let id = request(&broker, "tanaka", "patch").await;
    let failed = broker.first_event(EventKind::WebhookFailed).await;
    assert_eq!(failed.event.request.as_deref(), Some(id.as_str()));
    assert_eq!(detail(&failed, "attempts"), "1");
    assert!(detail(&failed, "error").contains("400"), "{failed:?}");
    broker.halt().await;
    assert_eq!(relay.received().len(), 1, "one POST, not tried again");
    assert_eq!(broker.events_of(EventKind::WebhookFailed).await.len(), 1);
}

#[tokio::test]
async fn a_relay_that_never_answers_is_given_up_on_after_each_attempts_time_limit() {
    let echo = EchoServer::start().await;
    // Accepts connections and never answers.
    let mut silent = ManualServer::start().await;
    let broker = broker_with(
        WebhookConfig {
            retry: RetryPolicy {
                backoff: vec![Duration::from_millis(20)],
                attempt_timeout: Duration::from_millis(300),
            },
            ..WebhookConfig::new(format!("http://{}/sekisho", silent.addr()))
        },
        &echo,
    )
    .await;
    request(&broker, "tanaka", "patch").await;
    let _first = silent.accept().await;
    let _second = silent.accept().await;
    let failed = broker.first_event(EventKind::WebhookFailed).await;
    assert_eq!(detail(&failed, "attempts"), "2");
    let error = detail(&failed, "error");
    assert!(error.contains("no answer within 300ms"), "{error}");
}

#[tokio::test]
async fn requests_made_before_the_broker_started_are_not_sent_again() {
    let echo = EchoServer::start().await;
    let socket = RelaySocket::bind().await;
    let url = socket.url("http");
    let mut relay = socket.serve_http(&[]);
    let mut broker = broker_with(WebhookConfig::new(url), &echo).await;
    let before = request(&broker, "tanaka", "patch").await;
    assert_eq!(relay.next().await.json()["request"], before.as_str());
    broker.restart().await;
    let after = request(&broker, "sato", "reboot").await;
    let posted = relay.next().await;
    assert_eq!(
        posted.json()["request"],
        after.as_str(),
        "the request from before the restart is not sent again"
    );
    broker.halt().await;
    assert!(relay.received().is_empty());
}
