//! The lifecycle rules with explicit time.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::policy::{Access, Target, VendorPolicy, WeeklyHours};

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Saturday 2026-11-21 10:00 in Asia/Tokyo (01:00 UTC).
fn saturday_10am() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_222_800)
}

fn zone() -> HospitalZone {
    HospitalZone::resolve("Asia/Tokyo").unwrap()
}

fn vendor(hours: Option<&str>, max_session: Duration) -> VendorPolicy {
    VendorPolicy {
        id: "acme-ehr".into(),
        name: "Acme EHR".into(),
        emergency_contact: None,
        contract: None,
        subcontractors: vec![],
        targets: vec![Target {
            name: "ehr-db".into(),
            host: "10.0.0.5".into(),
            port: 5432,
            description: None,
            allow_loopback: false,
            allow_file_share: false,
            allow_broker_port: None,
            critical: false,
        }],
        access: Access {
            hours: hours.map(|h| h.parse::<WeeklyHours>().unwrap()),
            holidays: vec![],
            max_session,
            idle_timeout: HOUR,
            approvals: 1,
            critical_approvals: 2,
            source_networks: vec![],
            resume: crate::policy::Resume::default(),
        },
        responsibility: vec![],
        file: PathBuf::from("vendors/acme-ehr.toml"),
    }
}

fn record(stage: Stage, approvals_needed: u8) -> RequestRecord {
    let now = saturday_10am();
    let ask = NewRequest {
        targets: vec!["ehr-db".into()],
        purpose: "patch".into(),
        ticket: String::new(),
        wanted: HOUR,
    };
    let id = RequestId::parse("r-test").unwrap();
    let mut record = RequestRecord::new(
        id,
        "acme-ehr",
        "tanaka",
        ask,
        now,
        now + 30 * MIN,
        approvals_needed,
    );
    record.stage = stage;
    record
}

#[test]
fn the_saturday_fixture_really_is_saturday_ten_in_tokyo() {
    assert_eq!(zone().weekday_and_minute(saturday_10am()), Some((5, 600)));
}

#[test]
fn a_request_longer_than_max_session_is_refused_with_the_limit() {
    let input = NewRequest {
        targets: vec!["ehr-db".into()],
        purpose: "patch".into(),
        ticket: String::new(),
        wanted: 3 * HOUR,
    };
    let refused = check_new_request(
        &input,
        &vendor(None, 2 * HOUR),
        false,
        saturday_10am(),
        30 * MIN,
    )
    .unwrap_err();
    assert_eq!(refused.code, ErrorCode::PolicyRefused);
    assert!(
        refused.message.contains("at most 2h"),
        "{}",
        refused.message
    );
}

#[test]
fn a_request_for_an_unknown_target_gets_the_same_answer_as_a_forward() {
    let input = NewRequest {
        targets: vec!["pacs".into()],
        purpose: "patch".into(),
        ticket: String::new(),
        wanted: HOUR,
    };
    let refused = check_new_request(
        &input,
        &vendor(None, 2 * HOUR),
        false,
        saturday_10am(),
        30 * MIN,
    )
    .unwrap_err();
    assert_eq!(refused, Refusal::target_refused("pacs"));
}

#[test]
fn lockdown_refuses_new_requests_approvals_and_openings() {
    let input = NewRequest {
        targets: vec!["ehr-db".into()],
        purpose: "patch".into(),
        ticket: String::new(),
        wanted: HOUR,
    };
    let v = vendor(None, 2 * HOUR);
    let now = saturday_10am();
    assert_eq!(
        check_new_request(&input, &v, true, now, 30 * MIN)
            .unwrap_err()
            .code,
        ErrorCode::Lockdown
    );
    let pending = record(Stage::Requested, 1);
    assert_eq!(
        decide_approval(&pending, "suzuki", now + HOUR, Some(&v), &zone(), true, now)
            .unwrap_err()
            .code,
        ErrorCode::Lockdown
    );
    let mut approved = record(Stage::Approved, 1);
    approved.end_at = Some(now + HOUR);
    assert_eq!(
        decide_opening(&approved, Some(&v), &zone(), true, now)
            .unwrap_err()
            .code,
        ErrorCode::Lockdown
    );
}

#[test]
fn nobody_approves_their_own_request() {
    let v = vendor(None, 2 * HOUR);
    let now = saturday_10am();
    for approver in ["tanaka", "acme-ehr/tanaka"] {
        let refused = decide_approval(
            &record(Stage::Requested, 1),
            approver,
            now + HOUR,
            Some(&v),
            &zone(),
            false,
            now,
        )
        .unwrap_err();
        assert!(
            refused.message.contains("cannot answer it"),
            "{}",
            refused.message
        );
    }
}

#[test]
fn two_approvals_need_two_different_people() {
    let v = vendor(None, 2 * HOUR);
    let now = saturday_10am();
    let mut pending = record(Stage::Requested, 2);
    let first = decide_approval(
        &pending,
        "suzuki",
        now + HOUR,
        Some(&v),
        &zone(),
        false,
        now,
    )
    .unwrap();
    assert!(!first.completes);
    pending.approvals.push(ApprovalRecord {
        approver: "suzuki".into(),
        approved_at: now,
        until: now + HOUR,
        comment: String::new(),
    });
    let again = decide_approval(
        &pending,
        "suzuki",
        now + HOUR,
        Some(&v),
        &zone(),
        false,
        now,
    )
    .unwrap_err();
    assert!(
        again.message.contains("already approved"),
        "{}",
        again.message
    );
    let second = decide_approval(
        &pending,
        "yamada",
        now + HOUR,
        Some(&v),
        &zone(),
        false,
        now,
    )
    .unwrap();
    assert!(second.completes);
}

#[test]
fn a_session_touching_a_holiday_is_refused_and_names_the_day() {
    let now = saturday_10am();
    let mut holiday = vendor(None, 24 * HOUR);
    holiday.access.holidays = vec![jiff::civil::date(2026, 11, 22)];
    // Saturday 10:00 until Saturday 23:00: no holiday touched.
    assert!(
        decide_approval(
            &record(Stage::Requested, 1),
            "suzuki",
            now + 13 * HOUR,
            Some(&holiday),
            &zone(),
            false,
            now,
        )
        .is_ok()
    );
    // Until Sunday 01:00 (Asia/Tokyo): Sunday is a holiday.
    let refused = decide_approval(
        &record(Stage::Requested, 1),
        "suzuki",
        now + 15 * HOUR,
        Some(&holiday),
        &zone(),
        false,
        now,
    )
    .unwrap_err();
    assert_eq!(
        refused.message,
        "Acme EHR's agreement allows no sessions on 2026-11-22 (Asia/Tokyo); choose another day."
    );
}

#[test]
fn an_approval_beyond_max_session_or_outside_hours_is_refused() {
    let now = saturday_10am();
    let too_long = decide_approval(
        &record(Stage::Requested, 1),
        "suzuki",
        now + 3 * HOUR,
        Some(&vendor(None, 2 * HOUR)),
        &zone(),
        false,
        now,
    )
    .unwrap_err();
    assert!(
        too_long.message.contains("at most 2h"),
        "{}",
        too_long.message
    );

    // Weekdays only: Saturday is outside.
    let weekdays = vendor(Some("Mon-Fri 08:00-20:00"), 2 * HOUR);
    let outside = decide_approval(
        &record(Stage::Requested, 1),
        "suzuki",
        now + HOUR,
        Some(&weekdays),
        &zone(),
        false,
        now,
    )
    .unwrap_err();
    assert!(
        outside
            .message
            .contains("agreed hours are Mon-Fri 08:00-20:00 (Asia/Tokyo)"),
        "{}",
        outside.message
    );

    // Saturday until 10:30: an end at 11:00 crosses the window's end.
    let morning = vendor(Some("Sat 09:00-10:30"), 2 * HOUR);
    let crosses = decide_approval(
        &record(Stage::Requested, 1),
        "suzuki",
        now + HOUR,
        Some(&morning),
        &zone(),
        false,
        now,
    )
    .unwrap_err();
    assert!(crosses.message.contains("10:30"), "{}", crosses.message);
    assert!(
        decide_approval(
            &record(Stage::Requested, 1),
            "suzuki",
            now + 30 * MIN,
            Some(&morning),
            &zone(),
            false,
            now
        )
        .is_ok()
    );
}

#[test]
fn an_unanswered_request_expires_at_its_answer_deadline_and_not_before() {
    let pending = record(Stage::Requested, 1);
    let now = saturday_10am();
    assert_eq!(due_expiry(&pending, now + 29 * MIN), None);
    assert_eq!(
        due_expiry(&pending, now + 30 * MIN),
        Some(EndReason::Expired)
    );
    let late = decide_approval(
        &pending,
        "suzuki",
        now + HOUR,
        Some(&vendor(None, 2 * HOUR)),
        &zone(),
        false,
        now + 31 * MIN,
    )
    .unwrap_err();
    assert!(late.message.contains("expired"), "{}", late.message);
}

#[test]
fn opening_rechecks_a_tightened_policy_and_pulls_the_end_in() {
    let now = saturday_10am();
    let mut approved = record(Stage::Approved, 1);
    approved.end_at = Some(now + 2 * HOUR);
    let tightened = vendor(None, HOUR);
    assert_eq!(
        decide_opening(&approved, Some(&tightened), &zone(), false, now),
        Ok(now + HOUR)
    );
    assert_eq!(
        decide_opening(
            &approved,
            Some(&vendor(None, 2 * HOUR)),
            &zone(),
            false,
            now
        ),
        Ok(now + 2 * HOUR)
    );
    assert_eq!(
        decide_opening(&approved, None, &zone(), false, now)
            .unwrap_err()
            .code,
        ErrorCode::PolicyRefused
    );
}

#[test]
fn only_an_approved_request_in_time_can_be_opened() {
    let now = saturday_10am();
    let v = vendor(None, 2 * HOUR);
    let pending = record(Stage::Requested, 1);
    assert_eq!(
        decide_opening(&pending, Some(&v), &zone(), false, now)
            .unwrap_err()
            .code,
        ErrorCode::RequestNotOpenable
    );
    let mut late = record(Stage::Approved, 1);
    late.end_at = Some(now);
    assert_eq!(
        decide_opening(&late, Some(&v), &zone(), false, now)
            .unwrap_err()
            .code,
        ErrorCode::RequestNotOpenable
    );
    let denied = record(Stage::Ended(EndReason::Denied), 1);
    assert!(
        decide_opening(&denied, Some(&v), &zone(), false, now)
            .unwrap_err()
            .message
            .contains("denied")
    );
}

#[test]
fn warnings_come_at_ten_and_two_minutes_then_the_end() {
    let now = saturday_10am();
    let end = now + HOUR;
    let next_deadline =
        |end, now, warned: &[Duration]| next_deadline(end, now, &[10 * MIN, 2 * MIN], warned);
    assert_eq!(
        next_deadline(end, now, &[]),
        SessionDeadline::Warn {
            at: end - 10 * MIN,
            left: 10 * MIN
        }
    );
    assert_eq!(
        next_deadline(end, now, &[10 * MIN]),
        SessionDeadline::Warn {
            at: end - 2 * MIN,
            left: 2 * MIN
        }
    );
    assert_eq!(
        next_deadline(end, now, &[10 * MIN, 2 * MIN]),
        SessionDeadline::End { at: end }
    );
    // A five-minute session never gets the ten-minute warning.
    assert_eq!(
        next_deadline(now + 5 * MIN, now, &[]),
        SessionDeadline::Warn {
            at: now + 3 * MIN,
            left: 2 * MIN
        }
    );
}

#[test]
fn request_ids_are_short_and_distinct() {
    let a = RequestId::generate().unwrap();
    let b = RequestId::generate().unwrap();
    assert_ne!(a, b);
    assert_eq!(a.as_str().len(), 12);
    assert!(a.as_str().starts_with("r-"));
}

#[test]
fn a_live_session_is_taken_up_again_with_a_code_unless_lost_within_the_policys_window() {
    let now = saturday_10am();
    let mut live = record(Stage::Active, 1);
    live.end_at = Some(now + HOUR);
    let mut v = vendor(None, 2 * HOUR);
    // Still held by a connection, or lost: a new code either way by default.
    assert_eq!(
        decide_resuming(&live, Some(&v), false, now),
        Ok(ResumeTerms {
            end_at: now + HOUR,
            code_needed: true
        })
    );
    live.detached_at = Some(now - MIN);
    assert!(
        decide_resuming(&live, Some(&v), false, now)
            .unwrap()
            .code_needed
    );
    // A window: without a code inside it, with one after it, never while still held.
    v.access.resume.without_code_within = 2 * MIN;
    assert!(
        !decide_resuming(&live, Some(&v), false, now)
            .unwrap()
            .code_needed
    );
    assert!(
        decide_resuming(&live, Some(&v), false, now + 2 * MIN)
            .unwrap()
            .code_needed
    );
    live.detached_at = None;
    assert!(
        decide_resuming(&live, Some(&v), false, now)
            .unwrap()
            .code_needed
    );
}

#[test]
fn a_session_is_not_taken_up_past_its_end_in_a_lockdown_or_when_the_policy_says_no() {
    let now = saturday_10am();
    let mut live = record(Stage::Active, 1);
    live.end_at = Some(now + HOUR);
    live.detached_at = Some(now);
    let mut v = vendor(None, 2 * HOUR);
    let refusal = |result: Result<ResumeTerms, Refusal>| result.unwrap_err().code;
    assert_eq!(
        refusal(decide_resuming(&live, Some(&v), true, now)),
        ErrorCode::Lockdown
    );
    assert_eq!(
        refusal(decide_resuming(&live, Some(&v), false, now + HOUR)),
        ErrorCode::RequestNotOpenable
    );
    assert_eq!(
        refusal(decide_resuming(&live, None, false, now)),
        ErrorCode::PolicyRefused
    );
    let ended = RequestRecord {
        stage: Stage::Ended(EndReason::Revoked),
        ..live.clone()
    };
    assert_eq!(
        refusal(decide_resuming(&ended, Some(&v), false, now)),
        ErrorCode::RequestNotOpenable
    );
    v.targets.clear();
    assert_eq!(
        refusal(decide_resuming(&live, Some(&v), false, now)),
        ErrorCode::TargetRefused
    );
    v = vendor(None, 2 * HOUR);
    v.access.resume.allowed = false;
    let no = decide_resuming(&live, Some(&v), false, now).unwrap_err();
    assert!(
        no.message.contains("does not let a session move"),
        "{}",
        no.message
    );
}
