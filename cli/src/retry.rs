//! Idempotent calls: `Submit` and `Answer` carry a request id the CLI makes up once, so a
//! call retried after a dropped connection or a restarted coordinator never creates a second
//! task or answers twice.

use std::future::Future;
use std::time::Duration;
use tonic::{Code, Status};

/// Pauses between attempts: five tries in all, over about 7 s — past a coordinator restart or
/// a standby replica taking over.
const BACKOFF: [Duration; 4] = [
    Duration::from_millis(300),
    Duration::from_millis(1000),
    Duration::from_millis(2000),
    Duration::from_millis(4000),
];

/// A fresh request id (128 random bits, hex).
pub(crate) fn request_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No system randomness: time and pid still make a collision unlikely.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b[..16].copy_from_slice(&(t ^ u128::from(std::process::id()) << 64).to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// True when the call may or may not have been applied (the connection broke, the
/// coordinator went away): safe to repeat with the same request id, and only then.
fn in_doubt(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// Runs `call` on a client (it must send the same request id every time) until it succeeds,
/// fails for a reason a retry cannot fix, or five attempts are spent. Before each retry,
/// `reconnect` may give a new client: with replicas (`--coordinator URL1,URL2`) the retry
/// reaches whichever leads now.
pub(crate) async fn idempotent<C, T, F, Fut, R, RFut>(
    what: &str,
    mut client: C,
    mut reconnect: R,
    mut call: F,
) -> Result<T, Status>
where
    C: Clone,
    F: FnMut(C) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
    R: FnMut() -> RFut,
    RFut: Future<Output = Option<C>>,
{
    let mut pauses = BACKOFF.iter();
    loop {
        match call(client.clone()).await {
            Err(s) if in_doubt(&s) => match pauses.next() {
                Some(p) => {
                    tracing::debug!(error = %s, "{what}: retrying with the same request id");
                    tokio::time::sleep(*p).await;
                    if let Some(c) = reconnect().await {
                        client = c;
                    }
                }
                None => return Err(s),
            },
            r => return r,
        }
    }
}

/// A `reconnect` for [`idempotent`]: a new client when the coordinator is a list of replicas
/// (one address: the channel reconnects by itself).
pub(crate) async fn reconnect(g: &crate::settings::Settings) -> Option<crate::client::Client> {
    let list = g.coordinator.as_deref()?;
    if dispatch_connect::addresses(list).len() < 2 {
        return None;
    }
    crate::client::connect(g).await.ok().map(|t| t.client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_hex() {
        let (a, b) = (request_id(), request_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn repeats_only_what_may_not_have_happened() {
        let mut calls = 0;
        let mut reconnects = 0;
        let r: Result<u8, Status> = idempotent(
            "x",
            0u8,
            || {
                reconnects += 1;
                let n = reconnects;
                async move { Some(n) }
            },
            |client| {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(Status::unavailable("gone"))
                    } else {
                        Ok(client)
                    }
                }
            },
        )
        .await;
        assert_eq!(
            (r.unwrap(), calls),
            (2, 3),
            "the third call goes out on the second reconnected client"
        );
        let mut calls = 0;
        let r: Result<u8, Status> = idempotent(
            "x",
            0u8,
            || async { None },
            |_| {
                calls += 1;
                async { Err(Status::invalid_argument("bad")) }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "a refusal is final");
    }
}
