//! Pending requests (approve with an end time, deny with a reason), live sessions (revoke,
//! extend), lockdown. The actions are shared with the JSON API.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{Markup, html};
use serde::Deserialize;

use super::{member_page, or_refusal};
use crate::approval::{Approved, DeskError, Until};
use crate::audit::{EventKind, StoredEvent};
use crate::session::{RequestId, RequestRecord, Stage, human_duration};
use crate::staff::Role;
use crate::store::{AuditFilter, RequestFilter};
use crate::web::AppState;
use crate::web::auth::{Ctx, Refused};
use crate::web::i18n::Lang;
use crate::web::path::segment;

type Shared = State<Arc<AppState>>;

/// The most minutes an approval or extension may ask for: a day, the longest `max_session`.
pub(crate) const MAX_MINUTES: u64 = 24 * 60;

/// The end-time choices offered on each request, in minutes.
const PRESETS: [u64; 6] = [30, 60, 120, 240, 480, 720];

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/requests", get(requests_page))
        .route("/requests/list", get(requests_fragment))
        .route("/requests/{id}/approve", post(approve_form))
        .route("/requests/{id}/deny", post(deny_form))
        .route("/sessions", get(sessions_page))
        .route("/sessions/list", get(sessions_fragment))
        .route("/sessions/{id}/revoke", post(revoke_form))
        .route("/sessions/{id}/extend", post(extend_form))
        .route("/lockdown", get(lockdown_page).post(lockdown_form))
}

// ---------------------------------------------------------------------------------------
// Actions, shared with the API. Each returns one sentence for the person.

pub(crate) fn desk_refusal(error: DeskError) -> Refused {
    let status = match &error {
        DeskError::NotFound(_) => StatusCode::NOT_FOUND,
        DeskError::Refused(_) | DeskError::Stale(_) => StatusCode::CONFLICT,
        DeskError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    Refused::new(status, error.to_string())
}

fn cli_refusal(error: crate::cli::CliError) -> Refused {
    match error {
        crate::cli::CliError::Desk(error) => desk_refusal(error),
        other => Refused::bad_request(other.to_string()),
    }
}

fn request_id(text: &str) -> Result<RequestId, Refused> {
    RequestId::parse(text)
        .ok_or_else(|| Refused::new(StatusCode::NOT_FOUND, "There is no such request."))
}

/// An end time from a preset (`minutes`) or a custom time (`until`, in the hospital's zone).
pub(crate) fn until_of(
    state: &AppState,
    minutes: Option<u64>,
    until: Option<&str>,
) -> Result<Until, Refused> {
    match (minutes, until.map(str::trim).filter(|u| !u.is_empty())) {
        (_, Some(until)) => crate::cli::parse_end_time(until, state.desk.zone(), state.desk.now())
            .map(Until::At)
            .map_err(cli_refusal),
        (Some(minutes), None) => {
            // Checked before any arithmetic: no session lasts longer than a day.
            let seconds = minutes
                .checked_mul(60)
                .filter(|_| (1..=MAX_MINUTES).contains(&minutes))
                .ok_or_else(|| {
                    Refused::bad_request(format!(
                        "{minutes} minutes cannot be used: choose from 1 to {MAX_MINUTES} minutes (no session lasts longer than a day), or give an end time."
                    ))
                })?;
            Ok(Until::For(Duration::from_secs(seconds)))
        }
        (None, None) => Err(Refused::bad_request(
            "Choose how long the session may last, or give an end time.",
        )),
    }
}

pub(crate) async fn approve(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    until: Until,
    comment: &str,
) -> Result<String, Refused> {
    let id = request_id(id)?;
    let zone = state.desk.zone();
    Ok(
        match state
            .desk
            .approve_with_comment(&id, &ctx.member.name, until, comment)
            .await
            .map_err(desk_refusal)?
        {
            Approved::Complete { end_at } => format!(
                "{} {id} → {} {}",
                ctx.lang.t("Approved", "承認しました"),
                zone.format(end_at),
                zone.name()
            ),
            Approved::Partial { have, need } => format!(
                "{} {id} ({have}/{need})",
                ctx.lang.t(
                    "Recorded your approval; more approvers are needed:",
                    "承認を記録しました。さらに承認が必要です:"
                )
            ),
        },
    )
}

pub(crate) async fn deny(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    reason: &str,
) -> Result<String, Refused> {
    request_id(id)?;
    crate::cli::request_deny(&state.desk, id, reason, &ctx.member.name)
        .await
        .map_err(cli_refusal)
}

pub(crate) async fn revoke(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    reason: &str,
) -> Result<String, Refused> {
    request_id(id)?;
    crate::cli::session_revoke(&state.desk, id, reason, &ctx.member.name)
        .await
        .map_err(cli_refusal)
}

pub(crate) async fn extend(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    until: Until,
    comment: &str,
) -> Result<String, Refused> {
    request_id(id)?;
    let now = state.desk.now();
    crate::cli::session_extend(&state.desk, id, until, comment, &ctx.member.name, now)
        .await
        .map_err(cli_refusal)
}

pub(crate) async fn set_lockdown(
    state: &AppState,
    ctx: &Ctx,
    on: bool,
    reason: &str,
) -> Result<String, Refused> {
    let duty = if on {
        crate::staff::Duty::LockdownOn
    } else {
        crate::staff::Duty::LockdownLift
    };
    state.require_duty(ctx, duty).await?;
    let result = if on {
        crate::cli::lockdown_on(&state.desk, reason, &ctx.member.name).await
    } else {
        crate::cli::lockdown_off(&state.desk, reason, &ctx.member.name).await
    };
    result.map_err(cli_refusal)
}

// ---------------------------------------------------------------------------------------
// Rendering.

fn minutes_text(lang: Lang, minutes: u64) -> String {
    match (lang, minutes) {
        (Lang::En, m) if m < 60 => format!("{m} min"),
        (Lang::En, m) => format!("{} h", m / 60),
        (Lang::Ja, m) if m < 60 => format!("{m}分"),
        (Lang::Ja, m) => format!("{}時間", m / 60),
    }
}

fn waited(now: SystemTime, since: SystemTime) -> String {
    let secs = now.duration_since(since).unwrap_or_default().as_secs();
    if secs < 60 {
        "<1m".to_owned()
    } else {
        human_duration(Duration::from_secs(secs / 60 * 60))
    }
}

/// Why a requester cannot be approved now: their vendor or they themselves are disabled.
fn requester_disabled(lang: Lang, disabled: &Disabled, record: &RequestRecord) -> Option<String> {
    let why = |reason: &str| {
        if reason.is_empty() {
            String::new()
        } else {
            format!(" ({reason})")
        }
    };
    if let Some(reason) = disabled.vendors.get(&record.vendor) {
        return Some(match lang {
            Lang::En => format!(
                "Vendor {} is disabled{}: this request cannot be approved; deny it, or enable the vendor first.",
                record.vendor,
                why(reason)
            ),
            Lang::Ja => format!(
                "ベンダー {} は無効化されています{}。この申請は承認できません。却下するか、先にベンダーを有効にしてください。",
                record.vendor,
                why(reason)
            ),
        });
    }
    let key = (record.vendor.clone(), record.technician.clone());
    disabled.technicians.get(&key).map(|reason| match lang {
        Lang::En => format!(
            "Technician {} is disabled{}: this request cannot be approved; deny it, or enable them first.",
            record.requester(),
            why(reason)
        ),
        Lang::Ja => format!(
            "技術者 {} は無効化されています{}。この申請は承認できません。却下するか、先に有効にしてください。",
            record.requester(),
            why(reason)
        ),
    })
}

/// The disabled vendors and technicians, with why, read once per page.
#[derive(Default)]
struct Disabled {
    vendors: std::collections::HashMap<String, String>,
    technicians: std::collections::HashMap<(String, String), String>,
}

async fn disabled(state: &AppState) -> Result<Disabled, Refused> {
    let store = state.desk.store();
    let unreadable = |e| desk_refusal(crate::approval::DeskError::Store(e));
    let vendors = store.vendors().await.map_err(unreadable)?;
    let technicians = store.technicians().await.map_err(unreadable)?;
    Ok(Disabled {
        vendors: vendors
            .into_iter()
            .filter(|vendor| !vendor.enabled)
            .map(|vendor| (vendor.vendor, vendor.disabled_reason))
            .collect(),
        technicians: technicians
            .into_iter()
            .filter(|technician| !technician.enabled)
            .map(|technician| {
                (
                    (technician.vendor, technician.technician),
                    technician.disabled_reason,
                )
            })
            .collect(),
    })
}

/// Whether the hospital's policy asks for a comment with every approval and extension.
fn comment_required(state: &AppState) -> bool {
    state
        .desk
        .policies()
        .hospital()
        .defaults
        .require_approval_comment
}

fn request_card(
    state: &AppState,
    ctx: &Ctx,
    record: &RequestRecord,
    now: SystemTime,
    disabled: &Disabled,
) -> Markup {
    let blocked = requester_disabled(ctx.lang, disabled, record);
    let lang = ctx.lang;
    let zone = state.desk.zone();
    let max = state
        .desk
        .policies()
        .vendor(&record.vendor)
        .map(|v| v.access.max_session);
    let id = record.id.as_str();
    let csrf = ctx.member.csrf.expose_secret();
    let comment_required = comment_required(state);
    html! {
        article.card id={ "request-" (id) } data-request=(id) {
            h2 { (record.requester()) " → " (record.targets.join(", ")) }
            dl {
                dt { (lang.t("Request", "申請番号")) } dd { (id) }
                dt { (lang.t("Vendor", "ベンダー")) } dd { (record.vendor) }
                dt { (lang.t("Technician", "技術者")) } dd { (record.technician) }
                dt { (lang.t("Targets", "接続先")) } dd { (record.targets.join(", ")) }
                dt { (lang.t("Purpose", "目的")) } dd.purpose { (record.purpose) }
                dt { (lang.t("Ticket", "チケット")) } dd { @if record.ticket.is_empty() { "-" } @else { (record.ticket) } }
                dt { (lang.t("Wants", "希望時間")) } dd { (human_duration(record.wanted)) }
                dt { (lang.t("Waiting", "待ち時間")) } dd { (waited(now, record.created_at)) " (" (zone.format(record.created_at)) ")" }
                dt { (lang.t("Approvals", "承認")) } dd { (record.approvals.len()) " / " (record.approvals_needed) }
                @for approval in &record.approvals {
                    dt { (approval.approver) } dd.comment { @if approval.comment.is_empty() { "-" } @else { (approval.comment) } }
                }
            }
            @if let Some(blocked) = &blocked {
                p.error.disabled role="alert" { (blocked) }
            }
            div.actions {
                @if blocked.is_none() { form.approve method="post" action={ "/requests/" (segment(id)) "/approve" } {
                    input type="hidden" name="csrf" value=(csrf);
                    label { (lang.t("For", "期間")) select name="minutes" {
                        @for minutes in PRESETS.iter().copied().filter(|m| max.is_none_or(|max| Duration::from_secs(m * 60) <= max)) {
                            option value=(minutes) selected[Duration::from_secs(minutes * 60) >= record.wanted && Duration::from_secs(minutes.saturating_sub(1) * 60) < record.wanted.max(Duration::from_secs(60))] { (minutes_text(lang, minutes)) }
                        }
                    } }
                    label { (lang.t("or until", "または終了時刻")) " (" (zone.name()) ")" input type="datetime-local" name="until"; }
                    label { (lang.t("Comment", "コメント")) input name="comment" maxlength="2000" required[comment_required]; }
                    button type="submit" name="approve" { (lang.t("Approve", "承認")) }
                } }
                form.deny method="post" action={ "/requests/" (segment(id)) "/deny" } {
                    input type="hidden" name="csrf" value=(csrf);
                    label { (lang.t("Reason", "理由")) input name="reason" required maxlength="500"; }
                    button.danger type="submit" name="deny" { (lang.t("Deny", "却下")) }
                }
            }
            @if let Some(max) = max {
                p.muted { (lang.t("Longest allowed by the vendor's policy: ", "ベンダーのポリシーでの上限: ")) (human_duration(max)) }
            }
        }
    }
}

async fn pending(state: &AppState) -> Result<Vec<RequestRecord>, Refused> {
    state
        .desk
        .requests(&RequestFilter {
            states: vec!["requested"],
            limit: 100,
            ..RequestFilter::default()
        })
        .await
        .map_err(desk_refusal)
}

async fn requests_list(state: &AppState, ctx: &Ctx) -> Result<Markup, Refused> {
    let records = pending(state).await?;
    let disabled = if records.is_empty() {
        Disabled::default()
    } else {
        disabled(state).await?
    };
    let now = state.desk.now();
    Ok(html! {
        @if records.is_empty() {
            p.muted id="no-requests" { (ctx.lang.t("No requests are waiting.", "承認待ちの申請はありません。")) }
        }
        @for record in &records { (request_card(state, ctx, record, now, &disabled)) }
    })
}

async fn render_requests(
    state: &AppState,
    ctx: &Ctx,
    done: Option<&str>,
) -> Result<Response, Refused> {
    let list = requests_list(state, ctx).await?;
    let body = html! {
        (crate::web::layout::notice(done))
        p.muted { (ctx.lang.t("New requests appear here without reloading. Times are in ", "新しい申請は再読み込みなしで表示されます。時刻は ")) (state.desk.zone().name()) "." }
        div id="requests" data-live="/requests/list" { (list) }
    };
    Ok(member_page(
        state,
        ctx,
        ctx.lang.t("Pending requests", "承認待ちの申請"),
        body,
    ))
}

async fn requests_page(State(state): Shared, headers: HeaderMap) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Approver]).await?;
        render_requests(&state, &ctx, None).await
    }
    .await;
    or_refusal(result, &headers)
}

/// A live part's markup for the page's script to swap in, or the refusal as plain text.
fn fragment(result: Result<maud::Markup, Refused>) -> Response {
    match result {
        Ok(markup) => Html(markup.into_string()).into_response(),
        Err(refused) => (refused.status, refused.message).into_response(),
    }
}

async fn requests_fragment(State(state): Shared, headers: HeaderMap) -> Response {
    fragment(
        async {
            // The page's own refresh on a live update: not the person's use.
            let ctx = state.require_unused(&headers, &[Role::Approver]).await?;
            requests_list(&state, &ctx).await
        }
        .await,
    )
}

#[derive(Deserialize)]
pub(crate) struct ApproveForm {
    csrf: Option<String>,
    minutes: Option<u64>,
    until: Option<String>,
    #[serde(default)]
    comment: String,
}

async fn approve_form(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ApproveForm>,
) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Approver]).await?;
        state.check_csrf(&ctx, form.csrf.as_deref()).await?;
        let until = until_of(&state, form.minutes, form.until.as_deref())?;
        let done = approve(&state, &ctx, &id, until, &form.comment).await?;
        render_requests(&state, &ctx, Some(&done)).await
    }
    .await;
    or_refusal(result, &headers)
}

#[derive(Deserialize)]
pub(crate) struct ReasonForm {
    csrf: Option<String>,
    reason: String,
}

async fn deny_form(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Approver]).await?;
        state.check_csrf(&ctx, form.csrf.as_deref()).await?;
        let done = deny(&state, &ctx, &id, &form.reason).await?;
        render_requests(&state, &ctx, Some(&done)).await
    }
    .await;
    or_refusal(result, &headers)
}

/// Bytes moved by the session's forwards that have closed so far (to, from the targets).
pub(crate) async fn session_bytes(state: &AppState, id: &str) -> (u64, u64) {
    let events: Vec<StoredEvent> = state
        .desk
        .store()
        .audit_events(&AuditFilter {
            request: Some(id.to_owned()),
            kinds: vec![EventKind::ForwardClosed],
            ..AuditFilter::default()
        })
        .await
        .unwrap_or_default();
    let sum = |key: &str| -> u64 {
        events
            .iter()
            .flat_map(|e| e.event.details.iter())
            .filter(|(k, _)| k == key)
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum()
    };
    (sum("bytes_to_target"), sum("bytes_from_target"))
}

async fn sessions_list(state: &AppState, ctx: &Ctx) -> Result<Markup, Refused> {
    let lang = ctx.lang;
    let records = state
        .desk
        .requests(&RequestFilter {
            states: vec!["active", "approved"],
            limit: 100,
            ..RequestFilter::default()
        })
        .await
        .map_err(desk_refusal)?;
    let now = state.desk.now();
    let zone = state.desk.zone();
    let csrf = ctx.member.csrf.expose_secret();
    let comment_required = comment_required(state);
    let mut cards = Vec::new();
    for record in &records {
        let (to, from) = session_bytes(state, record.id.as_str()).await;
        let id = record.id.as_str();
        let left = record
            .end_at
            .map(|end| waited(end, now))
            .unwrap_or_else(|| "-".to_owned());
        cards.push(html! {
            article.card id={ "session-" (id) } data-session=(id) {
                h2 { (record.requester()) " → " (record.targets.join(", ")) }
                dl {
                    dt { (lang.t("Session", "セッション")) } dd { (id) " (" (record.stage.state_word()) ")" }
                    dt { (lang.t("Purpose", "目的")) } dd { (record.purpose) }
                    dt { (lang.t("Since", "開始")) } dd { (record.opened_at.map(|at| zone.format(at)).unwrap_or_else(|| lang.t("not opened yet", "未接続").to_owned())) }
                    dt { (lang.t("Ends", "終了予定")) } dd { (record.end_at.map(|at| zone.format(at)).unwrap_or_default()) }
                    dt { (lang.t("Time left", "残り時間")) } dd { (left) }
                    @if let Some(lost) = record.detached_at.filter(|_| record.stage == Stage::Active) {
                        dt { (lang.t("Connection", "接続")) }
                        dd.connection-lost { (lang.t("lost since ", "切断中（")) (zone.format(lost)) (lang.t("; the technician may take the session up again until its end", "から）。終了予定まで技術者が再開できます")) }
                    }
                    dt { (lang.t("Bytes (to / from targets)", "転送量（送信／受信）")) } dd { (to) " / " (from) }
                    dt { (lang.t("Approved by", "承認者")) } dd { (record.approvals.iter().map(|a| a.approver.as_str()).collect::<Vec<_>>().join(", ")) }
                    @for approval in record.approvals.iter().filter(|a| !a.comment.is_empty()) {
                        dt { (approval.approver) } dd.comment { (approval.comment) }
                    }
                    @for ask in &record.extension_proposals {
                        dt { (lang.t("Extension asked", "延長の申し出")) }
                        dd.extension-asked { (ask.approver) " → " (zone.format(ask.end_at)) @if !ask.comment.is_empty() { ": " (ask.comment) } }
                    }
                }
                div.actions {
                    form.revoke method="post" action={ "/sessions/" (segment(id)) "/revoke" } {
                        input type="hidden" name="csrf" value=(csrf);
                        label { (lang.t("Reason", "理由")) input name="reason" required maxlength="500"; }
                        button.danger type="submit" name="revoke" { (lang.t("Revoke", "切断")) }
                    }
                    form.extend method="post" action={ "/sessions/" (segment(id)) "/extend" } {
                        input type="hidden" name="csrf" value=(csrf);
                        label { (lang.t("Add", "延長")) select name="minutes" {
                            @for minutes in [15u64, 30, 60, 120] { option value=(minutes) { (minutes_text(lang, minutes)) } }
                        } }
                        label { (lang.t("Comment", "コメント")) input name="comment" maxlength="2000" required[comment_required]; }
                        button.plain type="submit" name="extend" { (lang.t("Extend", "延長")) }
                    }
                }
            }
        });
    }
    Ok(html! {
        @if cards.is_empty() {
            p.muted id="no-sessions" { (lang.t("No live or approved sessions.", "接続中・承認済みのセッションはありません。")) }
        }
        @for card in cards { (card) }
    })
}

async fn render_sessions(
    state: &AppState,
    ctx: &Ctx,
    done: Option<&str>,
) -> Result<Response, Refused> {
    let list = sessions_list(state, ctx).await?;
    let body = html! {
        (crate::web::layout::notice(done))
        div id="sessions" data-live="/sessions/list" { (list) }
    };
    Ok(member_page(
        state,
        ctx,
        ctx.lang.t("Live sessions", "接続中のセッション"),
        body,
    ))
}

async fn sessions_page(State(state): Shared, headers: HeaderMap) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Approver]).await?;
        render_sessions(&state, &ctx, None).await
    }
    .await;
    or_refusal(result, &headers)
}

async fn sessions_fragment(State(state): Shared, headers: HeaderMap) -> Response {
    fragment(
        async {
            // The page's own refresh on a live update: not the person's use.
            let ctx = state.require_unused(&headers, &[Role::Approver]).await?;
            sessions_list(&state, &ctx).await
        }
        .await,
    )
}

async fn revoke_form(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Approver]).await?;
        state.check_csrf(&ctx, form.csrf.as_deref()).await?;
        let done = revoke(&state, &ctx, &id, &form.reason).await?;
        render_sessions(&state, &ctx, Some(&done)).await
    }
    .await;
    or_refusal(result, &headers)
}

#[derive(Deserialize)]
pub(crate) struct ExtendForm {
    csrf: Option<String>,
    minutes: Option<u64>,
    until: Option<String>,
    #[serde(default)]
    comment: String,
}

async fn extend_form(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ExtendForm>,
) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Approver]).await?;
        state.check_csrf(&ctx, form.csrf.as_deref()).await?;
        let until = until_of(&state, form.minutes, form.until.as_deref())?;
        let done = extend(&state, &ctx, &id, until, &form.comment).await?;
        render_sessions(&state, &ctx, Some(&done)).await
    }
    .await;
    or_refusal(result, &headers)
}

async fn render_lockdown(
    state: &AppState,
    ctx: &Ctx,
    done: Option<&str>,
) -> Result<Response, Refused> {
    let lang = ctx.lang;
    let current = state.desk.lockdown().await.map_err(desk_refusal)?;
    let zone = state.desk.zone();
    let csrf = ctx.member.csrf.expose_secret();
    let body = html! {
        (crate::web::layout::notice(done))
        @if current.active {
            p.error role="alert" {
                (lang.t("Lockdown is ON since ", "緊急遮断中： ")) (zone.format(current.since)) " " (zone.name())
                " — " (current.by) ": " (current.reason)
            }
            form.stack method="post" action="/lockdown" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="action" value="off";
                label { (lang.t("Reason for lifting (optional)", "解除の理由（任意）")) input name="reason" maxlength="500"; }
                label { input type="checkbox" name="confirm" value="yes" required; (lang.t("I confirm remote access may resume.", "遠隔接続の再開を確認しました。")) }
                button type="submit" name="lift" { (lang.t("Lift lockdown", "緊急遮断を解除")) }
            }
        } @else {
            p { (lang.t("Remote access is running. Lockdown cuts every live session at once and refuses new ones until lifted.", "遠隔接続は稼働中です。緊急遮断はすべての接続を即座に切断し、解除まで新しい接続を拒否します。")) }
            form.stack method="post" action="/lockdown" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="action" value="on";
                label { (lang.t("Reason (recorded, shown to technicians)", "理由（記録され、技術者に表示されます）")) input name="reason" required maxlength="500"; }
                label { input type="checkbox" name="confirm" value="yes" required; (lang.t("I confirm: stop ALL remote access now.", "確認：すべての遠隔接続を今すぐ停止します。")) }
                button.danger.big-danger type="submit" name="lockdown" { (lang.t("STOP ALL REMOTE ACCESS", "すべての遠隔接続を停止")) }
            }
        }
    };
    // The banner reflects the store now, not the last poll.
    let lockdown_now = current.active;
    let title = lang.t("Lockdown", "緊急遮断");
    Ok(crate::web::layout::respond(
        StatusCode::OK,
        crate::web::layout::page(Some(ctx), lang, lockdown_now, title, body),
    ))
}

async fn lockdown_page(State(state): Shared, headers: HeaderMap) -> Response {
    let result = async {
        let ctx = state
            .require(&headers, crate::staff::Duty::LockdownOn.roles())
            .await?;
        render_lockdown(&state, &ctx, None).await
    }
    .await;
    or_refusal(result, &headers)
}

#[derive(Deserialize)]
pub(crate) struct LockdownForm {
    csrf: Option<String>,
    action: String,
    #[serde(default)]
    reason: String,
    confirm: Option<String>,
}

async fn lockdown_form(
    State(state): Shared,
    headers: HeaderMap,
    Form(form): Form<LockdownForm>,
) -> Response {
    let result = async {
        let ctx = state
            .require(&headers, crate::staff::Duty::LockdownOn.roles())
            .await?;
        state.check_csrf(&ctx, form.csrf.as_deref()).await?;
        if form.confirm.as_deref() != Some("yes") {
            return Err(Refused::bad_request(
                "Tick the confirmation box; lockdown changes are never made by accident.",
            ));
        }
        let done = set_lockdown(&state, &ctx, form.action == "on", &form.reason).await?;
        render_lockdown(&state, &ctx, Some(&done)).await
    }
    .await;
    or_refusal(result, &headers)
}
