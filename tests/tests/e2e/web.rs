//! The staff web UI: roles, CSRF, session fixation, lockout, idle expiry, escaping, the first
//! admin's link, and the JSON API; each against a real broker over HTTP, with requests made
//! by real clients over QUIC. The browser test is in `browser`.

use std::time::Duration;

use sekisho_broker::audit::EventKind;
use sekisho_broker::clock::Clock;
use sekisho_broker::session::{RequestId, Stage};
use sekisho_broker::staff::Role;
use sekisho_broker::web::{WebConfig, WebTls};
use sekisho_e2e::web::{
    StaffAccount, WebClient, hidden_csrf, request, shown_secret, start_web_broker,
};
use sekisho_e2e::{EchoServer, TestBroker, Vendor};

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

#[tokio::test]
async fn each_role_is_refused_what_it_may_not_do_and_nobody_approves_their_own_request() {
    let (broker, _echo) = broker().await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let auditor = StaffAccount::create(&broker, "kato", &[Role::Auditor]).await;
    // A staff account named like the technician who asks.
    let same_person = StaffAccount::create(&broker, "tanaka", &[Role::Approver]).await;
    let id = request(&broker, "tanaka", "patch").await;

    let mut as_approver = WebClient::new(broker.web_addr());
    as_approver.login(&broker, &approver).await;
    let csrf = as_approver.csrf("/requests").await;
    let export = as_approver
        .post_form("/audit/export", &[("csrf", &csrf), ("format", "jsonl")])
        .await;
    assert_eq!(export.status, 403, "{}", export.body);
    assert!(export.body.contains("auditor"), "{}", export.body);
    assert_eq!(as_approver.get("/audit").await.status, 403);
    assert_eq!(as_approver.get("/staff").await.status, 403);
    assert_eq!(as_approver.get("/status").await.status, 403);

    let mut as_auditor = WebClient::new(broker.web_addr());
    as_auditor.login(&broker, &auditor).await;
    let auditor_csrf = as_auditor.csrf("/audit/review").await;
    let approve = as_auditor
        .post_form(
            &format!("/requests/{id}/approve"),
            &[("csrf", &auditor_csrf), ("minutes", "60")],
        )
        .await;
    assert_eq!(approve.status, 403, "{}", approve.body);
    assert_eq!(as_auditor.get("/requests").await.status, 403);

    let mut as_self = WebClient::new(broker.web_addr());
    as_self.login(&broker, &same_person).await;
    let self_csrf = as_self.csrf("/requests").await;
    let own = as_self
        .post_form(
            &format!("/requests/{id}/approve"),
            &[("csrf", &self_csrf), ("minutes", "60")],
        )
        .await;
    assert_eq!(own.status, 409, "{}", own.body);
    assert!(own.body.contains("cannot answer"), "{}", own.body);
    assert_eq!(stage(&broker, &id).await, Stage::Requested);

    // The same through the JSON API: the auditor cannot approve there either.
    let api_approve = as_auditor
        .post_json(
            &format!("/api/requests/{id}/approve"),
            Some(&auditor_csrf),
            serde_json::json!({ "minutes": 60 }),
        )
        .await;
    assert_eq!(api_approve.status, 403, "{}", api_approve.body);

    // The approver's own approval works, and is on the record with the approver as actor
    // and their comment.
    let approved = as_approver
        .post_form(
            &format!("/requests/{id}/approve"),
            &[
                ("csrf", &csrf),
                ("minutes", "60"),
                ("comment", "agreed with the ward"),
            ],
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(stage(&broker, &id).await, Stage::Approved);
    let event = broker.first_event(EventKind::RequestApproved).await;
    assert_eq!(event.event.actor.encode(), "staff:suzuki");
    assert_eq!(
        sekisho_e2e::detail(&event, "comment"),
        "agreed with the ward"
    );
    broker.first_event(EventKind::StaffRefused).await;
}

#[tokio::test]
async fn a_missing_or_wrong_csrf_token_is_refused() {
    let (broker, _echo) = broker().await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let id = request(&broker, "tanaka", "patch").await;
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &approver).await;
    let path = format!("/requests/{id}/deny");
    let missing = client.post_form(&path, &[("reason", "no")]).await;
    assert_eq!(missing.status, 403, "{}", missing.body);
    let wrong = client
        .post_form(&path, &[("csrf", &"0".repeat(64)), ("reason", "no")])
        .await;
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    let api = client
        .post_json(
            &format!("/api/requests/{id}/deny"),
            None,
            serde_json::json!({"reason": "no"}),
        )
        .await;
    assert_eq!(api.status, 403, "{}", api.body);
    assert_eq!(stage(&broker, &id).await, Stage::Requested);
    let csrf = client.csrf("/requests").await;
    let right = client
        .post_form(&path, &[("csrf", &csrf), ("reason", "no")])
        .await;
    assert_eq!(right.status, 200, "{}", right.body);
    assert!(matches!(stage(&broker, &id).await, Stage::Ended(_)));
}

#[tokio::test]
async fn a_session_id_set_before_login_never_becomes_the_session() {
    let (broker, _echo) = broker().await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let mut client = WebClient::new(broker.web_addr());
    let planted = "a".repeat(64);
    client
        .cookies
        .insert("sekisho_session".into(), planted.clone());
    client.login(&broker, &approver).await;
    let issued = client.cookies.get("sekisho_session").cloned().unwrap();
    assert_ne!(issued, planted);
    assert_eq!(client.get("/requests").await.status, 200);

    let mut attacker = WebClient::new(broker.web_addr());
    attacker.cookies.insert("sekisho_session".into(), planted);
    let answer = attacker.get("/requests").await;
    assert_eq!(answer.status, 303);
    assert_eq!(answer.location(), Some("/login"));

    // A second login gets yet another id; logging out ends the session.
    let mut again = WebClient::new(broker.web_addr());
    again.login(&broker, &approver).await;
    assert_ne!(again.cookies.get("sekisho_session"), Some(&issued));
    let csrf = client.csrf("/requests").await;
    let out = client.post_form("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    let mut replay = WebClient::new(broker.web_addr());
    replay.cookies.insert("sekisho_session".into(), issued);
    assert_eq!(replay.get("/requests").await.status, 303);
}

#[tokio::test]
async fn repeated_failures_lock_the_account_and_attempts_are_rate_limited() {
    let (broker, _echo) = broker().await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let mut client = WebClient::new(broker.web_addr());
    for _ in 0..5 {
        let code = approver.code(&broker);
        let answer = client
            .login_with("suzuki", "not the password!", &code)
            .await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    broker.first_event(EventKind::StaffLocked).await;
    // Now even the right password and a fresh code are refused, with the same sentence.
    let answer = client
        .login_with(&approver.name, &approver.password, &approver.code(&broker))
        .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(answer.body.contains("locked"), "{}", answer.body);
    assert!(!client.cookies.contains_key("sekisho_session"));
    // Ten attempts a minute from one address; the eleventh and later wait. (Each under a name
    // of its own: a name's own wait after a failure is another limit, in `web_abuse`.)
    let mut limited = false;
    for n in 0..6 {
        let answer = client
            .login_with(&format!("nobody{n}"), "whatever password", "000000")
            .await;
        limited |= answer.status == 429 && answer.body.contains("from this address");
    }
    assert!(
        limited,
        "the eleventh attempt within a minute must be refused"
    );
}

#[tokio::test]
async fn a_session_unused_for_the_idle_limit_is_over() {
    let (broker, _echo) = broker().await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &approver).await;
    broker.clock().advance(Duration::from_secs(14 * 60));
    assert_eq!(client.get("/requests").await.status, 200);
    broker.clock().advance(Duration::from_secs(16 * 60));
    assert_eq!(client.get("/requests").await.status, 303);
}

#[tokio::test]
async fn html_in_a_purpose_or_reason_is_shown_as_text() {
    let (broker, _echo) = broker().await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let auditor = StaffAccount::create(&broker, "kato", &[Role::Auditor]).await;
    let injected = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let id = request(&broker, "tanaka", injected).await;
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &approver).await;
    let page = client.get("/requests").await;
    assert!(
        page.body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(!page.body.contains("<img src=x"), "{}", page.body);
    let csp = page
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let csrf = hidden_csrf(&page.body).unwrap();
    let denied = client
        .post_form(
            &format!("/requests/{id}/deny"),
            &[("csrf", &csrf), ("reason", injected)],
        )
        .await;
    assert_eq!(denied.status, 200, "{}", denied.body);
    assert!(!denied.body.contains("<script>alert"), "{}", denied.body);

    let mut as_auditor = WebClient::new(broker.web_addr());
    as_auditor.login(&broker, &auditor).await;
    let log = as_auditor.get("/audit").await;
    assert!(log.body.contains("reason=&lt;script&gt;"), "{}", log.body);
    assert!(!log.body.contains("<script>alert"), "{}", log.body);
}

#[tokio::test]
async fn the_first_start_prints_a_one_time_link_that_makes_the_first_admin() {
    let (mut broker, _echo) = broker().await;
    let url = broker
        .first_admin_url()
        .expect("no admin yet: a link")
        .to_owned();
    let path = &url[url.find("/setup/").unwrap()..];
    let mut client = WebClient::new(broker.web_addr());
    let short = client
        .post_form(
            path,
            &[
                ("name", "yamada"),
                ("password", "too short"),
                ("repeated", "too short"),
            ],
        )
        .await;
    assert_eq!(short.status, 400, "{}", short.body);
    assert!(short.body.contains("13"), "{}", short.body);
    let password = "thirteen+ chars here";
    let made = client
        .post_form(
            path,
            &[
                ("name", "yamada"),
                ("password", password),
                ("repeated", password),
            ],
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    assert!(made.body.contains("otpauth://totp/"), "{}", made.body);
    // The secret is also a QR code to scan, drawn as inline SVG (no script, no image file).
    let qr = made.body.find("id=\"otp-qr\"").expect("a QR code");
    assert!(made.body[qr..].contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(!made.body.contains("<?xml"), "no XML prologue inside HTML");
    // The admin exists once a code from the new authenticator confirms it.
    assert!(
        broker
            .desk()
            .store()
            .staff_member("yamada")
            .await
            .unwrap()
            .is_none()
    );
    let secret = shown_secret(&made.body).expect("the key to type by hand");
    let confirm = format!("{path}/confirm");
    let code = sekisho_broker::otp::code_at(&secret, broker.clock().now()).unwrap();
    let ready = client.post_form(&confirm, &[("code", &code)]).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(ready.body.contains("id=\"setup-done\""), "{}", ready.body);
    assert!(
        broker
            .desk()
            .store()
            .staff_member("yamada")
            .await
            .unwrap()
            .is_some()
    );
    // The link works once.
    let again = client
        .post_form(
            path,
            &[
                ("name", "other"),
                ("password", password),
                ("repeated", password),
            ],
        )
        .await;
    assert_eq!(again.status, 400, "{}", again.body);
    broker.restart().await;
    assert_eq!(
        broker.first_admin_url(),
        None,
        "an admin exists: no new link"
    );
    broker.first_event(EventKind::StaffEnrolled).await;
}

#[tokio::test]
async fn plain_http_is_refused_on_an_address_others_can_reach() {
    let dir = tempfile::tempdir().unwrap();
    let policies = sekisho_e2e::write_policies(dir.path(), &[Vendor::new("acme")]);
    let mut config = sekisho_broker::BrokerConfig::new(dir.path().join("data"), policies);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let mut web = WebConfig::new("0.0.0.0:0".parse().unwrap());
    web.tls = WebTls::PlainHttpOnLoopback;
    config.web = Some(web);
    let result = sekisho_broker::Broker::bind(config).await;
    let error = result.err().expect("refused").to_string();
    assert!(error.contains("loopback"), "{error}");
}

#[tokio::test]
async fn the_json_api_logs_in_and_acts_with_the_csrf_token_it_returns() {
    let (broker, _echo) = broker().await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let id = request(&broker, "tanaka", "api").await;
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
    let listed = client.get("/api/requests").await;
    assert!(listed.body.contains(&id), "{}", listed.body);
    let approved = client
        .post_json(
            &format!("/api/requests/{id}/approve"),
            Some(&csrf),
            serde_json::json!({"minutes": 30}),
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(stage(&broker, &id).await, Stage::Approved);
}

/// The `--token` and `--ca-fingerprint` of the enrollment command on a page.
fn enrollment_in(html: &str) -> (String, String) {
    let at = html
        .find("sekisho enroll ")
        .unwrap_or_else(|| panic!("no enrollment command on the page: {html}"));
    let words: Vec<&str> = html[at..].split_whitespace().take(8).collect();
    let after = |flag: &str| {
        let index = words.iter().position(|w| *w == flag).unwrap();
        words[index + 1].trim_end_matches(['<', '/']).to_owned()
    };
    (after("--token"), after("--ca-fingerprint"))
}

#[tokio::test]
async fn an_admin_takes_on_a_vendor_adds_a_technician_who_enrolls_and_disables_and_resets_them() {
    let (broker, _echo) = broker().await;
    let admin = StaffAccount::create(&broker, "yamada", &[Role::Admin]).await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let mut as_admin = WebClient::new(broker.web_addr());
    as_admin.login(&broker, &admin).await;
    let csrf = as_admin.csrf("/technicians").await;

    // The vendor has a policy file but was not taken on yet: added from the page.
    let page = as_admin.get("/technicians").await;
    assert!(page.body.contains("/vendors/acme/add"), "{}", page.body);
    let added = as_admin
        .post_form("/vendors/acme/add", &[("csrf", &csrf)])
        .await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert!(added.body.contains("Added vendor `acme`"), "{}", added.body);

    // A technician, with the enrollment command shown once.
    let shown = as_admin
        .post_form(
            "/technicians",
            &[
                ("csrf", &csrf),
                ("vendor", "acme"),
                ("technician", "tanaka"),
                ("name", "Tanaka <b>Hanako</b>"),
                ("email", "tanaka@acme.example"),
            ],
        )
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert!(
        shown.body.contains("Tanaka &lt;b&gt;Hanako&lt;/b&gt;"),
        "escaped: {}",
        shown.body
    );
    let (token, fingerprint) = enrollment_in(&shown.body);
    assert_eq!(
        fingerprint,
        broker.enroll_args("", broker.dir()).ca_fingerprint
    );
    // Shown once: the list does not carry it again.
    let again = as_admin.get("/technicians").await;
    assert!(!again.body.contains(&token), "the token is shown only once");

    // The technician enrolls with it, over QUIC, and is let in.
    let laptop = broker.dir().join("laptop");
    sekisho_client::enroll::enroll(&broker.enroll_args(&token, &laptop))
        .await
        .unwrap();
    let config = sekisho_client::ClientConfig::from_dir(&laptop)
        .unwrap()
        .unwrap();
    sekisho_client::Session::connect(&config).await.unwrap();

    // An approver may not manage technicians, on the page or the API.
    let mut as_approver = WebClient::new(broker.web_addr());
    as_approver.login(&broker, &approver).await;
    assert_eq!(as_approver.get("/technicians").await.status, 403);
    let approver_csrf = as_approver.csrf("/requests").await;
    let refused = as_approver
        .post_form(
            "/technicians/acme/tanaka/disable",
            &[("csrf", &approver_csrf), ("reason", "x")],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    // The admin disables them through the API: refused at the next handshake.
    let login = as_admin
        .post_json(
            "/api/login",
            None,
            serde_json::json!({"name": "yamada", "password": admin.password, "code": admin.code(&broker)}),
        )
        .await;
    let api_csrf = serde_json::from_str::<serde_json::Value>(&login.body).unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_owned();
    let no_reason = as_admin
        .post_json(
            "/api/technicians/acme/tanaka/disable",
            Some(&api_csrf),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(no_reason.status, 400, "{}", no_reason.body);
    let disabled = as_admin
        .post_json(
            "/api/technicians/acme/tanaka/disable",
            Some(&api_csrf),
            serde_json::json!({"reason": "left the company"}),
        )
        .await;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    match sekisho_client::Session::connect(&config).await {
        Err(sekisho_client::ConnectError::Refused(refusal)) => {
            assert_eq!(refusal.code, proto::ErrorCode::IdentityDisabled);
        }
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("a disabled technician was let in"),
    }
    let event = broker.first_event(EventKind::TechnicianDisabled).await;
    assert_eq!(event.event.actor.to_string(), "staff:yamada");

    // Enabled and reset from the page: a new command, the old certificate refused.
    let csrf = as_admin.csrf("/technicians").await;
    let enabled = as_admin
        .post_form("/technicians/acme/tanaka/enable", &[("csrf", &csrf)])
        .await;
    assert_eq!(enabled.status, 200, "{}", enabled.body);
    let reset = as_admin
        .post_form("/technicians/acme/tanaka/reset", &[("csrf", &csrf)])
        .await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    let (new_token, _) = enrollment_in(&reset.body);
    assert_ne!(new_token, token);
    match sekisho_client::Session::connect(&config).await {
        Err(sekisho_client::ConnectError::Refused(refusal)) => {
            assert_eq!(refusal.code, proto::ErrorCode::CertificateRevoked);
        }
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("a revoked certificate was let in"),
    }
}

#[tokio::test]
async fn the_lockdown_control_needs_a_confirmation_cuts_live_sessions_and_shows_on_every_page() {
    let (broker, _echo) = broker().await;
    let approver = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let auditor = StaffAccount::create(&broker, "kato", &[Role::Auditor]).await;
    broker.enroll("acme", "tanaka").await;
    let mut session = broker.open_session("acme", "tanaka", &["echo"]).await;
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &approver).await;
    let csrf = client.csrf("/lockdown").await;

    // Without the box ticked nothing happens.
    let unconfirmed = client
        .post_form(
            "/lockdown",
            &[
                ("csrf", &csrf),
                ("action", "on"),
                ("reason", "ransomware suspected"),
            ],
        )
        .await;
    assert_eq!(unconfirmed.status, 400, "{}", unconfirmed.body);
    assert!(!broker.desk().lockdown().await.unwrap().active);
    // An auditor may not pull the switch.
    let mut as_auditor = WebClient::new(broker.web_addr());
    as_auditor.login(&broker, &auditor).await;
    let auditor_csrf = as_auditor.csrf("/audit/review").await;
    let refused = as_auditor
        .post_form(
            "/lockdown",
            &[
                ("csrf", &auditor_csrf),
                ("action", "on"),
                ("reason", "x"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    let on = client
        .post_form(
            "/lockdown",
            &[
                ("csrf", &csrf),
                ("action", "on"),
                ("reason", "ransomware suspected"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(on.status, 200, "{}", on.body);
    match tokio::time::timeout(Duration::from_secs(1), session.next_event()).await {
        Ok(sekisho_client::SessionEvent::Ended { reason, .. }) => assert_eq!(reason, "lockdown"),
        other => panic!("expected the session to end by lockdown, got {other:?}"),
    }
    // The state is on every page, for every role (pages read it from the broker's watcher,
    // which sees the store within its poll interval).
    for (who, path) in [(&mut client, "/requests"), (&mut as_auditor, "/audit")] {
        let banner = async {
            loop {
                let page = who.get(path).await;
                if page.body.contains("id=\"lockdown-banner\"") {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), banner)
            .await
            .unwrap_or_else(|_| panic!("{path} never showed the lockdown banner"));
    }
    // Lifting it is an admin's act: the approver is refused (and recorded).
    let refused = client
        .post_form(
            "/lockdown",
            &[("csrf", &csrf), ("action", "off"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("takes the admin role"),
        "{}",
        refused.body
    );
    assert!(broker.desk().lockdown().await.unwrap().active);
    let admin = StaffAccount::create(&broker, "yamada", &[Role::Admin]).await;
    let mut admin_client = WebClient::new(broker.web_addr());
    admin_client.login(&broker, &admin).await;
    let admin_csrf = admin_client.csrf("/lockdown").await;
    let lifted = admin_client
        .post_form(
            "/lockdown",
            &[("csrf", &admin_csrf), ("action", "off"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(lifted.status, 200, "{}", lifted.body);
    assert!(!broker.desk().lockdown().await.unwrap().active);
    let event = broker.first_event(EventKind::LockdownOn).await;
    assert_eq!(event.event.actor.to_string(), "staff:suzuki");
}

#[tokio::test]
async fn the_only_admin_locked_out_is_let_back_in_with_a_reset_link_made_on_the_broker_host() {
    let (broker, _echo) = broker().await;
    let admin = StaffAccount::create(&broker, "yamada", &[Role::Admin]).await;
    let mut client = WebClient::new(broker.web_addr());
    for _ in 0..5 {
        let code = admin.code(&broker);
        client
            .login_with("yamada", "not the password!", &code)
            .await;
    }
    broker.first_event(EventKind::StaffLocked).await;

    // On the broker host: `sekisho-broker staff invite yamada --role admin`.
    let staff = sekisho_e2e::web::directory(&broker);
    let listed = sekisho_broker::cli::staff_list(&staff).await.unwrap();
    let row = listed
        .lines()
        .find(|line| line.starts_with("yamada"))
        .unwrap();
    assert!(row.contains("locked"), "{listed}");
    let base = format!("http://{}", broker.web_addr());
    let printed = sekisho_broker::cli::staff_invite(
        &staff,
        "yamada",
        &["admin".to_owned()],
        Some(&base),
        &sekisho_broker::audit::Actor::Host("root".to_owned()),
    )
    .await
    .unwrap();
    assert!(printed.starts_with("Reset link for yamada"), "{printed}");
    let link = printed
        .split_whitespace()
        .find(|word| word.starts_with(&base))
        .unwrap_or_else(|| panic!("no link in: {printed}"));
    let token = link.rsplit('/').next().unwrap();
    let page = client.get(&format!("/setup/{token}")).await;
    assert_eq!(page.status, 200, "{}", page.body);

    // They set a new password and secret through the link, confirm it with a code, and log
    // in again.
    let reset = StaffAccount::set_up(&broker, token, "yamada", "a brand new long password").await;
    client.login(&broker, &reset).await;
    assert_eq!(client.get("/staff").await.status, 200);
    // The link worked once.
    assert!(staff.invite_for(token).await.is_err());
}

#[tokio::test]
async fn the_chain_page_and_the_api_say_whether_the_log_is_intact_in_the_pages_language() {
    let (broker, _echo) = broker().await;
    let auditor = StaffAccount::create(&broker, "kato", &[Role::Auditor]).await;
    request(&broker, "tanaka", "apply patch 5.2.1").await;
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &auditor).await;
    // Looking records nothing, so the head read here is the one the pages check.
    let (count, head) = broker.desk().store().audit_head().await.unwrap();

    let page = client.get("/audit/chain").await;
    assert!(
        page.body
            .contains(&format!("Intact: {count} events, head {head}")),
        "{}",
        page.body
    );
    let api = client.get("/api/audit/verify").await;
    let api: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    assert_eq!(api["intact"], true, "{api}");
    assert_eq!(api["count"], count, "{api}");
    assert_eq!(api["head"], head.as_str(), "{api}");

    client.get("/lang/ja").await;
    let page = client.get("/audit/chain").await;
    assert!(page.body.contains(r#"<html lang="ja""#), "{}", page.body);
    assert!(
        page.body.contains(&format!(
            "改ざんは見つかりません：{count} 件のイベント、ヘッド {head}"
        )),
        "{}",
        page.body
    );

    // The technician's request, edited after the fact.
    let edited = broker.events_of(EventKind::RequestMade).await[0].seq;
    broker
        .execute_sql(
            "UPDATE audit_events SET actor = 'technician:acme/mallory' WHERE kind = 'request-made'",
        )
        .await;
    let page = client.get("/audit/chain").await;
    assert!(
        page.body.contains(&format!(
            "監査ログはイベント {edited} で壊れています：内容がハッシュ値と一致しません。このイベントが書き換えられています。"
        )),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"role="alert""#), "{}", page.body);
    client.get("/lang/en").await;
    let page = client.get("/audit/chain").await;
    assert!(
        page.body.contains(&format!(
            "The audit log is broken at event {edited}: its contents do not match its hash: the event was edited."
        )),
        "{}",
        page.body
    );
    let api = client.get("/api/audit/verify").await;
    let api: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    assert_eq!(api["intact"], false, "{api}");
    assert_eq!(api["broken_at"], edited, "{api}");
}

#[tokio::test]
async fn the_status_page_shows_the_queue_and_a_sender_nobody_runs_in_the_pages_language() {
    let (broker, _echo) = broker().await;
    let admin = StaffAccount::create(&broker, "sato", &[Role::Admin]).await;
    request(&broker, "tanaka", "apply patch 5.2.1").await;
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &admin).await;
    let page = client.get("/status").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(r#"id="status-verdict""#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(
            "Requests waiting for approval: 1; approved, not yet opened: 0; live sessions: 0."
        ),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"id="no-senders""#), "{}", page.body);

    // A collector whose sending broker stopped without letting its lease go (a crash): the
    // lease is taken, and runs out at once, as a broker would have left it.
    let store = broker.desk().store().clone();
    let syslog = "tls://siem.hospital.local:6514";
    store
        .acquire_lease(
            "audit-syslog",
            syslog,
            "b-crashed",
            Duration::ZERO,
            0,
            |_, _| None,
        )
        .await
        .unwrap();
    let (events, _) = store.audit_head().await.unwrap();
    let page = client.get("/status").await;
    assert!(
        page.body.contains(&format!(
            "Problem: no broker is sending the audit-syslog to {syslog}, and {events} events wait"
        )),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains(r#"id="status-verdict""#),
        "{}",
        page.body
    );
    assert!(page.body.contains("b-crashed"), "{}", page.body);

    client.get("/lang/ja").await;
    let page = client.get("/status").await;
    assert!(
        page.body.contains(&format!(
            "問題：{syslog} の audit-syslog への送信を担うブローカーがなく、{events} 件が送信を待っています。"
        )),
        "{}",
        page.body
    );
    assert!(page.body.contains("承認待ちの申請：1 件"), "{}", page.body);
}

/// Where the hospital asks for two admins to lift a lockdown, the first admin's lift from
/// the web is pending and the second, different admin's lifts it; the Status page shows the
/// hospital's separation-of-duties rule.
#[tokio::test]
async fn a_lockdown_that_needs_two_admins_is_lifted_by_the_second_and_the_status_page_shows_the_duties()
 {
    let (broker, _echo) = broker().await;
    std::fs::write(
        broker.config().policies_dir.join("hospital.toml"),
        "[hospital]\nname = \"Test Hospital\"\ntimezone = \"Asia/Tokyo\"\n\n[defaults]\nidle_timeout = \"24h\"\n\n[staff]\nlockdown_lift_admins = 2\n",
    )
    .unwrap();
    let asked = broker.request_reload().await;
    broker.event_after(&[EventKind::PolicyLoaded], asked).await;
    let first = StaffAccount::create(&broker, "yamada", &[Role::Admin]).await;
    let second = StaffAccount::create(&broker, "kato", &[Role::Admin]).await;
    let mut first_client = WebClient::new(broker.web_addr());
    first_client.login(&broker, &first).await;
    let csrf = first_client.csrf("/lockdown").await;
    let on = first_client
        .post_form(
            "/lockdown",
            &[
                ("csrf", &csrf),
                ("action", "on"),
                ("confirm", "yes"),
                ("reason", "ransomware on the ward PCs"),
            ],
        )
        .await;
    assert_eq!(on.status, 200, "{}", on.body);
    assert!(broker.desk().lockdown().await.unwrap().active);
    let off = [
        ("csrf", csrf.as_str()),
        ("action", "off"),
        ("confirm", "yes"),
    ];
    let pending = first_client.post_form("/lockdown", &off).await;
    assert_eq!(pending.status, 200, "{}", pending.body);
    assert!(pending.body.contains("pending"), "{}", pending.body);
    assert!(broker.desk().lockdown().await.unwrap().active);
    let again = first_client.post_form("/lockdown", &off).await;
    assert!(again.body.contains("already"), "{}", again.body);
    assert!(broker.desk().lockdown().await.unwrap().active);

    let mut second_client = WebClient::new(broker.web_addr());
    second_client.login(&broker, &second).await;
    let second_csrf = second_client.csrf("/lockdown").await;
    let lifted = second_client
        .post_form(
            "/lockdown",
            &[
                ("csrf", &second_csrf),
                ("action", "off"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(lifted.status, 200, "{}", lifted.body);
    assert!(!broker.desk().lockdown().await.unwrap().active);

    let status = second_client.get("/status").await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert!(
        status.body.contains("id=\"status-duties\""),
        "{}",
        status.body
    );
}

/// An account that holds auditor with approver, made before the hospital's policy refused
/// combined roles, is listed as a problem on the Status page, in both languages.
#[tokio::test]
async fn an_account_that_breaks_the_separation_of_duties_is_a_problem_on_the_status_page() {
    let (broker, _echo) = broker().await;
    // Made while the hospital's policy allowed combined roles; it allows them no more (the
    // broker runs with the default rules).
    let allowing =
        sekisho_e2e::web::directory(&broker).with_rules(|| sekisho_broker::policy::StaffRules {
            lockdown_lift_admins: 1,
            combined_roles: Some("two people in IT".into()),
        });
    let roles = sekisho_broker::staff::Roles::new([Role::Auditor, Role::Approver]);
    let token = allowing.invite("ito", &roles, "test-admin").await.unwrap();
    let both =
        StaffAccount::set_up(&broker, token.expose_secret(), "ito", "ito long password").await;
    let admin = StaffAccount::create(&broker, "yamada", &[Role::Admin]).await;
    let mut client = WebClient::new(broker.web_addr());
    client.login(&broker, &admin).await;
    let status = client.get("/status").await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert!(
        status
            .body
            .contains("ito is both auditor and approver, which hospital.toml"),
        "{}",
        status.body
    );
    assert!(
        !status.body.contains("id=\"status-verdict\""),
        "{}",
        status.body
    );
    drop(both);
}
