//! One task's spans, exported with OTLP to a collector in this test (a gRPC server implementing
//! the OTLP trace service), arrive from all three binaries under one trace id (issue 12): the
//! CLI's submit, the coordinator's submit and assignment, the agent's run and worker start.

use dispatch_tests::{Cluster, wait_until};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<ResourceSpans>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .lock()
            .unwrap()
            .extend(req.into_inner().resource_spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// (service, span name, trace id) of every span whose `task_id` is `task`.
fn spans_of(c: &Collector, task: &str) -> Vec<(String, String, Vec<u8>)> {
    let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
        .as_ref()
        .and_then(|v| v.value.as_ref())
    {
        Some(Value::StringValue(s)) => s.clone(),
        _ => String::new(),
    };
    let mut out = Vec::new();
    for rs in c.0.lock().unwrap().iter() {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .map(|a| text(&a.value))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                if s.attributes
                    .iter()
                    .any(|a| a.key == "task_id" && text(&a.value) == task)
                {
                    out.push((service.clone(), s.name.clone(), s.trace_id.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn one_tasks_spans_arrive_from_the_cli_the_coordinator_and_the_agent_under_one_trace() {
    let collector = Collector::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let served = collector.clone();
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(served))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    // Every process this test starts exports here, quickly. (nextest runs each test in a
    // process of its own: nothing else reads this environment.)
    // SAFETY: set before any thread of this test reads the environment.
    unsafe {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
        std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    }
    let c = Cluster::with_node("box");
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "traced",
        "--step",
        "a",
        "traced",
    ]);
    let t = c.wait_task("traced", "it to end", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed");

    let want = [
        ("dispatch", "dispatch.submit"),
        ("dispatch-coordinator", "coordinator.submit"),
        ("dispatch-coordinator", "coordinator.assign"),
        ("dispatch-agent", "agent.run"),
        ("dispatch-agent", "agent.start_worker"),
    ];
    let spans = wait_until("the task's spans from all three binaries", || {
        let s = spans_of(&collector, "traced");
        want.iter()
            .all(|(svc, name)| s.iter().any(|(a, b, _)| a == svc && b == name))
            .then_some(s)
    });
    let trace = &spans[0].2;
    assert_eq!(trace.len(), 16);
    for (svc, name, t) in &spans {
        assert_eq!(t, trace, "{svc} {name} is in another trace: {spans:?}");
    }
}
