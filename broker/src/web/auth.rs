//! Who is asking: the browser session cookie, the member's roles, CSRF tokens, and the
//! per-address limit on login attempts.
//!
//! Cookies are `HttpOnly; Secure; SameSite=Strict; Path=/`. The session id is made anew at
//! every login (a cookie set before login never becomes a session), and only its hash is
//! stored. Refusals for a missing role or a bad CSRF token are recorded in the audit log.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};

use super::AppState;
use super::i18n::Lang;
use crate::audit::{Actor, AuditEvent, EventKind};
use crate::staff::{Role, StaffMember, same_secret};

/// The browser session cookie's name.
pub const SESSION_COOKIE: &str = "sekisho_session";
/// The cookie that carries the CSRF token of the login form (before there is a session).
pub(crate) const LOGIN_CSRF_COOKIE: &str = "sekisho_login";
/// The cookie holding the chosen language.
pub(crate) const LANG_COOKIE: &str = "sekisho_lang";
/// Login attempts allowed per client address per minute.
pub(crate) const LOGIN_ATTEMPTS_PER_MINUTE: u32 = 10;

/// The client's address, put on each connection's requests by the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// A refusal or failure for the person, with its HTTP status; pages render it in the frame,
/// the API as `{"error": …}`.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// Seconds to wait before asking again (`Retry-After`), for a 429.
    pub(crate) retry_after: Option<u64>,
}

impl Refused {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Refused {
        Refused {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same, saying how many seconds to wait before asking again.
    pub(crate) fn retry_after(mut self, seconds: u64) -> Refused {
        self.retry_after = Some(seconds);
        self
    }

    /// Adds the `Retry-After` header, if any, to the refusal's response.
    pub(crate) fn headers_onto(&self, response: &mut axum::response::Response) {
        if let Some(seconds) = self.retry_after
            && let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Refused {
        Refused::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The logged-in member on one request, with the page language.
pub(crate) struct Ctx {
    pub(crate) member: StaffMember,
    pub(crate) lang: Lang,
    /// The browser session's id, as the cookie carries it.
    pub(crate) cookie: String,
}

/// The value of cookie `name`, if sent.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// A `Set-Cookie` value: HttpOnly, Secure, SameSite=Strict, for the whole site.
pub(crate) fn set_cookie(name: &str, value: &str, max_age: Option<Duration>) -> String {
    let mut text = format!("{name}={value}; Path=/; HttpOnly; Secure; SameSite=Strict");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    text
}

/// A `Set-Cookie` value that removes cookie `name`.
pub(crate) fn clear_cookie(name: &str) -> String {
    set_cookie(name, "", Some(Duration::ZERO))
}

impl AppState {
    /// The member behind the request's session cookie, if logged in (not idle too long, not
    /// past the session's lifetime, account enabled).
    pub(crate) async fn member(&self, headers: &HeaderMap) -> Result<Option<Ctx>, Refused> {
        self.member_by(headers, true).await
    }

    /// The same; `used` says whether the request is the person's activity (it keeps the
    /// session from going idle) or a page's own refresh on a live update (it does not).
    async fn member_by(&self, headers: &HeaderMap, used: bool) -> Result<Option<Ctx>, Refused> {
        let lang = Lang::of(headers);
        let Some(cookie) = cookie(headers, SESSION_COOKIE).filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let member = if used {
            self.staff.session(&cookie).await
        } else {
            self.staff.peek_session(&cookie).await
        };
        match member {
            Ok(Some(member)) => Ok(Some(Ctx {
                member,
                lang,
                cookie,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(Refused::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        }
    }

    /// The logged-in member if they hold one of `roles`; otherwise 401 (not logged in) or
    /// 403 (recorded).
    pub(crate) async fn require(
        &self,
        headers: &HeaderMap,
        roles: &[Role],
    ) -> Result<Ctx, Refused> {
        self.require_by(headers, roles, true).await
    }

    /// [`require`](AppState::require) for what a page fetches by itself on a live update: it
    /// does not count as the person's use, so an open page alone never keeps a session alive.
    pub(crate) async fn require_unused(
        &self,
        headers: &HeaderMap,
        roles: &[Role],
    ) -> Result<Ctx, Refused> {
        self.require_by(headers, roles, false).await
    }

    async fn require_by(
        &self,
        headers: &HeaderMap,
        roles: &[Role],
        used: bool,
    ) -> Result<Ctx, Refused> {
        let Some(ctx) = self.member_by(headers, used).await? else {
            return Err(Refused::new(
                StatusCode::UNAUTHORIZED,
                "Log in first; sessions end after a time without use.",
            ));
        };
        if roles.iter().any(|role| ctx.member.roles.has(*role)) {
            return Ok(ctx);
        }
        let needed: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
        self.refuse(&ctx, &format!("needs role {}", needed.join(" or ")))
            .await;
        Err(Refused::new(
            StatusCode::FORBIDDEN,
            format!(
                "This needs the {} role, which your account does not have; ask an admin.",
                needed.join(" or ")
            ),
        ))
    }

    /// Checks that the logged-in member's roles allow `duty`, by the table the admin command
    /// line checks too ([`Duty::roles`](crate::staff::Duty::roles)); a refusal is recorded.
    pub(crate) async fn require_duty(
        &self,
        ctx: &Ctx,
        duty: crate::staff::Duty,
    ) -> Result<(), Refused> {
        if duty.allowed(&ctx.member.roles) {
            return Ok(());
        }
        self.refuse(ctx, &format!("needs role {}", duty.role_words()))
            .await;
        Err(Refused::new(
            StatusCode::FORBIDDEN,
            format!(
                "To {} takes the {} role, which your account does not have; ask an admin.",
                duty.what(),
                duty.role_words()
            ),
        ))
    }

    /// Checks the CSRF token sent with a state-changing request (refusal recorded).
    pub(crate) async fn check_csrf(&self, ctx: &Ctx, sent: Option<&str>) -> Result<(), Refused> {
        let valid = sent.is_some_and(|sent| same_secret(sent, ctx.member.csrf.expose_secret()));
        if valid {
            return Ok(());
        }
        self.refuse(ctx, "missing or wrong CSRF token").await;
        Err(Refused::new(
            StatusCode::FORBIDDEN,
            "This form is out of date or did not come from this site; reload the page and try again.",
        ))
    }

    async fn refuse(&self, ctx: &Ctx, why: &str) {
        let event = AuditEvent::new(
            self.desk.now(),
            Actor::Staff(ctx.member.name.clone()),
            EventKind::StaffRefused,
        )
        .detail("why", why);
        if let Err(e) = self.desk.store().record(&event).await {
            tracing::warn!(error = %e, "cannot record a refused web action");
        }
    }

    /// Counts a login attempt from `peer`; false once the address has used its minute's
    /// allowance.
    pub(crate) fn allow_login_attempt(&self, peer: Option<Peer>) -> bool {
        let Some(Peer(addr)) = peer else {
            return true;
        };
        let mut attempts = self
            .login_attempts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        attempts.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        let entry = attempts.entry(addr.ip()).or_insert((now, 0));
        entry.1 += 1;
        entry.1 <= LOGIN_ATTEMPTS_PER_MINUTE
    }
}
