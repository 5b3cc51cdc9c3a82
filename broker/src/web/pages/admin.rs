//! Vendors (add, disable, enable), technicians (add with a one-time enrollment command,
//! disable, enable, unlock, reset) and staff accounts (add or reset through a one-time link,
//! disable, enable). Admins only. Vendor and technician actions are the CLI's commands
//! ([`crate::cli`]), so the checks, sentences and audit events are the same.

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
use crate::web::path::segment;

type Shared = State<Arc<AppState>>;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/technicians",
            get(technicians_page).post(add_technician_form),
        )
        .route(
            "/technicians/{vendor}/{technician}/{action}",
            post(technician_action_form),
        )
        .route("/vendors/{vendor}/{action}", post(vendor_action_form))
        .route("/staff", get(staff_page).post(invite_form))
        .route("/staff/{name}/{action}", post(staff_action_form))
}

fn unavailable(e: impl std::fmt::Display) -> Refused {
    Refused::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// What an admin does to vendors and technicians, from a page or the API. Each is the
/// CLI's command (same checks, same sentences, same audit events), by the member logged in.
pub(crate) enum IdentityAction {
    /// Take on a vendor that has a policy file.
    AddVendor { vendor: String },
    /// Disable (with a reason) or enable a vendor.
    SetVendorEnabled {
        vendor: String,
        enabled: bool,
        reason: String,
    },
    /// Add a technician; the answer holds their one-time enrollment command.
    AddTechnician {
        vendor: String,
        technician: String,
        name: String,
        email: String,
    },
    /// Disable (with a reason) or enable a technician.
    SetTechnicianEnabled {
        vendor: String,
        technician: String,
        enabled: bool,
        reason: String,
    },
    /// Revoke a technician's certificate and secret; the answer holds a new enrollment
    /// command.
    Reset { vendor: String, technician: String },
    /// Unlock after too many wrong one-time passwords.
    Unlock { vendor: String, technician: String },
}

impl IdentityAction {
    /// The action named in a URL path, with the form's or body's reason.
    pub(crate) fn for_technician(
        vendor: String,
        technician: String,
        action: &str,
        reason: Option<String>,
    ) -> Result<IdentityAction, Refused> {
        let reason = reason.unwrap_or_default();
        Ok(match action {
            "unlock" => IdentityAction::Unlock { vendor, technician },
            "reset" => IdentityAction::Reset { vendor, technician },
            "disable" | "enable" => IdentityAction::SetTechnicianEnabled {
                vendor,
                technician,
                enabled: action == "enable",
                reason,
            },
            _ => return Err(Refused::new(StatusCode::NOT_FOUND, "No such action.")),
        })
    }

    /// The action named in a URL path for a vendor.
    pub(crate) fn for_vendor(
        vendor: String,
        action: &str,
        reason: Option<String>,
    ) -> Result<IdentityAction, Refused> {
        Ok(match action {
            "add" => IdentityAction::AddVendor { vendor },
            "disable" | "enable" => IdentityAction::SetVendorEnabled {
                vendor,
                enabled: action == "enable",
                reason: reason.unwrap_or_default(),
            },
            _ => return Err(Refused::new(StatusCode::NOT_FOUND, "No such action.")),
        })
    }

    /// Whether the answer holds a one-time token, to be shown once and set apart.
    fn shows_a_token(&self) -> bool {
        matches!(
            self,
            IdentityAction::AddTechnician { .. } | IdentityAction::Reset { .. }
        )
    }
}

/// Does `action` as the logged-in admin; the answer is the CLI's text.
pub(crate) async fn act(
    state: &AppState,
    ctx: &Ctx,
    action: IdentityAction,
) -> Result<String, Refused> {
    use crate::cli;
    let desk = &state.desk;
    let by = ctx.member.name.as_str();
    let hints = &state.enrollment;
    let result = match action {
        IdentityAction::AddVendor { vendor } => cli::vendor_add(desk, &vendor, by).await,
        IdentityAction::SetVendorEnabled {
            vendor,
            enabled,
            reason,
        } => cli::vendor_set_enabled(desk, &vendor, enabled, &reason, by).await,
        IdentityAction::AddTechnician {
            vendor,
            technician,
            name,
            email,
        } => {
            let add = cli::TechnicianToAdd {
                vendor,
                technician,
                display_name: name,
                email,
                valid_for: crate::identity::DEFAULT_TOKEN_VALIDITY,
            };
            cli::technician_add(desk, &add, hints, by).await
        }
        IdentityAction::SetTechnicianEnabled {
            vendor,
            technician,
            enabled,
            reason,
        } => cli::technician_set_enabled(desk, &vendor, &technician, enabled, &reason, by).await,
        IdentityAction::Reset { vendor, technician } => {
            cli::technician_reset(
                desk,
                &vendor,
                &technician,
                crate::identity::DEFAULT_TOKEN_VALIDITY,
                hints,
                by,
            )
            .await
        }
        IdentityAction::Unlock { vendor, technician } => {
            cli::technician_unlock(desk, &vendor, &technician, by).await
        }
    };
    result.map_err(|e| match e {
        cli::CliError::Input(sentence) => Refused::bad_request(sentence),
        cli::CliError::NoSuchTechnician { .. } => {
            Refused::new(StatusCode::NOT_FOUND, e.to_string())
        }
        other => unavailable(other),
    })
}

/// What the page shows after an action: a sentence, or (once) an enrollment command.
enum Done {
    Sentence(String),
    Token(String),
}

async fn render_technicians(
    state: &AppState,
    ctx: &Ctx,
    done: Option<Done>,
) -> Result<Response, Refused> {
    let lang = ctx.lang;
    let store = state.desk.store();
    let technicians = store.technicians().await.map_err(unavailable)?;
    let vendor_rows = store.vendors().await.map_err(unavailable)?;
    let expiries = store.certificate_expiries().await.map_err(unavailable)?;
    let policies = state.desk.policies();
    let zone = state.desk.zone();
    let mut vendor_ids: Vec<String> = policies.vendors().map(|v| v.id.clone()).collect();
    for row in &vendor_rows {
        if !vendor_ids.contains(&row.vendor) {
            vendor_ids.push(row.vendor.clone());
        }
    }
    vendor_ids.sort();
    let addable: Vec<&String> = vendor_ids
        .iter()
        .filter(|id| {
            policies.vendor(id).is_some()
                && vendor_rows
                    .iter()
                    .any(|row| &row.vendor == *id && row.enabled)
        })
        .collect();
    let csrf = ctx.member.csrf.expose_secret();
    let reason_label = lang.t("Reason", "理由");
    let body = html! {
        @match &done {
            Some(Done::Sentence(text)) => { p.notice role="status" { (text) } }
            Some(Done::Token(text)) => {
                div.notice role="status" {
                    p { (lang.t("Shown only now: give this to the technician by a channel you trust.", "表示は今だけです。信頼できる経路で技術者に渡してください。")) }
                    pre.secret id="enrollment" { (text) }
                }
            }
            None => {}
        }
        h2 { (lang.t("Vendors", "ベンダー")) }
        div.table-wrap { table id="vendors" {
            thead { tr { th { (lang.t("Vendor", "ベンダー")) } th { (lang.t("Name", "名称")) } th { (lang.t("State", "状態")) } th {} } }
            tbody { @for id in &vendor_ids {
                @let row = vendor_rows.iter().find(|row| &row.vendor == id);
                @let policy = policies.vendor(id);
                tr {
                    td { (id) }
                    td { (policy.map(|p| p.name.as_str()).unwrap_or("-")) }
                    td { @match (row, policy) {
                        (None, _) => { (lang.t("not added", "未登録")) }
                        (Some(_), None) => { span.overdue { (lang.t("no policy file", "ポリシーなし")) } }
                        (Some(row), Some(_)) if !row.enabled => { span.overdue { (lang.t("disabled", "無効")) } " " (row.disabled_reason) }
                        _ => { (lang.t("enabled", "有効")) }
                    } }
                    td.actions { @match row {
                        None => {
                            form.inline method="post" action={ "/vendors/" (segment(id)) "/add" } {
                                input type="hidden" name="csrf" value=(csrf);
                                button.plain type="submit" { (lang.t("Add", "登録")) }
                            }
                        }
                        Some(row) if row.enabled => {
                            form.inline method="post" action={ "/vendors/" (segment(id)) "/disable" } {
                                input type="hidden" name="csrf" value=(csrf);
                                input name="reason" required maxlength="500" placeholder=(reason_label) aria-label=(reason_label);
                                button.plain.danger type="submit" { (lang.t("Disable", "無効化")) }
                            }
                        }
                        Some(_) => {
                            form.inline method="post" action={ "/vendors/" (segment(id)) "/enable" } {
                                input type="hidden" name="csrf" value=(csrf);
                                button.plain type="submit" { (lang.t("Enable", "有効化")) }
                            }
                        }
                    } }
                }
            } }
        } }
        h2 { (lang.t("Technicians", "技術者")) }
        div.table-wrap { table id="technicians" {
            thead { tr { th { (lang.t("Vendor", "ベンダー")) } th { (lang.t("Technician", "技術者")) } th { (lang.t("Name", "名前")) } th { (lang.t("State", "状態")) } th { (lang.t("Certificate until", "証明書の期限")) } th { (lang.t("Wrong codes", "誤入力")) } th {} } }
            tbody { @for t in &technicians {
                @let path = format!("/technicians/{}/{}", segment(&t.vendor), segment(&t.technician));
                @let until = expiries.iter().find(|(v, n, _)| v == &t.vendor && n == &t.technician).filter(|_| t.is_enrolled()).map(|(_, _, at)| zone.format(*at));
                tr {
                    td { (t.vendor) } td { (t.technician) } td { (t.display_name) }
                    td { @if !t.enabled { span.overdue { (lang.t("disabled", "無効")) } " " (t.disabled_reason) }
                         @else if t.locked { span.overdue { (lang.t("locked", "ロック中")) } }
                         @else if t.is_enrolled() { (lang.t("enrolled", "登録済み")) }
                         @else { (lang.t("not enrolled", "未登録")) } }
                    td { (until.unwrap_or_else(|| "-".to_owned())) }
                    td { (t.otp_failures) }
                    td.actions {
                        @if t.locked {
                            form.inline method="post" action={ (path) "/unlock" } {
                                input type="hidden" name="csrf" value=(csrf);
                                button.plain type="submit" { (lang.t("Unlock", "ロック解除")) }
                            }
                        }
                        @if t.enabled {
                            form.inline method="post" action={ (path) "/disable" } {
                                input type="hidden" name="csrf" value=(csrf);
                                input name="reason" required maxlength="500" placeholder=(reason_label) aria-label=(reason_label);
                                button.plain.danger type="submit" { (lang.t("Disable", "無効化")) }
                            }
                        } @else {
                            form.inline method="post" action={ (path) "/enable" } {
                                input type="hidden" name="csrf" value=(csrf);
                                button.plain type="submit" { (lang.t("Enable", "有効化")) }
                            }
                        }
                        form.inline method="post" action={ (path) "/reset" } {
                            input type="hidden" name="csrf" value=(csrf);
                            button.plain type="submit" { (lang.t("Reset (new token)", "再登録（新トークン）")) }
                        }
                    }
                }
            } }
        } }
        @if technicians.is_empty() { p.muted { (lang.t("No technicians yet.", "技術者はまだいません。")) } }
        h2 { (lang.t("Add a technician", "技術者を追加")) }
        @if addable.is_empty() {
            p.muted { (lang.t("Add a vendor first (it needs a policy file).", "先にベンダーを登録してください（ポリシーファイルが必要です）。")) }
        } @else {
            form.stack method="post" action="/technicians" id="add-technician" {
                input type="hidden" name="csrf" value=(csrf);
                label { (lang.t("Vendor", "ベンダー")) select name="vendor" { @for id in &addable { option value=(id) { (id) } } } }
                label { (lang.t("Technician id (a-z, 0-9, . _ -)", "技術者ID（英小文字・数字・. _ -）")) input name="technician" required maxlength="63" pattern="[a-z0-9][a-z0-9._-]*"; }
                label { (lang.t("Full name", "氏名")) input name="name" required maxlength="200"; }
                label { (lang.t("Email", "メール")) input name="email" type="email" maxlength="200"; }
                button type="submit" { (lang.t("Add and show the enrollment command", "追加して登録コマンドを表示")) }
            }
        }
    };
    Ok(member_page(
        state,
        ctx,
        lang.t("Vendors and technicians", "ベンダーと技術者"),
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

#[derive(Deserialize)]
pub(crate) struct ReasonForm {
    csrf: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct AddTechnicianForm {
    csrf: Option<String>,
    vendor: String,
    technician: String,
    name: String,
    email: Option<String>,
}

/// Does `action` for the admin behind `headers` (CSRF checked) and shows the page again.
async fn act_and_show(
    state: &AppState,
    headers: &HeaderMap,
    csrf: Option<&str>,
    action: impl FnOnce() -> Result<IdentityAction, Refused>,
) -> Result<Response, Refused> {
    let ctx = state.require(headers, &[Role::Admin]).await?;
    state.check_csrf(&ctx, csrf).await?;
    let action = action()?;
    let shows_a_token = action.shows_a_token();
    let text = act(state, &ctx, action).await?;
    let done = if shows_a_token {
        Done::Token(text)
    } else {
        Done::Sentence(text)
    };
    render_technicians(state, &ctx, Some(done)).await
}

async fn technician_action_form(
    State(state): Shared,
    headers: HeaderMap,
    Path((vendor, technician, action)): Path<(String, String, String)>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let result = act_and_show(&state, &headers, form.csrf.as_deref(), || {
        IdentityAction::for_technician(vendor, technician, &action, form.reason)
    })
    .await;
    or_refusal(result, &headers)
}

async fn vendor_action_form(
    State(state): Shared,
    headers: HeaderMap,
    Path((vendor, action)): Path<(String, String)>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let result = act_and_show(&state, &headers, form.csrf.as_deref(), || {
        IdentityAction::for_vendor(vendor, &action, form.reason)
    })
    .await;
    or_refusal(result, &headers)
}

async fn add_technician_form(
    State(state): Shared,
    headers: HeaderMap,
    Form(form): Form<AddTechnicianForm>,
) -> Response {
    let result = act_and_show(&state, &headers, form.csrf.as_deref(), || {
        Ok(IdentityAction::AddTechnician {
            vendor: form.vendor,
            technician: form.technician,
            name: form.name,
            email: form.email.unwrap_or_default(),
        })
    })
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
    let (lockout, now, zone) = (state.staff.lockout(), state.desk.now(), state.desk.zone());
    let body = html! {
        @if let Some(done) = done { div.notice role="status" { (done) } }
        div.table-wrap { table {
            thead { tr { th { (lang.t("Name", "名前")) } th { (lang.t("Roles", "役割")) } th { (lang.t("State", "状態")) } th {} } }
            tbody { @for m in &members { tr {
                td { (m.name) } td { (m.roles) }
                td { @if m.disabled { (lang.t("disabled", "無効")) }
                     @else { @match m.locked_until(lockout, now) {
                         None => { (lang.t("active", "有効")) }
                         Some(None) => { span.overdue { (lang.t("locked until reset", "ロック中（再設定まで）")) } }
                         Some(Some(end)) => { span.overdue { (lang.t("locked until ", "ロック中: ")) (zone.format(end)) } }
                     } } }
                td.actions {
                    @for (action, label) in [("reset", lang.t("Reset (new link)", "再設定リンク")), (if m.disabled { "enable" } else { "disable" }, if m.disabled { lang.t("Enable", "有効化") } else { lang.t("Disable", "無効化") })] {
                        form.inline method="post" action={ "/staff/" (segment(&m.name)) "/" (action) } {
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
                // Its live-update streams end now, not at their next look.
                state
                    .sessions_changed
                    .send_modify(|n| *n = n.wrapping_add(1));
                html! { (name) ": " (action) }
            }
            _ => return Err(Refused::new(StatusCode::NOT_FOUND, "No such action.")),
        };
        render_staff(&state, &ctx, Some(notice)).await
    }
    .await;
    or_refusal(result, &headers)
}
