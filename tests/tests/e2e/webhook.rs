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

/// A lease of 2 s rather than 20: takeovers within seconds.
const LEASE: Duration = Duration::from_secs(2);

/// Two brokers of one hospital sharing a database, both posting to the same relay; the first
/// holds the webhook's lease (it took it before the second started).
async fn two_brokers_posting(
    webhook: WebhookConfig,
    echo: &EchoServer,
) -> (TestBroker, TestBroker) {
    let vendors = [Vendor::new("acme").target("echo", echo.addr())];
    let with_webhook = |config: &mut sekisho_broker::BrokerConfig| {
        config.webhook = Some(webhook.clone());
        config.sender_lease = LEASE;
    };
    let first = TestBroker::start_with(&vendors, with_webhook).await;
    assert_eq!(first.lease_of("webhook").await.holder, first.broker_id());
    let second = first.start_beside(&vendors, with_webhook).await;
    (first, second)
}

/// Takes `count` POSTs from the relay.
async fn next_posts(relay: &mut WebhookRelay, count: usize) -> Vec<Posted> {
    let mut posts = Vec::new();
    for _ in 0..count {
        posts.push(relay.next().await);
    }
    posts
}

/// Each delivery id once: what a relay would otherwise drop as a repeat.
fn assert_each_delivered_once(posts: &[Posted]) {
    let mut ids: Vec<&str> = posts
        .iter()
        .map(|posted| posted.header("x-sekisho-delivery").unwrap())
        .collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "a message was posted twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_sharing_a_database_post_each_message_once() {
    let echo = EchoServer::start().await;
    let socket = RelaySocket::bind().await;
    let url = socket.url("http");
    let mut relay = socket.serve_http(&[]);
    let (first, second) = two_brokers_posting(WebhookConfig::new(url), &echo).await;
    // Requests on both brokers, each approved: 8 messages.
    let mut ids = Vec::new();
    for n in 0..2 {
        ids.push(request(&first, &format!("tanaka{n}"), "patch").await);
        ids.push(request(&second, &format!("sato{n}"), "reboot").await);
    }
    for id in &ids {
        second.approve(id).await;
    }
    let posts = next_posts(&mut relay, 8).await;
    // Once the sender has moved its cursor past them (a tick after it read them, time for the
    // other broker to have read them too, were it sending), stop both: stopping waits for
    // every delivery under way, so after it nothing else comes.
    let last = posts
        .iter()
        .map(|p| p.json()["audit_seq"].as_i64().unwrap())
        .max()
        .unwrap();
    first.lease_past("webhook", last).await;
    first.halt().await;
    second.halt().await;
    assert!(relay.received().is_empty(), "a message was posted twice");
    assert_each_delivered_once(&posts);
    for id in &ids {
        for event in ["request-made", "request-approved"] {
            assert_eq!(
                posts
                    .iter()
                    .filter(|p| p.json()["request"] == id.as_str() && p.json()["event"] == event)
                    .count(),
                1,
                "{event} of {id}"
            );
        }
    }
    assert!(first.events_of(EventKind::WebhookFailed).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_sending_broker_stops_the_other_takes_over_and_sends_what_was_waiting() {
    let echo = EchoServer::start().await;
    let socket = RelaySocket::bind().await;
    let url = socket.url("http");
    // The first POST is answered 503, and tried again only after a minute: it is still
    // waiting when its broker stops.
    let mut relay = socket.serve_http(&[503]);
    let (first, second) = two_brokers_posting(
        WebhookConfig {
            retry: RetryPolicy {
                backoff: vec![Duration::from_secs(60)],
                attempt_timeout: Duration::from_secs(5),
            },
            ..WebhookConfig::new(url.clone())
        },
        &echo,
    )
    .await;
    let id = request(&first, "tanaka", "patch").await;
    let refused = relay.next().await;
    first.halt().await;

    // The second broker takes over (the first let the lease go), on the record, and sends the
    // message that was waiting, with the same delivery id.
    let took = second.first_event(EventKind::SenderTookOver).await;
    assert_eq!(
        took.event.actor.encode(),
        format!("broker:{}", second.broker_id())
    );
    assert_eq!(detail(&took, "feature"), "webhook");
    assert_eq!(detail(&took, "previous"), first.broker_id());
    assert_eq!(detail(&took, "previous_lease"), "released");
    let origin = url.trim_end_matches("/sekisho");
    assert_eq!(detail(&took, "destination"), origin, "never the URL's path");
    let again = relay.next().await;
    assert_eq!(again.json()["request"], id.as_str());
    assert_eq!(
        again.header("x-sekisho-delivery"),
        refused.header("x-sekisho-delivery")
    );
    assert_eq!(second.lease_of("webhook").await.holder, second.broker_id());
    // And what happens next.
    let later = request(&second, "sato", "reboot").await;
    assert_eq!(relay.next().await.json()["request"], later.as_str());
    second.halt().await;
    assert!(relay.received().is_empty());
    assert!(
        second.events_of(EventKind::WebhookFailed).await.is_empty(),
        "a message waiting at shutdown is the next sender's, not a failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_by_a_broker_that_crashed_is_taken_over_once_it_runs_out() {
    let echo = EchoServer::start().await;
    let socket = RelaySocket::bind().await;
    let url = socket.url("http");
    let mut relay = socket.serve_http(&[]);
    let mut broker = TestBroker::start_with(
        &[Vendor::new("acme").target("echo", echo.addr())],
        |config| {
            config.webhook = Some(WebhookConfig::new(url));
            config.sender_lease = LEASE;
        },
    )
    .await;
    let id = request(&broker, "tanaka", "patch").await;
    assert_eq!(relay.next().await.json()["event"], "request-made");
    let lease = broker.lease_of("webhook").await;
    assert!(
        !lease.destination.contains("/sekisho"),
        "the database never holds the URL's path: {}",
        lease.destination
    );
    let desk = broker.desk();
    let store = desk.store().clone();
    broker
        .restart_after(async {
            // While this broker is down, another takes the lease and dies without letting it
            // go (it never renews it), and an approver approves on the command line.
            let taken = store
                .acquire_lease(
                    "webhook",
                    &lease.destination,
                    "crashed-broker",
                    LEASE,
                    0,
                    |_, _| None,
                )
                .await
                .unwrap();
            assert!(matches!(
                taken,
                sekisho_broker::store::Acquired::Taken { .. }
            ));
            desk.approve(
                &RequestId::parse(&id).unwrap(),
                APPROVER,
                sekisho_broker::approval::Until::For(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
        })
        .await;
    // Back, the broker stands by until the dead broker's lease runs out, then takes over and
    // sends the approval recorded meanwhile.
    let approved = relay.next().await;
    assert_eq!(approved.json()["event"], "request-approved");
    assert_eq!(approved.json()["request"], id.as_str());
    let took = broker.first_event(EventKind::SenderTookOver).await;
    assert_eq!(detail(&took, "previous"), "crashed-broker");
    assert_eq!(detail(&took, "previous_lease"), "expired");
    broker.halt().await;
    assert!(relay.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_sends_what_was_recorded_while_it_was_down_except_what_is_too_old() {
    let echo = EchoServer::start().await;
    let socket = RelaySocket::bind().await;
    let url = socket.url("http");
    let mut relay = socket.serve_http(&[]);
    let mut broker = broker_with(WebhookConfig::new(url), &echo).await;
    let first = request(&broker, "tanaka", "patch").await;
    let second = request(&broker, "sato", "reboot").await;
    broker.approve(&first).await;
    let sent = next_posts(&mut relay, 3).await;
    assert_eq!(
        sent.iter()
            .filter(|p| p.json()["event"] == "request-made")
            .count(),
        2
    );
    let desk = broker.desk();
    let clock = broker.clock().clone();
    broker
        .restart_after(async {
            // While no broker sends: a denial, then two hours later a revocation.
            desk.deny(&RequestId::parse(&second).unwrap(), APPROVER, "not today")
                .await
                .unwrap();
            clock.advance(Duration::from_secs(2 * 3600));
            desk.revoke(&RequestId::parse(&first).unwrap(), APPROVER, "done")
                .await
                .unwrap();
        })
        .await;
    // The revocation is sent; the denial, two hours old, is not (nobody is paged for it now),
    // and that is on the record.
    let revoked = relay.next().await;
    assert_eq!(revoked.json()["event"], "session-revoked");
    assert_eq!(revoked.json()["request"], first.as_str());
    let skipped = broker.first_event(EventKind::WebhookSkipped).await;
    let denied = broker.first_event(EventKind::RequestDenied).await;
    assert_eq!(detail(&skipped, "events"), "1");
    assert_eq!(detail(&skipped, "first_seq"), denied.seq.to_string());
    assert_eq!(detail(&skipped, "last_seq"), denied.seq.to_string());
    assert_eq!(detail(&skipped, "older_than"), "3600s");
    broker.halt().await;
    assert!(relay.received().is_empty(), "the denial was not sent");
    assert!(
        broker.events_of(EventKind::SenderTookOver).await.is_empty(),
        "a broker taking back the lease it let go is no takeover"
    );
}

/// Every message carries the newest signed checkpoint, so a relay that logs the bodies it
/// receives holds checkpoints the database's writer cannot reach; `audit verify
/// --checkpoints` reads them from such a log.
#[tokio::test]
async fn each_message_carries_the_newest_signed_checkpoint_for_the_relays_log() {
    use sekisho_broker::audit::checkpoint;
    use sekisho_broker::cli::{CheckpointSources, audit_verify};

    let echo = EchoServer::start().await;
    let socket = RelaySocket::bind().await;
    let url = socket.url("http");
    let mut relay = socket.serve_http(&[]);
    let broker = TestBroker::start_with(
        &[Vendor::new("acme").target("echo", echo.addr())],
        |config| {
            config.webhook = Some(WebhookConfig::new(url));
            config.checkpoint_interval = Duration::from_millis(50);
        },
    )
    .await;
    let store = broker.desk().store().clone();
    // The start's events are signed within an interval.
    tokio::time::timeout(Duration::from_secs(10), async {
        while store.newest_checkpoint().await.unwrap().is_none() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a checkpoint of the start's events");
    request(&broker, "tanaka", "patch").await;
    let posted = relay.next().await;
    let body = String::from_utf8(posted.body.clone()).unwrap();
    let carried = checkpoint::parse_all(&body);
    assert_eq!(carried.len(), 1, "{body}");
    assert!(carried[0].signature_verifies());
    assert_eq!(posted.json()["signed"]["checkpoint"]["seq"], carried[0].seq);

    // The relay's log, one body a line, proves the chain up to that checkpoint.
    let log = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(log.path(), format!("{body}\n")).unwrap();
    let verdict = audit_verify(
        &broker.desk(),
        None,
        &CheckpointSources {
            data_dir: Some(broker.config().data_dir.clone()),
            files: vec![log.path().to_owned()],
            trust: Vec::new(),
        },
    )
    .await
    .unwrap();
    assert!(verdict.contains("checkpoint"), "{verdict}");
}
