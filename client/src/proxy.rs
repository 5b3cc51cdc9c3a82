//! Reaching the broker's TLS-over-TCP port through the vendor's HTTP proxy (`CONNECT`).
//!
//! The proxy comes from `--proxy`, else from `HTTPS_PROXY` / `https_proxy`, unless the
//! broker's host is in `NO_PROXY` / `no_proxy`. Only `http://` proxies are spoken to, with
//! Basic credentials from the URL (`http://user:password@proxy:3128`) or set after a prompt
//! (the command line's `--proxy-user`); NTLM and Negotiate (Kerberos), common in Japanese
//! enterprises, are not supported yet. QUIC never goes through
//! a proxy (HTTP proxies carry TCP only); with the default transport it is still tried
//! directly, beside TCP through the proxy.
//!
//! The TLS inside the tunnel is end to end: a proxy that inspects TLS (shows its own
//! certificate) is refused like any server that is not the hospital's broker, with a sentence
//! that says to exempt the broker from inspection.

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::ConnectError;

/// The most a proxy's answer to `CONNECT` may hold before the tunnel starts.
const MAX_ANSWER: usize = 16 * 1024;

/// An HTTP proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `host:port` of the proxy.
    address: String,
    /// Basic credentials, `user:password`.
    credentials: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("address", &self.address)
            .field("credentials", &self.credentials.as_ref().map(|_| "…"))
            .finish()
    }
}

impl std::fmt::Display for Proxy {
    /// The proxy's address, never its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.address)
    }
}

impl Proxy {
    /// Reads `http://[user:password@]host[:port][/]` (port 80 when none is given).
    pub fn from_url(url: &str) -> Result<Proxy, String> {
        let bad = |why: &str| format!("`{}` is not an HTTP proxy URL ({why})", hide_password(url));
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            bad("write it as http://HOST:PORT; https:// proxies are not supported")
        })?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(bad("a proxy URL has no path"));
        }
        let (credentials, host) = match rest.rsplit_once('@') {
            Some((credentials, host)) => (Some(percent_decode(credentials)), host),
            None => (None, rest),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let has_port = match host.rsplit_once(':') {
            Some((_, port)) => !port.contains(']'),
            None => false,
        };
        let address = if has_port {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        Ok(Proxy {
            address,
            credentials,
        })
    }

    /// Whether the URL carried credentials.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// Uses Basic credentials `user` and `password` (asked for at the prompt).
    pub fn set_credentials(&mut self, user: &str, password: &str) {
        self.credentials = Some(format!("{user}:{password}"));
    }

    /// The proxy the environment names for reaching `broker` (`host:port`), if any.
    pub fn from_env(broker: &str) -> Result<Option<Proxy>, String> {
        let variable = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        };
        let Some(url) = variable(["HTTPS_PROXY", "https_proxy"]) else {
            return Ok(None);
        };
        let host = host_of(broker);
        if let Some(no_proxy) = variable(["NO_PROXY", "no_proxy"])
            && bypasses(&no_proxy, host)
        {
            return Ok(None);
        }
        Proxy::from_url(&url).map(Some)
    }

    /// A TCP connection to `target` (`host:port`) through the proxy.
    pub async fn connect(&self, broker: &str) -> Result<TcpStream, ConnectError> {
        let failed = |reason: String| ConnectError::Proxy {
            proxy: self.to_string(),
            broker: broker.to_owned(),
            reason,
        };
        let mut tcp = TcpStream::connect(&self.address)
            .await
            .map_err(|e| failed(format!("cannot reach the proxy: {e}")))?;
        let mut request = format!("CONNECT {broker} HTTP/1.1\r\nHost: {broker}\r\n");
        if let Some(credentials) = &self.credentials {
            let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
            request.push_str(&format!("Proxy-Authorization: Basic {encoded}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| failed(format!("the proxy closed the connection: {e}")))?;
        // Read the answer's head byte by byte: nothing after it may be taken from the tunnel.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_ANSWER {
                return Err(failed("the proxy's answer is too long".to_owned()));
            }
            let byte = tcp
                .read_u8()
                .await
                .map_err(|e| failed(format!("the proxy closed the connection: {e}")))?;
            head.push(byte);
        }
        let head = String::from_utf8_lossy(&head);
        let status_line = head.lines().next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok());
        match status {
            Some(200..=299) => Ok(tcp),
            // 407 is what RFC 9110 asks for; some proxies (tinyproxy) answer 401.
            Some(401 | 407) if self.credentials.is_none() => Err(failed(
                "it asks for credentials: give them in the URL, http://USER:PASSWORD@HOST:PORT (only Basic authentication is supported)".to_owned(),
            )),
            Some(401 | 407) => Err(failed(
                "it did not accept the credentials in the URL (only Basic authentication is supported)".to_owned(),
            )),
            _ => Err(failed(format!(
                "it answered `{}`; ask your IT to allow CONNECT to the broker's port",
                status_line.trim()
            ))),
        }
    }
}

/// `host` of `host:port` (brackets kept off an IPv6 literal).
fn host_of(broker: &str) -> &str {
    let host = broker.rsplit_once(':').map_or(broker, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether `NO_PROXY` (comma-separated: `*`, host names, `.suffix` or `suffix`, IP
/// addresses) exempts `host`.
fn bypasses(no_proxy: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy
        .split(',')
        .map(|entry| entry.trim().to_ascii_lowercase())
        .filter(|entry| !entry.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.trim_start_matches('.');
            host == entry || host.ends_with(&format!(".{entry}"))
        })
}

/// `%XX` escapes in a URL's credentials, decoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL with its password replaced, for messages.
fn hide_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:…{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_url_gives_the_address_and_the_credentials() {
        let proxy = Proxy::from_url("http://tanaka:p%40ss@proxy.acme.example:3128/").unwrap();
        assert_eq!(proxy.address, "proxy.acme.example:3128");
        assert_eq!(proxy.credentials.as_deref(), Some("tanaka:p@ss"));
        assert_eq!(proxy.to_string(), "http://proxy.acme.example:3128");
        assert_eq!(Proxy::from_url("http://proxy").unwrap().address, "proxy:80");
        let https = Proxy::from_url("https://tanaka:secret@proxy:3128").unwrap_err();
        assert!(
            https.contains("https:// proxies are not supported"),
            "{https}"
        );
        assert!(!https.contains("secret"), "{https}");
        assert!(Proxy::from_url("http://proxy:3128/path").is_err());
    }

    #[test]
    fn no_proxy_exempts_names_suffixes_addresses_and_everything() {
        assert!(bypasses(
            "localhost,.hospital.example",
            "broker.hospital.example"
        ));
        assert!(bypasses("hospital.example", "broker.hospital.example"));
        assert!(bypasses("hospital.example", "HOSPITAL.example"));
        assert!(!bypasses("hospital.example", "nothospital.example"));
        assert!(bypasses("10.0.0.5, 127.0.0.1", "127.0.0.1"));
        assert!(bypasses("*", "anything"));
        assert!(!bypasses("", "broker"));
        assert_eq!(host_of("[::1]:4433"), "::1");
        assert_eq!(host_of("broker.example:4433"), "broker.example");
    }
}
