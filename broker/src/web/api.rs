//! The JSON API: the pages' actions for the CLI and for integrations, with the same
//! authentication (log in with `POST /api/login`, keep the cookie, send the returned CSRF
//! token as `X-CSRF-Token` on every POST, end with `POST /api/logout`) and the same role
//! checks. Every error is `{"error": "one sentence"}` with a fitting status: the handlers'
//! refusals, and axum's own answers too (an unknown path 404, a wrong method 405 with
//! `Allow`, a body that is not JSON 415, a body or path that does not fit 400), which
//! [`json_errors`] rewrites.

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
use crate::staff::{Duty, Role};
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
        .route("/logout", post(logout))
        .fallback(no_such_call)
        // After every route: it is set on the routes there are.
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::map_response(json_errors))
}

async fn no_such_call() -> Refused {
    Refused::new(
        StatusCode::NOT_FOUND,
        "There is no such API call; the README's API section lists them.",
    )
}

async fn wrong_method(method: axum::http::Method) -> Refused {
    // axum adds the `Allow` header naming the methods the path takes.
    Refused::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("This API call does not take {method}; the Allow header says what it takes."),
    )
}

/// Rewrites an error answer that is not JSON (an extractor's rejection: a body that is not
/// JSON, a field of the wrong type or out of its range, a path that does not parse) into
/// `{"error": …}`, keeping its headers. A body that does not fit (axum's 422) is a 400.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let detail = axum::body::to_bytes(body, 4096)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let (status, sentence) = match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            status,
            "Send the body as JSON, with the header Content-Type: application/json.".to_owned(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            status,
            "The body is too large for this API call; send only the fields it takes.".to_owned(),
        ),
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => (
            StatusCode::BAD_REQUEST,
            format!(
                "The request does not fit this API call ({}); send the fields it takes, numbers as whole numbers in their range.",
                detail.trim_end_matches('.')
            ),
        ),
        _ if detail.is_empty() => (
            status,
            status
                .canonical_reason()
                .unwrap_or("The request failed")
                .to_owned(),
        ),
        _ => (status, detail),
    };
    parts.status = status;
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut response = Refused::new(status, sentence).into_response();
    for (name, value) in parts.headers.iter() {
        if !response.headers().contains_key(name) {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        self.headers_onto(&mut response);
        response
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

async fn logout(State(state): Shared, headers: HeaderMap) -> Response {
    let result =
        async {
            let ctx = member(&state, &headers, &Role::ALL, true).await?;
            super::pages::end_session(&state, &ctx).await?;
            Ok::<_, Refused>(
            (
                [(header::SET_COOKIE, super::auth::clear_cookie(super::SESSION_COOKIE))],
                Json(json!({ "done": "Logged out; this session and its live updates are over." })),
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
                    "connection_lost_at": r.detached_at.map(crate::audit::timestamp),
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
    /// Why, on the record (the hospital's policy may require it).
    #[serde(default)]
    comment: String,
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
        desk::approve(&state, &ctx, &id, until, &body.comment).await
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
        desk::extend(&state, &ctx, &id, until, &body.comment).await
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
        let ctx = member(&state, &headers, Duty::LockdownOn.roles(), true).await?;
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
        let ctx = member(state, headers, Duty::Identities.roles(), true).await?;
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
            // The chain holds together; a rewrite that re-computed every hash is found only
            // against the signed checkpoints.
            Ok(intact) => {
                match crate::cli::audit_verify(&state.desk, None, &state.checkpoints).await {
                    Ok(checked) => json!({
                        "intact": true,
                        "count": intact.count,
                        "head": intact.head,
                        "status": intact.to_string(),
                        "checkpoints": checked,
                    }),
                    Err(tampered) => json!({ "intact": false, "status": tampered.to_string() }),
                }
            }
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
