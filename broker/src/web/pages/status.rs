//! The status page (admins and auditors): what `sekisho-broker status` reports, in the
//! page's language: the queue, the audit log's head, who sends the approvers' webhook and
//! the audit syslog to each destination, how far behind, and each broker's clock (time sync
//! state, latest step), with any problem on top. It only reads.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use maud::html;

use super::{member_page, or_refusal};
use crate::cli::{
    BrokerClock, ClockProblem, LeaseNow, SenderProblem, SenderStatus, span, status_report,
};
use crate::session::HospitalZone;
use crate::staff::Role;
use crate::timewatch::SyncState;
use crate::web::AppState;
use crate::web::auth::Refused;
use crate::web::i18n::Lang;

type Shared = State<Arc<AppState>>;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/status", get(status_page))
}

async fn status_page(State(state): Shared, headers: HeaderMap) -> Response {
    let result = async {
        let ctx = state
            .require(&headers, &[Role::Admin, Role::Auditor])
            .await?;
        let lang = ctx.lang;
        let report = status_report(&state.desk, state.desk.now())
            .await
            .map_err(|e| Refused::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let zone = state.desk.zone();
        let problems: Vec<String> = report
            .senders
            .iter()
            .filter_map(|sender| problem_text(lang, sender))
            .chain(
                report
                    .clocks
                    .iter()
                    .flat_map(|clock| clock_problem_texts(lang, zone, clock)),
            )
            .collect();
        // Separation of duties: accounts made before the policy refused combined roles.
        let rules = state.desk.policies().hospital().staff.clone();
        let mut problems = problems;
        if rules.combined_roles.is_none() {
            let members = state
                .staff
                .members()
                .await
                .map_err(|e| Refused::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
            for member in members.iter().filter(|member| !member.disabled) {
                if let Some(other) =
                    crate::staff::combined_roles(&crate::staff::Roles::decode(&member.roles))
                {
                    problems.push(match lang {
                        Lang::En => format!("Problem: {} is both auditor and {}, which hospital.toml's [staff] does not allow; reset the account with one of the roles, or allow combined roles with a reason.", member.name, other.as_str()),
                        Lang::Ja => format!("問題: {} は監査者と{}を兼ねていますが、hospital.toml の [staff] は認めていません。どちらかの役割でアカウントを再設定するか、理由を添えて兼務を認めてください。", member.name, other.as_str()),
                    });
                }
            }
        }
        let body = html! {
            @for problem in &problems {
                p.error.problem role="alert" { (problem) }
            }
            @if problems.is_empty() {
                p.notice id="status-verdict" { (lang.t("No problems.", "問題はありません。")) }
            }
            p id="status-queue" {
                @match lang {
                    Lang::En => { "Requests waiting for approval: " (report.waiting) "; approved, not yet opened: " (report.approved) "; live sessions: " (report.live) "." }
                    Lang::Ja => { "承認待ちの申請：" (report.waiting) " 件、承認済み・未接続：" (report.approved) " 件、接続中：" (report.live) " 件。" }
                }
            }
            p id="status-duties" {
                (lang.t("Separation of duties: ", "職務分離："))
                (crate::policy::render::staff_duties(&rules))
            }
            p id="status-audit" {
                (lang.t("Audit log: ", "監査ログ："))
                (report.audit_events)
                (lang.t(" events; head ", " 件、ヘッド "))
                code { (report.audit_head) }
            }
            p id="status-checkpoints" {
                (lang.t("Signed checkpoints of the audit log (each broker's key and newest checkpoint): ", "監査ログの署名付きチェックポイント（各ブローカーの鍵と最新のチェックポイント）："))
                @if report.checkpoints.is_empty() {
                    (lang.t("none yet.", "まだありません。"))
                }
                @for checkpoint in &report.checkpoints {
                    br;
                    (checkpoint.broker) " " code { (checkpoint.fingerprint()) } " "
                    (lang.t("event ", "イベント ")) (checkpoint.seq) ", " (zone.format(checkpoint.time()))
                }
            }
            p id="status-web-allow" {
                @match lang {
                    Lang::En => { "Web UI connections closed since this broker started because their address is outside --web-allow: " (state.allow.refused()) "." }
                    Lang::Ja => { "--web-allow の範囲外のアドレスからのため、このブローカーの起動以降に閉じた Web UI への接続：" (state.allow.refused()) " 件。" }
                }
            }
            h2 { (lang.t("Senders", "送信")) }
            @if report.senders.is_empty() {
                p.muted id="no-senders" { (lang.t("No broker has been configured with the approvers' webhook or an audit syslog.", "承認者向け Webhook も監査ログの syslog 送信も、どのブローカーにも設定されていません。")) }
            } @else {
                p.muted { (lang.t("One broker at a time sends to each destination; another takes over when it stops.", "各送信先へは一度に一台のブローカーが送信し、止まると別のブローカーが引き継ぎます。")) }
                div.table-wrap { table id="senders" {
                    thead { tr {
                        th { (lang.t("Sends", "送信内容")) }
                        th { (lang.t("To", "送信先")) }
                        th { (lang.t("Broker", "ブローカー")) }
                        th { (lang.t("Lease", "リース")) }
                        th { (lang.t("Behind", "未送信")) }
                    } }
                    tbody { @for sender in &report.senders {
                        tr data-feature=(sender.lease.feature) {
                            td { (sender.lease.feature) }
                            td { (sender.lease.destination) }
                            td { (sender.lease.holder) }
                            td {
                                @if sender.problem() == Some(SenderProblem::Stopped) {
                                    span.overdue { (lease_text(lang, sender)) }
                                } @else {
                                    (lease_text(lang, sender))
                                }
                            }
                            td { (sender.behind) (lang.t(" events", " 件")) }
                        }
                    } }
                } }
            }
            h2 { (lang.t("Clocks", "時刻")) }
            @if report.clocks.is_empty() {
                p.muted id="no-clocks" { (lang.t("No broker recorded its clock's sync state or a step of its clock in the last 7 days.", "直近 7 日間に時刻同期の状態や時計の変更を記録したブローカーはありません。")) }
            } @else {
                p.muted { (lang.t("Brokers that recorded their clock in the last 7 days. Session end times run on each broker's monotonic clock; the record carries its wall clock's time.", "直近 7 日間に時刻を記録したブローカーです。セッションの終了時刻は各ブローカーの単調時計で計られ、記録にはその時点の時計（壁時計）の時刻が残ります。")) " " (lang.t("Times in ", "時刻は ")) (zone.name()) (lang.t(".", " です。")) }
                div.table-wrap { table id="clocks" {
                    thead { tr {
                        th { (lang.t("Broker", "ブローカー")) }
                        th { (lang.t("State", "状態")) }
                        th { (lang.t("Time sync", "時刻同期")) }
                        th { (lang.t("Last clock step", "直近の時計の変更")) }
                    } }
                    tbody { @for clock in &report.clocks {
                        tr data-broker=(clock.broker) {
                            td { (clock.broker) }
                            td { @if clock.stopped { (lang.t("stopped", "停止")) } @else { (lang.t("running", "稼働中")) } }
                            td {
                                @if clock.problems().contains(&ClockProblem::Unsynchronised) {
                                    span.overdue { (sync_text(lang, zone, clock)) }
                                } @else {
                                    (sync_text(lang, zone, clock))
                                }
                            }
                            td {
                                @if clock.problems().contains(&ClockProblem::Stepped) {
                                    span.overdue { (jump_text(lang, zone, clock)) }
                                } @else {
                                    (jump_text(lang, zone, clock))
                                }
                            }
                        }
                    } }
                } }
                @for clock in &report.clocks {
                    @if let Some(unknown) = unknown_text(lang, clock) {
                        p.muted.clock-unknown { (unknown) }
                    }
                }
            }
        };
        Ok(member_page(
            &state,
            &ctx,
            lang.t("Status", "稼働状況"),
            body,
        ))
    }
    .await;
    or_refusal(result, &headers)
}

/// How a lease stands, in a few words; English is the CLI's.
fn lease_text(lang: Lang, sender: &SenderStatus) -> String {
    match (lang, sender.lease_now) {
        (Lang::En, _) => sender.lease_words(),
        (Lang::Ja, LeaseNow::Held(left)) => format!("保持中（残り {}）", span(left)),
        (Lang::Ja, LeaseNow::LetGo) => "ブローカーの停止時に解放（送信なし）".to_owned(),
        (Lang::Ja, LeaseNow::RanOut(ago)) => format!("{} 前に期限切れ", span(ago)),
    }
}

/// A sender's problem as a sentence that says what to do; English is the CLI's.
fn problem_text(lang: Lang, sender: &SenderStatus) -> Option<String> {
    let lease = &sender.lease;
    let behind = sender.behind;
    Some(match (lang, sender.problem()?) {
        (Lang::En, _) => format!("Problem: {}", sender.problem_sentence()?),
        (Lang::Ja, SenderProblem::Stopped) => format!(
            "問題：{} の {} への送信を担うブローカーがなく、{behind} 件が送信を待っています。送信を設定したブローカーを起動してください。",
            lease.destination, lease.feature
        ),
        (Lang::Ja, SenderProblem::Behind) => format!(
            "問題：ブローカー {} の {} への {} 送信が {behind} 件遅れています。送信先が応答しているか確認してください（理由はブローカーのログにあります）。",
            lease.holder, lease.destination, lease.feature
        ),
    })
}

/// A broker's sync state in a few words; English is the CLI's.
fn sync_text(lang: Lang, zone: &HospitalZone, clock: &BrokerClock) -> String {
    match (lang, &clock.sync) {
        (Lang::En, _) => clock.sync_words(zone),
        (Lang::Ja, None) => "記録なし".to_owned(),
        (Lang::Ja, Some(sync)) => {
            let since = zone.format(sync.since);
            match sync.state {
                SyncState::Synchronised => format!("同期済み（{}）{since} から", sync.source),
                SyncState::Unsynchronised => {
                    format!("同期していません（{}）{since} から", sync.source)
                }
                SyncState::Unknown => format!("不明 {since} から（下記参照）"),
            }
        }
    }
}

/// A broker's latest clock step in a few words; English is the CLI's.
fn jump_text(lang: Lang, zone: &HospitalZone, clock: &BrokerClock) -> String {
    match (lang, &clock.jump) {
        (Lang::En, _) => clock.jump_words(zone),
        (Lang::Ja, None) => "なし".to_owned(),
        (Lang::Ja, Some(jump)) => format!(
            "{} に {} {}",
            zone.format(jump.at),
            span(jump.step_ms.saturating_abs()),
            if jump.step_ms < 0 {
                "戻された"
            } else {
                "進められた"
            }
        ),
    }
}

/// Why a broker's sync state is unknown; English is the CLI's.
fn unknown_text(lang: Lang, clock: &BrokerClock) -> Option<String> {
    let english = clock.unknown_sentence()?;
    Some(match lang {
        Lang::En => english,
        Lang::Ja => format!(
            "ブローカー {}：時刻が同期しているかは不明です（{}）。問題とはしませんが、記録される時刻を裏付けるものがありません。ホストで時刻サービス（chrony、systemd-timesyncd）を動かせば確認できます。",
            clock.broker,
            clock
                .sync
                .as_ref()
                .and_then(|sync| sync.reason.as_deref())
                .unwrap_or("理由は記録されていません")
        ),
    })
}

/// A broker's clock problems as sentences that say what to do; English is the CLI's.
fn clock_problem_texts(lang: Lang, zone: &HospitalZone, clock: &BrokerClock) -> Vec<String> {
    if lang == Lang::En {
        return clock
            .problem_sentences(zone)
            .into_iter()
            .map(|sentence| format!("Problem: {sentence}"))
            .collect();
    }
    clock
        .problems()
        .into_iter()
        .filter_map(|problem| match problem {
            ClockProblem::Unsynchronised => {
                let sync = clock.sync.as_ref()?;
                Some(format!(
                    "問題：ブローカー {} の時計が同期していません（{} による、{} {} から）。記録される時刻が正しい時刻からずれるおそれがあります。時刻サービス（chrony、systemd-timesyncd）と NTP サーバーへの到達を確認してください。",
                    clock.broker,
                    sync.source,
                    zone.format(sync.since),
                    zone.name()
                ))
            }
            ClockProblem::Stepped => {
                let jump = clock.jump.as_ref()?;
                Some(format!(
                    "問題：ブローカー {} の時計が {} {} に {} {}（想定 {}、実際 {}）。ホストの時刻サービスを確認してください。その前後の記録にはその時点の時計の時刻が残るため、時刻ではなくログの番号の順に読んでください。",
                    clock.broker,
                    zone.format(jump.at),
                    zone.name(),
                    span(jump.step_ms.saturating_abs()),
                    if jump.step_ms < 0 { "戻されました" } else { "進められました" },
                    jump.expected,
                    jump.observed
                ))
            }
        })
        .collect()
}
