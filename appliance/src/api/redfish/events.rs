//! The EventService: the journal's live tail as Redfish events, to a Server-Sent Events stream
//! (`id:` is the journal sequence, so a client that reconnects with `Last-Event-ID` misses
//! nothing) and pushed to subscriptions (EventDestination). Pushes go only to the hosts the
//! configuration allows (loopback by default): a subscription to any other host is kept, shown
//! as disabled, and sent nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tracing::{debug, warn};

use super::messages::RfError;
use super::resources::{self, event_origin, sees_event, types, Lens};
use super::{empty_response, Asked, Body, RedfishConfig, Service};
use crate::api::auth::Principal;
use crate::api::time::rfc3339;
use crate::core::log::Logged;
use crate::model::Privilege;

/// Attempts to deliver one event to a subscriber.
pub const DELIVERY_ATTEMPTS: u32 = 3;
/// Seconds between two attempts.
pub const DELIVERY_RETRY_S: u64 = 5;
/// Seconds a push may take.
const DELIVERY_TIMEOUT_S: u64 = 10;
/// An SSE stream sends a comment this often, so a closed connection is noticed.
const KEEP_ALIVE_S: u64 = 15;
/// Events read from the journal at a time for a stream.
const READ_EVENTS_MAX: usize = 256;

/// The host of an `https://host[:port]/...` URL.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map(|(_, host)| host)
        .unwrap_or(authority);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?.to_string(),
        None => authority.split(':').next()?.to_string(),
    };
    (!host.is_empty()).then_some(host)
}

/// Whether events are pushed to `destination`.
pub fn delivers_to(config: &RedfishConfig, destination: &str) -> bool {
    let Some(host) = host_of(destination) else {
        return false;
    };
    match config.event_hosts.is_empty() {
        true => matches!(host.as_str(), "127.0.0.1" | "::1" | "localhost"),
        false => config.event_hosts.contains(&host),
    }
}

/// One journal event as a Redfish Event payload.
fn event_payload(lens: &Lens, logged: &Logged, context: &str) -> Value {
    let entry = resources::log_entry(lens, logged);
    let mut record = json!({
        "MemberId": "0",
        "EventId": logged.sequence.to_string(),
        "EventTimestamp": rfc3339(logged.timestamp_ms),
        "Severity": entry["Severity"],
        "Message": entry["Message"],
        "MessageId": entry["MessageId"],
        "MessageArgs": [],
    });
    if let Some(origin) = event_origin(lens, &logged.event) {
        record["OriginOfCondition"] = resources::link(&origin);
    }
    json!({
        "@odata.type": "#Event.v1_13_0.Event",
        "Id": logged.sequence.to_string(),
        "Name": "Appliance event",
        "Context": context,
        "Events": [record],
    })
}

/// GET of the SSE URI: the events after `Last-Event-ID` (or from now on), as they are journaled.
pub async fn stream(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
) -> Result<Response<Body>, RfError> {
    principal
        .require(Privilege::Login)
        .map_err(|e| super::messages::from_api(&e))?;
    let head = service.context.core.state().head;
    let after = match asked
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
    {
        Some(id) => id.trim().parse::<u64>().map_err(|_| {
            RfError::new(
                StatusCode::BAD_REQUEST,
                super::messages::HEADER_INVALID,
                &["Last-Event-ID"],
            )
        })?,
        None => head,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let (service2, principal2) = (service.clone(), principal.clone());
    tokio::spawn(async move { feed(service2, principal2, after, tx).await });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Sends the stream's frames until the client goes away.
async fn feed(
    service: Arc<Service>,
    principal: Principal,
    mut after: u64,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let mut head = service.context.core.watch_head();
    loop {
        let current = *head.borrow_and_update();
        while after < current {
            let events = read_after(&service, after).await;
            if events.is_empty() {
                break;
            }
            for logged in events {
                after = logged.sequence;
                let frame = {
                    let state = service.context.core.state();
                    let lens = Lens::new(&state, Some(&principal), &service);
                    sees_event(&lens, &logged.event).then(|| {
                        let payload = event_payload(&lens, &logged, "");
                        format!("id: {}\ndata: {}\n\n", logged.sequence, payload)
                    })
                };
                if let Some(frame) = frame {
                    if tx.send(Bytes::from(frame)).await.is_err() {
                        return;
                    }
                }
            }
        }
        let changed = tokio::time::timeout(Duration::from_secs(KEEP_ALIVE_S), head.changed()).await;
        match changed {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                if tx
                    .send(Bytes::from_static(b": keep-alive\n\n"))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Up to `READ_EVENTS_MAX` journal events after `after`.
async fn read_after(service: &Arc<Service>, after: u64) -> Vec<Logged> {
    let log = service.context.log.clone();
    service
        .blocking(move || {
            log.replay(after + 1)
                .take(READ_EVENTS_MAX)
                .filter_map(Result::ok)
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default()
}

/// Pushes every new journal event to the subscriptions it may go to.
pub fn start(service: &Arc<Service>) {
    let service = service.clone();
    tokio::spawn(async move {
        let mut head = service.context.core.watch_head();
        let mut after = *head.borrow_and_update();
        while head.changed().await.is_ok() {
            let current = *head.borrow_and_update();
            while after < current {
                let events = read_after(&service, after).await;
                if events.is_empty() {
                    break;
                }
                after = events.last().map(|l| l.sequence).unwrap_or(current);
                push(&service, &events);
            }
        }
    });
}

fn push(service: &Arc<Service>, events: &[Logged]) {
    let state = service.context.core.state();
    for subscription in state.subscriptions.values() {
        if !delivers_to(&service.config, &subscription.destination) {
            continue;
        }
        let principal = state
            .accounts
            .get(&subscription.account)
            .map(|a| super::auth::principal_of(a, None));
        let lens = Lens::new(&state, principal.as_ref(), service);
        for logged in events.iter().filter(|l| sees_event(&lens, &l.event)) {
            let payload = event_payload(&lens, logged, &subscription.context);
            deliver(service, subscription.destination.clone(), payload);
        }
    }
}

/// POSTs one event, retrying; never blocks the caller.
fn deliver(service: &Arc<Service>, destination: String, payload: Value) {
    service.runtime.spawn_blocking(move || {
        let agent = match crate::api::client::agent(
            &crate::api::client::Trust::PublicRoots,
            Duration::from_secs(DELIVERY_TIMEOUT_S),
        ) {
            Ok(agent) => agent,
            Err(e) => return warn!(%destination, error = %e, "no agent to deliver events"),
        };
        for attempt in 1..=DELIVERY_ATTEMPTS {
            match agent.post(&destination).send_json(&payload) {
                Ok(_) => return debug!(%destination, "event delivered"),
                Err(e) => {
                    warn!(%destination, attempt, error = %e, "event not delivered");
                    std::thread::sleep(Duration::from_secs(DELIVERY_RETRY_S));
                }
            }
        }
    });
}

/// `EventService.SubmitTestEvent`: a test event to every subscription it may go to.
pub async fn submit_test_event(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
) -> Result<Response<Body>, RfError> {
    principal
        .require(Privilege::ConfigureManager)
        .map_err(|e| super::messages::from_api(&e))?;
    let body = super::orders::json_body(asked)?;
    let state = service.context.core.state();
    let message = body["Message"]
        .as_str()
        .unwrap_or("A test event")
        .to_string();
    for subscription in state.subscriptions.values() {
        if !delivers_to(&service.config, &subscription.destination) {
            continue;
        }
        let payload = json!({
            "@odata.type": "#Event.v1_13_0.Event",
            "Id": "test",
            "Name": "Test event",
            "Context": subscription.context,
            "Events": [{
                "MemberId": "0",
                "EventId": "test",
                "EventTimestamp": rfc3339(crate::api::time::now_ms()),
                "Severity": "OK",
                "Message": message,
                "MessageId": "ResourceEvent.1.4.ResourceChanged",
                "MessageArgs": [],
            }],
        });
        deliver(service, subscription.destination.clone(), payload);
    }
    let _ = types::MESSAGE;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_and_only_allowed_ones_receive() {
        assert_eq!(
            host_of("https://127.0.0.1:8443/events").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(host_of("https://[::1]:9/x").as_deref(), Some("::1"));
        assert_eq!(
            host_of("https://user@host.example/x").as_deref(),
            Some("host.example")
        );
        assert_eq!(host_of("http://127.0.0.1/"), None);
        assert_eq!(host_of("https:///x"), None);
        let mut config = RedfishConfig::new("127.0.0.1:0".parse().unwrap(), "/tmp".into());
        assert!(delivers_to(&config, "https://127.0.0.1:9000/e"));
        assert!(!delivers_to(&config, "https://192.168.1.50/Destination1"));
        config.event_hosts = vec!["dashboard.studio".into()];
        assert!(delivers_to(&config, "https://dashboard.studio/e"));
        assert!(!delivers_to(&config, "https://127.0.0.1:9000/e"));
    }
}
