//! What open pages follow without reloading: the pending requests, the live sessions and
//! the lockdown state, read from the store (so changes made by the CLI or another broker
//! show too) and published on a watch channel that `/events` turns into server-sent events.
//! Each request seen for the first time is also sent to the webhook, if one is configured.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::session::RequestRecord;
use crate::store::{RequestFilter, Store};

/// How often the store is read.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What pages show live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Live {
    /// Pending, approved and live requests, with the state each is in.
    pub(crate) requests: BTreeSet<(String, String)>,
    /// Whether remote access is stopped.
    pub(crate) lockdown: bool,
    /// Requests waiting for an answer.
    pub(crate) pending: usize,
}

/// Reads the store and publishes [`Live`].
pub(crate) struct Watcher {
    store: Store,
    sender: watch::Sender<Live>,
    webhook: Option<String>,
}

impl Watcher {
    pub(crate) fn new(store: Store, webhook: Option<String>) -> (Watcher, watch::Receiver<Live>) {
        let (sender, receiver) = watch::channel(Live::default());
        (
            Watcher {
                store,
                sender,
                webhook,
            },
            receiver,
        )
    }

    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut announced: BTreeSet<String> = BTreeSet::new();
        let mut first = true;
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let filter = RequestFilter {
                states: vec!["requested", "approved", "active"],
                limit: 500,
                ..RequestFilter::default()
            };
            let (records, lockdown) = match (
                self.store.requests(&filter).await,
                self.store.lockdown().await,
            ) {
                (Ok(records), Ok(lockdown)) => (records, lockdown.active),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "web UI: cannot read the store; pages may be stale");
                    continue;
                }
            };
            let live = Live {
                requests: records
                    .iter()
                    .map(|r| (r.id.as_str().to_owned(), r.stage.state_word().to_owned()))
                    .collect(),
                lockdown,
                pending: records
                    .iter()
                    .filter(|r| r.stage.state_word() == "requested")
                    .count(),
            };
            for record in records
                .iter()
                .filter(|r| r.stage.state_word() == "requested")
            {
                // Requests already waiting when the broker started were announced before.
                if announced.insert(record.id.as_str().to_owned())
                    && !first
                    && let Some(url) = &self.webhook
                {
                    tokio::spawn(send_webhook(url.clone(), webhook_body(record)));
                }
            }
            announced.retain(|id| live.requests.iter().any(|(live_id, _)| live_id == id));
            first = false;
            self.sender.send_if_modified(|current| {
                if *current == live {
                    false
                } else {
                    *current = live;
                    true
                }
            });
        }
    }
}

fn webhook_body(record: &RequestRecord) -> String {
    serde_json::json!({
        "event": "request-made",
        "request": record.id.as_str(),
        "vendor": record.vendor,
        "technician": record.technician,
        "targets": record.targets,
        "purpose": record.purpose,
        "ticket": record.ticket,
        "wanted_secs": record.wanted.as_secs(),
        "created_at": crate::audit::timestamp(record.created_at),
    })
    .to_string()
}

/// POSTs `body` to an `http://` URL, once, within ten seconds; failures are logged only
/// (the request itself is already recorded and shown on the page).
async fn send_webhook(url: String, body: String) {
    match tokio::time::timeout(Duration::from_secs(10), post_json(&url, body)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => {}
        Ok(Ok(status)) => tracing::warn!(%url, status, "webhook answered with an error"),
        Ok(Err(e)) => tracing::warn!(%url, error = %e, "webhook could not be sent"),
        Err(_) => tracing::warn!(%url, "webhook did not answer within 10 s"),
    }
}

async fn post_json(url: &str, body: String) -> Result<u16, String> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// webhooks are supported (use a relay for https)".to_owned());
    }
    let host = uri.host().ok_or("the URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}
