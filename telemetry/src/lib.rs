//! Logs and traces, set up the same way by `dispatch`, `dispatch-coordinator` and
//! `dispatch-agent`.
//!
//! - Logs go to stderr, filtered by `DISPATCH_LOG` (a `tracing` filter, default `info`), as text
//!   or, with `--log-format json`, one JSON object per line for log shippers.
//! - Traces are exported with OTLP over gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the
//!   standard `OTEL_*` variables apply: `OTEL_BSP_SCHEDULE_DELAY`, …), and not at all otherwise.
//! - One task's spans form one trace across the processes: the W3C `traceparent` travels in
//!   gRPC metadata (CLI → coordinator) and with the task (coordinator → agent, in its Assign).
//!
//! The OTLP exporter uses the Tokio runtime current when [`init`] runs: call it inside one.

pub mod exposition;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`.
    pub fn parse(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format `{other}`: use text or json")),
        }
    }
}

/// Keeps the trace exporter running; dropping it flushes what is left.
#[must_use = "traces are flushed when this is dropped"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// True when spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: could not flush traces: {e}");
        }
    }
}

/// Sets up logs (`logs`: none for a command line tool whose stderr is for its user) and, when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, trace export for `service`. A second call does
/// nothing.
pub fn init(service: &'static str, logs: Option<LogFormat>) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = tracing_subscriber::EnvFilter::try_from_env("DISPATCH_LOG")
        .unwrap_or_else(|_| "info".into());
    let provider = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .and_then(|endpoint| {
            match opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
            {
                Ok(exporter) => Some(
                    SdkTracerProvider::builder()
                        .with_resource(
                            opentelemetry_sdk::Resource::builder()
                                .with_service_name(service)
                                .build(),
                        )
                        .with_batch_exporter(exporter)
                        .build(),
                ),
                Err(e) => {
                    eprintln!(
                        "warning: no traces: cannot export to OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}: {e}"
                    );
                    None
                }
            }
        });
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (text, json) = match logs {
        Some(LogFormat::Text) => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        Some(LogFormat::Json) => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            ),
        ),
        None => (None, None),
    };
    // Logs follow DISPATCH_LOG; spans for export are kept at info and above.
    let _ = tracing_subscriber::registry()
        .with(text.map(|l| tracing_subscriber::Layer::with_filter(l, filter.clone())))
        .with(json.map(|l| tracing_subscriber::Layer::with_filter(l, filter)))
        .with(otel.map(|l| {
            tracing_subscriber::Layer::with_filter(l, tracing_subscriber::filter::LevelFilter::INFO)
        }))
        .try_init();
    Telemetry { provider }
}

struct Map<'a>(&'a mut std::collections::HashMap<String, String>);

impl Injector for Map<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct Ro<'a>(&'a std::collections::HashMap<String, String>);

impl Extractor for Ro<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The W3C `traceparent` of `span` ("" when it is not traced).
pub fn traceparent(span: &tracing::Span) -> String {
    let mut m = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut Map(&mut m));
    m.remove("traceparent").unwrap_or_default()
}

/// Makes `traceparent` (a W3C header value; "" or malformed: none) the parent of `span`.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() || traceparent.len() > 128 {
        return;
    }
    let m = std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&Ro(&m));
    let _ = span.set_parent(cx);
}

/// Puts `span`'s trace context in a request's metadata.
pub fn inject(span: &tracing::Span, md: &mut tonic::metadata::MetadataMap) {
    let tp = traceparent(span);
    if let Ok(v) = tonic::metadata::MetadataValue::try_from(tp.as_str())
        && !tp.is_empty()
    {
        md.insert("traceparent", v);
    }
}

/// Makes the trace context in a request's metadata the parent of `span`.
pub fn extract(span: &tracing::Span, md: &tonic::metadata::MetadataMap) {
    if let Some(tp) = md.get("traceparent").and_then(|v| v.to_str().ok()) {
        set_parent(span, tp);
    }
}

/// A metrics page: renders the Prometheus text, or says why it cannot.
pub type Render = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

/// Connections the metrics listener holds at once.
const METRICS_CONNECTIONS: usize = 64;

/// Serves `GET /metrics` (rendered by `render` as OpenMetrics, with the process metrics
/// added; OpenMetrics to a scraper that asks for it, the classic text format to anyone else,
/// each with its own content type) on `listener` until `stop` resolves; anything else is a 404 that says where the metrics are. At most 64 connections at
/// once (more are closed), and one whose request takes over 10 s (or that idles that long
/// between requests) is closed.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    render: Render,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Request, Response, StatusCode};
    tokio::pin!(stop);
    // A scraper makes one connection at a time; a stranger cannot hold more than this many, and
    // one that trickles its request (or idles) is cut after 10 s.
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    // Out of descriptors, most likely: let some close.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = std::sync::Arc::clone(&open).try_acquire_owned() else {
            tracing::debug!(
                "metrics listener: {METRICS_CONNECTIONS} connections open; closing a new one"
            );
            continue;
        };
        let render = std::sync::Arc::clone(&render);
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let render = std::sync::Arc::clone(&render);
                async move {
                    let openmetrics = req
                        .headers()
                        .get(hyper::header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(exposition::wants_openmetrics);
                    let r = if req.uri().path() != "/metrics" {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from("metrics are at /metrics\n")))
                    } else {
                        match render().await {
                            Ok(om) => {
                                let om =
                                    exposition::with_families(&om, &exposition::process_families());
                                let (ty, text) = if openmetrics {
                                    (exposition::OPENMETRICS, om)
                                } else {
                                    (exposition::TEXT_004, exposition::to_text_004(&om))
                                };
                                Response::builder()
                                    .header("content-type", ty)
                                    .header("vary", "accept")
                                    .body(Full::new(Bytes::from(text)))
                            }
                            Err(e) => Response::builder()
                                .status(StatusCode::SERVICE_UNAVAILABLE)
                                .body(Full::new(Bytes::from(format!("{e}\n")))),
                        }
                    };
                    Ok::<_, std::convert::Infallible>(r.expect("a valid response"))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}
