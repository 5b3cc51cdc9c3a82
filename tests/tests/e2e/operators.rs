//! Accountable operators, on the store under test (SQLite or PostgreSQL): the admin command
//! line's authentication (`StaffDirectory::authenticate_operator`, what `--as NAME` runs)
//! folds names, checks the code like a web login and the role by the web's table, and records
//! every refusal; separation of duties at invite; a lockdown lift pending a second admin.

use std::time::Duration;

use sekisho_broker::audit::{Actor, EventKind};
use sekisho_broker::clock::Clock;
use sekisho_broker::policy::StaffRules;
use sekisho_broker::staff::{Duty, Role, Roles, StaffError};
use sekisho_e2e::web::{StaffAccount, directory};
use sekisho_e2e::{TestBroker, Vendor};

async fn broker() -> TestBroker {
    TestBroker::start(&[Vendor::new("acme")]).await
}

/// The `why` of the newest `staff-login-failed` event, with its actor.
async fn last_failure(broker: &TestBroker) -> (String, String) {
    let event = broker
        .events_of(EventKind::StaffLoginFailed)
        .await
        .pop()
        .unwrap()
        .event;
    let why = event
        .details
        .iter()
        .find(|(key, _)| key == "why")
        .map(|(_, value)| value.clone())
        .unwrap();
    (event.actor.encode(), why)
}

#[tokio::test]
async fn one_person_is_one_name_whatever_its_case_or_width() {
    let broker = broker().await;
    let suzuki = StaffAccount::create(&broker, "suzuki", &[Role::Approver]).await;
    let staff = directory(&broker);
    for alias in ["Suzuki", "SUZUKI", "Ｓｕｚｕｋｉ"] {
        let operator = staff
            .authenticate_operator(alias, &suzuki.code(&broker), Duty::Decide, "test")
            .await
            .unwrap();
        assert_eq!(operator.name, "suzuki", "{alias}");
    }
    // The account was stored under its canonical name.
    assert!(
        broker
            .desk()
            .store()
            .staff_member("suzuki")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn roles_unknown_disabled_and_locked_names_and_spent_codes_are_refused_and_recorded() {
    let broker = broker().await;
    let staff = directory(&broker);
    let ito = StaffAccount::create(&broker, "ito", &[Role::Auditor]).await;
    let error = staff
        .authenticate_operator("ito", &ito.code(&broker), Duty::Decide, "test")
        .await
        .unwrap_err();
    assert!(matches!(error, StaffError::NotAllowed { .. }), "{error}");
    let refused = broker
        .events_of(EventKind::StaffRefused)
        .await
        .pop()
        .unwrap();
    assert_eq!(refused.event.actor, Actor::Staff("ito".into()));

    let error = staff
        .authenticate_operator("nobody", "123456", Duty::Decide, "test")
        .await
        .unwrap_err();
    assert!(matches!(error, StaffError::UnknownOperator(_)), "{error}");
    assert_eq!(
        last_failure(&broker).await,
        ("staff:nobody".into(), "unknown name".into())
    );

    let kato = StaffAccount::create(&broker, "kato", &[Role::Approver]).await;
    staff.set_disabled("kato", true, "yamada").await.unwrap();
    let error = staff
        .authenticate_operator("kato", &kato.code(&broker), Duty::Decide, "test")
        .await
        .unwrap_err();
    assert!(matches!(error, StaffError::OperatorDisabled(_)), "{error}");

    // A wrong code counts; the next attempt waits; five lock the account.
    let mori = StaffAccount::create(&broker, "mori", &[Role::Approver]).await;
    for failure in 1..=5 {
        let code = mori.code(&broker);
        let wrong = format!(
            "{:06}",
            (code.parse::<u32>().unwrap() + 500_000) % 1_000_000
        );
        let error = staff
            .authenticate_operator("mori", &wrong, Duty::Decide, "test")
            .await
            .unwrap_err();
        assert!(
            matches!(error, StaffError::WrongCode(_)),
            "{failure}: {error}"
        );
        if failure < 5 {
            // At once, even with the right code: the wait is kept in the database.
            let right = sekisho_broker::otp::code_at(&mori.secret, broker.clock().now()).unwrap();
            let error = staff
                .authenticate_operator("mori", &right, Duty::Decide, "test")
                .await
                .unwrap_err();
            assert!(matches!(error, StaffError::TooSoon { .. }), "{error}");
            broker.clock().advance(Duration::from_secs(60));
        }
    }
    assert_eq!(
        broker.events_of(EventKind::StaffLocked).await.len(),
        1,
        "the fifth failure locks and alerts"
    );
    let error = staff
        .authenticate_operator("mori", &mori.code(&broker), Duty::Decide, "test")
        .await
        .unwrap_err();
    assert!(
        matches!(error, StaffError::OperatorLocked { .. }),
        "{error}"
    );

    let ueda = StaffAccount::create(&broker, "ueda", &[Role::Approver]).await;
    let code = ueda.code(&broker);
    staff
        .authenticate_operator("ueda", &code, Duty::Decide, "test")
        .await
        .unwrap();
    let error = staff
        .authenticate_operator("ueda", &code, Duty::Decide, "test")
        .await
        .unwrap_err();
    assert!(matches!(error, StaffError::WrongCode(_)), "{error}");
    assert_eq!(
        last_failure(&broker).await,
        ("staff:ueda".into(), "one-time code already used".into())
    );
}

#[tokio::test]
async fn auditor_with_approver_or_admin_is_refused_unless_the_policy_allows_it() {
    let broker = broker().await;
    let staff = directory(&broker);
    for other in [Role::Approver, Role::Admin] {
        let error = staff
            .invite_as(
                "ono",
                &Roles::new([Role::Auditor, other]),
                &Actor::Host("root".into()),
            )
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("One account may not be both auditor and"),
            "{error}"
        );
    }
    let refused = broker.events_of(EventKind::StaffRefused).await;
    assert_eq!(refused.len(), 2);
    // An account made under "Ono" is the account "ono".
    directory(&broker)
        .invite("Ｏｎｏ", &Roles::new([Role::Auditor]), "yamada")
        .await
        .unwrap();
    let invited = broker
        .events_of(EventKind::StaffInvited)
        .await
        .pop()
        .unwrap();
    assert!(
        invited
            .event
            .details
            .contains(&("staff".to_owned(), "ono".to_owned())),
        "{:?}",
        invited.event.details
    );
    let allowing = directory(&broker).with_rules(|| StaffRules {
        combined_roles: Some("two people in IT".into()),
        ..StaffRules::default()
    });
    allowing
        .invite_as(
            "ono",
            &Roles::new([Role::Auditor, Role::Admin]),
            &Actor::Host("root".into()),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lift_waits_for_a_second_admin_in_the_store() {
    let broker = broker().await;
    let desk = broker.desk();
    desk.set_lockdown(true, "drill", "sato").await.unwrap();
    desk.ask_lockdown_lift("all clear", "suzuki").await.unwrap();
    let state = desk.lockdown().await.unwrap();
    assert!(state.active);
    assert_eq!(state.lift_pending_by, "suzuki");
    assert_eq!(state.lift_pending_at, broker.clock().now());
    // A second pending lift is refused: the first stands until confirmed.
    assert!(desk.ask_lockdown_lift("again", "yamada").await.is_err());
    desk.set_lockdown(false, "confirmed", "yamada")
        .await
        .unwrap();
    let state = desk.lockdown().await.unwrap();
    assert!(!state.active);
    assert_eq!(state.lift_pending_by, "", "lifting clears the pending lift");
    assert_eq!(
        broker.events_of(EventKind::LockdownLiftPending).await.len(),
        1
    );
}
