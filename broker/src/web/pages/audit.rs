//! The auditor's pages: the event list with filters, one session's timeline, the review
//! queue (overdue marked) and marking reviewed, export (JSON Lines, CSV), chain status.
//! Everything goes through the audit commands of [`crate::cli`], so exports and reviews are
//! recorded exactly as the CLI records them.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{Markup, html};
use serde::Deserialize;

use super::{member_page, or_refusal};
use crate::audit::{ChainBreak, StoredEvent};
use crate::cli::{AuditError, ChainIntact, EventQuery, ExportFormat, ExportRequest, Exported};
use crate::staff::Role;
use crate::web::AppState;
use crate::web::auth::{Ctx, Refused};
use crate::web::i18n::Lang;
use crate::web::path::segment;

type Shared = State<Arc<AppState>>;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/audit", get(events_page))
        .route("/audit/session/{id}", get(session_page))
        .route("/audit/review", get(review_page))
        .route("/audit/review/{id}", post(review_form))
        .route("/audit/export", post(export_form))
        .route("/audit/chain", get(chain_page))
}

pub(crate) fn audit_refusal(error: AuditError) -> Refused {
    match error {
        AuditError::Cli(crate::cli::CliError::Input(message)) => Refused::bad_request(message),
        AuditError::Store(_) | AuditError::NotRecorded(_) => {
            Refused::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
        }
        other => Refused::new(StatusCode::CONFLICT, other.to_string()),
    }
}

/// The filters as a form sends them (empty fields are left out).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Filters {
    since: Option<String>,
    until: Option<String>,
    vendor: Option<String>,
    technician: Option<String>,
    target: Option<String>,
    session: Option<String>,
    kind: Option<String>,
    limit: Option<u64>,
}

impl Filters {
    pub(crate) fn query(&self) -> EventQuery {
        let given = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        EventQuery {
            since: given(&self.since),
            until: given(&self.until),
            vendor: given(&self.vendor),
            technician: given(&self.technician),
            target: given(&self.target),
            session: given(&self.session),
            kinds: given(&self.kind).into_iter().collect(),
            limit: self.limit,
        }
    }
}

pub(crate) async fn events(
    state: &AppState,
    filters: &Filters,
) -> Result<Vec<StoredEvent>, Refused> {
    let mut selection = filters
        .query()
        .resolve(state.desk.zone())
        .map_err(|e| audit_refusal(e.into()))?;
    selection.limit = selection.limit.or(Some(200));
    let (events, _) = crate::cli::audit::select(&state.desk, &selection)
        .await
        .map_err(audit_refusal)?;
    Ok(events)
}

fn events_table(state: &AppState, ctx: &Ctx, events: &[StoredEvent]) -> Markup {
    let lang = ctx.lang;
    let zone = state.desk.zone();
    html! {
        div.table-wrap { table {
            thead { tr {
                th { "#" } th { (lang.t("Time", "時刻")) } th { (lang.t("Actor", "実行者")) } th { (lang.t("Kind", "種類")) }
                th { (lang.t("Session", "セッション")) } th { (lang.t("Technician", "技術者")) } th { (lang.t("Target", "接続先")) } th { (lang.t("Details", "詳細")) }
            } }
            tbody {
                @for stored in events {
                    @let event = &stored.event;
                    tr {
                        td { (stored.seq) }
                        td { (zone.format(event.at)) }
                        td { (event.actor.encode()) }
                        td { (event.kind.as_str()) }
                        td { @if let Some(request) = &event.request { a href={ "/audit/session/" (segment(request)) } { (request) } } }
                        td { (event.vendor.as_deref().unwrap_or("")) "/" (event.technician.as_deref().unwrap_or("")) }
                        td { (event.target.as_deref().unwrap_or("")) }
                        td { @for (key, value) in &event.details { span { (key) "=" (value) } " " } }
                    }
                }
            }
        } }
    }
}

fn filter_form(ctx: &Ctx, filters: &Filters) -> Markup {
    let lang = ctx.lang;
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let csrf = ctx.member.csrf.expose_secret();
    html! {
        form.filters method="get" action="/audit" {
            label { (lang.t("Since", "開始")) input name="since" placeholder="2026-11-01" value=(value(&filters.since)); }
            label { (lang.t("Until", "終了")) input name="until" placeholder="2026-11-30" value=(value(&filters.until)); }
            label { (lang.t("Vendor", "ベンダー")) input name="vendor" value=(value(&filters.vendor)); }
            label { (lang.t("Technician", "技術者")) input name="technician" value=(value(&filters.technician)); }
            label { (lang.t("Target", "接続先")) input name="target" value=(value(&filters.target)); }
            label { (lang.t("Session", "セッション")) input name="session" value=(value(&filters.session)); }
            label { (lang.t("Kind", "種類")) input name="kind" value=(value(&filters.kind)); }
            button type="submit" { (lang.t("Filter", "絞り込み")) }
        }
        form.filters method="post" action="/audit/export" {
            input type="hidden" name="csrf" value=(csrf);
            @for (name, v) in [("since", &filters.since), ("until", &filters.until), ("vendor", &filters.vendor), ("technician", &filters.technician), ("target", &filters.target), ("session", &filters.session), ("kind", &filters.kind)] {
                @if let Some(v) = v { input type="hidden" name=(name) value=(v); }
            }
            label { (lang.t("Export", "エクスポート")) select name="format" { option value="jsonl" { "JSON Lines" } option value="csv" { "CSV" } } }
            button.plain type="submit" { (lang.t("Download", "ダウンロード")) }
        }
    }
}

async fn events_page(
    State(state): Shared,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Auditor]).await?;
        let events = events(&state, &filters).await;
        let body = html! {
            p { a href="/audit/chain" { (ctx.lang.t("Chain status", "改ざん検証")) } " · " a href="/audit/review" { (ctx.lang.t("Review queue", "レビュー待ち")) } }
            (filter_form(&ctx, &filters))
            @match &events {
                Ok(events) => (events_table(&state, &ctx, events)),
                Err(refused) => p.error { (refused.message) },
            }
        };
        Ok(member_page(&state, &ctx, ctx.lang.t("Audit log", "監査ログ"), body))
    }
    .await;
    or_refusal(result, &headers)
}

async fn session_page(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Auditor]).await?;
        let summary = crate::cli::audit_show(&state.desk, &id)
            .await
            .map_err(audit_refusal)?;
        let filters = Filters {
            session: Some(id.clone()),
            ..Filters::default()
        };
        let events = events(&state, &filters).await?;
        let body = html! {
            pre.secret { (summary) }
            h2 { (ctx.lang.t("Timeline", "経過")) }
            (events_table(&state, &ctx, &events))
        };
        Ok(member_page(
            &state,
            &ctx,
            ctx.lang.t("Session", "セッション"),
            body,
        ))
    }
    .await;
    or_refusal(result, &headers)
}

async fn render_review(
    state: &AppState,
    ctx: &Ctx,
    done: Option<&str>,
) -> Result<Response, Refused> {
    let lang = ctx.lang;
    let sessions = state
        .desk
        .store()
        .unreviewed_sessions(500)
        .await
        .map_err(|e| Refused::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let now = state.desk.now();
    let zone = state.desk.zone();
    let csrf = ctx.member.csrf.expose_secret();
    let body = html! {
        (crate::web::layout::notice(done))
        @if sessions.is_empty() {
            p.muted id="no-reviews" { (lang.t("Every ended session has been reviewed.", "終了したセッションはすべてレビュー済みです。")) }
        }
        @for (id, ended) in &sessions {
            @let overdue = now.duration_since(*ended).unwrap_or_default() > state.review_within;
            article.card id={ "review-" (id) } {
                h2 { a href={ "/audit/session/" (segment(id)) } { (id) } @if overdue { " " span.overdue { (lang.t("OVERDUE", "期限超過")) } } }
                p { (lang.t("Ended ", "終了 ")) (zone.format(*ended)) " " (zone.name()) }
                form.stack method="post" action={ "/audit/review/" (segment(id)) } {
                    input type="hidden" name="csrf" value=(csrf);
                    label { (lang.t("What you checked", "確認内容")) input name="comment" required maxlength="2000"; }
                    button type="submit" name="review" { (lang.t("Mark reviewed", "レビュー済みにする")) }
                }
            }
        }
    };
    Ok(member_page(
        state,
        ctx,
        lang.t("Review queue", "レビュー待ち"),
        body,
    ))
}

async fn review_page(State(state): Shared, headers: HeaderMap) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Auditor]).await?;
        render_review(&state, &ctx, None).await
    }
    .await;
    or_refusal(result, &headers)
}

#[derive(Deserialize)]
pub(crate) struct ReviewForm {
    csrf: Option<String>,
    comment: String,
}

pub(crate) async fn review(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    comment: &str,
) -> Result<String, Refused> {
    crate::cli::audit_review(&state.desk, id, comment, &ctx.member.name)
        .await
        .map_err(audit_refusal)
}

async fn review_form(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ReviewForm>,
) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Auditor]).await?;
        state.check_csrf(&ctx, form.csrf.as_deref()).await?;
        let done = review(&state, &ctx, &id, &form.comment).await?;
        render_review(&state, &ctx, Some(&done)).await
    }
    .await;
    or_refusal(result, &headers)
}

/// Exports the events `filters` select; the export is recorded before it is handed out.
pub(crate) async fn export(
    state: &AppState,
    ctx: &Ctx,
    format: &str,
    filters: &Filters,
) -> Result<Response, Refused> {
    let (format, mime, extension) = match format {
        "csv" => (ExportFormat::Csv, "text/csv; charset=utf-8", "csv"),
        "jsonl" => (
            ExportFormat::JsonLines,
            "application/jsonl; charset=utf-8",
            "jsonl",
        ),
        _ => return Err(Refused::bad_request("Choose jsonl or csv.")),
    };
    let request = ExportRequest {
        format,
        query: filters.query(),
        out: None,
    };
    match crate::cli::audit_export(&state.desk, &request, &ctx.member.name)
        .await
        .map_err(audit_refusal)?
    {
        Exported::ToStdout(text) | Exported::ToFile(text) => Ok((
            [
                (header::CONTENT_TYPE, mime.to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"sekisho-audit.{extension}\""),
                ),
            ],
            text,
        )
            .into_response()),
    }
}

#[derive(Deserialize)]
pub(crate) struct ExportForm {
    csrf: Option<String>,
    format: String,
    #[serde(flatten)]
    filters: Filters,
}

async fn export_form(
    State(state): Shared,
    headers: HeaderMap,
    Form(form): Form<ExportForm>,
) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Auditor]).await?;
        state.check_csrf(&ctx, form.csrf.as_deref()).await?;
        export(&state, &ctx, &form.format, &form.filters).await
    }
    .await;
    or_refusal(result, &headers)
}

async fn chain_page(State(state): Shared, headers: HeaderMap) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Auditor]).await?;
        let verdict = crate::cli::check_chain(&state.desk, None).await;
        let text = chain_verdict(ctx.lang, &verdict);
        // The chain holds together: check it against the signed checkpoints too, which a
        // rewrite that re-computed every hash cannot match.
        let signed = match verdict {
            Ok(_) => Some(crate::cli::audit_verify(&state.desk, None, &state.checkpoints).await),
            Err(_) => None,
        };
        let signed_label = ctx.lang.t("Signed checkpoints: ", "署名付きチェックポイント：");
        let body = html! {
            @match &signed {
                Some(Err(tampered)) => p.error id="chain-status" role="alert" { (signed_label) (tampered.to_string()) },
                _ if verdict.is_err() => p.error id="chain-status" role="alert" { (text) },
                Some(Ok(checked)) => {
                    p.notice id="chain-status" { (text) }
                    p id="checkpoint-status" { (signed_label) (checked) }
                },
                None => p.notice id="chain-status" { (text) },
            }
            p.muted { (ctx.lang.t("Write the head hash down outside this system (a paper log, an e-mail to yourself); a later check proves nothing before it was changed.", "ヘッドのハッシュ値をこのシステムの外（紙の記録など）に控えてください。後の検証で、それ以前の記録が変更されていないことを証明できます。")) }
        };
        Ok(member_page(&state, &ctx, ctx.lang.t("Audit chain", "監査ログの検証"), body))
    }
    .await;
    or_refusal(result, &headers)
}

/// The chain check's verdict as a sentence in the page's language. English is the CLI's own
/// `audit verify` sentence, so the page and the command read the same.
pub(crate) fn chain_verdict(lang: Lang, verdict: &Result<ChainIntact, AuditError>) -> String {
    if lang == Lang::En {
        return match verdict {
            Ok(intact) => intact.to_string(),
            Err(error) => error.to_string(),
        };
    }
    match verdict {
        Ok(intact) => format!(
            "改ざんは見つかりません：{} 件のイベント、ヘッド {}",
            intact.count, intact.head
        ),
        Err(AuditError::Broken { seq, problem }) => {
            format!(
                "監査ログはイベント {seq} で壊れています：{}。",
                chain_break_ja(problem)
            )
        }
        Err(AuditError::Unreadable(what)) => format!(
            "監査ログが壊れています：{what}（改ざんされたか、より新しい sekisho-broker が書き込みました）。"
        ),
        Err(AuditError::Store(error)) => format!(
            "監査ログを読み出せません：{error}。ブローカーのデータベースを確認して、もう一度お試しください。"
        ),
        // The page checks no written-down head and reads no file, so nothing else arises.
        Err(other) => other.to_string(),
    }
}

/// [`ChainBreak`]'s sentence in Japanese.
fn chain_break_ja(problem: &ChainBreak) -> String {
    match problem {
        ChainBreak::Missing { missing, next } => format!(
            "イベント {missing} がありません（次に保存されているのはイベント {next}）。イベントが削除されています"
        ),
        ChainBreak::OutOfOrder { seq } => format!(
            "イベント {seq} が重複しているか、順序が違います。イベントが挿入または並べ替えられています"
        ),
        ChainBreak::NotChained => "直前のイベントとつながっていません。それより前のイベントが変更・削除・挿入されています".to_owned(),
        ChainBreak::Edited => "内容がハッシュ値と一致しません。このイベントが書き換えられています".to_owned(),
        ChainBreak::CutOff { recorded, count } => format!(
            "ヘッドの記録は {recorded} 件としていますが、チェーンはイベント {count} で終わっています。末尾のイベントが切り取られています"
        ),
        ChainBreak::HeadReplaced => "ヘッドの記録が指すイベントではありません。末尾のイベントが差し替えられたか、ヘッドの記録が改変されています".to_owned(),
    }
}
