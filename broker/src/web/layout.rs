//! The page frame: header with the lockdown state, navigation by role, the language switch,
//! logout; and the style sheet and script, compiled into the binary.

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::auth::{Ctx, Refused};
use super::i18n::Lang;
use crate::staff::Role;

pub(crate) const STYLE: &str = include_str!("assets/style.css");
pub(crate) const SCRIPT: &str = include_str!("assets/app.js");

/// The page's heading and body, framed.
pub(crate) fn page(
    ctx: Option<&Ctx>,
    lang: Lang,
    lockdown: bool,
    title: &str,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — sekisho" }
                link rel="stylesheet" href="/static/style.css";
                script src="/static/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "sekisho 関所" }
                    @if let Some(ctx) = ctx {
                        nav {
                            @if ctx.member.roles.has(Role::Approver) {
                                a href="/requests" { (lang.t("Requests", "申請")) }
                                a href="/sessions" { (lang.t("Sessions", "接続中")) }
                            }
                            @if ctx.member.roles.has(Role::Approver) || ctx.member.roles.has(Role::Admin) {
                                a href="/lockdown" { (lang.t("Lockdown", "緊急遮断")) }
                            }
                            @if ctx.member.roles.has(Role::Admin) {
                                a href="/technicians" { (lang.t("Technicians", "技術者")) }
                                a href="/staff" { (lang.t("Staff", "職員")) }
                            }
                            @if ctx.member.roles.has(Role::Auditor) {
                                a href="/audit" { (lang.t("Audit", "監査")) }
                                a href="/audit/review" { (lang.t("Review", "レビュー")) }
                            }
                            @if ctx.member.roles.has(Role::Admin) || ctx.member.roles.has(Role::Auditor) {
                                a href="/status" { (lang.t("Status", "稼働状況")) }
                            }
                        }
                    }
                    span.tools {
                        a href={ "/lang/" (lang.other().code()) } { (lang.t("日本語", "English")) }
                        @if let Some(ctx) = ctx {
                            span.who { (ctx.member.name) }
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(ctx.member.csrf.expose_secret());
                                button type="submit" { (lang.t("Log out", "ログアウト")) }
                            }
                        }
                    }
                }
                @if lockdown {
                    div.lockdown-banner id="lockdown-banner" {
                        (lang.t("LOCKDOWN: all remote access is stopped.", "緊急遮断中：すべての遠隔接続を停止しています。"))
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A notice (what an action did) above a page's content.
pub(crate) fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = text {
            p.notice role="status" { (text) }
        }
    }
}

/// Renders markup as an HTML response.
pub(crate) fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A refusal as a page: the login page for 401, else the message in the frame.
pub(crate) fn refusal_page(refused: Refused, lang: Lang) -> Response {
    if refused.status == StatusCode::UNAUTHORIZED {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response();
    }
    let body = html! {
        p.error role="alert" { (refused.message) }
        p { a href="/" { (lang.t("Back", "戻る")) } }
    };
    let mut response = respond(
        refused.status,
        page(
            None,
            lang,
            false,
            lang.t("Not done", "実行できませんでした"),
            body,
        ),
    );
    refused.headers_onto(&mut response);
    response
}
