//! Idempotent calls: `Submit` and `Answer` carry a request id the CLI makes up once, so a
//! call retried after a dropped connection or a restarted coordinator never creates a second
//! task or answers twice.

use std::future::Future;
use std::time::Duration;
use tonic::{Code, Status};

/// Pauses between attempts: three tries in all.
const BACKOFF: [Duration; 2] = [Duration::from_millis(300), Duration::from_millis(1500)];

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

/// Runs `call` (which must send the same request id every time) until it succeeds, fails
/// for a reason a retry cannot fix, or three attempts are spent.
pub(crate) async fn idempotent<T, F, Fut>(what: &str, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut pauses = BACKOFF.iter();
    loop {
        match call().await {
            Err(s) if in_doubt(&s) => match pauses.next() {
                Some(p) => {
                    tracing::debug!(error = %s, "{what}: retrying with the same request id");
                    tokio::time::sleep(*p).await;
                }
                None => return Err(s),
            },
            r => return r,
        }
    }
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
        let r: Result<u8, Status> = idempotent("x", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(Status::unavailable("gone"))
                } else {
                    Ok(7)
                }
            }
        })
        .await;
        assert_eq!((r.unwrap(), calls), (7, 3));
        let mut calls = 0;
        let r: Result<u8, Status> = idempotent("x", || {
            calls += 1;
            async { Err(Status::invalid_argument("bad")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "a refusal is final");
    }
}
