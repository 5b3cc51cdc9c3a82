//! The staff web UI under abuse (issue 16): names that look encoded, numbers out of range and
//! axum's own errors, failed logins that slow down and locks that end by themselves, formulas
//! in CSV exports, who may connect and with which TLS, and sessions with their live streams;
//! each against a real broker over HTTP (HTTPS for TLS), the clock moved by the test.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use sekisho_broker::audit::{Actor, AuditEvent, EventKind};
use sekisho_broker::cli::{EventQuery, ExportFormat, ExportRequest, Exported};
use sekisho_broker::clock::Clock;
use sekisho_broker::session::{RequestId, Stage};
use sekisho_broker::staff::{Role, Roles, StaffLockout};
use sekisho_broker::web::{WebConfig, WebTls};
use sekisho_broker::webhook::WebhookConfig;
use sekisho_e2e::web::{
    Answer, StaffAccount, WebClient, directory, hidden_csrf, request, start_web_broker,
    start_web_broker_with,
};
use sekisho_e2e::webhook::RelaySocket;
use sekisho_e2e::{EchoServer, TestBroker, Vendor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a stream may take to end once its session is over (the server looks at once, or
/// when the clock passes the session's deadline).
const ENDS_WITHIN: Duration = Duration::from_secs(10);

async fn broker() -> (TestBroker, EchoServer) {
    let echo = EchoServer::start().await;
    let broker = start_web_broker(&[Vendor::new("acme").target("echo", echo.addr())], false).await;
    (broker, echo)
}

async fn stage(broker: &TestBroker, id: &str) -> Stage {
    broker
        .desk()
        .store()
        .request(&RequestId::parse(id).unwrap())
        .await
        .unwrap()
        .stage
}

/// The `error` sentence of a JSON error answer; panics unless the answer is one.
fn json_error(answer: &Answer) -> String {
    let content_type = answer
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{}: {content_type}: {}",
        answer.status,
        answer.body
    );
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let error = body["error"].as_str().unwrap_or_default().to_owned();
    assert!(!error.is_empty(), "{}", answer.body);
    error
}

fn retry_after(answer: &Answer) -> Option<u64> {
    answer
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A code of `account`'s authenticator for the clock's current step, without moving it.
fn code_now(broker: &TestBroker, account: &StaffAccount) -> String {
    sekisho_broker::otp::code_at(&account.secret, broker.clock().now()).unwrap()
}

#[tokio::test]
async fn acting_on_the_row_of_an_account_named_percent_73ato_acts_on_it_not_on_sato() {
    let (broker, _echo) = broker().await;
    let admin = StaffAccount::create(&broker, "yamada", &[Role::Admin]).await;
    StaffAccount::create(&broker, "sato", &[Role::Approver]).await;
    StaffAccount::create(&broker, "%73ato", &[Role::Approver]).await;
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &admin).await;
    let page = client.get("/staff").await;
    let disable = "/staff/%2573ato/disable";
    assert!(
        page.body.contains(&format!("action=\"{disable}\"")),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("action=\"/staff/%73ato/"),
        "{}",
        page.body
    );
    let csrf = hidden_csrf(&page.body).unwrap();
    let done = client.post_form(disable, &[("csrf", &csrf)]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let store = broker.desk().store().clone();
    assert!(
        store
            .staff_member("%73ato")
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    assert!(!store.staff_member("sato").await.unwrap().unwrap().disabled);
    let event = broker.first_event(EventKind::StaffDisabled).await;
    assert_eq!(event.event.detail_value("staff"), Some("%73ato"));
    // Its reset link is for it too.
    let reset = client
        .post_form("/staff/%2573ato/reset", &[("csrf", &csrf)])
        .await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    let invites = broker.events_of(EventKind::StaffInvited).await;
    assert_eq!(
        invites.last().unwrap().event.detail_value("staff"),
        Some("%73ato")
    );
}

#[tokio::test]
async fn numbers_out_of_range_and_malformed_calls_get_a_clear_400_or_json_error_and_change_nothing()
{
    let (broker, _echo) = broker().await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let id = request(&broker, "tanaka", "patch").await;
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &approver).await;
    let csrf = client.csrf("/requests").await;

    // The page's form.
    let approve_page = format!("/requests/{id}/approve");
    for minutes in [
        "18446744073709551615",
        "307445734561825861",
        "1441",
        "0",
        "-5",
        "ten",
    ] {
        let answer = client
            .post_form(&approve_page, &[("csrf", &csrf), ("minutes", minutes)])
            .await;
        assert_eq!(answer.status, 400, "{minutes}: {}", answer.body);
        assert!(answer.body.contains("role=\"alert\""), "{}", answer.body);
    }
    let answer = client
        .post_form(
            &approve_page,
            &[("csrf", &csrf), ("minutes", "18446744073709551615")],
        )
        .await;
    assert!(
        answer.body.contains("choose from 1 to 1440 minutes"),
        "{}",
        answer.body
    );
    let extend_page = format!("/sessions/{id}/extend");
    let answer = client
        .post_form(
            &extend_page,
            &[("csrf", &csrf), ("minutes", "18446744073709551615")],
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let unknown = client.get("/no/such/page").await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.body.contains("There is no such page."),
        "{}",
        unknown.body
    );

    // The API: every error is {"error": …}.
    let approve = format!("/api/requests/{id}/approve");
    for body in [
        serde_json::json!({ "minutes": u64::MAX }),
        serde_json::json!({ "minutes": 0 }),
        serde_json::json!({ "minutes": -1 }),
        serde_json::json!({ "minutes": "60" }),
        serde_json::json!({ "minutes": 1e30 }),
    ] {
        let answer = client.post_json(&approve, Some(&csrf), body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        json_error(&answer);
    }
    let extend = format!("/api/sessions/{id}/extend");
    let answer = client
        .post_json(
            &extend,
            Some(&csrf),
            serde_json::json!({ "minutes": u64::MAX / 60 + 1 }),
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(json_error(&answer).contains("1 to 1440"), "{}", answer.body);
    let not_json = client
        .send_raw(
            "POST",
            &approve,
            Some("text/plain"),
            Some(&csrf),
            "minutes=60",
        )
        .await;
    assert_eq!(not_json.status, 415, "{}", not_json.body);
    assert!(
        json_error(&not_json).contains("Content-Type: application/json"),
        "{}",
        not_json.body
    );
    let broken = client
        .send_raw(
            "POST",
            &approve,
            Some("application/json"),
            Some(&csrf),
            "{\"minutes\":",
        )
        .await;
    assert_eq!(broken.status, 400, "{}", broken.body);
    json_error(&broken);
    let wrong_method = client.get(&approve).await;
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.body);
    json_error(&wrong_method);
    let allow = wrong_method.headers.get("allow").unwrap().to_str().unwrap();
    assert!(allow.contains("POST"), "{allow}");
    let no_call = client.get("/api/no/such/call").await;
    assert_eq!(no_call.status, 404, "{}", no_call.body);
    json_error(&no_call);

    assert_eq!(stage(&broker, &id).await, Stage::Requested);
    assert!(
        broker
            .events_of(EventKind::RequestApproved)
            .await
            .is_empty()
    );

    // The auditor's filters: a limit that is not a number is a 400 too.
    let auditor = StaffAccount::create(&broker, "kato", &[Role::Auditor]).await;
    let mut as_auditor = WebClient::new(broker.web_addr());
    as_auditor.login(&broker, &auditor).await;
    for limit in ["ten", "-1", "0"] {
        let answer = as_auditor
            .get(&format!("/api/audit/events?limit={limit}"))
            .await;
        assert_eq!(answer.status, 400, "{limit}: {}", answer.body);
        json_error(&answer);
    }
}

#[tokio::test]
async fn failed_logins_for_a_name_make_the_next_attempt_wait_doubling_and_say_how_long() {
    let (broker, _echo) = broker().await;
    let sato = StaffAccount::create(&broker, "sato", &[Role::Approver]).await;
    let mut client = WebClient::new(broker.web_addr());
    let code = sato.code(&broker);
    let wrong = client.login_with("sato", "not the password!", &code).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    // At once, even the right password and code wait: nothing is checked or counted.
    let early = client.login_with("sato", &sato.password, &code).await;
    assert_eq!(early.status, 429, "{}", early.body);
    assert_eq!(retry_after(&early), Some(1));
    assert!(
        early
            .body
            .contains("Too many failed logins for this name; wait 1 second and try again."),
        "{}",
        early.body
    );
    broker.clock().advance(Duration::from_secs(1));
    let wrong = client.login_with("sato", "still not it!", &code).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    // The second failure doubles the wait; the API says so in JSON and Retry-After.
    let early = client
        .post_json(
            "/api/login",
            None,
            serde_json::json!({"name": "sato", "password": sato.password, "code": code}),
        )
        .await;
    assert_eq!(early.status, 429, "{}", early.body);
    assert_eq!(retry_after(&early), Some(2));
    assert!(
        json_error(&early).contains("wait 2 seconds"),
        "{}",
        early.body
    );
    broker.clock().advance(Duration::from_secs(2));
    let right = client.login_with("sato", &sato.password, &code).await;
    assert_eq!(right.status, 303, "{}", right.body);
    // Two failures were recorded, not the attempts that came too soon.
    assert_eq!(broker.events_of(EventKind::StaffLoginFailed).await.len(), 2);
    // A success starts again from one second.
    let wrong = client
        .login_with("sato", "wrong again!", &code_now(&broker, &sato))
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let early = client
        .login_with("sato", &sato.password, &code_now(&broker, &sato))
        .await;
    assert_eq!(retry_after(&early), Some(1), "{}", early.body);
    // A name nobody has waits the same way: the wait tells nothing about which names exist.
    let unknown = client.login_with("nobody", "a guess", "123456").await;
    assert_eq!(unknown.status, 401, "{}", unknown.body);
    let early = client.login_with("nobody", "another guess", "123456").await;
    assert_eq!(early.status, 429, "{}", early.body);
    assert_eq!(retry_after(&early), Some(1));
}

#[tokio::test]
async fn a_lock_alerts_the_webhook_leaves_open_sessions_alone_and_ends_by_itself() {
    let socket = RelaySocket::bind().await;
    let url = socket.url("http");
    let mut relay = socket.serve_http(&[]);
    let broker = TestBroker::start_with(&[Vendor::new("acme")], |config| {
        let mut web = WebConfig::new("127.0.0.1:0".parse().unwrap());
        web.tls = WebTls::PlainHttpOnLoopback;
        config.web = Some(web);
        config.webhook = Some(WebhookConfig::new(url));
    })
    .await;
    let sato = StaffAccount::create(&broker, "sato", &[Role::Approver]).await;
    let mut own = WebClient::new(broker.web_addr());
    own.login(&broker, &sato).await;
    let mut outsider = WebClient::new(broker.web_addr());
    for _ in 0..5 {
        // Each code is for the next 30-second step: longer than any wait so far.
        let code = sato.code(&broker);
        let answer = outsider.login_with("sato", "a guess!", &code).await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    let locked_at = broker.clock().now();
    let posted = relay.next_of("staff-locked").await;
    let json = posted.json();
    assert_eq!(json["staff"], "sato");
    assert_eq!(json["failures"], "5");
    assert_eq!(json["from"], "127.0.0.1");
    assert_eq!(
        json["until"],
        sekisho_broker::audit::timestamp(locked_at + Duration::from_secs(15 * 60)).as_str()
    );
    // The approver already logged in goes on working.
    assert_eq!(own.get("/requests").await.status, 200);
    // A login is refused while the lock lasts, and the sentence says for how long.
    let refused = outsider
        .login_with("sato", &sato.password, &sato.code(&broker))
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("locked for 15m, and admins are alerted"),
        "{}",
        refused.body
    );
    let listed = sekisho_broker::cli::staff_list(&directory(&broker))
        .await
        .unwrap();
    assert!(listed.contains("locked until 20"), "{listed}");
    // Fifteen minutes after it began, it is over without anyone acting.
    broker.clock().advance(Duration::from_secs(15 * 60));
    let mut later = WebClient::new(broker.web_addr());
    later.login(&broker, &sato).await;
    assert_eq!(later.get("/requests").await.status, 200);
    assert_eq!(broker.events_of(EventKind::StaffLocked).await.len(), 1);
}

#[tokio::test]
async fn a_hospital_whose_policy_says_until_reset_keeps_the_lock_until_an_admin_resets() {
    let (mut broker, _echo) = broker().await;
    std::fs::write(
        broker.config().policies_dir.join("hospital.toml"),
        "[hospital]\nname = \"Test Hospital\"\ntimezone = \"Asia/Tokyo\"\n\n[defaults]\nidle_timeout = \"24h\"\nstaff_lockout = \"until-reset\"\n",
    )
    .unwrap();
    let asked = broker.request_reload().await;
    broker.event_after(&[EventKind::PolicyLoaded], asked).await;
    let sato = StaffAccount::create(&broker, "sato", &[Role::Approver]).await;
    let mut client = WebClient::new(broker.web_addr());
    for _ in 0..5 {
        let code = sato.code(&broker);
        client.login_with("sato", "a guess!", &code).await;
    }
    broker.first_event(EventKind::StaffLocked).await;
    broker.clock().advance(Duration::from_secs(24 * 3600));
    let refused = client
        .login_with("sato", &sato.password, &sato.code(&broker))
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(
        refused.body.contains("locked until an admin resets it"),
        "{}",
        refused.body
    );
    // `staff list` on the broker host reads the same policy.
    broker.reread_policies().await;
    let lockout = broker.desk().policies().hospital().defaults.staff_lockout;
    assert_eq!(lockout, StaffLockout::UntilReset);
    let staff = directory(&broker).with_lockout(move || lockout);
    let listed = sekisho_broker::cli::staff_list(&staff).await.unwrap();
    assert!(listed.contains("locked until reset"), "{listed}");
    let token = staff
        .invite("sato", &Roles::new([Role::Approver]), "yamada")
        .await
        .unwrap();
    let reset = StaffAccount::set_up(
        &broker,
        token.expose_secret(),
        "sato",
        "a new long password",
    )
    .await;
    broker.clock().advance(Duration::from_secs(60));
    client.login(&broker, &reset).await;
}

#[tokio::test]
async fn csv_exports_from_the_web_the_api_and_the_cli_neutralise_cells_that_start_like_formulas() {
    let (broker, _echo) = broker().await;
    let auditor = StaffAccount::create(&broker, "kato", &[Role::Auditor]).await;
    // What a hostile vendor writes: the target of its own refused forwards.
    let cells = [
        (
            "=HYPERLINK(\"http://x\")",
            "\"'=HYPERLINK(\"\"http://x\"\")\"",
        ),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "\"'\rcmd\""),
    ];
    let store = broker.desk().store().clone();
    for (target, _) in &cells {
        let event = AuditEvent::new(
            broker.clock().now(),
            Actor::Technician {
                vendor: "acme".into(),
                technician: "tanaka".into(),
            },
            EventKind::ForwardRefused,
        )
        .technician("acme", "tanaka")
        .target(target);
        store.record(&event).await.unwrap();
    }
    let check = |text: &str, from: &str| {
        for (target, cell) in &cells {
            assert!(
                text.contains(&format!(",{cell},")),
                "{from}: {target:?} should be {cell:?} in:\n{text}"
            );
        }
        for raw in [",=HYPERLINK", ",+1,", ",-1,", ",@SUM", ",\tcmd", ",\rcmd"] {
            assert!(!text.contains(raw), "{from}: {raw:?} unchanged in:\n{text}");
        }
    };
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &auditor).await;
    let csrf = client.csrf("/audit").await;
    let web = client
        .post_form(
            "/audit/export",
            &[
                ("csrf", &csrf),
                ("format", "csv"),
                ("kind", "forward-refused"),
            ],
        )
        .await;
    assert_eq!(web.status, 200, "{}", web.body);
    check(&web.body, "web");
    let api = client
        .post_json(
            "/api/audit/export",
            Some(&csrf),
            serde_json::json!({"format": "csv", "kind": "forward-refused"}),
        )
        .await;
    assert_eq!(api.status, 200, "{}", api.body);
    check(&api.body, "api");
    let exported = sekisho_broker::cli::audit_export(
        &broker.desk(),
        &ExportRequest {
            format: ExportFormat::Csv,
            query: EventQuery {
                kinds: vec!["forward-refused".into()],
                ..EventQuery::default()
            },
            out: None,
        },
        "kato",
    )
    .await
    .unwrap();
    let Exported::ToStdout(cli) = exported else {
        panic!("to standard output")
    };
    check(&cli, "cli");
}

#[tokio::test]
async fn the_web_ui_speaks_tls_1_3_only() {
    let broker = start_web_broker(&[Vendor::new("acme")], true).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(broker.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    for (version, accepted) in [
        (&rustls::version::TLS13, true),
        (&rustls::version::TLS12, false),
    ] {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(broker.web_addr())
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let handshake = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .expect("the handshake ends in time");
        assert_eq!(handshake.is_ok(), accepted, "{version:?}: {handshake:?}");
    }
}

#[tokio::test]
async fn connections_from_outside_web_allow_are_closed_before_any_answer_and_counted() {
    let broker = start_web_broker_with(&[Vendor::new("acme")], false, |web| {
        web.allow = vec!["127.0.0.2/32".parse().unwrap()];
    })
    .await;
    // From 127.0.0.1: closed, nothing answered.
    let mut tcp = tokio::net::TcpStream::connect(broker.web_addr())
        .await
        .unwrap();
    let _ = tcp
        .write_all(b"GET /login HTTP/1.1\r\nHost: broker\r\n\r\n")
        .await;
    let mut answered = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answered))
        .await
        .expect("the connection is closed in time");
    assert!(
        read.is_err() || answered.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&answered)
    );
    // From 127.0.0.2: served, and an admin sees the count.
    let admin = StaffAccount::create(&broker, "yamada", &[Role::Admin]).await;
    let mut inside = WebClient::from_source(broker.web_addr(), "127.0.0.2".parse().unwrap());
    inside.login(&broker, &admin).await;
    let status = inside.get("/status").await;
    assert!(
        status.body.contains("outside --web-allow: 1."),
        "{}",
        status.body
    );
}

#[tokio::test]
async fn the_first_admin_link_names_a_host_a_browser_reaches_never_0_0_0_0() {
    let everywhere = |web: &mut WebConfig| {
        web.listen = "0.0.0.0:0".parse().unwrap();
        // Listening on every address, but only this host may connect.
        web.allow = vec!["127.0.0.0/8".parse().unwrap()];
    };
    let broker = start_web_broker_with(&[Vendor::new("acme")], true, everywhere).await;
    let url = broker.first_admin_url().unwrap().to_owned();
    assert!(!url.contains("0.0.0.0"), "{url}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let port = broker.web_addr().port();
    assert!(
        url.starts_with(&format!("https://{}:{port}/setup/", host.trim())),
        "{url}"
    );
    let named = start_web_broker_with(&[Vendor::new("acme")], true, |web| {
        everywhere(web);
        web.tls = WebTls::BrokerIssued {
            names: vec!["broker.hospital.test".into()],
        };
    })
    .await;
    let url = named.first_admin_url().unwrap();
    let port = named.web_addr().port();
    assert!(
        url.starts_with(&format!("https://broker.hospital.test:{port}/setup/")),
        "{url}"
    );
}

#[tokio::test]
async fn logging_out_through_the_api_ends_the_session() {
    let (broker, _echo) = broker().await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let mut client = WebClient::new(broker.web_addr());
    let login = client
        .post_json(
            "/api/login",
            None,
            serde_json::json!({"name": "suzuki", "password": approver.password, "code": approver.code(&broker)}),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let body: serde_json::Value = serde_json::from_str(&login.body).unwrap();
    let csrf = body["csrf"].as_str().unwrap().to_owned();
    let issued = client.cookies["sekisho_session"].clone();
    let (status, stream) = client.events().await;
    assert_eq!(status, 200);
    let mut stream = stream.unwrap();
    assert!(
        stream
            .next(ENDS_WITHIN)
            .await
            .unwrap()
            .contains("event: live")
    );
    let without_csrf = client
        .post_json("/api/logout", None, serde_json::json!({}))
        .await;
    assert_eq!(without_csrf.status, 403, "{}", without_csrf.body);
    let out = client
        .post_json("/api/logout", Some(&csrf), serde_json::json!({}))
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.body.contains("Logged out"), "{}", out.body);
    stream.ends_within(ENDS_WITHIN).await;
    let mut replay = WebClient::new(broker.web_addr());
    replay.cookies.insert("sekisho_session".into(), issued);
    let after = replay.get("/api/requests").await;
    assert_eq!(after.status, 401, "{}", after.body);
    json_error(&after);
    broker.first_event(EventKind::StaffLogout).await;
}

#[tokio::test]
async fn a_live_stream_ends_with_the_page_logout_and_does_not_keep_an_idle_session_alive() {
    let (broker, _echo) = broker().await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &approver).await;
    let (_, stream) = client.events().await;
    let mut stream = stream.unwrap();
    assert!(
        stream
            .next(ENDS_WITHIN)
            .await
            .unwrap()
            .contains("event: live")
    );
    let csrf = client.csrf("/requests").await;
    let out = client.post_form("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    stream.ends_within(ENDS_WITHIN).await;

    // Idle: an open stream is not use, nor is the page's own refresh of its live list.
    client.login(&broker, &approver).await;
    let (_, stream) = client.events().await;
    let mut stream = stream.unwrap();
    assert!(
        stream
            .next(ENDS_WITHIN)
            .await
            .unwrap()
            .contains("event: live")
    );
    broker.clock().advance(Duration::from_secs(10 * 60));
    assert_eq!(client.get("/requests/list").await.status, 200);
    broker.clock().advance(Duration::from_secs(6 * 60));
    stream.ends_within(ENDS_WITHIN).await;
    assert_eq!(client.get("/requests").await.status, 303);
}

#[tokio::test]
async fn a_session_ends_at_its_lifetime_however_much_it_is_used_and_its_stream_with_it() {
    let echo = EchoServer::start().await;
    let broker = start_web_broker_with(
        &[Vendor::new("acme").target("echo", echo.addr())],
        false,
        |web| web.session_lifetime = Duration::from_secs(3600),
    )
    .await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &approver).await;
    let (_, stream) = client.events().await;
    let mut stream = stream.unwrap();
    assert!(
        stream
            .next(ENDS_WITHIN)
            .await
            .unwrap()
            .contains("event: live")
    );
    for _ in 0..4 {
        broker.clock().advance(Duration::from_secs(14 * 60));
        assert_eq!(client.get("/requests").await.status, 200);
    }
    broker.clock().advance(Duration::from_secs(5 * 60));
    stream.ends_within(ENDS_WITHIN).await;
    assert_eq!(client.get("/requests").await.status, 303);
}

#[tokio::test]
async fn disabling_an_account_ends_its_live_streams() {
    let (broker, _echo) = broker().await;
    let admin = StaffAccount::create(&broker, "yamada", &[Role::Admin]).await;
    let sato = StaffAccount::create(&broker, "sato", &[Role::Approver]).await;
    let mut as_sato = WebClient::new(broker.web_addr());
    as_sato.login(&broker, &sato).await;
    let (_, stream) = as_sato.events().await;
    let mut stream = stream.unwrap();
    assert!(
        stream
            .next(ENDS_WITHIN)
            .await
            .unwrap()
            .contains("event: live")
    );
    let mut as_admin = WebClient::new(broker.web_addr());
    as_admin.login(&broker, &admin).await;
    let csrf = as_admin.csrf("/staff").await;
    let done = as_admin
        .post_form("/staff/sato/disable", &[("csrf", &csrf)])
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    stream.ends_within(ENDS_WITHIN).await;
}

#[tokio::test]
async fn one_session_follows_live_updates_on_at_most_four_pages() {
    let (broker, _echo) = broker().await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &approver).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let (status, stream) = client.events().await;
        assert_eq!(status, 200);
        open.push(stream.unwrap());
    }
    let (status, _) = client.events().await;
    assert_eq!(status, 429, "the fifth is refused; the four go on");
    assert!(
        open[0]
            .next(ENDS_WITHIN)
            .await
            .unwrap()
            .contains("event: live")
    );
    // Another login of the same person has its own four.
    let mut elsewhere = WebClient::new(broker.web_addr());
    elsewhere.login(&broker, &approver).await;
    let (status, _) = elsewhere.events().await;
    assert_eq!(status, 200);
}
