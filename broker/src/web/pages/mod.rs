//! The HTML pages and their forms.
//!
//! # Layout
//!
//! - this file: routes, login, logout, one-time links (password, then the new
//!   authenticator's confirming code), the language switch, static files, server-sent events;
//! - `desk`: pending requests, live sessions, lockdown (and the actions the API shares);
//! - `admin`: technicians and staff accounts;
//! - `audit`: events, one session's timeline, the review queue, export, chain status;
//! - `status`: the queue, the audit head and the senders of webhook and syslog (admins, auditors).

pub(crate) mod admin;
pub(crate) mod audit;
pub(crate) mod desk;
pub(crate) mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::html;
use serde::Deserialize;

use super::AppState;
use super::auth::{
    Ctx, LANG_COOKIE, LOGIN_CSRF_COOKIE, Peer, Refused, SESSION_COOKIE, clear_cookie, cookie,
    set_cookie,
};
use super::i18n::Lang;
use super::layout::{SCRIPT, STYLE, page, refusal_page, respond};
use super::path::segment;
use crate::staff::{NewAuthenticator, Role, StaffError, base32, random_token, same_secret};

type Shared = State<Arc<AppState>>;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/setup/{token}", get(setup_page).post(setup))
        .route("/setup/{token}/confirm", post(confirm_setup))
        .route("/lang/{lang}", get(switch_lang))
        .route("/static/style.css", get(style))
        .route("/static/app.js", get(script))
        .route("/events", get(events))
        .merge(desk::routes())
        .merge(admin::routes())
        .merge(audit::routes())
        .merge(status::routes())
        .fallback(no_such_page)
        .layer(axum::middleware::from_fn(page_errors))
}

async fn no_such_page(headers: HeaderMap) -> Response {
    refusal_page(
        Refused::new(StatusCode::NOT_FOUND, "There is no such page."),
        Lang::of(&headers),
    )
}

/// Rewrites axum's own plain-text error answers (a form that does not fit, a wrong method)
/// into a page in the frame, keeping their headers (`Allow`). A form that does not fit
/// (axum's 422) is a 400.
async fn page_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let lang = Lang::of(request.headers());
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_none_or(|value| value.starts_with("text/plain"));
    if !plain || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let detail = axum::body::to_bytes(body, 4096)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let refused = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            Refused::bad_request(format!(
                "{} ({}); reload the page and try again.",
                lang.t(
                    "The form could not be used",
                    "フォームの内容を使えませんでした"
                ),
                detail.trim_end_matches('.')
            ))
        }
        StatusCode::METHOD_NOT_ALLOWED => Refused::new(
            status,
            lang.t(
                "This page does not take that kind of request; open it from the menu.",
                "このページはその種類の要求を受け付けません。メニューから開いてください。",
            ),
        ),
        _ if detail.is_empty() => Refused::new(
            status,
            status.canonical_reason().unwrap_or("The request failed"),
        ),
        _ => Refused::new(status, detail),
    };
    let mut page = refusal_page(refused, lang);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && !page.headers().contains_key(name)
        {
            page.headers_mut().insert(name.clone(), value.clone());
        }
    }
    page
}

/// Renders `result`, or the refusal as a page.
pub(crate) fn or_refusal(result: Result<Response, Refused>, headers: &HeaderMap) -> Response {
    result.unwrap_or_else(|refused| refusal_page(refused, Lang::of(headers)))
}

/// The frame for a logged-in member's page.
pub(crate) fn member_page(
    state: &AppState,
    ctx: &Ctx,
    title: &str,
    body: maud::Markup,
) -> Response {
    let lockdown = state.live.borrow().lockdown;
    respond(
        StatusCode::OK,
        page(Some(ctx), ctx.lang, lockdown, title, body),
    )
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        SCRIPT,
    )
        .into_response()
}

async fn home(State(state): Shared, headers: HeaderMap) -> Response {
    let target = match state.member(&headers).await {
        Ok(Some(ctx)) if ctx.member.roles.has(Role::Approver) => "/requests",
        Ok(Some(ctx)) if ctx.member.roles.has(Role::Admin) => "/staff",
        Ok(Some(ctx)) if ctx.member.roles.has(Role::Auditor) => "/audit",
        _ => "/login",
    };
    (StatusCode::SEE_OTHER, [(header::LOCATION, target)]).into_response()
}

async fn switch_lang(Path(lang): Path<String>) -> Response {
    let lang = Lang::parse(&lang).unwrap_or(Lang::En);
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (
                header::SET_COOKIE,
                set_cookie(
                    LANG_COOKIE,
                    lang.code(),
                    Some(Duration::from_secs(365 * 86400)),
                ),
            ),
        ],
    )
        .into_response()
}

fn login_form(lang: Lang, csrf: &str, error: Option<&str>) -> maud::Markup {
    html! {
        @if let Some(error) = error { p.error role="alert" { (error) } }
        form.stack method="post" action="/login" {
            input type="hidden" name="csrf" value=(csrf);
            label { (lang.t("Name", "名前")) input name="name" autocomplete="username" required; }
            label { (lang.t("Password", "パスワード")) input type="password" name="password" autocomplete="current-password" required; }
            label { (lang.t("One-time code", "ワンタイムコード")) input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]{6,7}" required; }
            button type="submit" { (lang.t("Log in", "ログイン")) }
        }
    }
}

/// The login page, with a fresh token for its form (double-submitted: cookie and field).
fn login_response(lang: Lang, status: StatusCode, error: Option<&str>) -> Response {
    let Ok(csrf) = random_token() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no random numbers").into_response();
    };
    let body = login_form(lang, csrf.expose_secret(), error);
    let mut response = respond(
        status,
        page(
            None,
            lang,
            false,
            lang.t("Staff login", "職員ログイン"),
            body,
        ),
    );
    if let Ok(value) = set_cookie(LOGIN_CSRF_COOKIE, csrf.expose_secret(), None).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn login_page(headers: HeaderMap) -> Response {
    login_response(Lang::of(&headers), StatusCode::OK, None)
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    csrf: Option<String>,
    name: String,
    password: String,
    code: String,
}

async fn login(
    State(state): Shared,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = Lang::of(&headers);
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    let sent = form.csrf.as_deref().unwrap_or("");
    if expected.is_empty() || !same_secret(&expected, sent) {
        return login_response(
            lang,
            StatusCode::FORBIDDEN,
            Some(lang.t(
                "The login form was out of date; try again.",
                "ログイン画面の有効期限が切れました。もう一度入力してください。",
            )),
        );
    }
    let peer = peer.map(|Extension(peer)| peer);
    match do_login(&state, peer, &form.name, &form.password, &form.code).await {
        Ok(cookie) => (
            StatusCode::SEE_OTHER,
            // Appended, not inserted: both cookies must reach the browser.
            axum::response::AppendHeaders([
                (header::LOCATION, "/".to_owned()),
                (header::SET_COOKIE, cookie),
                (header::SET_COOKIE, clear_cookie(LOGIN_CSRF_COOKIE)),
            ]),
        )
            .into_response(),
        Err(refused) => {
            let mut response = login_response(lang, refused.status, Some(&refused.message));
            refused.headers_onto(&mut response);
            response
        }
    }
}

/// Logs in and returns the `Set-Cookie` value of the new session (a new id every time).
pub(crate) async fn do_login(
    state: &AppState,
    peer: Option<Peer>,
    name: &str,
    password: &str,
    code: &str,
) -> Result<String, Refused> {
    if !state.allow_login_attempt(peer) {
        return Err(Refused::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many login attempts from this address; wait a minute and try again.",
        ));
    }
    let from = peer
        .map(|Peer(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "-".to_owned());
    match state.staff.login(name, password, code, &from).await {
        Ok(session) => Ok(set_cookie(
            SESSION_COOKIE,
            session.cookie.expose_secret(),
            None,
        )),
        Err(failed @ StaffError::LoginFailed { .. }) => {
            Err(Refused::new(StatusCode::UNAUTHORIZED, failed.to_string()))
        }
        Err(too_soon @ StaffError::TooSoon { wait }) => Err(Refused::new(
            StatusCode::TOO_MANY_REQUESTS,
            too_soon.to_string(),
        )
        .retry_after(crate::staff::whole_seconds(wait))),
        Err(other) => Err(Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            other.to_string(),
        )),
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    csrf: Option<String>,
}

/// Ends `ctx`'s browser session (recorded as a logout) and its live-update streams.
pub(crate) async fn end_session(state: &AppState, ctx: &Ctx) -> Result<(), Refused> {
    state
        .staff
        .logout(&ctx.cookie, &ctx.member.name)
        .await
        .map_err(|e| Refused::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    state
        .sessions_changed
        .send_modify(|n| *n = n.wrapping_add(1));
    Ok(())
}

async fn logout(State(state): Shared, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    let result = async {
        let Some(ctx) = state.member(&headers).await? else {
            return Ok((StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response());
        };
        state.check_csrf(&ctx, form.csrf.as_deref()).await?;
        end_session(&state, &ctx).await?;
        Ok((
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/login".to_owned()),
                (header::SET_COOKIE, clear_cookie(SESSION_COOKIE)),
            ],
        )
            .into_response())
    }
    .await;
    or_refusal(result, &headers)
}

async fn setup_page(
    State(state): Shared,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let lang = Lang::of(&headers);
    let title = lang.t("Set up your account", "アカウントの設定");
    let invite = match state.staff.invite_for(&token).await {
        Ok(invite) => invite,
        Err(e) => return refusal_page(Refused::new(StatusCode::NOT_FOUND, e.to_string()), lang),
    };
    let body = html! {
        p {
            (lang.t("Roles: ", "役割: ")) (invite.roles)
        }
        form.stack method="post" action={ "/setup/" (segment(&token)) } {
            @if invite.name.is_empty() {
                label { (lang.t("Your name (what your actions are recorded under)", "名前（操作の記録に使われます）")) input name="name" autocomplete="username" required; }
            } @else {
                p { (lang.t("Account: ", "アカウント: ")) strong { (invite.name) } }
                input type="hidden" name="name" value=(invite.name);
            }
            label { (lang.t("Password (at least 13 characters)", "パスワード（13文字以上）")) input type="password" name="password" autocomplete="new-password" minlength="13" required; }
            label { (lang.t("Password again", "パスワード（確認）")) input type="password" name="repeated" autocomplete="new-password" minlength="13" required; }
            button type="submit" { (lang.t("Next: add the authenticator app", "次へ: 認証アプリの登録")) }
        }
    };
    respond(StatusCode::OK, page(None, lang, false, title, body))
}

#[derive(Deserialize)]
pub(crate) struct SetupForm {
    name: String,
    password: String,
    repeated: String,
}

/// The new authenticator to add (QR code, URI, key typed by hand) and the form for the code
/// that confirms it; `error` says why it is shown again.
fn confirm_page(
    lang: Lang,
    token: &str,
    shown: &NewAuthenticator,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let body = html! {
        @if let Some(error) = error { p.error role="alert" id="setup-error" { (error) } }
        p { (lang.t(
            "Add this one-time-password secret to your authenticator app, then type the 6-digit code the app shows for it. Your login is made (or, for a reset, replaces the old one) only once that code is right; until then nothing has changed.",
            "このワンタイムパスワードの秘密鍵を認証アプリに登録し、アプリに表示される6桁のコードを入力してください。コードが正しいと確認できた時点でログインが作成されます（再設定の場合は古いものと置き換わります）。それまでは何も変わりません。",
        )) }
        @if let Some(svg) = qr_svg(shown.otpauth_uri.expose_secret()) {
            div.qr id="otp-qr" role="img" aria-label=(lang.t("QR code of the one-time-password secret", "ワンタイムパスワード秘密鍵のQRコード")) { (maud::PreEscaped(svg)) }
        }
        p.secret id="otpauth" { (shown.otpauth_uri.expose_secret()) }
        p { (lang.t("Or type this key: ", "手入力の場合のキー: ")) span.secret id="otp-key" { (base32(shown.secret.expose_secret())) } }
        form.stack method="post" action={ "/setup/" (segment(token)) "/confirm" } {
            label { (lang.t("The code the app shows now", "アプリに今表示されているコード")) input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]{6,7}" required; }
            button type="submit" { (lang.t("Confirm and finish", "確認して完了")) }
        }
    };
    respond(
        status,
        page(
            None,
            lang,
            false,
            lang.t("Add your authenticator", "認証アプリの登録"),
            body,
        ),
    )
}

async fn setup(
    State(state): Shared,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(form): Form<SetupForm>,
) -> Response {
    // The unguessable token in the path is what authorises this form; it works once.
    let lang = Lang::of(&headers);
    match state
        .staff
        .begin_enrollment(&token, &form.name, &form.password, &form.repeated)
        .await
    {
        Ok(shown) => confirm_page(lang, &token, &shown, StatusCode::OK, None),
        Err(e) => refusal_page(Refused::bad_request(e.to_string()), lang),
    }
}

#[derive(Deserialize)]
pub(crate) struct ConfirmForm {
    code: String,
}

fn setup_done_page(lang: Lang, name: &str) -> Response {
    let body = html! {
        p id="setup-done" { (lang.t("Your login is ready: ", "ログインの準備ができました: ")) strong { (name) } }
        p { (lang.t(
            "The code you just typed is used up; log in with your password and the next code your app shows (a new one every 30 seconds).",
            "入力したコードは使用済みです。パスワードと、アプリに次に表示されるコード（30秒ごとに変わります）でログインしてください。",
        )) }
        p { a href="/login" { (lang.t("Log in", "ログインへ")) } }
    };
    respond(
        StatusCode::OK,
        page(None, lang, false, lang.t("Account ready", "設定完了"), body),
    )
}

async fn confirm_setup(
    State(state): Shared,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Response {
    let lang = Lang::of(&headers);
    let peer = peer.map(|Extension(peer)| peer);
    // Codes typed here count against the same per-address allowance as logins.
    let (status, error) = if !state.allow_login_attempt(peer) {
        (
            StatusCode::TOO_MANY_REQUESTS,
            lang.t(
                "Too many attempts from this address; wait a minute and try again.",
                "このアドレスからの試行が多すぎます。1分待ってからもう一度試してください。",
            )
            .to_owned(),
        )
    } else {
        let from = peer
            .map(|Peer(addr)| addr.ip().to_string())
            .unwrap_or_else(|| "-".to_owned());
        match state
            .staff
            .confirm_enrollment(&token, &form.code, &from)
            .await
        {
            Ok(name) => {
                // A reset ends the account's old sessions (and so their live updates, now).
                state
                    .sessions_changed
                    .send_modify(|n| *n = n.wrapping_add(1));
                return setup_done_page(lang, &name);
            }
            Err(mismatch @ StaffError::CodeMismatch { attempts_left }) => (
                StatusCode::BAD_REQUEST,
                match lang {
                    Lang::Ja => format!(
                        "コードが新しい認証アプリと一致しません。アプリの時刻を確認し、今表示されている6桁のコードを入力してください。あと{attempts_left}回間違えるとこのリンクは使えなくなります。"
                    ),
                    Lang::En => format!(
                        "{mismatch} After {attempts_left} more wrong code(s) this link stops working."
                    ),
                },
            ),
            Err(error @ StaffError::Store(_)) => {
                return refusal_page(
                    Refused::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
                    lang,
                );
            }
            Err(other) => return refusal_page(Refused::bad_request(other.to_string()), lang),
        }
    };
    // Nothing changed: the same secret again, with the reason, so they can try once more.
    match state.staff.pending_enrollment(&token).await {
        Ok(shown) => confirm_page(lang, &token, &shown, status, Some(&error)),
        Err(e) => refusal_page(Refused::new(status, format!("{error} {e}")), lang),
    }
}

async fn events(State(state): Shared, headers: HeaderMap) -> Response {
    match state
        .require(&headers, &[Role::Approver, Role::Admin, Role::Auditor])
        .await
    {
        Ok(ctx) => super::live::stream(&state, ctx),
        Err(refused) => (refused.status, refused.message).into_response(),
    }
}

/// `text` as a QR code in inline SVG (no XML prologue), for an authenticator app to scan. The
/// markup is made here from the code's modules only: nothing of `text` appears in it as text.
fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build();
    let start = svg.find("<svg")?;
    Some(svg[start..].to_owned())
}
