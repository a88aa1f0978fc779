//! A small cluster builder for end-to-end tests: starts the real `dispatch-coordinator`,
//! `dispatch-agent` and `dispatch` binaries as separate processes on loopback (random ports,
//! temp directories) and talks to them the way users do. Every wait has a deadline and fails
//! with a message saying what never happened.

pub mod bench_clis;
pub mod mock_models;
pub mod proxy;
pub mod real_clis;

use dispatch_proto::v1;
use dispatch_proto::v1::dispatch_service_client::DispatchServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Path of a workspace binary next to the test executable (target/<profile>/NAME).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests run from target/<profile>/deps/, the bench from target/<profile>/.
    let mut dir = exe.parent().expect("target directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("target directory");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo nextest run --workspace` (or `cargo build --workspace` first)",
        path.display()
    );
    path
}

/// Polls `check` until it returns Some, or panics after `DEADLINE` naming `what`.
pub fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A child process that is killed when dropped.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc { child, log }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (up to the deadline) for it to exit.
    pub fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        wait_until("a process to exit after SIGTERM", || {
            self.child.try_wait().ok().flatten()
        });
    }

    /// What the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Agents stop their workers' process groups on SIGTERM; give them a moment.
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.kill();
        }
    }
}

/// A test cluster: one coordinator and any number of agent nodes, each in its own temp dir.
// Fields drop in order: agents stop (and stop their workers) before the coordinator, and the
// temp directory goes last.
pub struct Cluster {
    /// Agents by name.
    pub agents: Vec<(String, Proc)>,
    // The test's own client connections close with the runtime, before the coordinator stops.
    rt: tokio::runtime::Runtime,
    /// The coordinator.
    pub coordinator: Proc,
    /// Its URL (`http://127.0.0.1:PORT`).
    pub url: String,
    coordinator_args: Vec<String>,
    /// The CA of a coordinator serving TLS (its URL is then https://).
    pub ca: Option<PathBuf>,
    /// The admin token the coordinator made at its first start.
    pub admin_token: String,
    /// Node tokens made for the agents, by node name.
    node_tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Standby replicas (a cluster on PostgreSQL, see [`on_postgres`]).
    pub standbys: Vec<Proc>,
    /// Root temp directory.
    pub dir: tempfile::TempDir,
}

/// Where every [`Cluster`] this process starts keeps its store: a new database on this
/// PostgreSQL server, with this many standby replicas beside the leader. The benchmark sets
/// it (`dispatch-bench … --store URL --replicas N`); tests use SQLite or [`Replicas`].
static POSTGRES: std::sync::OnceLock<(String, usize)> = std::sync::OnceLock::new();

/// Makes every [`Cluster`] started from now on use PostgreSQL (see [`POSTGRES`]).
pub fn on_postgres(server: &str, replicas: usize) {
    let _ = POSTGRES.set((server.to_string(), replicas.max(1)));
}

/// Adds a bearer token to every call (none when the token is empty).
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// Sends `token` (nothing when it is empty).
    pub fn new(token: &str) -> Bearer {
        Bearer(
            (!token.is_empty())
                .then(|| format!("Bearer {token}").parse().expect("a token is ASCII")),
        )
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A `DispatchService` client that sends a token.
pub type Client =
    DispatchServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// A client of the coordinator at `url` sending `token` (fails fast while it is down).
pub async fn client_with(url: &str, token: &str) -> Result<Client, tonic::transport::Error> {
    client_tls(url, token, None).await
}

/// A channel to `url`, verifying an https:// one against `ca`.
pub async fn channel(url: &str, ca: Option<&Path>) -> Result<Channel, tonic::transport::Error> {
    let mut e = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(2));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("read the test CA");
        e = e.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        )?;
    }
    e.connect().await
}

/// A client of the coordinator at `url` sending `token`, verifying TLS against `ca`.
pub async fn client_tls(
    url: &str,
    token: &str,
    ca: Option<&Path>,
) -> Result<Client, tonic::transport::Error> {
    Ok(DispatchServiceClient::with_interceptor(
        channel(url, ca).await?,
        Bearer::new(token),
    ))
}

/// An agent session a test drives by hand: what it sends, and what the coordinator sends.
pub struct HandSession {
    /// Messages to the coordinator (Hello is sent already).
    pub out: tokio::sync::mpsc::Sender<v1::AgentMessage>,
    /// Messages from the coordinator, after its Welcome.
    pub inbound: tonic::Streaming<v1::CoordinatorMessage>,
}

/// Opens `AgentService.Session` on `channel` as node `name` (capacity `capacity`, the sim
/// backend) with `token` (none when empty), and reads the Welcome; the coordinator's refusal
/// otherwise.
pub async fn hello_session(
    channel: Channel,
    token: &str,
    name: &str,
    capacity: u32,
) -> Result<HandSession, tonic::Status> {
    let mut client =
        v1::agent_service_client::AgentServiceClient::with_interceptor(channel, Bearer::new(token));
    let (out, rx) = tokio::sync::mpsc::channel(8192);
    out.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello {
            name: name.into(),
            capacity,
            backends: vec![v1::Backend {
                name: "sim".into(),
                ..Default::default()
            }],
            ..Default::default()
        })),
    })
    .await
    .expect("the stream is open");
    let mut inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    match inbound.message().await? {
        Some(v1::CoordinatorMessage {
            kind: Some(v1::coordinator_message::Kind::Welcome(_)),
        }) => Ok(HandSession { out, inbound }),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// `request` with `token` as its bearer.
pub fn with_token<T>(request: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(request);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a token is ASCII"),
    );
    r
}

/// Options for one agent node.
#[derive(Debug, Clone)]
pub struct AgentOpts {
    /// Node name.
    pub name: String,
    /// Max concurrent tasks.
    pub max_tasks: u32,
    /// Labels (`k=v`).
    pub labels: Vec<String>,
    /// A directory put first on the agent's PATH (stub agent CLIs).
    pub path_prefix: Option<PathBuf>,
    /// An agent config file (`--config`).
    pub config: Option<PathBuf>,
    /// Connect here instead of the coordinator's own URL (a fault-injecting proxy).
    pub via: Option<String>,
    /// Its own workdir instead of the cluster's shared one.
    pub workdir: Option<PathBuf>,
    /// No node token (a node that proves itself with a certificate, or not at all).
    pub no_token: bool,
    /// A client certificate and key (mTLS).
    pub cert: Option<(PathBuf, PathBuf)>,
    /// More command-line arguments.
    pub args: Vec<String>,
    /// More environment variables.
    pub env: Vec<(String, String)>,
    /// Run the agent as an unprivileged user (`nobody`) when the tests run as root, as the
    /// systemd unit and the pods do (Claude Code refuses to run unattended as root): its data
    /// dir and workdir are handed to that user.
    pub unprivileged: bool,
}

impl AgentOpts {
    /// A node named `name` with capacity `max_tasks`.
    pub fn new(name: &str, max_tasks: u32) -> Self {
        AgentOpts {
            name: name.into(),
            max_tasks,
            labels: vec![],
            path_prefix: None,
            config: None,
            via: None,
            workdir: None,
            no_token: false,
            cert: None,
            args: vec![],
            env: vec![],
            unprivileged: false,
        }
    }
}

/// The user an unprivileged agent runs as when the tests run as root.
pub const NOBODY: u32 = 65534;

/// True when the unprivileged user can run `path` with `args` (its directories let it through),
/// switched to the way an unprivileged agent is (`setpriv` keeps capabilities that let it in
/// where that user cannot go).
pub fn nobody_can_run(path: &Path, args: &[&str]) -> bool {
    use std::os::unix::process::CommandExt;
    Command::new(path)
        .args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The agent binary as the unprivileged user can run it: the built one, or (when the checkout
/// is in a directory that user cannot enter) a link or copy of it in a temp directory.
fn agent_binary_for_nobody() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let built = bin("dispatch-agent");
        if nobody_can_run(&built, &["--version"]) {
            return built;
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("dispatch-test-agent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join("dispatch-agent");
        let _ = std::fs::remove_file(&copy);
        if std::fs::hard_link(&built, &copy).is_err() {
            std::fs::copy(&built, &copy).unwrap();
        }
        copy
    })
    .clone()
}

/// Hands `path` (and everything under it) to `uid`, so an agent running as that user owns
/// what it needs.
pub fn chown_tree(path: &Path, uid: u32) {
    let _ = std::os::unix::fs::lchown(path, Some(uid), Some(uid));
    if let Ok(entries) = std::fs::read_dir(path)
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
    {
        for e in entries.flatten() {
            chown_tree(&e.path(), uid);
        }
    }
}

fn start_coordinator(root: &Path, listen: &str, extra: &[String]) -> (Proc, String) {
    let data = root.join("coordinator");
    std::fs::create_dir_all(&data).unwrap();
    let addr_file = data.join("coordinator.addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut cmd = Command::new(bin("dispatch-coordinator"));
    cmd.arg("--listen").arg(listen).arg("--data-dir").arg(&data);
    if !extra.iter().any(|a| a == "--node-timeout") {
        cmd.arg("--node-timeout").arg("20s");
    }
    // Tests use fast heartbeats unless the caller sets its own.
    if !extra.iter().any(|a| a == "--heartbeat-interval") {
        cmd.arg("--heartbeat-interval").arg("500ms");
    }
    cmd.args(extra);
    cmd.env("DISPATCH_LOG", "info,dispatch_coordinator=debug");
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = root.join(format!("coordinator-{n}.log"));
    let mut p = Proc::spawn(cmd, log);
    let url = wait_until("the coordinator to write its address", || {
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!("the coordinator exited ({status}): {}", p.log_text());
        }
        std::fs::read_to_string(&addr_file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    });
    (p, url)
}

impl Cluster {
    /// Starts a coordinator on a random loopback port.
    pub fn new() -> Cluster {
        Cluster::with_coordinator_args(&[])
    }

    /// Starts a coordinator with extra flags on a random loopback port.
    pub fn with_coordinator_args(extra: &[&str]) -> Cluster {
        Cluster::start(extra, None)
    }

    /// Starts a coordinator serving TLS with the files `dispatch-coordinator certs init` wrote
    /// to `certs` (server.pem, server.key; clients trust ca.pem), and extra flags.
    pub fn with_tls(certs: &Path, extra: &[&str]) -> Cluster {
        let cert = certs.join("server.pem");
        let key = certs.join("server.key");
        let mut args = vec![
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Cluster::start(&args, Some(certs.join("ca.pem")))
    }

    fn start(extra: &[&str], ca: Option<PathBuf>) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut coordinator_args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let postgres = POSTGRES.get().cloned();
        if let Some((server, _)) = &postgres {
            let out = Command::new(bin("dispatch-coordinator"))
                .arg("new-token")
                .output()
                .unwrap();
            let token_file = dir.path().join("bootstrap.token");
            std::fs::write(&token_file, &out.stdout).unwrap();
            coordinator_args.extend([
                "--store".to_string(),
                scratch_database(server, "bench"),
                "--bootstrap-token-file".to_string(),
                token_file.display().to_string(),
            ]);
        }
        let (coordinator, url) = start_coordinator(dir.path(), "127.0.0.1:0", &coordinator_args);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The first start of an empty store makes an admin token and writes it here (on
        // PostgreSQL: the bootstrap token given).
        let token_file = match &postgres {
            Some(_) => dir.path().join("bootstrap.token"),
            None => dir.path().join("coordinator/admin.token"),
        };
        let admin_token = std::fs::read_to_string(token_file)
            .expect("the coordinator wrote its first admin token")
            .trim()
            .to_string();
        let mut c = Cluster {
            dir,
            coordinator,
            url,
            coordinator_args,
            ca,
            admin_token,
            node_tokens: Default::default(),
            agents: vec![],
            standbys: vec![],
            rt,
        };
        if let Some((_, replicas)) = postgres {
            wait_until("the coordinator to lead", || {
                c.rt.block_on(async {
                    let mut cl = c.client().await.ok()?;
                    cl.list_nodes(v1::ListNodesRequest {}).await.ok()
                })
            });
            for i in 1..replicas {
                let root = c.dir.path().join(format!("standby-{i}"));
                std::fs::create_dir_all(&root).unwrap();
                let (p, _) = start_coordinator(&root, "127.0.0.1:0", &c.coordinator_args);
                wait_until("a standby replica", || {
                    p.log_text().contains("standby").then_some(())
                });
                c.standbys.push(p);
            }
        }
        c
    }

    /// A token for node `name` (a pattern ending in `*` for many), made once by the admin.
    pub fn node_token(&self, name: &str) -> String {
        if let Some(t) = self.node_tokens.lock().unwrap().get(name) {
            return t.clone();
        }
        let token = self.block_on(async {
            let mut c = self.client().await.expect("connect to the coordinator");
            c.create_token(v1::CreateTokenRequest {
                node: name.to_string(),
                ..Default::default()
            })
            .await
            .expect("create a node token")
            .into_inner()
            .token
        });
        self.node_tokens
            .lock()
            .unwrap()
            .insert(name.to_string(), token.clone());
        token
    }

    /// A token for user `name` with `role` (`nodes`: the nodes its tasks may use; empty: any).
    pub fn user_token(&self, name: &str, role: &str, nodes: &[&str]) -> String {
        self.block_on(async {
            let mut c = self.client().await.expect("connect to the coordinator");
            c.create_token(v1::CreateTokenRequest {
                user: name.to_string(),
                role: role.to_string(),
                nodes: nodes.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .await
            .expect("create a user token")
            .into_inner()
            .token
        })
    }

    /// Starts a coordinator and one agent node `node` with capacity 2.
    pub fn with_node(node: &str) -> Cluster {
        let mut c = Cluster::new();
        c.add_agent(AgentOpts::new(node, 2));
        c
    }

    /// Kills the coordinator (SIGKILL) and starts it again on the same port and data dir.
    pub fn restart_coordinator(&mut self) {
        self.restart_coordinator_with(|_| {});
    }

    /// Kills the coordinator, runs `between` with its data dir (to tamper with its store, as
    /// a compromised coordinator would), and starts it again.
    pub fn restart_coordinator_with(&mut self, between: impl FnOnce(&Path)) {
        self.coordinator.kill();
        between(&self.dir.path().join("coordinator"));
        let listen = self
            .url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .to_string();
        let (p, url) = start_coordinator(self.dir.path(), &listen, &self.coordinator_args);
        assert_eq!(url, self.url);
        self.coordinator = p;
    }

    /// The bytes the coordinator's store takes now: SQLite's database file and its WAL, or
    /// PostgreSQL's `pg_database_size` (its tables, indexes and not yet vacuumed row versions).
    pub fn store_bytes(&self) -> u64 {
        let store = self
            .coordinator_args
            .iter()
            .position(|a| a == "--store")
            .and_then(|i| self.coordinator_args.get(i + 1));
        match store {
            Some(url) => self.rt.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(url)
                    .await
                    .expect("connect to the store");
                let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                    .fetch_one(&mut conn)
                    .await
                    .expect("pg_database_size");
                size as u64
            }),
            None => ["dispatch.db", "dispatch.db-wal"]
                .iter()
                .filter_map(|f| std::fs::metadata(self.dir.path().join("coordinator").join(f)).ok())
                .map(|m| m.len())
                .sum(),
        }
    }

    /// The workdir agents run tasks in by default.
    pub fn workdir(&self) -> PathBuf {
        let w = self.dir.path().join("work");
        std::fs::create_dir_all(&w).unwrap();
        w
    }

    /// Kills node `name`'s agent with SIGKILL (its workers keep running) and starts it again
    /// with the same options and data dir; waits until it has reconnected.
    pub fn restart_agent(&mut self, name: &str, o: AgentOpts) {
        self.agent(name).kill();
        self.agents.retain(|(n, _)| n != name);
        self.add_agent(o);
    }

    /// Starts an agent node and waits until the coordinator lists it as connected.
    pub fn add_agent(&mut self, o: AgentOpts) {
        let p = self.spawn_agent(&o);
        self.agents.push((o.name.clone(), p));
        self.wait_node_connected(&o.name);
    }

    /// Starts an agent without waiting for it to connect (it may be refused).
    pub fn spawn_agent(&self, o: &AgentOpts) -> Proc {
        let data = self.dir.path().join(format!("agent-{}", o.name));
        std::fs::create_dir_all(&data).unwrap();
        let mut cmd = Command::new(bin("dispatch-agent"));
        cmd.arg("--coordinator")
            .arg(o.via.as_deref().unwrap_or(&self.url))
            .arg("--name")
            .arg(&o.name)
            .arg("--max-tasks")
            .arg(o.max_tasks.to_string());
        cmd.arg("--workdir")
            .arg(o.workdir.clone().unwrap_or_else(|| self.workdir()))
            .arg("--data-dir")
            .arg(&data)
            .arg("--max-backoff")
            .arg("300ms");
        for l in &o.labels {
            cmd.arg("--label").arg(l);
        }
        if let Some(c) = &o.config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(&o.args);
        // Only the sim backend (and stubs a test provides): tests must not depend on which
        // agent CLIs the machine has.
        let path = match &o.path_prefix {
            Some(p) => format!("{}:/usr/bin:/bin", p.display()),
            None => "/usr/bin:/bin".to_string(),
        };
        cmd.env("PATH", path);
        cmd.env("DISPATCH_LOG", "info,dispatch_agent=debug");
        for (k, v) in &o.env {
            cmd.env(k, v);
        }
        if o.unprivileged && nix::unistd::geteuid().is_root() {
            use std::os::unix::fs::PermissionsExt;
            use std::os::unix::process::CommandExt;
            // The cluster's directory must let that user through; its own dirs are its own.
            let _ =
                std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755));
            chown_tree(&data, NOBODY);
            chown_tree(&o.workdir.clone().unwrap_or_else(|| self.workdir()), NOBODY);
            cmd.uid(NOBODY).gid(NOBODY);
            let args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_os_string()).collect();
            let mut as_nobody = Command::new(agent_binary_for_nobody());
            as_nobody.args(args);
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => as_nobody.env(k, v),
                    None => as_nobody.env_remove(k),
                };
            }
            as_nobody.uid(NOBODY).gid(NOBODY);
            cmd = as_nobody;
        }
        if !o.no_token {
            cmd.env("DISPATCH_AGENT_TOKEN", self.node_token(&o.name));
        }
        if let Some(ca) = &self.ca {
            cmd.arg("--ca").arg(ca);
        }
        if let Some((cert, key)) = &o.cert {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.dir.path().join(format!("agent-{}-{n}.log", o.name));
        Proc::spawn(cmd, log)
    }

    /// Waits until the coordinator lists `name` as connected.
    pub fn wait_node_connected(&self, name: &str) {
        wait_until(&format!("node `{name}` to connect"), || {
            let nodes = self.rt.block_on(async {
                let mut c = self.client().await.ok()?;
                c.list_nodes(v1::ListNodesRequest {})
                    .await
                    .ok()
                    .map(|r| r.into_inner().nodes)
            })?;
            nodes
                .iter()
                .any(|n| n.name == name && n.connected)
                .then_some(())
        });
    }

    /// The agent process of node `name`.
    pub fn agent(&mut self, name: &str) -> &mut Proc {
        &mut self
            .agents
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("no such agent")
            .1
    }

    /// A gRPC client of the coordinator, as its admin.
    pub async fn client(&self) -> Result<Client, tonic::transport::Error> {
        client_tls(&self.url, &self.admin_token, self.ca.as_deref()).await
    }

    /// Runs a future on the cluster's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A `dispatch` command pointed at this cluster's coordinator.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(bin("dispatch"));
        cmd.env("DISPATCH_COORDINATOR", &self.url)
            .env("DISPATCH_HOME", self.dir.path().join("home"))
            .env("DISPATCH_TOKEN", &self.admin_token)
            .env("NO_COLOR", "1");
        if let Some(ca) = &self.ca {
            cmd.env("DISPATCH_CA", ca);
        }
        cmd.current_dir(self.workdir());
        cmd
    }

    /// Runs `dispatch ARGS` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli().args(args).output().expect("run dispatch")
    }

    /// Runs `dispatch ARGS`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "dispatch {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `dispatch status ID --json`.
    pub fn status(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", id, "--json"])).expect("status --json is JSON")
    }

    /// Dispatches sim task `id` whose worker starts a child that sleeps 120 s, and returns
    /// (child pid, worker pid) once the worker wrote the child's pid in its plan.
    pub fn start_sleeping_child(&self, id: &str) -> (i32, i32) {
        self.ok(&[
            "--backend",
            "sim",
            "--id",
            id,
            "--step",
            "wait a long time (child-sleep 120s)",
            id,
        ]);
        let t = self.wait_task(id, "the sim worker to start its child", |t| {
            t.plan
                .as_ref()
                .is_some_and(|p| p.items[0].note.starts_with("child pid "))
        });
        let child: i32 = t.plan.unwrap().items[0]
            .note
            .trim_start_matches("child pid ")
            .parse()
            .unwrap();
        (child, ppid(child).expect("the child's parent"))
    }

    /// Waits (on the coordinator's watch stream) until task `id` satisfies `pred`; returns it.
    pub fn wait_task(&self, id: &str, what: &str, pred: impl Fn(&v1::Task) -> bool) -> v1::Task {
        self.wait_task_for(id, what, DEADLINE, pred)
    }

    /// [`Cluster::wait_task`] with a deadline of its own (a benchmark's long wait).
    pub fn wait_task_for(
        &self,
        id: &str,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&v1::Task) -> bool,
    ) -> v1::Task {
        self.rt.block_on(async {
            let mut c = self.client().await.expect("connect to the coordinator");
            // The last state seen, for the message of a timeout.
            let last: std::sync::Mutex<Option<v1::Task>> = std::sync::Mutex::new(None);
            let fut = async {
                let mut s = c
                    .watch(v1::WatchRequest { task_id: id.into() })
                    .await
                    .expect("watch")
                    .into_inner();
                // A change carries only the open questions and the one it is about: merge.
                while let Some(ev) = s.message().await.expect("watch stream") {
                    let seen = last.lock().unwrap().clone();
                    if let Some(t) = dispatch_proto::convert::apply_watch_event(seen.as_ref(), &ev)
                    {
                        if pred(&t) {
                            return t;
                        }
                        *last.lock().unwrap() = Some(t);
                    }
                }
                panic!(
                    "the watch stream of `{id}` ended before {what}; last seen: {}",
                    describe(last.lock().unwrap().as_ref())
                );
            };
            let got = tokio::time::timeout(deadline, fut).await;
            got.unwrap_or_else(|_| {
                panic!(
                    "timed out after {deadline:?} waiting for task `{id}`: {what}; last seen: {}",
                    describe(last.lock().unwrap().as_ref())
                )
            })
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Workers outlive their agent by design; a test leaves none behind.
        let names: Vec<String> = self.agents.iter().map(|(n, _)| n.clone()).collect();
        self.agents.clear();
        for name in names {
            kill_recorded_workers(&self.dir.path().join(format!("agent-{name}")));
        }
        // A failing test explains itself: the last lines of every process's log, and the
        // directory kept to look at.
        if std::thread::panicking() {
            let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            for log in logs {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "--- the last lines of {}:\n{}",
                    log.display(),
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
            if let Ok(fresh) = tempfile::tempdir() {
                let kept = std::mem::replace(&mut self.dir, fresh).keep();
                eprintln!("--- kept {} for a look", kept.display());
            }
        }
    }
}

/// A task in one line, for a failing test's message: state, node, attempt, checklist, open
/// questions and reason.
pub fn describe(t: Option<&v1::Task>) -> String {
    let Some(t) = t else {
        return "nothing (no event arrived)".into();
    };
    let items: Vec<String> = t
        .plan
        .as_ref()
        .map(|p| {
            p.items
                .iter()
                .map(|i| {
                    format!(
                        "[{}] {}",
                        match i.status() {
                            v1::ItemStatus::Done => "x",
                            v1::ItemStatus::Blocked => "?",
                            v1::ItemStatus::Error => "!",
                            _ => " ",
                        },
                        i.text
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let open: Vec<String> = t
        .questions
        .iter()
        .filter(|q| q.answer.is_none())
        .map(|q| format!("{:03}: {}", q.seq, q.text))
        .collect();
    format!(
        "state {} on `{}` (attempt {}); items {}; open questions {}; reason {:?}; waiting {:?}",
        t.task_state().as_str(),
        t.node,
        t.attempt,
        if items.is_empty() {
            "none".into()
        } else {
            items.join(", ")
        },
        if open.is_empty() {
            "none".into()
        } else {
            open.join(", ")
        },
        t.reason,
        t.waiting
    )
}

/// Kills the process group of every worker recorded in an agent's data dir.
pub fn kill_recorded_workers(agent_data: &Path) {
    let Ok(entries) = std::fs::read_dir(agent_data.join("running")) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if let Some(pid) = text
            .lines()
            .find_map(|l| l.strip_prefix("pid="))
            .and_then(|p| p.parse::<u32>().ok())
        {
            dispatch_core::process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

/// Runs `git -C dir ARGS`, asserting success; returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    // Commits work without a configured identity.
    let who = |k: &str, v: &str| (k.to_string(), v.to_string());
    dispatch_core::git::Git {
        config: Vec::new(),
        env: vec![
            who("GIT_AUTHOR_NAME", "t"),
            who("GIT_AUTHOR_EMAIL", "t@t"),
            who("GIT_COMMITTER_NAME", "t"),
            who("GIT_COMMITTER_EMAIL", "t@t"),
        ],
    }
    .run(dir, args)
    .unwrap_or_else(|e| panic!("git {args:?}: {e}"))
}

/// Makes `dir` a git repository on `main` with one commit ("v1") of `files` (name, content).
pub fn git_repo(dir: &Path, files: &[(&str, &str)]) {
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["config", "user.name", "me"]);
    git(dir, &["config", "user.email", "me@x"]);
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "v1"]);
}

/// Writes an executable stub agent CLI `dir/name`: it answers the probes (`--version`, …)
/// and otherwise runs `body` (sh).
pub fn stub_cli(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{STUB_PROBE_SH}{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Asserts a command exited with `code`, showing its output when it did not.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Lossy UTF-8 of process output.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub use dispatch_core::process::alive;

/// Parent pid of `pid`.
pub fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The first lines of a stub agent CLI: it answers a node's start-up probe (`--version`,
/// `--help`, `exec --help`) as a CLI that is not the real one would, without doing its work
/// (or recording a call).
pub const STUB_PROBE_SH: &str =
    "case \"$1\" in --version|--help) exit 0;; esac\n[ \"$1 $2\" = 'exec --help' ] && exit 0\n";

/// Shell lines a stub agent CLI ends with to do its work the seed's way: every item of its
/// plan checked, then `ipc/.done`.
pub const FINISH_PLAN_SH: &str = "sed -i 's/^- \\[ \\]/- [x]/' \"$DISPATCH_TASK_DIR/plan.md\"\n\
     mkdir -p \"$DISPATCH_TASK_DIR/ipc\" && : > \"$DISPATCH_TASK_DIR/ipc/.done\"\n";

/// The Python that runs the tests' standard clients (tests/python/), with its modules; `None`
/// (and a line saying the test skips) when they are not installed. Under CI (`CI` set) a
/// missing module fails instead: `.ci/run` installs them.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let python = std::env::var_os("DISPATCH_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let check = format!("import {}", modules.join(", "));
    let ok = Command::new(&python)
        .args(["-c", &check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    let why = format!(
        "{} cannot `{check}`: install tests/python/requirements.txt (`.ci/run` does) or set DISPATCH_TEST_PYTHON",
        python.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// Runs `tests/python/<script>` with `args`; (exit code, stdout).
pub fn run_python(python: &Path, script: &str, args: &[&str]) -> (i32, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// One scrape of the `/metrics` page whose URL a binary wrote to `addr_file`
/// (`DATA_DIR/metrics.addr`): the whole HTTP response (status line, headers, body).
pub fn scrape_metrics(addr_file: &Path) -> String {
    use std::io::{Read, Write};
    let url = std::fs::read_to_string(addr_file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", addr_file.display()));
    let addr = url
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// A connection to a SQLite store (a coordinator's `dispatch.db`, busy timeout 10 s) and a
/// runtime to drive it: for tests that read or change the store behind the coordinator's back.
pub fn sqlite_store(db: &Path) -> (tokio::runtime::Runtime, sqlx::SqliteConnection) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let conn = rt.block_on(async {
        use sqlx::ConnectOptions;
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .busy_timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.display()))
    });
    (rt, conn)
}

/// Prometheus's `promtool` (Debian's `prometheus` package, which `.ci/run` installs), or None
/// and a line saying what skips. Under CI a missing promtool fails the test instead.
pub fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() && std::env::var_os("CI").is_some() {
        panic!("CI runs this test with promtool: .ci/run installs Debian's `prometheus` package");
    }
    found
}

/// The PostgreSQL server the tests create their databases on (`DISPATCH_TEST_POSTGRES`,
/// printed by `.ci/postgres start DIR`), or None and a line saying the test skips. Under CI
/// (`CI` set) a missing server fails the test instead.
pub fn postgres_server() -> Option<String> {
    match std::env::var("DISPATCH_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "CI runs this test on PostgreSQL: set DISPATCH_TEST_POSTGRES (.ci/run starts a server with .ci/postgres)"
        ),
        _ => {
            eprintln!(
                "skipped: no PostgreSQL (export DISPATCH_TEST_POSTGRES=$(.ci/postgres start /tmp/dispatch-pg))"
            );
            None
        }
    }
}

/// A new empty database on the test server; its URL.
pub fn scratch_database(server: &str, tag: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(dispatch_coordinator::store::postgres::scratch_database(
        server, tag,
    ))
    .unwrap_or_else(|e| panic!("cannot create a database on {server}: {e}"))
}

/// Coordinator replicas sharing one PostgreSQL database, and agents connected through the
/// list of their addresses.
// Agents stop before the replicas, the temp directory goes last.
pub struct Replicas {
    /// Agents by name.
    pub agents: Vec<(String, Proc)>,
    extra: Vec<String>,
    rt: tokio::runtime::Runtime,
    /// The replicas, in start order (the first leads at first).
    pub replicas: Vec<Proc>,
    /// Their URLs, in the same order.
    pub urls: Vec<String>,
    /// The store's URL.
    pub store: String,
    /// The admin token (from --bootstrap-token-file).
    pub admin_token: String,
    /// Root temp directory.
    pub dir: tempfile::TempDir,
}

impl Replicas {
    /// Starts `n` replicas on a new database of the test server (None: no server, skipped).
    /// The first leads; the others are standbys when this returns.
    pub fn start(n: usize, tag: &str) -> Option<Replicas> {
        Replicas::start_with(n, tag, &[])
    }

    /// [`Replicas::start`] with more coordinator flags.
    pub fn start_with(n: usize, tag: &str, extra: &[&str]) -> Option<Replicas> {
        let server = postgres_server()?;
        let store = scratch_database(&server, tag);
        let out = Command::new(bin("dispatch-coordinator"))
            .arg("new-token")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        Some(Replicas::start_on(
            &store,
            text(&out.stdout).trim(),
            n,
            extra,
        ))
    }

    /// Starts `n` replicas on the database at `store`, whose admin token is `admin_token`
    /// (made from it as the bootstrap token when the store has none).
    pub fn start_on(store: &str, admin_token: &str, n: usize, extra: &[&str]) -> Replicas {
        let store = store.to_string();
        let admin_token = admin_token.to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("admin.token"), &admin_token).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut r = Replicas {
            agents: vec![],
            extra: extra.iter().map(|s| s.to_string()).collect(),
            rt,
            replicas: vec![],
            urls: vec![],
            store,
            admin_token,
            dir,
        };
        for i in 0..n {
            r.start_replica(i);
            if i == 0 {
                wait_until("the first replica to lead", || r.serving(0).then_some(()));
            } else {
                wait_until(&format!("replica {i} to stand by"), || {
                    r.replicas[i].log_text().contains("standby").then_some(())
                });
            }
        }
        r
    }

    fn start_replica(&mut self, i: usize) {
        let root = self.dir.path().join(format!("replica-{i}"));
        std::fs::create_dir_all(&root).unwrap();
        let mut args = vec![
            "--store".to_string(),
            self.store.clone(),
            "--bootstrap-token-file".to_string(),
            self.dir.path().join("admin.token").display().to_string(),
            "--node-timeout".to_string(),
            "30s".to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        let (p, url) = start_coordinator(&root, "127.0.0.1:0", &args);
        self.replicas.push(p);
        self.urls.push(url);
    }

    /// Every replica's address, comma-separated (what agents and the CLI are given).
    pub fn list(&self) -> String {
        self.urls.join(",")
    }

    /// True when replica `i` serves (a standby answers UNAVAILABLE).
    pub fn serving(&self, i: usize) -> bool {
        self.rt.block_on(self.serves(&self.urls[i])).is_some()
    }

    /// A client of whichever replica serves now.
    pub fn leader_client(&self) -> Option<Client> {
        self.rt.block_on(async {
            for url in &self.urls {
                if let Some(c) = self.serves(url).await {
                    return Some(c);
                }
            }
            None
        })
    }

    /// A client of the replica at `url` when it serves, within 5 s (a paused replica accepts
    /// connections and never answers).
    async fn serves(&self, url: &str) -> Option<Client> {
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut c = client_with(url, &self.admin_token).await.ok()?;
            c.list_nodes(v1::ListNodesRequest {}).await.ok()?;
            Some(c)
        })
        .await
        .ok()
        .flatten()
    }

    /// Runs a future on the replicas' runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A `dispatch` command given every replica, run in a plain directory (not the checkout
    /// the tests run from: a git repository there would make the tasks repository tasks).
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(bin("dispatch"));
        let cwd = self.dir.path().join("cli");
        std::fs::create_dir_all(&cwd).unwrap();
        cmd.env("DISPATCH_COORDINATOR", self.list())
            .env("DISPATCH_HOME", self.dir.path().join("home"))
            .env("DISPATCH_TOKEN", &self.admin_token)
            .env("NO_COLOR", "1")
            .current_dir(cwd);
        cmd
    }

    /// The workdir of agent `name` (each agent has its own).
    pub fn workdir(&self, name: &str) -> PathBuf {
        let w = self.dir.path().join(format!("work-{name}"));
        std::fs::create_dir_all(&w).unwrap();
        w
    }

    /// Starts agent `name` with every replica's address and waits until the leader lists it.
    pub fn add_agent(&mut self, name: &str, max_tasks: u32) {
        let list = self.list();
        self.add_agent_via(name, max_tasks, &list);
    }

    /// Starts agent `name` with `--coordinator coordinator` and waits until the leader lists it.
    pub fn add_agent_via(&mut self, name: &str, max_tasks: u32, coordinator: &str) {
        let mut c = self.leader_client().expect("a leading replica");
        let token = self
            .block_on(c.create_token(v1::CreateTokenRequest {
                node: name.to_string(),
                ..Default::default()
            }))
            .expect("create a node token")
            .into_inner()
            .token;
        let data = self.dir.path().join(format!("agent-{name}"));
        std::fs::create_dir_all(&data).unwrap();
        let mut cmd = Command::new(bin("dispatch-agent"));
        cmd.arg("--coordinator")
            .arg(coordinator)
            .arg("--name")
            .arg(name)
            .arg("--max-tasks")
            .arg(max_tasks.to_string())
            .arg("--workdir")
            .arg(self.workdir(name))
            .arg("--data-dir")
            .arg(&data)
            .arg("--max-backoff")
            .arg("300ms")
            .env("PATH", "/usr/bin:/bin")
            .env("DISPATCH_LOG", "info,dispatch_agent=debug")
            .env("DISPATCH_AGENT_TOKEN", token);
        let log = self.dir.path().join(format!("agent-{name}.log"));
        self.agents.push((name.to_string(), Proc::spawn(cmd, log)));
        wait_until(&format!("node `{name}` to connect"), || {
            let mut c = self.leader_client()?;
            let nodes = self
                .block_on(c.list_nodes(v1::ListNodesRequest {}))
                .ok()?
                .into_inner()
                .nodes;
            nodes
                .iter()
                .any(|n| n.name == name && n.connected)
                .then_some(())
        });
    }
}

/// One HTTP/1.1 request to an `http://` URL with `extra` header lines and, for a POST, a form
/// `body`: the status and the whole response (head and body).
pub fn http_request(method: &str, url: &str, extra: &[String], body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let mut head = format!("{method} /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    (out[9..12].parse().unwrap(), out)
}

/// Debian's chromium for browser tests (DISPATCH_TEST_CHROMIUM, else /usr/bin/chromium); None
/// (saying the test skips) when it is not there — under CI that fails instead.
pub fn chromium() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("DISPATCH_TEST_CHROMIUM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "no chromium at {} (apt-get install chromium, or set DISPATCH_TEST_CHROMIUM)",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}
