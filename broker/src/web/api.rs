//! The JSON API: the pages' actions for the CLI and for integrations, with the same
//! authentication (log in with `POST /api/login`, keep the cookie, send the returned CSRF
//! token as `X-CSRF-Token` on every POST) and the same role checks. Errors are
//! `{"error": "one sentence"}` with a fitting status.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Ctx, Peer, Refused};
use super::pages::{admin, audit, desk};
use crate::staff::Role;
use crate::store::RequestFilter;

type Shared = State<Arc<AppState>>;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/login", post(login))
        .route("/requests", get(requests))
        .route("/requests/{id}/approve", post(approve))
        .route("/requests/{id}/deny", post(deny))
        .route("/sessions/{id}/revoke", post(revoke))
        .route("/sessions/{id}/extend", post(extend))
        .route("/lockdown", get(lockdown).post(set_lockdown))
        .route("/technicians", post(add_technician))
        .route(
            "/technicians/{vendor}/{technician}/{action}",
            post(technician_action),
        )
        .route("/vendors/{vendor}/{action}", post(vendor_action))
        .route("/audit/events", get(events))
        .route("/audit/export", post(export))
        .route("/audit/reviews", post(review))
        .route("/audit/verify", get(verify))
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

fn done(message: String) -> Response {
    Json(json!({ "done": message })).into_response()
}

/// The member, with the role, and for a POST the CSRF token from `X-CSRF-Token`.
async fn member(
    state: &AppState,
    headers: &HeaderMap,
    roles: &[Role],
    post: bool,
) -> Result<Ctx, Refused> {
    let ctx = state.require(headers, roles).await?;
    if post {
        let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        state.check_csrf(&ctx, sent).await?;
    }
    Ok(ctx)
}

#[derive(Deserialize)]
struct LoginBody {
    name: String,
    password: String,
    code: String,
}

async fn login(
    State(state): Shared,
    peer: Option<Extension<Peer>>,
    Json(body): Json<LoginBody>,
) -> Response {
    let peer = peer.map(|Extension(peer)| peer);
    let result = async {
        let cookie = super::pages::do_login(&state, peer, &body.name, &body.password, &body.code).await?;
        // The new session's token, read back through the cookie just made.
        let value = cookie.split(';').next().unwrap_or("").to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            value.parse().map_err(|_| Refused::new(StatusCode::INTERNAL_SERVER_ERROR, "cookie"))?,
        );
        let ctx = state.require(&headers, &Role::ALL).await?;
        let roles: Vec<&str> = ctx.member.roles.iter().map(Role::as_str).collect();
        Ok::<_, Refused>(
            (
                [(header::SET_COOKIE, cookie)],
                Json(json!({ "name": ctx.member.name, "roles": roles, "csrf": ctx.member.csrf.expose_secret() })),
            )
                .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn requests(State(state): Shared, headers: HeaderMap) -> Response {
    let result = async {
        member(&state, &headers, &[Role::Approver], false).await?;
        let records = state
            .desk
            .requests(&RequestFilter {
                states: vec!["requested", "approved", "active"],
                limit: 100,
                ..RequestFilter::default()
            })
            .await
            .map_err(desk::desk_refusal)?;
        let list: Vec<Value> = records
            .iter()
            .map(|r| {
                json!({
                    "id": r.id.as_str(), "state": r.stage.state_word(), "vendor": r.vendor,
                    "technician": r.technician, "targets": r.targets, "purpose": r.purpose,
                    "ticket": r.ticket, "wanted_secs": r.wanted.as_secs(),
                    "created_at": crate::audit::timestamp(r.created_at),
                    "end_at": r.end_at.map(crate::audit::timestamp),
                    "approvals": r.approvals.iter().map(|a| a.approver.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok::<_, Refused>(Json(json!({ "requests": list })).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct UntilBody {
    minutes: Option<u64>,
    until: Option<String>,
}

async fn approve(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<UntilBody>,
) -> Response {
    let result = async {
        let ctx = member(&state, &headers, &[Role::Approver], true).await?;
        let until = desk::until_of(&state, body.minutes, body.until.as_deref())?;
        desk::approve(&state, &ctx, &id, until).await
    }
    .await;
    result.map(done).unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct ReasonBody {
    #[serde(default)]
    reason: String,
}

async fn deny(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<ReasonBody>,
) -> Response {
    let result = async {
        let ctx = member(&state, &headers, &[Role::Approver], true).await?;
        desk::deny(&state, &ctx, &id, &body.reason).await
    }
    .await;
    result.map(done).unwrap_or_else(IntoResponse::into_response)
}

async fn revoke(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<ReasonBody>,
) -> Response {
    let result = async {
        let ctx = member(&state, &headers, &[Role::Approver], true).await?;
        desk::revoke(&state, &ctx, &id, &body.reason).await
    }
    .await;
    result.map(done).unwrap_or_else(IntoResponse::into_response)
}

async fn extend(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<UntilBody>,
) -> Response {
    let result = async {
        let ctx = member(&state, &headers, &[Role::Approver], true).await?;
        let until = desk::until_of(&state, body.minutes, body.until.as_deref())?;
        desk::extend(&state, &ctx, &id, until).await
    }
    .await;
    result.map(done).unwrap_or_else(IntoResponse::into_response)
}

async fn lockdown(State(state): Shared, headers: HeaderMap) -> Response {
    let result = async {
        member(
            &state,
            &headers,
            &[Role::Approver, Role::Admin, Role::Auditor],
            false,
        )
        .await?;
        let current = state.desk.lockdown().await.map_err(desk::desk_refusal)?;
        Ok::<_, Refused>(
            Json(json!({
                "active": current.active, "reason": current.reason, "by": current.by,
                "since": crate::audit::timestamp(current.since),
            }))
            .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct LockdownBody {
    active: bool,
    #[serde(default)]
    reason: String,
}

async fn set_lockdown(
    State(state): Shared,
    headers: HeaderMap,
    Json(body): Json<LockdownBody>,
) -> Response {
    let result = async {
        let ctx = member(&state, &headers, &[Role::Approver, Role::Admin], true).await?;
        desk::set_lockdown(&state, &ctx, body.active, &body.reason).await
    }
    .await;
    result.map(done).unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize, Default)]
struct OptionalReason {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct AddTechnicianBody {
    vendor: String,
    technician: String,
    name: String,
    #[serde(default)]
    email: String,
}

async fn identity_action(
    state: &AppState,
    headers: &HeaderMap,
    action: impl FnOnce() -> Result<admin::IdentityAction, Refused>,
) -> Response {
    let result = async {
        let ctx = member(state, headers, &[Role::Admin], true).await?;
        admin::act(state, &ctx, action()?).await
    }
    .await;
    result.map(done).unwrap_or_else(IntoResponse::into_response)
}

async fn technician_action(
    State(state): Shared,
    headers: HeaderMap,
    Path((vendor, technician, action)): Path<(String, String, String)>,
    body: Option<Json<OptionalReason>>,
) -> Response {
    let reason = body.and_then(|Json(body)| body.reason);
    identity_action(&state, &headers, || {
        admin::IdentityAction::for_technician(vendor, technician, &action, reason)
    })
    .await
}

async fn vendor_action(
    State(state): Shared,
    headers: HeaderMap,
    Path((vendor, action)): Path<(String, String)>,
    body: Option<Json<OptionalReason>>,
) -> Response {
    let reason = body.and_then(|Json(body)| body.reason);
    identity_action(&state, &headers, || {
        admin::IdentityAction::for_vendor(vendor, &action, reason)
    })
    .await
}

async fn add_technician(
    State(state): Shared,
    headers: HeaderMap,
    Json(body): Json<AddTechnicianBody>,
) -> Response {
    identity_action(&state, &headers, || {
        Ok(admin::IdentityAction::AddTechnician {
            vendor: body.vendor,
            technician: body.technician,
            name: body.name,
            email: body.email,
        })
    })
    .await
}

async fn events(
    State(state): Shared,
    headers: HeaderMap,
    Query(filters): Query<audit::Filters>,
) -> Response {
    let result = async {
        member(&state, &headers, &[Role::Auditor], false).await?;
        let events = audit::events(&state, &filters).await?;
        let lines: Vec<Value> = events
            .iter()
            .filter_map(|stored| serde_json::to_value(crate::audit::ExportLine::of(stored)).ok())
            .collect();
        Ok::<_, Refused>(Json(json!({ "events": lines })).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct ExportBody {
    format: String,
    #[serde(flatten)]
    filters: audit::Filters,
}

async fn export(
    State(state): Shared,
    headers: HeaderMap,
    Json(body): Json<ExportBody>,
) -> Response {
    let result = async {
        let ctx = member(&state, &headers, &[Role::Auditor], true).await?;
        audit::export(&state, &ctx, &body.format, &body.filters).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct ReviewBody {
    session: String,
    comment: String,
}

async fn review(
    State(state): Shared,
    headers: HeaderMap,
    Json(body): Json<ReviewBody>,
) -> Response {
    let result = async {
        let ctx = member(&state, &headers, &[Role::Auditor], true).await?;
        audit::review(&state, &ctx, &body.session, &body.comment).await
    }
    .await;
    result.map(done).unwrap_or_else(IntoResponse::into_response)
}

async fn verify(State(state): Shared, headers: HeaderMap) -> Response {
    let result = async {
        member(&state, &headers, &[Role::Auditor], false).await?;
        let verdict = crate::cli::check_chain(&state.desk, None).await;
        let body = match verdict {
            Ok(intact) => json!({
                "intact": true,
                "count": intact.count,
                "head": intact.head,
                "status": intact.to_string(),
            }),
            Err(error) => {
                let mut body = json!({ "intact": false, "status": error.to_string() });
                if let crate::cli::AuditError::Broken { seq, .. } = error {
                    body["broken_at"] = json!(seq);
                }
                body
            }
        };
        Ok::<_, Refused>(Json(body).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
