//! The manager's Prometheus metrics, one registry per manager (so tests running several
//! managers in one process don't mix counts), rendered as text at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use hearth_types::function::ColdStart;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

type HistogramFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FnLabels {
    pub function: String,
    /// `ok` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FnName {
    pub function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ColdLabels {
    pub function: String,
    /// `boot` or `snapshot`.
    pub from: String,
}

pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: HistogramFamily,
    fn_invocations: Family<FnLabels, Counter>,
    fn_cold_starts: Family<ColdLabels, Counter>,
    fn_duration: Family<FnName, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hearth");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method, route and status",
            http_latency.clone(),
        );
        let fn_invocations = Family::<FnLabels, Counter>::default();
        let fn_cold_starts = Family::<ColdLabels, Counter>::default();
        let fn_duration: Family<FnName, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "function_invocations",
            "Function invocations by function and result",
            fn_invocations.clone(),
        );
        registry.register(
            "function_cold_starts",
            "Function invocations that started a VM, by how (boot or snapshot)",
            fn_cold_starts.clone(),
        );
        registry.register(
            "function_duration_seconds",
            "Function invocation duration, including any cold start",
            fn_duration.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_latency,
            fn_invocations,
            fn_cold_starts,
            fn_duration,
        }
    }
}

impl Metrics {
    pub fn observe_http(&self, labels: HttpLabels, seconds: f64) {
        self.http_requests.get_or_create(&labels).inc();
        self.http_latency.get_or_create(&labels).observe(seconds);
    }

    pub fn function_invoked(
        &self,
        function: &str,
        ok: bool,
        cold: Option<ColdStart>,
        duration_ms: u64,
    ) {
        let name = FnName {
            function: function.to_string(),
        };
        self.fn_invocations
            .get_or_create(&FnLabels {
                function: function.to_string(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
        if let Some(from) = cold {
            self.fn_cold_starts
                .get_or_create(&ColdLabels {
                    function: function.to_string(),
                    from: match from {
                        ColdStart::Boot => "boot",
                        ColdStart::Snapshot => "snapshot",
                    }
                    .into(),
                })
                .inc();
        }
        self.fn_duration
            .get_or_create(&name)
            .observe(duration_ms as f64 / 1000.0);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}
