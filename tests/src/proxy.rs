//! A TCP proxy for fault injection: agents connect through it to the coordinator, and a test
//! makes it reset every connection, stall (forward nothing, keep the sockets open) or delay
//! what it forwards, at will or on a schedule drawn from a printed seed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything at once.
    Pass,
    /// Forward nothing (connections stay open, bytes wait).
    Stall,
    /// Forward each chunk after this delay.
    Delay(Duration),
}

/// Counts of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Times every open connection was reset.
    pub resets: AtomicU64,
    /// Stalls begun.
    pub stalls: AtomicU64,
    /// Delay periods begun.
    pub delays: AtomicU64,
}

/// A running proxy (stops with its runtime).
pub struct Proxy {
    /// `http://127.0.0.1:PORT` to give agents.
    pub url: String,
    mode: watch::Sender<Mode>,
    /// Bumped to reset every open connection.
    generation: watch::Sender<u64>,
    /// What it did.
    pub stats: Arc<ProxyStats>,
    _rt: Arc<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`http://HOST:PORT`) on its own runtime thread.
    pub fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("upstream is http://IP:PORT");
        let rt = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap(),
        );
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let (generation, gen_rx) = watch::channel(0u64);
        let stats = Arc::new(ProxyStats::default());
        let s = Arc::clone(&stats);
        rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                s.connections.fetch_add(1, Ordering::Relaxed);
                let (mode_rx, mut gen_rx) = (mode_rx.clone(), gen_rx.clone());
                let born = *gen_rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let a = pump(cr, sw, mode_rx.clone());
                    let b = pump(sr, cw, mode_rx);
                    // A reset: both sockets are dropped at once (the peers see the stream end
                    // or an error mid-message).
                    let reset = async {
                        let _ = gen_rx.wait_for(|g| *g != born).await;
                    };
                    tokio::select! {
                        _ = a => {}
                        _ = b => {}
                        _ = reset => {}
                    }
                });
            }
        });
        Proxy {
            url,
            mode,
            generation,
            stats,
            _rt: rt,
        }
    }

    /// Sets what the proxy does from now on.
    pub fn set(&self, m: Mode) {
        match m {
            Mode::Stall => self.stats.stalls.fetch_add(1, Ordering::Relaxed),
            Mode::Delay(_) => self.stats.delays.fetch_add(1, Ordering::Relaxed),
            Mode::Pass => 0,
        };
        let _ = self.mode.send(m);
    }

    /// Resets every open connection.
    pub fn reset(&self) {
        self.stats.resets.fetch_add(1, Ordering::Relaxed);
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            let m = *mode.borrow_and_update();
            match m {
                Mode::Pass => break,
                Mode::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Mode::Stall => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A small deterministic generator (xorshift64*), so a failing run can be replayed from the
/// seed it printed.
pub struct Rng(u64);

impl Rng {
    /// From `seed` (0 is replaced: xorshift has no zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A seed from `DISPATCH_FAULT_SEED`, else from the clock.
    pub fn seed_from_env() -> u64 {
        std::env::var("DISPATCH_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A duration between `lo` and `hi`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        Duration::from_millis(self.range(lo.as_millis() as u64, hi.as_millis() as u64))
    }
}

/// What a chaos schedule did, for the report.
#[derive(Debug, Default, Clone)]
pub struct Chaos {
    /// (what, how long) in order.
    pub log: Vec<(String, Duration)>,
}

/// Runs a random schedule of resets, stalls (1–20 s) and delays on `proxy` for `total`, from
/// `seed`, then leaves it passing traffic. Blocks the calling thread.
pub fn chaos(proxy: &Proxy, seed: u64, total: Duration) -> Chaos {
    let mut rng = Rng::new(seed);
    let mut out = Chaos::default();
    let start = Instant::now();
    while start.elapsed() < total {
        let calm = rng.between(Duration::from_millis(500), Duration::from_secs(3));
        std::thread::sleep(calm);
        match rng.range(0, 2) {
            0 => {
                proxy.reset();
                out.log.push(("reset".into(), Duration::ZERO));
            }
            1 => {
                let d = rng.between(Duration::from_secs(1), Duration::from_secs(20));
                proxy.set(Mode::Stall);
                std::thread::sleep(d);
                proxy.set(Mode::Pass);
                out.log.push(("stall".into(), d));
            }
            _ => {
                let per_chunk = rng.between(Duration::from_millis(5), Duration::from_millis(300));
                let d = rng.between(Duration::from_secs(1), Duration::from_secs(5));
                proxy.set(Mode::Delay(per_chunk));
                std::thread::sleep(d);
                proxy.set(Mode::Pass);
                out.log.push((format!("delay {per_chunk:?}/chunk"), d));
            }
        }
    }
    proxy.set(Mode::Pass);
    out
}

/// Mutable state shared between a test and its helper threads.
pub type Shared<T> = Arc<Mutex<T>>;
