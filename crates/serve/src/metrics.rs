//! Counters of the server, written as Prometheus text at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds, in seconds, of the request latency histogram's buckets.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// What `/metrics` reports.
#[derive(Default)]
pub struct Metrics {
    published: Mutex<BTreeMap<String, u64>>,
    /// Per topic, a counter streams keep a handle on (no lock per write).
    delivered: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    group_fetched: Mutex<BTreeMap<String, u64>>,
    group_acked: Mutex<BTreeMap<String, u64>>,
    /// Request latencies by route, then method (looked up without allocating).
    requests: Mutex<BTreeMap<String, BTreeMap<String, Histogram>>>,
    /// Open event streams.
    pub subscribers: AtomicU64,
    /// Store followers feeding the streams (one per distinct pattern).
    pub followers: AtomicU64,
    /// Streams ended because their client fell behind.
    pub lagged: AtomicU64,
    /// Requests answered with a server error (store failures).
    pub store_errors: AtomicU64,
}

fn add(map: &Mutex<BTreeMap<String, u64>>, topic: &str, n: u64) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    match map.get_mut(topic) {
        Some(count) => *count += n,
        None => {
            map.insert(topic.to_string(), n);
        }
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// Counts `n` events published over HTTP to `topic`.
    pub fn published(&self, topic: &str, n: u64) {
        add(&self.published, topic, n);
    }

    /// The counter of events of `topic` written to event streams, for a
    /// stream to keep and add to without taking a lock.
    pub fn delivered_counter(&self, topic: &str) -> Arc<AtomicU64> {
        let mut map = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(topic) {
            Some(counter) => counter.clone(),
            None => map.entry(topic.to_string()).or_default().clone(),
        }
    }

    /// Counts `n` events handed to HTTP members of `group`.
    pub fn delivered_to_group(&self, group: &str, n: u64) {
        add(&self.group_fetched, group, n);
    }

    /// Counts `n` events acked by HTTP members of `group`.
    pub fn acked_in_group(&self, group: &str, n: u64) {
        add(&self.group_acked, group, n);
    }

    /// Records one request's latency under its method and route.
    pub fn request(&self, method: &str, route: &str, took: Duration) {
        let seconds = took.as_secs_f64();
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if !requests.contains_key(route) {
            requests.insert(route.to_string(), BTreeMap::new());
        }
        let Some(methods) = requests.get_mut(route) else { return };
        if !methods.contains_key(method) {
            methods.insert(method.to_string(), Histogram::default());
        }
        let Some(h) = methods.get_mut(method) else { return };
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The Prometheus text exposition of every metric, with the work
    /// groups' figures as the store reports them now.
    pub fn render(&self, groups: &[seed_event::GroupInfo]) -> String {
        let mut out = String::new();
        for (name, help, map) in [
            (
                "seed_group_fetched_total",
                "Events handed to HTTP members, per work group.",
                &self.group_fetched,
            ),
            (
                "seed_group_acked_total",
                "Events acked by HTTP members, per work group.",
                &self.group_acked,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (group, n) in map.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = writeln!(out, "{name}{{group=\"{}\"}} {n}", label(group));
            }
        }
        type Figure = fn(&seed_event::GroupInfo) -> u64;
        let figures: [(&str, &str, &str, Figure); 5] = [
            ("seed_group_members", "gauge", "Live members, per work group.", |g| {
                g.members.len() as u64
            }),
            (
                "seed_group_in_flight",
                "gauge",
                "Events delivered and not yet acked, per work group.",
                |g| g.in_flight,
            ),
            (
                "seed_group_waiting",
                "gauge",
                "Events waiting for a member (the lag), per work group.",
                |g| g.waiting,
            ),
            (
                "seed_group_redelivered_total",
                "counter",
                "Deliveries after the first, per work group.",
                |g| g.redelivered,
            ),
            (
                "seed_group_dead_lettered_total",
                "counter",
                "Events dead-lettered, per work group.",
                |g| g.dead_lettered,
            ),
        ];
        for (name, kind, help, figure) in figures {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for g in groups {
                let _ = writeln!(out, "{name}{{group=\"{}\"}} {}", label(&g.name), figure(g));
            }
        }
        let name = "seed_events_published_total";
        let _ = writeln!(
            out,
            "# HELP {name} Events published over HTTP, per topic.\n# TYPE {name} counter"
        );
        for (topic, n) in self.published.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "{name}{{topic=\"{}\"}} {n}", label(topic));
        }
        let name = "seed_events_delivered_total";
        let _ = writeln!(
            out,
            "# HELP {name} Events written to event streams, per topic.\n# TYPE {name} counter"
        );
        for (topic, n) in self.delivered.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ =
                writeln!(out, "{name}{{topic=\"{}\"}} {}", label(topic), n.load(Ordering::Relaxed));
        }
        for (name, kind, help, value) in [
            ("seed_subscribers", "gauge", "Open event streams.", &self.subscribers),
            (
                "seed_stream_followers",
                "gauge",
                "Store followers feeding event streams, one per distinct pattern.",
                &self.followers,
            ),
            (
                "seed_streams_lagged_total",
                "counter",
                "Event streams ended because their client fell behind.",
                &self.lagged,
            ),
            (
                "seed_store_errors_total",
                "counter",
                "Requests that failed with a server or store error.",
                &self.store_errors,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let name = "seed_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Request latency by method and route.\n# TYPE {name} histogram"
        );
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let by_method = requests
            .iter()
            .flat_map(|(route, methods)| methods.iter().map(move |(m, h)| (m, route, h)));
        for (method, route, h) in by_method {
            let labels = format!("method=\"{}\",route=\"{}\"", label(method), label(route));
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_escaped_labels_and_cumulative_buckets() {
        let m = Metrics::default();
        m.published("a\"b", 2);
        m.published("a\"b", 1);
        m.request("GET", "/v1/topics", Duration::from_millis(3));
        m.delivered_counter("d").fetch_add(4, Ordering::Relaxed);
        m.delivered_counter("d").fetch_add(1, Ordering::Relaxed);
        let text = m.render(&[]);
        assert!(text.contains("seed_events_delivered_total{topic=\"d\"} 5"), "{text}");
        assert!(text.contains("seed_events_published_total{topic=\"a\\\"b\"} 3"), "{text}");
        assert!(text.contains("route=\"/v1/topics\",le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("route=\"/v1/topics\",le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("route=\"/v1/topics\",le=\"+Inf\"} 1"), "{text}");
    }
}
