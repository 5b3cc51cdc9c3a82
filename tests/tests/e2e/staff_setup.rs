//! Setting up a staff account through a one-time link, over HTTP: the account is made (or a
//! reset takes effect) only when the person types a current code from the new authenticator;
//! a wrong code changes nothing and is recorded, five void the link; the confirming code
//! never logs in; a link that expires before its code changes nothing.

use std::time::Duration;

use sekisho_broker::audit::{AuditEvent, EventKind};
use sekisho_broker::clock::Clock;
use sekisho_broker::secret::Secret;
use sekisho_broker::staff::{INVITE_VALIDITY, Role, Roles};
use sekisho_e2e::web::{
    Answer, StaffAccount, WebClient, directory, shown_secret, start_web_broker, wrong_code,
};
use sekisho_e2e::{TestBroker, Vendor};

const MISMATCH: &str = "That code does not match the new authenticator; check the app's clock and type the current 6-digit code.";

async fn broker() -> TestBroker {
    start_web_broker(&[Vendor::new("acme")], false).await
}

/// An admin's one-time link for `name` (a new account, or a reset when it exists).
async fn link(broker: &TestBroker, name: &str, roles: &[Role]) -> String {
    directory(broker)
        .invite(name, &Roles::new(roles.iter().copied()), "it-oncall")
        .await
        .unwrap()
        .expose_secret()
        .clone()
}

/// Sends the link's password form as the person does; the answer shows the new secret.
async fn choose_password(
    client: &mut WebClient,
    token: &str,
    name: &str,
    password: &str,
) -> Answer {
    let page = client.get(&format!("/setup/{token}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    client
        .post_form(
            &format!("/setup/{token}"),
            &[
                ("name", name),
                ("password", password),
                ("repeated", password),
            ],
        )
        .await
}

/// Chooses `password` on the link and reads the secret shown, as the authenticator app would.
async fn begin(client: &mut WebClient, token: &str, name: &str, password: &str) -> StaffAccount {
    let shown = choose_password(client, token, name, password).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert!(shown.body.contains("id=\"otp-qr\""), "{}", shown.body);
    assert!(
        shown
            .body
            .contains(&format!("action=\"/setup/{token}/confirm\"")),
        "{}",
        shown.body
    );
    StaffAccount {
        name: name.to_owned(),
        password: password.to_owned(),
        secret: shown_secret(&shown.body).expect("the key to type by hand"),
    }
}

/// Sends the confirming code; the answer's body is read back as text (entities decoded).
async fn confirm(client: &mut WebClient, token: &str, code: &str) -> Answer {
    let mut answer = client
        .post_form(&format!("/setup/{token}/confirm"), &[("code", code)])
        .await;
    answer.body = answer
        .body
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    answer
}

/// The code `account`'s authenticator shows now (without moving the clock).
fn current_code(broker: &TestBroker, account: &StaffAccount) -> String {
    sekisho_broker::otp::code_at(&account.secret, broker.clock().now()).unwrap()
}

async fn events(broker: &TestBroker, kind: EventKind) -> Vec<AuditEvent> {
    let stored = broker.events_of(kind).await;
    stored.into_iter().map(|stored| stored.event).collect()
}

async fn account_exists(broker: &TestBroker, name: &str) -> bool {
    broker
        .desk()
        .store()
        .staff_member(name)
        .await
        .unwrap()
        .is_some()
}

fn same(a: &Secret<Vec<u8>>, b: &Secret<Vec<u8>>) -> bool {
    a.expose_secret() == b.expose_secret()
}

#[tokio::test]
async fn a_correct_code_from_the_new_authenticator_makes_the_account_and_never_logs_in_itself() {
    let broker = broker().await;
    let token = link(&broker, "suzuki", &[Role::Approver]).await;
    let mut person = WebClient::new(broker.web_addr());
    let account = begin(&mut person, &token, "suzuki", "a long enough password").await;

    // Chosen, shown, not yet confirmed: no account, so no login either.
    assert!(!account_exists(&broker, "suzuki").await);
    let early = person
        .login_with(
            &account.name,
            &account.password,
            &current_code(&broker, &account),
        )
        .await;
    assert_eq!(early.status, 401, "{}", early.body);
    // A reloaded form (the same name and password) shows the same secret, so a QR code
    // already scanned stays good.
    let again = begin(&mut person, &token, "suzuki", "a long enough password").await;
    assert!(same(&again.secret, &account.secret));

    let code = current_code(&broker, &account);
    let ready = confirm(&mut person, &token, &code).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(ready.body.contains("id=\"setup-done\""), "{}", ready.body);
    assert!(account_exists(&broker, "suzuki").await);
    let enrolled = broker.first_event(EventKind::StaffEnrolled).await.event;
    assert_eq!(enrolled.detail_value("staff"), Some("suzuki"));
    assert_eq!(enrolled.detail_value("link_by"), Some("it-oncall"));

    // The confirming code was spent like a login's: it does not log in. (After the wait the
    // failed login above set for the name: a second, on the broker's clock.)
    broker.clock().advance(Duration::from_secs(1));
    let replayed = person
        .login_with(&account.name, &account.password, &code)
        .await;
    assert_eq!(replayed.status, 401, "{}", replayed.body);
    let failed = events(&broker, EventKind::StaffLoginFailed).await;
    assert_eq!(
        failed.last().and_then(|e| e.detail_value("why")),
        Some("one-time code already used"),
        "{failed:?}"
    );
    // The next code does.
    person.login(&broker, &account).await;
    assert_eq!(person.get("/requests").await.status, 200);
    // And the link is spent.
    assert_eq!(person.get(&format!("/setup/{token}")).await.status, 404);
}

#[tokio::test]
async fn a_wrong_code_makes_nothing_and_is_recorded_and_the_fifth_voids_the_link() {
    let broker = broker().await;
    let token = link(&broker, "suzuki", &[Role::Approver]).await;
    let mut person = WebClient::new(broker.web_addr());
    let account = begin(&mut person, &token, "suzuki", "a long enough password").await;

    let wrong = confirm(&mut person, &token, &wrong_code(&broker, &account.secret)).await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    assert!(wrong.body.contains(MISMATCH), "{}", wrong.body);
    // The same secret again (QR code and key), to try once more.
    assert!(wrong.body.contains("id=\"otp-qr\""), "{}", wrong.body);
    assert!(same(&shown_secret(&wrong.body).unwrap(), &account.secret));
    assert!(!account_exists(&broker, "suzuki").await);
    let recorded = broker
        .first_event(EventKind::StaffConfirmFailed)
        .await
        .event;
    assert_eq!(recorded.detail_value("staff"), Some("suzuki"));
    assert_eq!(recorded.detail_value("wrong_codes"), Some("1"));
    assert!(
        recorded
            .detail_value("from")
            .is_some_and(|from| from.starts_with("127."))
    );

    for _ in 2..5 {
        let wrong = confirm(&mut person, &token, &wrong_code(&broker, &account.secret)).await;
        assert_eq!(wrong.status, 400, "{}", wrong.body);
        assert!(wrong.body.contains(MISMATCH), "{}", wrong.body);
    }
    let last = confirm(&mut person, &token, &wrong_code(&broker, &account.secret)).await;
    assert_eq!(last.status, 400, "{}", last.body);
    assert!(
        last.body.contains("does not work any more"),
        "{}",
        last.body
    );
    assert!(!last.body.contains("id=\"otp-qr\""), "{}", last.body);
    // Now even the right code makes nothing: the link is spent.
    let late = confirm(&mut person, &token, &current_code(&broker, &account)).await;
    assert_eq!(late.status, 400, "{}", late.body);
    assert!(late.body.contains("not valid any more"), "{}", late.body);
    assert!(!account_exists(&broker, "suzuki").await);
    let failures = events(&broker, EventKind::StaffConfirmFailed).await;
    assert_eq!(failures.len(), 5, "{failures:?}");
    assert_eq!(failures[4].detail_value("link"), Some("void"));
    assert!(events(&broker, EventKind::StaffEnrolled).await.is_empty());
}

#[tokio::test]
async fn beginning_again_with_another_password_replaces_the_secret_shown_before() {
    let broker = broker().await;
    let token = link(&broker, "suzuki", &[Role::Approver]).await;
    let mut person = WebClient::new(broker.web_addr());
    let first = begin(&mut person, &token, "suzuki", "a long enough password").await;
    let second = begin(&mut person, &token, "suzuki", "another long password").await;
    assert!(!same(&first.secret, &second.secret));
    // A code from the secret shown first no longer confirms anything.
    let stale = confirm(&mut person, &token, &current_code(&broker, &first)).await;
    assert_eq!(stale.status, 400, "{}", stale.body);
    assert!(stale.body.contains(MISMATCH), "{}", stale.body);
    assert!(!account_exists(&broker, "suzuki").await);
    let ready = confirm(&mut person, &token, &current_code(&broker, &second)).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    person.login(&broker, &second).await;
}

#[tokio::test]
async fn a_reset_keeps_the_old_password_and_secret_until_the_new_authenticator_is_confirmed() {
    let broker = broker().await;
    let old = StaffAccount::create(&broker, "yamada", &[Role::Admin]).await;
    let mut old_browser = WebClient::new(broker.web_addr());
    old_browser.login(&broker, &old).await;

    let token = link(&broker, "yamada", &[Role::Admin]).await;
    let mut person = WebClient::new(broker.web_addr());
    let new = begin(&mut person, &token, "yamada", "a brand new long password").await;
    let wrong = confirm(&mut person, &token, &wrong_code(&broker, &new.secret)).await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);

    // Chosen and even mistyped, not confirmed: the old password and secret still work, the
    // new ones do not, and the old browser session carries on.
    let mut other = WebClient::new(broker.web_addr());
    let refused = other
        .login_with(&new.name, &new.password, &new.code(&broker))
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    other.login(&broker, &old).await;
    assert_eq!(old_browser.get("/staff").await.status, 200);

    broker.clock().advance(Duration::from_secs(30));
    let ready = confirm(&mut person, &token, &current_code(&broker, &new)).await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    // Confirmed: the new ones work, the old ones and the old browser sessions are over.
    assert_eq!(old_browser.get("/staff").await.status, 303);
    let mut after = WebClient::new(broker.web_addr());
    let refused = after
        .login_with(&old.name, &old.password, &old.code(&broker))
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    after.login(&broker, &new).await;
    assert_eq!(after.get("/staff").await.status, 200);
}

#[tokio::test]
async fn a_link_that_expires_before_its_code_is_confirmed_changes_nothing() {
    let broker = broker().await;
    let old = StaffAccount::create(&broker, "yamada", &[Role::Admin]).await;
    let reset_token = link(&broker, "yamada", &[Role::Admin]).await;
    let new_token = link(&broker, "kato", &[Role::Auditor]).await;
    let mut person = WebClient::new(broker.web_addr());
    let reset = begin(
        &mut person,
        &reset_token,
        "yamada",
        "a brand new long password",
    )
    .await;
    let new = begin(&mut person, &new_token, "kato", "kato's long password").await;

    broker
        .clock()
        .advance(INVITE_VALIDITY + Duration::from_secs(60));
    for (token, account) in [(&reset_token, &reset), (&new_token, &new)] {
        let late = confirm(&mut person, token, &current_code(&broker, account)).await;
        assert_eq!(late.status, 400, "{}", late.body);
        assert!(late.body.contains("not valid any more"), "{}", late.body);
    }
    assert!(!account_exists(&broker, "kato").await);
    let mut client = WebClient::new(broker.web_addr());
    let refused = client
        .login_with(&reset.name, &reset.password, &reset.code(&broker))
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    client.login(&broker, &old).await;
    // Only the old account's own setup is on the record; nothing was counted after expiry.
    assert_eq!(events(&broker, EventKind::StaffEnrolled).await.len(), 1);
    assert!(
        events(&broker, EventKind::StaffConfirmFailed)
            .await
            .is_empty()
    );
}
