//! Tracing set-up: text for a terminal or JSON for collectors; RUST_LOG filters (default `info,sqlx=warn`).
//! Logs go to stderr, the stream for diagnostics, coloured only when it is a terminal.
//!
//! Traces: when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
//! spans are exported over OTLP/gRPC, configured by the other standard `OTEL_*` variables
//! (`OTEL_SERVICE_NAME`, `OTEL_BSP_SCHEDULE_DELAY`, ...), and callers' W3C `traceparent` is continued.
//! Otherwise no exporter, no propagator and no OpenTelemetry layer exist: nothing is exported and nothing is
//! paid.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The trace exporter, if any; [`Telemetry::shutdown`] flushes it before the process exits.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still buffered.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            eprintln!("assignment-service: could not flush traces: {err}");
        }
    }
}

/// Installs logging, and trace export when OTLP is configured. Call inside the Tokio runtime (the OTLP
/// client's connection runs on it).
pub fn init(format: LogFormat) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colour codes only help a person at a terminal; in a file or a collector they are noise.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let (provider, failure) = match otlp_configured().then(tracer_provider) {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(err)) => (None, Some(err)),
        None => (None, None),
    };
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("assignment-service"))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(traces)
        .with(fmt)
        .init();
    if let Some(err) = failure {
        tracing::error!(error = %err, "OTLP trace export is configured but could not start; no traces");
    }
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    Telemetry { provider }
}

/// Whether spans are exported (OTLP configured and started).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Makes `span` continue the trace the call's `traceparent` names (or start one); returns the trace id,
/// in hex, when spans are exported. Costs nothing when they are not.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) -> Option<String> {
    if !EXPORTING.load(Ordering::Relaxed) {
        return None;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
    use opentelemetry::trace::TraceContextExt;
    let trace_id = span.context().span().span_context().trace_id();
    Some(trace_id.to_string())
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

fn tracer_provider() -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("assignment-service")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(provider)
}

/// Reads W3C trace context (`traceparent`, `tracestate`) from a call's headers.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
