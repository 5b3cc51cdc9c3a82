//! The staff web UI in real headless Chromium, driven through chromedriver (WebDriver):
//! an approver sets up their account through a one-time link (a wrong confirming code first,
//! then the right one from the key shown), logs in with password and TOTP, sees a real
//! client's request appear without reloading, approves it (the client's tunnel opens), revokes it (the client is told and
//! the session ends); an auditor marks it reviewed. Each page is saved as a screenshot.
//!
//! Needs `SEKISHO_TEST_CHROMEDRIVER` (the path of chromedriver; `.ci/run` sets it); without
//! it the test says it was skipped and why.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use proto::RequestAccess;
use sekisho_broker::clock::Clock;
use sekisho_broker::session::{RequestId, Stage};
use sekisho_broker::staff::{Role, Roles};
use sekisho_client::SessionEvent;
use sekisho_e2e::web::{StaffAccount, directory, start_web_broker, wrong_code};
use sekisho_e2e::{EchoServer, TestBroker, Vendor};
use tokio::process::{Child, Command};

const PATIENCE: Duration = Duration::from_secs(20);

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start(path: &str) -> Driver {
        // chromedriver cannot pick its own port: find a free one, free it, hand it over.
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {path}: {e}"));
        // Ready when it accepts connections.
        tokio::time::timeout(PATIENCE, async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                // sync-ok: chromedriver gives no readiness signal; its port is polled, bounded.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("chromedriver listens within 20 s");
        Driver { child, port }
    }

    async fn browser(&self) -> Client {
        let capabilities = serde_json::json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,1000", "--lang=en-US"]
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("chromedriver starts a headless Chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

struct Shots {
    dir: PathBuf,
}

impl Shots {
    fn new() -> Shots {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        println!("screenshots in {}", dir.display());
        Shots { dir }
    }

    async fn take(&self, browser: &Client, name: &str) {
        let png = browser.screenshot().await.unwrap();
        std::fs::write(self.dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// The element `locator` finds, once it appears (within [`PATIENCE`]). Right after a form
/// was sent the page may still be navigating, which chromedriver reports as a command
/// "aborted by navigation" rather than as "not there yet": then it looks again.
async fn appears(
    browser: &Client,
    locator: Locator<'_>,
) -> Result<fantoccini::elements::Element, fantoccini::error::CmdError> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match browser.wait().at_most(left).for_element(locator).await {
            Err(fantoccini::error::CmdError::NotW3C(value))
                if value
                    .as_str()
                    .is_some_and(|text| text.contains("aborted by navigation"))
                    && !left.is_zero() => {}
            done => return done,
        }
    }
}

/// The text of the element `locator` finds, once it appears.
async fn text_of(browser: &Client, locator: Locator<'_>) -> String {
    appears(browser, locator)
        .await
        .unwrap_or_else(|e| panic!("no {locator:?} on the page: {e}"))
        .text()
        .await
        .unwrap()
}

/// Types `text` into the input `css` finds.
async fn type_into(browser: &Client, css: &str, text: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// An admin makes a one-time link for `name`; the person opens it in the browser, chooses a
/// password, types the key shown into their "authenticator" (a wrong code first, which shows
/// the same key again), then the right code.
async fn set_up_in_browser(
    browser: &Client,
    base: &str,
    broker: &TestBroker,
    shots: &Shots,
    name: &str,
    roles: &[Role],
) -> StaffAccount {
    let token = directory(broker)
        .invite(name, &Roles::new(roles.iter().copied()), "it-oncall")
        .await
        .unwrap();
    browser
        .goto(&format!("{base}/setup/{}", token.expose_secret()))
        .await
        .unwrap();
    let password = format!("{name} long password");
    type_into(browser, "input[name=password]", &password).await;
    type_into(browser, "input[name=repeated]", &password).await;
    submit(browser, None, "form button[type=submit]").await;
    let key = text_of(browser, Locator::Id("otp-key")).await;
    browser.find(Locator::Id("otp-qr")).await.unwrap();
    let secret = sekisho_broker::encoding::base32_decode(key.trim().as_bytes())
        .map(sekisho_broker::secret::Secret::new)
        .unwrap_or_else(|| panic!("not a base32 key: {key}"));
    shots.take(browser, "0a-setup-authenticator").await;

    submit(
        browser,
        Some(("input[name=code]", &wrong_code(broker, &secret))),
        "form button[type=submit]",
    )
    .await;
    let error = text_of(browser, Locator::Id("setup-error")).await;
    assert!(
        error.starts_with("That code does not match the new authenticator"),
        "{error}"
    );
    let shown_again = text_of(browser, Locator::Id("otp-key")).await;
    assert_eq!(shown_again, key, "the same key is shown again");
    browser.find(Locator::Id("otp-qr")).await.unwrap();
    shots.take(browser, "0b-setup-wrong-code").await;

    let code = sekisho_broker::otp::code_at(&secret, broker.clock().now()).unwrap();
    submit(
        browser,
        Some(("input[name=code]", &code)),
        "form button[type=submit]",
    )
    .await;
    appears(browser, Locator::Id("setup-done"))
        .await
        .expect("the right code makes the account");
    shots.take(browser, "0c-setup-done").await;
    StaffAccount {
        name: name.to_owned(),
        password,
        secret,
    }
}

async fn log_in(browser: &Client, base: &str, broker: &TestBroker, account: &StaffAccount) {
    browser.goto(&format!("{base}/login")).await.unwrap();
    browser
        .find(Locator::Css("input[name=name]"))
        .await
        .unwrap()
        .send_keys(&account.name)
        .await
        .unwrap();
    browser
        .find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(&account.password)
        .await
        .unwrap();
    browser
        .find(Locator::Css("input[name=code]"))
        .await
        .unwrap()
        .send_keys(&account.code(broker))
        .await
        .unwrap();
    browser
        .find(Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Only a logged-in page names its member; the login page stays if the login failed.
    let who = appears(browser, Locator::Css("span.who"))
        .await
        .unwrap_or_else(|e| panic!("login of {} failed: {e}", account.name));
    assert_eq!(who.text().await.unwrap(), account.name);
}

/// Types into an input (when `fill` names one and the text) and clicks `button`. The page
/// refreshes its live parts when the broker reports a change, which can replace an element
/// between finding it and using it; then both are found again (a few times at most).
///
/// Clearing an input takes the focus from it, and leaving a field is when the page catches up
/// on a refresh it held back, so the replacement can land between clearing and typing.
/// chromedriver reports typing into the replaced input as "element not interactable", not as
/// a stale element, so after any error the element is asked whether it is still on the page.
async fn submit(browser: &Client, fill: Option<(&str, &str)>, button: &str) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut used = None;
        let done = async {
            if let Some((input, text)) = fill {
                let field = browser.find(Locator::Css(input)).await?;
                used = Some(field.clone());
                field.clear().await?;
                field.send_keys(text).await?;
            }
            let pressed = browser.find(Locator::Css(button)).await?;
            used = Some(pressed.clone());
            pressed.click().await
        }
        .await;
        let Err(error) = done else { return };
        let replaced = match &error {
            fantoccini::error::CmdError::Standard(error)
                if error.error == fantoccini::error::ErrorStatus::StaleElementReference =>
            {
                true
            }
            _ => match &used {
                Some(element) => !on_page(browser, element).await,
                None => false,
            },
        };
        if !replaced || attempts >= 5 {
            panic!("cannot click {button}: {error}");
        }
    }
}

/// Whether `element` is still part of the page (a live refresh replaces what it refreshes).
async fn on_page(browser: &Client, element: &fantoccini::elements::Element) -> bool {
    let Ok(element) = serde_json::to_value(element) else {
        return false;
    };
    matches!(
        browser
            .execute("return document.contains(arguments[0]);", vec![element])
            .await,
        Ok(serde_json::Value::Bool(true))
    )
}

async fn wait_for_stage(broker: &TestBroker, id: &str, wanted: impl Fn(Stage) -> bool) {
    let store = broker.desk().store().clone();
    let id = RequestId::parse(id).unwrap();
    tokio::time::timeout(PATIENCE, async {
        while !wanted(store.request(&id).await.unwrap().stage) {
            // sync-ok: the browser's form post is the only signal, and it says nothing of the
            // store; the row is polled, bounded by PATIENCE.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the request reaches the stage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_approves_and_revokes_in_a_real_browser_and_an_auditor_reviews() {
    let Ok(chromedriver) = std::env::var("SEKISHO_TEST_CHROMEDRIVER") else {
        println!(
            "skipped: SEKISHO_TEST_CHROMEDRIVER is not set (the path of chromedriver; .ci/run sets it to /usr/bin/chromedriver)"
        );
        return;
    };
    let echo = EchoServer::start().await;
    let broker = start_web_broker(&[Vendor::new("acme").target("echo", echo.addr())], true).await;
    let base = format!("https://{}", broker.web_addr());
    let auditor = StaffAccount::create(&broker, "kato", &[Role::Auditor]).await;
    let driver = Driver::start(&chromedriver).await;
    let browser = driver.browser().await;
    let shots = Shots::new();

    let approver = set_up_in_browser(
        &browser,
        &base,
        &broker,
        &shots,
        "suzuki",
        &[Role::Approver],
    )
    .await;
    log_in(&browser, &base, &broker, &approver).await;
    browser.goto(&format!("{base}/requests")).await.unwrap();
    browser.find(Locator::Id("no-requests")).await.unwrap();
    // A mark the page keeps only if it is not reloaded.
    browser
        .execute("window.sekishoMark = 42; return null;", vec![])
        .await
        .unwrap();
    shots.take(&browser, "1-requests-empty").await;

    // A real technician asks over QUIC.
    let secret = broker.enroll("acme", "tanaka").await;
    let mut session = broker.connect("acme", "tanaka").await.unwrap();
    let id = session
        .request(RequestAccess {
            targets: vec!["echo".into()],
            purpose: "apply patch 5.2.1".into(),
            ticket: "INC-1234".into(),
            duration_secs: 3600,
        })
        .await
        .unwrap()
        .id;
    let card = format!("#request-{id}");
    appears(&browser, Locator::Css(&card))
        .await
        .expect("the new request appears without reloading");
    let mark = browser
        .execute("return window.sekishoMark;", vec![])
        .await
        .unwrap();
    assert_eq!(mark, serde_json::json!(42), "the page was reloaded");
    let text = text_of(&browser, Locator::Css(&card)).await;
    assert!(
        text.contains("apply patch 5.2.1") && text.contains("INC-1234"),
        "{text}"
    );
    shots.take(&browser, "2-request-arrived").await;

    submit(&browser, None, &format!("{card} form.approve button")).await;
    appears(&browser, Locator::Css("p.notice")).await.unwrap();
    shots.take(&browser, "3-approved").await;
    wait_for_stage(&broker, &id, |stage| stage == Stage::Approved).await;

    // The technician opens the session with their code, and bytes flow to the target.
    broker.clock().advance(Duration::from_secs(30));
    let code = sekisho_broker::otp::code_at(&secret, broker.clock().now()).unwrap();
    session
        .open(&id, &code)
        .await
        .expect("the approved session opens");
    let (mut send, mut recv) = session.open_forward("echo").await.unwrap();
    send.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    recv.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");

    browser.goto(&format!("{base}/sessions")).await.unwrap();
    let live = format!("#session-{id}");
    appears(&browser, Locator::Css(&live)).await.unwrap();
    shots.take(&browser, "4-live-session").await;
    let reason = format!("{live} form.revoke input[name=reason]");
    submit(
        &browser,
        Some((&reason, "work finished early")),
        &format!("{live} form.revoke button"),
    )
    .await;
    match tokio::time::timeout(PATIENCE, session.next_event())
        .await
        .expect("the client hears of it")
    {
        SessionEvent::Ended { reason, message } => {
            assert_eq!(reason, "revoked");
            assert!(message.contains("work finished early"), "{message}");
        }
        other => panic!("expected the revocation, got {other:?}"),
    }
    shots.take(&browser, "5-revoked").await;

    // The auditor marks it reviewed.
    browser
        .find(Locator::Css("form[action='/logout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    appears(&browser, Locator::Css("input[name=code]"))
        .await
        .unwrap();
    log_in(&browser, &base, &broker, &auditor).await;
    wait_for_stage(&broker, &id, |stage| matches!(stage, Stage::Ended(_))).await;
    browser.goto(&format!("{base}/audit/review")).await.unwrap();
    let review = format!("#review-{id}");
    appears(&browser, Locator::Css(&review)).await.unwrap();
    shots.take(&browser, "6-review-queue").await;
    browser
        .find(Locator::Css(&format!("{review} input[name=comment]")))
        .await
        .unwrap()
        .send_keys("checked the forward log")
        .await
        .unwrap();
    browser
        .find(Locator::Css(&format!("{review} button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    appears(&browser, Locator::Css("p.notice")).await.unwrap();
    shots.take(&browser, "7-reviewed").await;
    let reviews = broker.desk().store().reviews(&id).await.unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].reviewer, "kato");
    browser
        .goto(&format!("{base}/audit/session/{id}"))
        .await
        .unwrap();
    shots.take(&browser, "8-session-timeline").await;
    browser.goto(&format!("{base}/audit/chain")).await.unwrap();
    let status = text_of(&browser, Locator::Id("chain-status")).await;
    assert!(status.starts_with("Intact"), "{status}");
    shots.take(&browser, "9-chain").await;

    // The switch on every page turns the pages into Japanese and back, and the choice stays
    // on the next page.
    switch_language(&browser, "ja").await;
    browser.goto(&format!("{base}/audit/review")).await.unwrap();
    appears(&browser, Locator::Css("html[lang=ja]"))
        .await
        .unwrap();
    let nav = text_of(&browser, Locator::Css("a[href='/audit/review']")).await;
    assert_eq!(nav, "レビュー");
    shots.take(&browser, "10-japanese").await;
    browser.goto(&format!("{base}/audit/chain")).await.unwrap();
    let status = text_of(&browser, Locator::Id("chain-status")).await;
    assert!(status.starts_with("改ざんは見つかりません"), "{status}");
    switch_language(&browser, "en").await;
    let nav = text_of(&browser, Locator::Css("a[href='/audit/review']")).await;
    assert_eq!(nav, "Review");
    browser.close().await.unwrap();
}

/// Clicks the language switch to `code` and waits for the page it leads to in that language.
async fn switch_language(browser: &Client, code: &str) {
    browser
        .find(Locator::Css(&format!("a[href='/lang/{code}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    appears(browser, Locator::Css(&format!("html[lang={code}]")))
        .await
        .unwrap_or_else(|e| panic!("the page did not turn to {code}: {e:?}"));
}
