//! A standby hands its listeners to the next server without losing a connection.
//!
//! tokio keeps one waker per listener for `poll_accept`: if a server that has been told to
//! stop polls its listener once more after the next server's first poll, the next server is
//! never woken for a connection. A standby's servers once did that to the leader's (under
//! load, in about one takeover in four), and the new leader accepted nothing. Each round here
//! hands the same listeners from one standby to the next, on a runtime with two workers so the
//! old servers' last polls race the new ones', and the new one must answer a health check.

use std::sync::Arc;
use std::time::Duration;

use dispatch_coordinator::server::{Listener, serve_standby};
use dispatch_coordinator::store::postgres::lease::Role;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Asks the server behind `url` for its health, on a new connection, within `deadline`.
async fn health(url: &str, deadline: Duration) -> Result<i32, String> {
    tokio::time::timeout(deadline, async {
        let ch = tonic::transport::Endpoint::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let r = HealthClient::new(ch)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|s| s.to_string())?;
        Ok(r.into_inner().status)
    })
    .await
    .map_err(|_| format!("no answer within {deadline:?}: nothing accepts the connection"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_standby_in_turn_accepts_on_the_listeners_the_last_one_handed_over() {
    let tcp = Arc::new(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let url = format!("http://{}", tcp.local_addr().unwrap());
    let listeners = vec![Listener::Tcp(
        tcp,
        dispatch_coordinator::conn::Gate::new(dispatch_coordinator::conn::Limits::for_process()),
    )];
    // A connection that stays open across the hand-offs (as a client's channel would).
    let kept = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect_lazy();
    let mut kept = HealthClient::new(kept);
    for round in 0..500 {
        let (_role_tx, role) = tokio::sync::watch::channel(Role::Standby {
            leader: "http://leader.example:7070".into(),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn({
            let listeners = listeners.clone();
            async move {
                serve_standby(&listeners, role, async move {
                    let _ = stop_rx.await;
                })
                .await
            }
        });
        let status = health(&url, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(status, ServingStatus::NotServing as i32, "round {round}");
        // The kept connection is answered by whichever server owns it; it must not hang.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            kept.check(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: the kept connection hangs"));
        stop_tx.send(()).unwrap();
        served.await.unwrap().unwrap();
    }
}
