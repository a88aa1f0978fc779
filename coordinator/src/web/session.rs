//! Dashboard sessions. The browser holds only a random session id (HttpOnly, SameSite=Strict,
//! `__Host-` and Secure over TLS); the token stays on the server, is checked on every request
//! (a revoked token ends its sessions at once) and is never written to a cookie. Each session
//! has a CSRF token that every form carries; a post must also come from the dashboard's own
//! origin (`Sec-Fetch-Site`, `Origin`). Failed logins are throttled per source address and
//! audited.

use crate::domain::access::random_hex;
use crate::model::Principal;
use axum::http::{HeaderMap, header};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Sessions kept at once (the oldest goes first past it).
const MAX_SESSIONS: usize = 10_000;
/// A session unused this long is over.
const IDLE_MS: i64 = 12 * 3600 * 1000;
/// Failed logins one address may make in [`WINDOW_MS`] before it must wait.
const MAX_FAILURES: u32 = 5;
/// The window of [`MAX_FAILURES`].
const WINDOW_MS: i64 = 60 * 1000;
/// Addresses whose failures are remembered at once.
const MAX_ADDRESSES: usize = 10_000;

/// A logged-in browser.
#[derive(Debug, Clone)]
struct Session {
    /// The user token it logged in with (`None`: the local daemon's owner).
    token: Option<String>,
    /// What every form of the session carries.
    csrf: String,
    last_ms: i64,
}

/// The dashboard's sessions and failed-login counts (one writer each: this struct's locks).
#[derive(Debug, Default)]
pub(super) struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (u32, i64)>>,
}

impl Sessions {
    /// Starts a session for `token` (`None`: the local owner); its id.
    pub(super) fn start(&self, token: Option<String>, now_ms: i64) -> crate::error::Result<String> {
        let id = random_hex(32)?;
        let csrf = random_hex(16)?;
        let mut m = self.by_id.lock().unwrap();
        m.retain(|_, s| now_ms - s.last_ms < IDLE_MS);
        if m.len() >= MAX_SESSIONS
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, s)| s.last_ms)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(
            id.clone(),
            Session {
                token,
                csrf,
                last_ms: now_ms,
            },
        );
        Ok(id)
    }

    /// The session `id`'s token (`Some(None)` for the local owner) and CSRF token, when it is
    /// live; an idle one ends here.
    fn get(&self, id: &str, now_ms: i64) -> Option<(Option<String>, String)> {
        let mut m = self.by_id.lock().unwrap();
        let s = m.get_mut(id)?;
        if now_ms - s.last_ms >= IDLE_MS {
            m.remove(id);
            return None;
        }
        s.last_ms = now_ms;
        Some((s.token.clone(), s.csrf.clone()))
    }

    /// Ends session `id`.
    pub(super) fn end(&self, id: &str) {
        self.by_id.lock().unwrap().remove(id);
    }

    /// Who session `id` is, with its CSRF token: the token is checked now, so a revoked one
    /// ends the session.
    pub(super) fn who(
        &self,
        id: &str,
        now_ms: i64,
        resolve: impl Fn(&str) -> Option<Principal>,
    ) -> Option<(Principal, String)> {
        let (token, csrf) = self.get(id, now_ms)?;
        let who = match token {
            None => Principal::Local,
            Some(t) => match resolve(&t) {
                Some(p) => p,
                None => {
                    self.end(id);
                    return None;
                }
            },
        };
        Some((who, csrf))
    }

    /// Seconds `ip` must wait before trying to log in again (0: it may try now).
    pub(super) fn login_wait(&self, ip: IpAddr, now_ms: i64) -> u64 {
        let m = self.failures.lock().unwrap();
        match m.get(&ip) {
            Some(&(n, since)) if n >= MAX_FAILURES && now_ms - since < WINDOW_MS => {
                ((WINDOW_MS - (now_ms - since)) / 1000).max(1) as u64
            }
            _ => 0,
        }
    }

    /// Counts a failed login from `ip`.
    pub(super) fn login_failed(&self, ip: IpAddr, now_ms: i64) {
        let mut m = self.failures.lock().unwrap();
        if m.len() >= MAX_ADDRESSES {
            m.retain(|_, (_, since)| now_ms - *since < WINDOW_MS);
            if m.len() >= MAX_ADDRESSES {
                // Still full of fresh failures: forget one rather than grow.
                if let Some(k) = m.keys().next().copied() {
                    m.remove(&k);
                }
            }
        }
        let e = m.entry(ip).or_insert((0, now_ms));
        if now_ms - e.1 >= WINDOW_MS {
            *e = (0, now_ms);
        }
        e.0 += 1;
    }

    /// A good login from `ip` clears its failures.
    pub(super) fn login_ok(&self, ip: IpAddr) {
        self.failures.lock().unwrap().remove(&ip);
    }
}

/// Why a post is refused: it did not come from the dashboard's own pages.
/// A browser's `Sec-Fetch-Site` decides; without it (an older browser), its `Origin`.
pub(super) fn cross_site(headers: &HeaderMap, secure: bool) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return (site != "same-origin" && site != "none")
            .then_some("the request came from another site");
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let scheme = if secure { "https" } else { "http" };
        if origin != format!("{scheme}://{host}") {
            return Some("the request came from another origin");
        }
    }
    None
}

/// `html` with the session's CSRF token in every post form (the forms are the dashboard's
/// own: user text in a page is escaped, so it holds no `<form`).
pub(super) fn with_csrf(html: &str, csrf: &str) -> String {
    const OPEN: &str = "<form method=\"post\"";
    let field = format!("<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">");
    let mut out = String::with_capacity(html.len() + 64);
    let mut rest = html;
    while let Some(i) = rest.find(OPEN) {
        let Some(close) = rest[i..].find('>') else {
            break;
        };
        let end = i + close + 1;
        out.push_str(&rest[..end]);
        out.push_str(&field);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_on_logout_on_revocation_and_when_idle() {
        let s = Sessions::default();
        let id = s.start(Some("dsp_a_b".into()), 0).unwrap();
        let ok = |t: &str| {
            (t == "dsp_a_b").then(|| Principal::User {
                token: "a".into(),
                name: "ann".into(),
                role: crate::model::Role::Member,
                nodes: vec![],
            })
        };
        assert!(s.who(&id, 1000, ok).is_some());
        // Revoked: the same session now resolves to nobody, and is gone.
        assert!(s.who(&id, 2000, |_| None).is_none());
        assert!(s.who(&id, 3000, ok).is_none());
        let id = s.start(Some("dsp_a_b".into()), 0).unwrap();
        s.end(&id);
        assert!(s.who(&id, 1, ok).is_none());
        let id = s.start(None, 0).unwrap();
        assert!(matches!(s.who(&id, 1, ok), Some((Principal::Local, _))));
        assert!(s.who(&id, 1 + IDLE_MS, ok).is_none(), "idle too long");
    }

    #[test]
    fn failed_logins_are_throttled_per_address() {
        let s = Sessions::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for i in 0..MAX_FAILURES {
            assert_eq!(s.login_wait(a, i64::from(i)), 0);
            s.login_failed(a, i64::from(i));
        }
        assert!(s.login_wait(a, 10) > 0);
        assert_eq!(s.login_wait(b, 10), 0, "another address is not held up");
        assert_eq!(s.login_wait(a, WINDOW_MS + 10), 0, "the window passes");
    }

    #[test]
    fn every_post_form_gets_the_csrf_token_and_cross_site_posts_are_seen() {
        let html = r#"<p>&lt;form method="post"&gt;</p><form method="post" action="/a"><b>x</b></form><form method="post" action="/b" class="c"></form><form action="/get">"#;
        let out = with_csrf(html, "T");
        assert_eq!(out.matches(r#"name="csrf" value="T""#).count(), 2, "{out}");
        assert!(out.contains(
            r#"<form method="post" action="/a"><input type="hidden" name="csrf" value="T">"#
        ));
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "dash:8080".parse().unwrap());
        assert_eq!(cross_site(&h, true), None);
        h.insert("sec-fetch-site", "same-site".parse().unwrap());
        assert!(
            cross_site(&h, true).is_some(),
            "another port of the same host"
        );
        h.remove("sec-fetch-site");
        h.insert(header::ORIGIN, "https://dash:8080".parse().unwrap());
        assert_eq!(cross_site(&h, true), None);
        h.insert(header::ORIGIN, "https://dash:9999".parse().unwrap());
        assert!(
            cross_site(&h, true).is_some(),
            "an older browser, another origin"
        );
    }
}
