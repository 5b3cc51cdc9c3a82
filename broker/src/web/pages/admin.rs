//! Technicians (list, unlock) and staff accounts (add or reset through a one-time link,
//! disable, enable). Admins only.
//!
//! Adding technicians (with an enrollment token), disabling, enabling and resetting them
//! come with the enrollment work in `identity`; until then they are done with the CLI.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::html;
use serde::Deserialize;

use super::{member_page, or_refusal};
use crate::staff::{Role, Roles};
use crate::web::AppState;
use crate::web::auth::{Ctx, Refused};

type Shared = State<Arc<AppState>>;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/technicians", get(technicians_page))
        .route(
            "/technicians/{vendor}/{technician}/unlock",
            post(unlock_form),
        )
        .route("/staff", get(staff_page).post(invite_form))
        .route("/staff/{name}/{action}", post(staff_action_form))
}

fn unavailable(e: impl std::fmt::Display) -> Refused {
    Refused::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

async fn render_technicians(
    state: &AppState,
    ctx: &Ctx,
    done: Option<&str>,
) -> Result<Response, Refused> {
    let lang = ctx.lang;
    let technicians = state
        .desk
        .store()
        .technicians()
        .await
        .map_err(unavailable)?;
    let csrf = ctx.member.csrf.expose_secret();
    let body = html! {
        (crate::web::layout::notice(done))
        div.table-wrap { table {
            thead { tr { th { (lang.t("Vendor", "ベンダー")) } th { (lang.t("Technician", "技術者")) } th { (lang.t("Locked", "ロック")) } th { (lang.t("Wrong codes", "誤入力")) } th {} } }
            tbody { @for t in &technicians { tr {
                td { (t.vendor) } td { (t.technician) }
                td { @if t.locked { span.overdue { (lang.t("locked", "ロック中")) } } @else { "-" } }
                td { (t.otp_failures) }
                td { @if t.locked {
                    form.inline method="post" action={ "/technicians/" (t.vendor) "/" (t.technician) "/unlock" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button.plain type="submit" { (lang.t("Unlock", "ロック解除")) }
                    }
                } }
            } } }
        } }
        @if technicians.is_empty() { p.muted { (lang.t("No technicians yet.", "技術者はまだいません。")) } }
    };
    Ok(member_page(
        state,
        ctx,
        lang.t("Technicians", "技術者"),
        body,
    ))
}

async fn technicians_page(State(state): Shared, headers: HeaderMap) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Admin]).await?;
        render_technicians(&state, &ctx, None).await
    }
    .await;
    or_refusal(result, &headers)
}

#[derive(Deserialize)]
pub(crate) struct CsrfOnly {
    csrf: Option<String>,
}

pub(crate) async fn unlock(
    state: &AppState,
    ctx: &Ctx,
    vendor: &str,
    technician: &str,
) -> Result<String, Refused> {
    crate::cli::technician_unlock(&state.desk, vendor, technician, &ctx.member.name)
        .await
        .map_err(|e| match e {
            crate::cli::CliError::NoSuchTechnician { .. } => {
                Refused::new(StatusCode::NOT_FOUND, e.to_string())
            }
            other => unavailable(other),
        })
}

async fn unlock_form(
    State(state): Shared,
    headers: HeaderMap,
    Path((vendor, technician)): Path<(String, String)>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Admin]).await?;
        state.check_csrf(&ctx, form.csrf.as_deref()).await?;
        let done = unlock(&state, &ctx, &vendor, &technician).await?;
        render_technicians(&state, &ctx, Some(&done)).await
    }
    .await;
    or_refusal(result, &headers)
}

async fn render_staff(
    state: &AppState,
    ctx: &Ctx,
    done: Option<maud::Markup>,
) -> Result<Response, Refused> {
    let lang = ctx.lang;
    let members = state.staff.members().await.map_err(unavailable)?;
    let csrf = ctx.member.csrf.expose_secret();
    let body = html! {
        @if let Some(done) = done { div.notice role="status" { (done) } }
        div.table-wrap { table {
            thead { tr { th { (lang.t("Name", "名前")) } th { (lang.t("Roles", "役割")) } th { (lang.t("State", "状態")) } th {} } }
            tbody { @for m in &members { tr {
                td { (m.name) } td { (m.roles) }
                td { @if m.disabled { (lang.t("disabled", "無効")) } @else if m.locked { span.overdue { (lang.t("locked", "ロック中")) } } @else { (lang.t("active", "有効")) } }
                td.actions {
                    @for (action, label) in [("reset", lang.t("Reset (new link)", "再設定リンク")), (if m.disabled { "enable" } else { "disable" }, if m.disabled { lang.t("Enable", "有効化") } else { lang.t("Disable", "無効化") })] {
                        form.inline method="post" action={ "/staff/" (m.name) "/" (action) } {
                            input type="hidden" name="csrf" value=(csrf);
                            button.plain type="submit" { (label) }
                        }
                    }
                }
            } } }
        } }
        h2 { (lang.t("Add a staff member", "職員を追加")) }
        form.stack method="post" action="/staff" {
            input type="hidden" name="csrf" value=(csrf);
            label { (lang.t("Name", "名前")) input name="name" required maxlength="64"; }
            @for role in Role::ALL {
                label { input type="checkbox" name={ "role_" (role.as_str()) } value="yes"; (role.as_str()) }
            }
            button type="submit" { (lang.t("Make a one-time link", "ワンタイムリンクを作成")) }
        }
    };
    Ok(member_page(
        state,
        ctx,
        lang.t("Staff accounts", "職員アカウント"),
        body,
    ))
}

async fn staff_page(State(state): Shared, headers: HeaderMap) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Admin]).await?;
        render_staff(&state, &ctx, None).await
    }
    .await;
    or_refusal(result, &headers)
}

fn link_notice(ctx: &Ctx, name: &str, token: &str) -> maud::Markup {
    html! {
        p { (ctx.lang.t("Give this one-time link to ", "このワンタイムリンクを次の人に渡してください: ")) strong { (name) } (ctx.lang.t(" (valid 24 hours, shown only now):", "（24時間有効、表示は今だけ）")) }
        p.secret id="invite-link" { "/setup/" (token) }
    }
}

#[derive(Deserialize)]
pub(crate) struct InviteForm {
    csrf: Option<String>,
    name: String,
    role_approver: Option<String>,
    role_admin: Option<String>,
    role_auditor: Option<String>,
}

async fn invite_form(
    State(state): Shared,
    headers: HeaderMap,
    Form(form): Form<InviteForm>,
) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Admin]).await?;
        state.check_csrf(&ctx, form.csrf.as_deref()).await?;
        let roles = Roles::new(
            [
                (Role::Approver, &form.role_approver),
                (Role::Admin, &form.role_admin),
                (Role::Auditor, &form.role_auditor),
            ]
            .into_iter()
            .filter(|(_, ticked)| ticked.is_some())
            .map(|(role, _)| role),
        );
        let token = state
            .staff
            .invite(&form.name, &roles, &ctx.member.name)
            .await
            .map_err(|e| Refused::bad_request(e.to_string()))?;
        let notice = link_notice(&ctx, form.name.trim(), token.expose_secret());
        render_staff(&state, &ctx, Some(notice)).await
    }
    .await;
    or_refusal(result, &headers)
}

async fn staff_action_form(
    State(state): Shared,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let result = async {
        let ctx = state.require(&headers, &[Role::Admin]).await?;
        state.check_csrf(&ctx, form.csrf.as_deref()).await?;
        let notice = match action.as_str() {
            "reset" => {
                let member = state
                    .staff
                    .store()
                    .staff_member(&name)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| {
                        Refused::new(StatusCode::NOT_FOUND, "There is no such account.")
                    })?;
                let token = state
                    .staff
                    .invite(&name, &Roles::decode(&member.roles), &ctx.member.name)
                    .await
                    .map_err(|e| Refused::bad_request(e.to_string()))?;
                link_notice(&ctx, &name, token.expose_secret())
            }
            "disable" | "enable" => {
                state
                    .staff
                    .set_disabled(&name, action == "disable", &ctx.member.name)
                    .await
                    .map_err(|e| Refused::bad_request(e.to_string()))?;
                html! { (name) ": " (action) }
            }
            _ => return Err(Refused::new(StatusCode::NOT_FOUND, "No such action.")),
        };
        render_staff(&state, &ctx, Some(notice)).await
    }
    .await;
    or_refusal(result, &headers)
}
