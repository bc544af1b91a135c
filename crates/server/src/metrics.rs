//! Counters, gauges and histograms, rendered in the Prometheus text format at /metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    executions: BTreeMap<String, u64>,
    execution_seconds: Histogram,
    violations: BTreeMap<String, u64>,
    pool_idle: BTreeMap<String, usize>,
    pool_hits: u64,
    pool_misses: u64,
    pool_build_failures: u64,
    running: i64,
    rejected: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.with(|m| {
            *m.requests
                .entry((method.to_string(), route.to_string(), status))
                .or_default() += 1;
            m.latency
                .entry(route.to_string())
                .or_default()
                .observe(seconds);
        });
    }

    pub fn execution(&self, outcome: &str, seconds: f64, violation_kinds: &[&str]) {
        self.with(|m| {
            *m.executions.entry(outcome.to_string()).or_default() += 1;
            m.execution_seconds.observe(seconds);
            for k in violation_kinds {
                *m.violations.entry((*k).to_string()).or_default() += 1;
            }
        });
    }

    pub fn rejected(&self, reason: &str) {
        self.with(|m| *m.rejected.entry(reason.to_string()).or_default() += 1);
    }

    pub fn running(&self, delta: i64) {
        self.with(|m| m.running += delta);
    }

    pub fn pool_hit(&self) {
        self.with(|m| m.pool_hits += 1);
    }

    pub fn pool_miss(&self) {
        self.with(|m| m.pool_misses += 1);
    }

    pub fn pool_build_failure(&self) {
        self.with(|m| m.pool_build_failures += 1);
    }

    pub fn set_pool_idle(&self, profile: &str, n: usize) {
        self.with(|m| {
            m.pool_idle.insert(profile.to_string(), n);
        });
    }

    pub fn render(&self) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut o = String::new();
        family(
            &mut o,
            "ironcage_http_requests_total",
            "counter",
            "HTTP requests by route and status.",
        );
        for ((method, route, status), n) in &m.requests {
            let _ = writeln!(
                o,
                "ironcage_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                label(method),
                label(route)
            );
        }
        family(
            &mut o,
            "ironcage_http_request_duration_seconds",
            "histogram",
            "HTTP request latency.",
        );
        for (route, h) in &m.latency {
            hist(
                &mut o,
                "ironcage_http_request_duration_seconds",
                &format!("route=\"{}\"", label(route)),
                h,
            );
        }
        family(
            &mut o,
            "ironcage_executions_total",
            "counter",
            "Executions by outcome.",
        );
        for (k, n) in &m.executions {
            let _ = writeln!(
                o,
                "ironcage_executions_total{{outcome=\"{}\"}} {n}",
                label(k)
            );
        }
        family(
            &mut o,
            "ironcage_execution_duration_seconds",
            "histogram",
            "Time from job to result.",
        );
        hist(
            &mut o,
            "ironcage_execution_duration_seconds",
            "",
            &m.execution_seconds,
        );
        family(
            &mut o,
            "ironcage_violations_total",
            "counter",
            "Executions with a policy violation, by kind.",
        );
        for (k, n) in &m.violations {
            let _ = writeln!(o, "ironcage_violations_total{{kind=\"{}\"}} {n}", label(k));
        }
        family(
            &mut o,
            "ironcage_executions_running",
            "gauge",
            "Executions running now.",
        );
        let _ = writeln!(o, "ironcage_executions_running {}", m.running);
        family(
            &mut o,
            "ironcage_requests_rejected_total",
            "counter",
            "Requests refused for capacity or limits.",
        );
        for (k, n) in &m.rejected {
            let _ = writeln!(
                o,
                "ironcage_requests_rejected_total{{reason=\"{}\"}} {n}",
                label(k)
            );
        }
        family(
            &mut o,
            "ironcage_pool_idle",
            "gauge",
            "Warm sandboxes ready, by profile.",
        );
        for (p, n) in &m.pool_idle {
            let _ = writeln!(o, "ironcage_pool_idle{{profile=\"{}\"}} {n}", label(p));
        }
        family(
            &mut o,
            "ironcage_pool_hits_total",
            "counter",
            "Executions that found a warm sandbox.",
        );
        let _ = writeln!(o, "ironcage_pool_hits_total {}", m.pool_hits);
        family(
            &mut o,
            "ironcage_pool_misses_total",
            "counter",
            "Executions that had to build a sandbox.",
        );
        let _ = writeln!(o, "ironcage_pool_misses_total {}", m.pool_misses);
        family(
            &mut o,
            "ironcage_pool_build_failures_total",
            "counter",
            "Sandboxes that could not be built.",
        );
        let _ = writeln!(
            o,
            "ironcage_pool_build_failures_total {}",
            m.pool_build_failures
        );
        o
    }
}

/// The `# HELP` and `# TYPE` lines that open a metric family.
fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn hist(o: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (b, n) in BUCKETS.iter().zip(h.counts) {
        let _ = writeln!(o, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
    }
    let _ = writeln!(o, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(o, "{name}_sum{braces} {}", h.sum);
    let _ = writeln!(o, "{name}_count{braces} {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_histograms_and_escaped_labels() {
        let m = Metrics::default();
        m.request("POST", "/v1/executions", 200, 0.003);
        m.request("POST", "/v1/executions", 200, 0.2);
        m.set_pool_idle("we\"ird", 2);
        let t = m.render();
        assert!(t.contains(
            "ironcage_http_request_duration_seconds_bucket{route=\"/v1/executions\",le=\"0.005\"} 1"
        ));
        assert!(t.contains(
            "ironcage_http_request_duration_seconds_bucket{route=\"/v1/executions\",le=\"+Inf\"} 2"
        ));
        assert!(t.contains("ironcage_pool_idle{profile=\"we\\\"ird\"} 2"));
        assert!(t.contains("ironcage_execution_duration_seconds_count 0"));
    }
}
