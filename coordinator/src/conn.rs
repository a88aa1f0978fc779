//! Connection hygiene on the coordinator's TCP listeners. A stranger's connection costs a file
//! descriptor and some memory until it is closed, so every accepted connection passes a
//! [`Gate`]:
//!
//! - it is counted, overall and — until it has authenticated — per peer address; past the
//!   per-address cap a new connection is closed at once;
//! - it must make an authenticated call within [`Limits::deadline`] (gRPC: any call whose token
//!   or certificate checks out) or it is closed — a silent TCP connection, a TLS handshake
//!   never finished, an HTTP/2 connection that never sends a request all end there;
//! - when the overall cap is reached, the oldest connection that has not authenticated is
//!   closed to make room: a flood of idle connections can delay nobody who authenticates.
//!
//! The gate is the only writer of its counts; [`Guarded`] (the connection) releases its place
//! when dropped.

// An IPv4-mapped IPv6 peer counts as its IPv4 address.
use dispatch_core::egress::canonical;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a gate allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, authenticated or not.
    pub max_connections: usize,
    /// Connections from one address that have not authenticated yet.
    pub unauthenticated_per_address: usize,
    /// How long a connection may stay without authenticating (none: forever; it still counts).
    pub deadline: Option<Duration>,
}

impl Limits {
    /// Defaults for a listener of the coordinator: as many connections as the process may open
    /// file descriptors (less a reserve for the store and logs; see
    /// [`raise_open_file_limit`]), 64 strangers per address, 10 s to authenticate.
    pub fn for_process() -> Limits {
        Limits {
            max_connections: fd_budget(),
            unauthenticated_per_address: 64,
            deadline: Some(Duration::from_secs(10)),
        }
    }
}

/// File descriptors kept for everything but connections: the store, logs, the dashboard.
const FD_RESERVE: u64 = 256;

/// Raises the soft limit on open files to the hard limit: a coordinator of many nodes needs
/// them. Once, at start.
pub fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && hard > soft
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
    }
}

/// How many connections the process's open-file limit leaves room for.
pub fn fd_budget() -> usize {
    let Ok((soft, _)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    else {
        return 1024;
    };
    // Some systems report an unlimited limit; no process gets that many in practice.
    soft.min(1 << 20).saturating_sub(FD_RESERVE).max(64) as usize
}

/// What a gate did, for metrics and tests.
#[derive(Debug, Default)]
pub struct GateCounts {
    /// Connections admitted.
    pub admitted: AtomicU64,
    /// Connections closed at once: their address had too many strangers, or every place was
    /// taken by authenticated connections.
    pub refused: AtomicU64,
    /// Unauthenticated connections closed to make room for a newer one.
    pub evicted: AtomicU64,
    /// Connections closed at the deadline without having authenticated.
    pub timed_out: AtomicU64,
}

/// One connection as the gate sees it.
#[derive(Debug)]
struct Conn {
    id: u64,
    peer: SocketAddr,
    /// It authenticated: no deadline, not evictable, not counted for its address.
    authed: AtomicBool,
    /// The gate closed it to make room.
    evicted: AtomicBool,
    /// Wakes the connection's reader when it is evicted.
    waker: Mutex<Option<Waker>>,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    /// Connections not yet authenticated, oldest first.
    strangers: BTreeMap<u64, Arc<Conn>>,
    by_peer: HashMap<SocketAddr, u64>,
    per_address: HashMap<IpAddr, usize>,
    next: u64,
}

/// Counts and closes the connections of one or more listeners (see the module docs).
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    state: Mutex<State>,
    /// What it did.
    pub counts: GateCounts,
}

impl Gate {
    /// A gate with `limits`.
    pub fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            state: Mutex::default(),
            counts: GateCounts::default(),
        })
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections open now, and how many of them have not authenticated.
    pub fn open(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        (s.open, s.strangers.len())
    }

    /// Lets `io` (a connection from `peer`) in, or `None` when it must be closed at once.
    pub fn admit<IO>(self: &Arc<Self>, io: IO, peer: SocketAddr) -> Option<Guarded<IO>> {
        let mut s = self.state.lock().unwrap();
        let ip = canonical(peer.ip());
        if s.per_address.get(&ip).copied().unwrap_or(0) >= self.limits.unauthenticated_per_address {
            drop(s);
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "closing a connection: its address has too many that have not authenticated");
            return None;
        }
        if s.open >= self.limits.max_connections {
            // The oldest stranger makes room; with none, the newcomer is refused.
            match s.strangers.pop_first() {
                Some((_, old)) => {
                    s.by_peer.remove(&old.peer);
                    uncount(&mut s.per_address, canonical(old.peer.ip()));
                    old.evicted.store(true, Ordering::SeqCst);
                    if let Some(w) = old.waker.lock().unwrap().take() {
                        w.wake();
                    }
                    self.counts.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    drop(s);
                    self.counts.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        %peer,
                        max = self.limits.max_connections,
                        "closing a connection: every place is taken by authenticated connections (raise the open-file limit or --max-connections)"
                    );
                    return None;
                }
            }
        }
        let id = s.next;
        s.next += 1;
        let conn = Arc::new(Conn {
            id,
            peer,
            authed: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        s.open += 1;
        s.strangers.insert(id, Arc::clone(&conn));
        s.by_peer.insert(peer, id);
        *s.per_address.entry(ip).or_default() += 1;
        drop(s);
        self.counts.admitted.fetch_add(1, Ordering::Relaxed);
        Some(Guarded {
            io,
            conn,
            gate: Arc::clone(self),
            deadline: self
                .limits
                .deadline
                .map(|d| Box::pin(tokio::time::sleep(d))),
        })
    }

    /// The connection from `peer` made an authenticated call: it stays as long as it likes.
    pub fn authenticated(&self, peer: SocketAddr) {
        let mut s = self.state.lock().unwrap();
        let Some(id) = s.by_peer.remove(&peer) else {
            return;
        };
        if let Some(c) = s.strangers.remove(&id) {
            c.authed.store(true, Ordering::SeqCst);
            uncount(&mut s.per_address, canonical(peer.ip()));
        }
    }

    fn release(&self, c: &Conn) {
        let mut s = self.state.lock().unwrap();
        s.open -= 1;
        if s.strangers.remove(&c.id).is_some() {
            s.by_peer.remove(&c.peer);
            uncount(&mut s.per_address, canonical(c.peer.ip()));
        }
    }
}

fn uncount(m: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = m.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            m.remove(&ip);
        }
    }
}

/// A connection let in by a [`Gate`]: it fails (and so is closed by its server) when evicted
/// or when its deadline passes before it authenticated; it gives its place back when dropped.
pub struct Guarded<IO> {
    io: IO,
    conn: Arc<Conn>,
    gate: Arc<Gate>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> Guarded<IO> {
    /// The connection itself.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Its peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.conn.peer
    }

    /// An error when the gate closed it; registers for the wake-ups that would.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.conn.evicted.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room: it had not authenticated",
            ));
        }
        if self.conn.authed.load(Ordering::SeqCst) {
            self.deadline = None;
            return Ok(());
        }
        *self.conn.waker.lock().unwrap() = Some(cx.waker().clone());
        if let Some(d) = &mut self.deadline
            && d.as_mut().poll(cx).is_ready()
        {
            self.deadline = None;
            if !self.conn.authed.load(Ordering::SeqCst) {
                self.gate.counts.timed_out.fetch_add(1, Ordering::Relaxed);
                self.conn.evicted.store(true, Ordering::SeqCst);
                tracing::debug!(peer = %self.conn.peer, "closing a connection that did not authenticate in time");
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no authenticated call within the deadline",
                ));
            }
        }
        Ok(())
    }
}

impl<IO> Drop for Guarded<IO> {
    fn drop(&mut self) {
        self.gate.release(&self.conn);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.conn.evicted.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.conn.evicted.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Guarded<tokio::net::TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn peer(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    #[tokio::test]
    async fn strangers_are_capped_per_address_and_evicted_oldest_first() {
        let g = Gate::new(Limits {
            max_connections: 3,
            unauthenticated_per_address: 2,
            deadline: None,
        });
        let a = g.admit((), peer("10.0.0.1", 1)).unwrap();
        let _b = g.admit((), peer("10.0.0.1", 2)).unwrap();
        assert!(g.admit((), peer("10.0.0.1", 3)).is_none(), "third stranger");
        // Once one authenticates, its address may bring another.
        g.authenticated(peer("10.0.0.1", 1));
        let _c = g.admit((), peer("10.0.0.1", 3)).unwrap();
        assert_eq!(g.open(), (3, 2));
        // Full: the oldest stranger (port 2) makes room, not the authenticated one.
        let _d = g.admit((), peer("10.0.0.2", 1)).unwrap();
        assert!(_b.conn.evicted.load(Ordering::SeqCst));
        assert!(!a.conn.evicted.load(Ordering::SeqCst));
        assert_eq!(g.counts.evicted.load(Ordering::Relaxed), 1);
        drop(_b);
        assert_eq!(g.open(), (3, 2));
        // Everyone authenticated and full: a newcomer is refused.
        g.authenticated(peer("10.0.0.1", 3));
        g.authenticated(peer("10.0.0.2", 1));
        assert!(g.admit((), peer("10.0.0.3", 1)).is_none());
        drop(a);
        assert!(g.admit((), peer("10.0.0.3", 1)).is_some());
    }

    #[tokio::test]
    async fn a_connection_that_does_not_authenticate_is_closed_at_the_deadline() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let g = Gate::new(Limits {
            max_connections: 10,
            unauthenticated_per_address: 10,
            deadline: Some(Duration::from_millis(200)),
        });
        let gate = Arc::clone(&g);
        let server = tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..2 {
                let (s, p) = l.accept().await.unwrap();
                let mut conn = gate.admit(s, p).unwrap();
                if out.is_empty() {
                    // The first one authenticates at once.
                    gate.authenticated(p);
                }
                out.push(tokio::spawn(async move {
                    let mut buf = [0u8; 16];
                    let r = conn.read(&mut buf).await;
                    let _ = conn.write_all(b"bye").await;
                    r.map_err(|e| e.kind())
                }));
            }
            out
        });
        let mut good = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Accepted in order: wait for the first to be let in before the second connects.
        while g.open().0 < 1 {
            tokio::task::yield_now().await;
        }
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tasks = server.await.unwrap();
        let mut it = tasks.into_iter();
        let (first, second) = (it.next().unwrap(), it.next().unwrap());
        assert_eq!(
            second.await.unwrap(),
            Err(io::ErrorKind::TimedOut),
            "the silent one is cut"
        );
        assert_eq!(g.counts.timed_out.load(Ordering::Relaxed), 1);
        good.write_all(b"hello").await.unwrap();
        assert_eq!(first.await.unwrap(), Ok(5), "the authenticated one is not");
    }
}
