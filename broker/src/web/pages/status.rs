//! The status page (admins and auditors): what `sekisho-broker status` reports, in the
//! page's language: the queue, the audit log's head, and who sends the approvers' webhook
//! and the audit syslog to each destination, how far behind, with any problem on top.
//! It only reads.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use maud::html;

use super::{member_page, or_refusal};
use crate::cli::{LeaseNow, SenderProblem, SenderStatus, span, status_report};
use crate::staff::Role;
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
        let problems: Vec<String> = report
            .senders
            .iter()
            .filter_map(|sender| problem_text(lang, sender))
            .collect();
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
            p id="status-audit" {
                (lang.t("Audit log: ", "監査ログ："))
                (report.audit_events)
                (lang.t(" events; head ", " 件、ヘッド "))
                code { (report.audit_head) }
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
