//! One-time answer links: what a notification carries so its reader can answer exactly one
//! question of one task from a phone, without logging in, once, until the link expires.
//!
//! A link is `{public_url}/a/{payload}.{mac}`: the payload is
//! base64url(`{id}.{seq}.{expires_ms}.{task}`), the MAC base64url(HMAC-SHA256(key,
//! `dispatch answer link v1.{payload}`)). The key is made at the first start and kept in the
//! store (replicas share it). A link is checked in this order: its MAC (a forged or altered
//! link is refused without a store read), its expiry, then the store takes it — once, and only
//! for the task and question it was handed out for. The answer is given as the task's owner
//! (audited as such, "via a one-time link").

use crate::domain::access::random_hex;
use crate::error::Result;
use crate::model::LinkTaken;
use crate::store::Store;
use base64::Engine;
use std::sync::Arc;
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// The store's name for the key.
const KEY_NAME: &str = "answer-link-key";
/// The longest token read (a task id is at most 63 bytes: a real one is under 200).
const MAX_TOKEN: usize = 400;

/// Makes and checks answer links.
pub struct Links {
    key: Vec<u8>,
    base: String,
    ttl: Duration,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("base", &self.base)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// What a link that passed its MAC and expiry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The link's own id (its row in the store).
    pub id: String,
    /// The task and the question it answers.
    pub task: String,
    /// See `task`.
    pub seq: u32,
    /// When it stops working, ms since the epoch.
    pub expires_ms: i64,
}

/// Why a link is refused before the store is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a link this coordinator made (forged, altered, cut).
    Invalid,
    /// Past its expiry.
    Expired,
}

impl Links {
    /// Links for the dashboard at `public_url`, working `ttl`, signed with the store's key
    /// (made now on a new store).
    pub async fn load(store: Arc<dyn Store>, public_url: &str, ttl: Duration) -> Result<Links> {
        let key = store.secret(KEY_NAME, &random_hex(32)?).await?;
        Ok(Links {
            key: key.into_bytes(),
            base: public_url.trim_end_matches('/').to_string(),
            ttl,
            store,
        })
    }

    fn mac(&self, payload: &str) -> String {
        use hmac::Mac;
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(b"dispatch answer link v1.");
        mac.update(payload.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }

    /// A new link for question `seq` of `task`, kept in the store.
    pub async fn make(&self, task: &str, seq: u32) -> Result<String> {
        let id = random_hex(16)?;
        let expires_ms = crate::now_ms() + self.ttl.as_millis().min(i64::MAX as u128) as i64;
        self.store
            .add_answer_link(&id, task, seq, expires_ms)
            .await?;
        let payload = B64.encode(format!("{id}.{seq}.{expires_ms}.{task}"));
        Ok(format!("{}/a/{payload}.{}", self.base, self.mac(&payload)))
    }

    /// The task's page on the dashboard.
    pub fn task_url(&self, task: &str) -> String {
        format!("{}/task/{task}", self.base)
    }

    /// What `token` (the part after `/a/`) says, when it is a link this coordinator made and
    /// it has not expired at `now_ms`.
    pub fn check(&self, token: &str, now_ms: i64) -> std::result::Result<Claim, Refused> {
        if token.len() > MAX_TOKEN {
            return Err(Refused::Invalid);
        }
        let (payload, mac) = token.split_once('.').ok_or(Refused::Invalid)?;
        let (Ok(given), Ok(made)) = (B64.decode(mac), B64.decode(self.mac(payload))) else {
            return Err(Refused::Invalid);
        };
        // In constant time: a guess learns nothing from how long the refusal took.
        if given.len() != made.len()
            || given.iter().zip(&made).fold(0u8, |d, (a, b)| d | (a ^ b)) != 0
        {
            return Err(Refused::Invalid);
        }
        let text = B64
            .decode(payload)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(Refused::Invalid)?;
        let mut parts = text.splitn(4, '.');
        let (Some(id), Some(seq), Some(expires), Some(task)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refused::Invalid);
        };
        let (Ok(seq), Ok(expires_ms)) = (seq.parse::<u32>(), expires.parse::<i64>()) else {
            return Err(Refused::Invalid);
        };
        if dispatch_core::task_id::validate(task).is_err() {
            return Err(Refused::Invalid);
        }
        if expires_ms <= now_ms {
            return Err(Refused::Expired);
        }
        Ok(Claim {
            id: id.to_string(),
            task: task.to_string(),
            seq,
            expires_ms,
        })
    }

    /// Uses the link of `claim` (once).
    pub async fn take(&self, claim: &Claim, now_ms: i64) -> Result<LinkTaken> {
        self.store
            .take_answer_link(&claim.id, &claim.task, claim.seq, now_ms)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn links(dir: &std::path::Path) -> Links {
        let store: Arc<dyn Store> = Arc::new(
            crate::store::SqliteStore::open(&dir.join("s.db"))
                .await
                .unwrap(),
        );
        Links::load(
            store,
            "https://dispatch.example/",
            Duration::from_secs(3600),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_link_is_bound_to_its_question_expires_and_cannot_be_forged() {
        let dir = tempfile::tempdir().unwrap();
        let l = links(dir.path()).await;
        let url = l.make("fix-login", 2).await.unwrap();
        let token = url.strip_prefix("https://dispatch.example/a/").unwrap();
        let now = crate::now_ms();
        let claim = l.check(token, now).unwrap();
        assert_eq!((claim.task.as_str(), claim.seq), ("fix-login", 2));
        // Past its expiry it is refused before the store is asked.
        assert_eq!(l.check(token, claim.expires_ms), Err(Refused::Expired));
        // Another task or question in the payload, or any changed byte, fails the MAC.
        let (payload, mac) = token.split_once('.').unwrap();
        let text = String::from_utf8(B64.decode(payload).unwrap()).unwrap();
        for other in [
            text.replace(".fix-login", ".other-task"),
            text.replacen(".2.", ".3.", 1),
        ] {
            let forged = format!("{}.{mac}", B64.encode(other));
            assert_eq!(l.check(&forged, now), Err(Refused::Invalid));
        }
        for bad in ["", ".", "x.y", &format!("{payload}."), &"a".repeat(500)] {
            assert_eq!(l.check(bad, now), Err(Refused::Invalid), "{bad:?}");
        }
        // A link another coordinator made (another key) is not this one's.
        let other_dir = tempfile::tempdir().unwrap();
        let other = links(other_dir.path()).await;
        let theirs = other.make("fix-login", 2).await.unwrap();
        let theirs = theirs.rsplit('/').next().unwrap();
        assert_eq!(l.check(theirs, now), Err(Refused::Invalid));
        // The store takes it once, for its own question only.
        let wrong = Claim {
            seq: 3,
            ..claim.clone()
        };
        assert_eq!(l.take(&wrong, now).await.unwrap(), LinkTaken::Unknown);
        assert_eq!(l.take(&claim, now).await.unwrap(), LinkTaken::Taken);
        assert_eq!(l.take(&claim, now + 1).await.unwrap(), LinkTaken::Used(now));
        // The key stays across a restart: links handed out before it still check.
        let again = links(dir.path()).await;
        assert!(again.check(token, now).is_ok());
    }

    /// One writer: of many uses of the same link at once, exactly one takes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_uses_at_once_take_a_link_once() {
        let dir = tempfile::tempdir().unwrap();
        let l = Arc::new(links(dir.path()).await);
        for round in 0..5u32 {
            let url = l.make("race", round).await.unwrap();
            let token = url.rsplit('/').next().unwrap().to_string();
            let claim = l.check(&token, crate::now_ms()).unwrap();
            let tries: Vec<_> = (0..16)
                .map(|_| {
                    let (l, claim) = (Arc::clone(&l), claim.clone());
                    tokio::spawn(async move { l.take(&claim, crate::now_ms()).await.unwrap() })
                })
                .collect();
            let mut taken = 0;
            for t in tries {
                match t.await.unwrap() {
                    LinkTaken::Taken => taken += 1,
                    LinkTaken::Used(_) => {}
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(taken, 1, "round {round}");
        }
    }
}
