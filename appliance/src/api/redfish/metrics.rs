//! `GET /metrics`: the figures an operator graphs, in Prometheus' text format. The door's own
//! request counts and latencies are kept here; the core's (journal appends, composes) and the
//! pools' occupancy are read from the core at each scrape.

use std::sync::Arc;
use std::time::Duration;

use hyper::{header, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::messages::{from_api, RfError};
use super::{full, Body, Service};
use crate::api::{Context, Principal};
use crate::core::metrics::Histogram as CoreHistogram;
use crate::model::{DeviceKind, Privilege, Severity};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

/// A login's source and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LoginLabel {
    /// `local` or `directory`.
    pub source: &'static str,
    /// `ok`, `refused` (wrong credentials, no mapped group, a missing code), `locked`, or
    /// `unavailable` (the directory did not answer).
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    kind: &'static str,
    state: &'static str,
}

/// The door's metrics, and the registry that also reads the core's.
pub(crate) struct ApiMetrics {
    requests: Family<StatusLabel, Counter>,
    duration: Histogram,
    logins: Family<LoginLabel, Counter>,
    directory_duration: Histogram,
    registry: Registry,
}

impl std::fmt::Debug for ApiMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiMetrics").finish_non_exhaustive()
    }
}

impl ApiMetrics {
    pub fn new(context: &Context) -> ApiMetrics {
        let requests = Family::<StatusLabel, Counter>::default();
        // 100 us .. ~3.3 s.
        let duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let mut registry = Registry::with_prefix("appliance");
        registry.register(
            "api_requests",
            "HTTPS requests answered, by status code",
            requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "Time from a request's headers to its answer",
            duration.clone(),
        );
        let logins = Family::<LoginLabel, Counter>::default();
        registry.register(
            "logins",
            "Password checks (Basic and session logins), by source and result",
            logins.clone(),
        );
        // 1 ms .. ~33 s (a directory's timeout is at most 30 s a step).
        let directory_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "directory_login_duration_seconds",
            "Time the studio's directory took to check a login (connect, binds, searches)",
            directory_duration.clone(),
        );
        registry.register_collector(Box::new(CoreCollector {
            context: Arc::new(context.clone()),
        }));
        ApiMetrics {
            requests,
            duration,
            logins,
            directory_duration,
            registry,
        }
    }

    pub fn login(&self, source: &'static str, result: &'static str) {
        self.logins
            .get_or_create(&LoginLabel { source, result })
            .inc();
    }

    pub fn directory_login(&self, elapsed: Duration) {
        self.directory_duration.observe(elapsed.as_secs_f64());
    }

    pub fn request(&self, status: u16, elapsed: Duration) {
        self.requests.get_or_create(&StatusLabel { status }).inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    fn text(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The scrape: readable by any account with Login, or by anyone with `metrics_public`.
pub(crate) async fn respond(
    service: &Arc<Service>,
    principal: Option<&Principal>,
) -> Result<Response<Body>, RfError> {
    if let Some(principal) = principal {
        principal
            .require(Privilege::Login)
            .map_err(|e| from_api(&e))?;
    }
    let mut response = Response::new(full(service.metrics.text()));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    Ok(response)
}

/// Reads the core's counters and State at each scrape.
#[derive(Debug)]
struct CoreCollector {
    context: Arc<Context>,
}

impl Collector for CoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metrics = self.context.core.metrics();
        let state = self.context.core.state();
        let counters = [
            (
                "journal_events_appended",
                "Events appended to the journal since start",
                metrics.events_appended,
            ),
            (
                "journal_batches",
                "Durable appends (one fdatasync each) since start",
                metrics.batches,
            ),
            (
                "journal_snapshots_written",
                "Snapshots written since start",
                metrics.snapshots_written,
            ),
            (
                "commands",
                "Commands the core decided since start",
                metrics.commands,
            ),
            (
                "commands_refused",
                "Commands the core refused since start",
                metrics.commands_refused,
            ),
            (
                "operations_completed",
                "Operations completed (whole journal)",
                state.counters.operations_completed,
            ),
            (
                "operations_failed",
                "Operations failed (whole journal)",
                state.counters.operations_failed,
            ),
            (
                "devices_vanished",
                "Devices the fabric stopped reporting (whole journal)",
                state.counters.devices_vanished,
            ),
            (
                "alarms_raised",
                "Alarms raised (whole journal)",
                state.counters.alarms_raised,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "journal_head",
                "Sequence of the newest event",
                state.head as i64,
            ),
            ("systems", "Composed systems", state.systems.len() as i64),
            (
                "operations_pending",
                "Operations without an outcome yet",
                state.pending.len() as i64,
            ),
            ("sessions", "Open API sessions", state.sessions.len() as i64),
            (
                "alarms_critical",
                "Active critical alarms (a failed device)",
                state.alarm_count(Severity::Critical) as i64,
            ),
            (
                "alarms_warning",
                "Active warnings (a degraded device, e.g. a link down inside its grace)",
                state.alarm_count(Severity::Warning) as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let replay = ConstGauge::new(self.context.start.replay_ms as f64 / 1e3);
        replay.encode(encoder.encode_descriptor(
            "start_replay_seconds",
            "Time the last start spent replaying the journal",
            None,
            replay.metric_type(),
        )?)?;
        self.encode_pools(&mut encoder, &state)?;
        for (name, help, histogram) in [
            (
                "journal_append_seconds",
                "Time of one durable append",
                &metrics.append,
            ),
            (
                "compose_seconds",
                "From a compose's intent being durable to its outcome being durable",
                &metrics.compose,
            ),
            (
                "decompose_seconds",
                "From a decompose's intent being durable to its outcome",
                &metrics.decompose,
            ),
            (
                "failover_seconds",
                "From a failover's intent being durable to its outcome",
                &metrics.failover,
            ),
            (
                "failover_recovery_seconds",
                "Time to recover: from the host seeing a fault to the failover answering it completing",
                &metrics.recovery,
            ),
        ] {
            encode_histogram(&mut encoder, name, help, histogram)?;
        }
        Ok(())
    }
}

impl CoreCollector {
    fn encode_pools(
        &self,
        encoder: &mut DescriptorEncoder,
        state: &crate::model::State,
    ) -> Result<(), std::fmt::Error> {
        let mut counts = std::collections::BTreeMap::new();
        for kind in DeviceKind::ALL {
            for pool_state in ["free", "composed", "reserved", "unavailable"] {
                counts.insert((kind.name(), pool_state), 0i64);
            }
        }
        for device in state.devices.values() {
            let pool_state = if device.is_available() {
                "free"
            } else if device.holder.is_some() {
                "composed"
            } else if device.reservation.is_some() {
                "reserved"
            } else {
                "unavailable"
            };
            *counts.entry((device.kind.name(), pool_state)).or_default() += 1;
        }
        let mut family = encoder.encode_descriptor(
            "pool_devices",
            "Devices per pool kind and state (free, composed, reserved, unavailable: failed, out of service or gone)",
            None,
            MetricType::Gauge,
        )?;
        for ((kind, pool_state), n) in counts {
            let labels = PoolLabel {
                kind,
                state: pool_state,
            };
            ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn encode_histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &CoreHistogram,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    let mut buckets = histogram.cumulative_seconds();
    buckets.push((f64::INFINITY, histogram.count));
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        histogram.sum_us as f64 / 1e6,
        histogram.count,
        &buckets,
        None,
    )
}
