//! The web UI seen from outside: a small HTTP/1.1 client that keeps cookies as a browser
//! does ([`WebClient`]), staff accounts made through one-time links ([`StaffAccount`]), and
//! a web-enabled broker ([`start_web_broker`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sekisho_broker::clock::Clock;
use sekisho_broker::secret::{SealingKey, Secret};
use sekisho_broker::staff::{Role, Roles, StaffDirectory};
use sekisho_broker::web::{WebConfig, WebTls};

use crate::{TestBroker, Vendor};

/// A broker serving its web UI over plain HTTP on `127.0.0.1:0` (or HTTPS with `https`).
pub async fn start_web_broker(vendors: &[Vendor], https: bool) -> TestBroker {
    start_web_broker_with(vendors, https, |_| {}).await
}

/// The same, after `adjust` has changed the web UI's configuration.
pub async fn start_web_broker_with(
    vendors: &[Vendor],
    https: bool,
    adjust: impl FnOnce(&mut WebConfig),
) -> TestBroker {
    TestBroker::start_with(vendors, |config| {
        let mut web = WebConfig::new("127.0.0.1:0".parse().unwrap());
        if !https {
            web.tls = WebTls::PlainHttpOnLoopback;
        }
        adjust(&mut web);
        config.web = Some(web);
    })
    .await
}

/// A staff member with their password and TOTP secret.
pub struct StaffAccount {
    pub name: String,
    pub password: String,
    pub secret: Secret<Vec<u8>>,
}

impl StaffAccount {
    /// Makes `name` with `roles` through a one-time link, as an admin and the person would:
    /// the person chooses a password, adds the secret shown to their authenticator and
    /// confirms it with the code it shows.
    pub async fn create(broker: &TestBroker, name: &str, roles: &[Role]) -> StaffAccount {
        let staff = directory(broker);
        let token = staff
            .invite(name, &Roles::new(roles.iter().copied()), "test-admin")
            .await
            .unwrap();
        let password = format!("{name} long password");
        StaffAccount::set_up(broker, token.expose_secret(), name, &password).await
    }

    /// Uses the one-time link `token` for account `name` with `password`: the first step,
    /// then the confirming code computed from the secret it showed.
    pub async fn set_up(
        broker: &TestBroker,
        token: &str,
        name: &str,
        password: &str,
    ) -> StaffAccount {
        let staff = directory(broker);
        let shown = staff
            .begin_enrollment(token, name, password, password)
            .await
            .unwrap();
        let account = StaffAccount {
            name: name.to_owned(),
            password: password.to_owned(),
            secret: shown.secret,
        };
        let confirmed = staff
            .confirm_enrollment(token, &account.code(broker), "test")
            .await
            .unwrap();
        assert_eq!(confirmed, name);
        account
    }

    /// A fresh code: moves the broker's clock to the next 30-second step first.
    pub fn code(&self, broker: &TestBroker) -> String {
        broker.clock().advance(Duration::from_secs(30));
        sekisho_broker::otp::code_at(&self.secret, broker.clock().now()).unwrap()
    }
}

/// The staff directory of `broker`'s database and clock.
pub fn directory(broker: &TestBroker) -> StaffDirectory {
    StaffDirectory::new(
        broker.desk().store().clone(),
        Arc::new(SealingKey::load_or_create(&broker.config().data_dir).unwrap()),
        Arc::new(broker.clock().clone()),
        "Test Hospital",
        sekisho_broker::staff::DEFAULT_IDLE_TIMEOUT,
    )
}

/// What the server answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn location(&self) -> Option<&str> {
        self.headers
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }
}

/// A plain-HTTP client for the web UI that keeps cookies, as a browser does.
pub struct WebClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    pub cookies: HashMap<String, String>,
}

impl WebClient {
    pub fn new(addr: SocketAddr) -> WebClient {
        WebClient {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
            cookies: HashMap::new(),
        }
    }

    /// A client whose connections come from `source` (another loopback address, such as
    /// 127.0.0.2, to test source-address checks).
    pub fn from_source(addr: SocketAddr, source: std::net::IpAddr) -> WebClient {
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(source));
        WebClient {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build(connector),
            cookies: HashMap::new(),
        }
    }

    /// Any request: `method` on `path`, with a body of `content_type` when given.
    pub async fn send_raw(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        csrf: Option<&str>,
        body: &str,
    ) -> Answer {
        let mut builder = self.builder(method, path);
        if let Some(content_type) = content_type {
            builder = builder.header(hyper::header::CONTENT_TYPE, content_type);
        }
        if let Some(csrf) = csrf {
            builder = builder.header("x-csrf-token", csrf);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        self.send(request).await
    }

    /// Opens the live-update stream (`/events`) as a page's script does; the answer's status
    /// and, on 200, the stream to read.
    pub async fn events(&mut self) -> (u16, Option<EventStream>) {
        let request = self
            .builder("GET", "/events")
            .header(hyper::header::ACCEPT, "text/event-stream")
            .body(Full::default())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .expect("the web UI answers within 30 s")
            .unwrap();
        let status = response.status().as_u16();
        let body = response.into_body();
        (status, (status == 200).then_some(EventStream { body }))
    }

    async fn send(&mut self, request: hyper::Request<Full<Bytes>>) -> Answer {
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .expect("the web UI answers within 30 s")
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for value in headers.get_all(hyper::header::SET_COOKIE) {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            assert!(
                text.contains("HttpOnly")
                    && text.contains("Secure")
                    && text.contains("SameSite=Strict"),
                "{text}"
            );
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    fn builder(&self, method: &str, path: &str) -> hyper::http::request::Builder {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(hyper::header::COOKIE, cookie.join("; "))
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let request = self.builder("GET", path).body(Full::default()).unwrap();
        self.send(request).await
    }

    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let request = self
            .builder("POST", path)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(body.join("&"))))
            .unwrap();
        self.send(request).await
    }

    pub async fn post_json(
        &mut self,
        path: &str,
        csrf: Option<&str>,
        body: serde_json::Value,
    ) -> Answer {
        let mut builder = self
            .builder("POST", path)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(csrf) = csrf {
            builder = builder.header("x-csrf-token", csrf);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        self.send(request).await
    }

    /// Logs in through the login form; returns the answer to the form's POST.
    pub async fn login_with(&mut self, name: &str, password: &str, code: &str) -> Answer {
        let page = self.get("/login").await;
        let csrf = hidden_csrf(&page.body).unwrap_or_default();
        self.post_form(
            "/login",
            &[
                ("csrf", &csrf),
                ("name", name),
                ("password", password),
                ("code", code),
            ],
        )
        .await
    }

    /// Logs `account` in with a fresh code; panics unless it works.
    pub async fn login(&mut self, broker: &TestBroker, account: &StaffAccount) {
        let answer = self
            .login_with(&account.name, &account.password, &account.code(broker))
            .await;
        assert_eq!(
            answer.status, 303,
            "login of {}: {}",
            account.name, answer.body
        );
    }

    /// The CSRF token in the forms of `path`'s page.
    pub async fn csrf(&mut self, path: &str) -> String {
        let page = self.get(path).await;
        hidden_csrf(&page.body).unwrap_or_else(|| panic!("no CSRF field on {path}: {}", page.body))
    }
}

/// An open live-update stream.
pub struct EventStream {
    body: hyper::body::Incoming,
}

impl EventStream {
    /// The next piece of the stream within `within`: `Some(text)`, or `None` once the server
    /// ended it. Panics if nothing comes in time.
    pub async fn next(&mut self, within: Duration) -> Option<String> {
        loop {
            let frame = tokio::time::timeout(within, self.body.frame())
                .await
                .expect("the stream said something or ended in time");
            match frame {
                None | Some(Err(_)) => return None,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(String::from_utf8_lossy(&data).into_owned());
                    }
                }
            }
        }
    }

    /// Reads until the server ends the stream; panics unless it does within `within` (keep-alive
    /// comments and events on the way are skipped).
    pub async fn ends_within(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.next(left).await.is_none() {
                return;
            }
        }
    }
}

/// The TOTP secret a setup page shows as the key to type by hand (`id="otp-key"`), read as a
/// person would type it into their authenticator app.
pub fn shown_secret(html: &str) -> Option<Secret<Vec<u8>>> {
    let at = html.find("id=\"otp-key\">")? + "id=\"otp-key\">".len();
    let rest = &html[at..];
    let key = &rest[..rest.find('<')?];
    sekisho_broker::encoding::base32_decode(key.trim().as_bytes()).map(Secret::new)
}

/// A 6-digit code that `secret` accepts at no step near `broker`'s clock (the current one and
/// one either side, as the broker allows).
pub fn wrong_code(broker: &TestBroker, secret: &Secret<Vec<u8>>) -> String {
    let now = broker.clock().now();
    let near: Vec<String> = [
        now - Duration::from_secs(30),
        now,
        now + Duration::from_secs(30),
    ]
    .into_iter()
    .map(|at| sekisho_broker::otp::code_at(secret, at).unwrap())
    .collect();
    (0..4u32)
        .map(|n| format!("{:06}", 123_456 + n))
        .find(|code| !near.contains(code))
        .unwrap()
}

/// The value of the first `name="csrf"` hidden field.
pub fn hidden_csrf(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].to_owned())
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A request by `acme/technician` (enrolled first) for target `echo`, made over QUIC with
/// `purpose`, as the web UI's and the webhook's tests need one; returns its id.
pub async fn request(broker: &TestBroker, technician: &str, purpose: &str) -> String {
    broker.enroll("acme", technician).await;
    let mut session = broker.connect("acme", technician).await.unwrap();
    session
        .request(proto::RequestAccess {
            targets: vec!["echo".into()],
            purpose: purpose.into(),
            ticket: "INC-1".into(),
            duration_secs: 3600,
        })
        .await
        .unwrap()
        .id
}
