//! The container image, built and run for real (issue 23 item 15): deploy/Dockerfile's
//! `prebuilt` target is built with podman on a Debian bookworm base made by debootstrap from
//! Debian's packages (no registry is reachable here), and the coordinator and an agent started
//! from it on a podman network complete a task that the `dispatch` CLI on the host submits over
//! TLS — as uid 10001 under tini, with git and CA certificates in the image.
//!
//! Needs root, podman, runc and debootstrap (`.ci/run` installs them). Elsewhere it says why
//! it skips; in CI (`CI=true`) a missing piece fails it instead.

use dispatch_tests::{bin, text, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The base image: Debian bookworm, minbase, from debootstrap (kept between runs).
const BASE: &str = "localhost/dispatch-base:bookworm";

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("it needs root (rootful podman, debootstrap)".into());
    }
    for tool in ["podman", "runc", "debootstrap"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
            || Path::new("/usr/sbin").join(tool).is_file();
        if !found {
            return Some(format!(
                "`{tool}` is not installed (apt-get install podman runc debootstrap)"
            ));
        }
    }
    None
}

/// podman, configured by the test's own containers.conf: runc (crun refuses this kernel's
/// hybrid cgroups), no default ulimits (a container may not raise them here), cgroupfs.
struct Podman {
    conf: PathBuf,
}

impl Podman {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}):\n{}\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }
}

/// Containers, network and image of one run, removed when it ends (the base is kept).
struct Run<'a> {
    podman: &'a Podman,
    containers: Vec<String>,
    network: Option<String>,
    image: Option<String>,
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        for c in &self.containers {
            if std::thread::panicking() {
                let logs = self.podman.run(&["logs", c]);
                eprintln!(
                    "--- podman logs {c}:\n{}{}",
                    text(&logs.stdout),
                    text(&logs.stderr)
                );
            }
            let _ = self.podman.run(&["rm", "-f", "-t", "2", c]);
        }
        if let Some(n) = &self.network {
            let _ = self.podman.run(&["network", "rm", "-f", n]);
        }
        if let Some(i) = &self.image {
            let _ = self.podman.run(&["rmi", "-f", i]);
        }
    }
}

/// Makes the base image unless it is there: `debootstrap --variant=minbase bookworm`,
/// imported.
fn ensure_base(podman: &Podman, scratch: &Path) {
    if podman.run(&["image", "exists", BASE]).status.success() {
        return;
    }
    let root = scratch.join("rootfs");
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&root)
        .arg("http://deb.debian.org/debian")
        .output()
        .expect("run debootstrap");
    assert!(
        out.status.success(),
        "debootstrap failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let tar = scratch.join("rootfs.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    podman.ok(&["import", tar.to_str().unwrap(), BASE]);
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(&tar);
}

/// A build context with just the three binaries (stripped of debug info: the debug build's
/// are ~850 MB).
fn context(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for b in ["dispatch", "dispatch-coordinator", "dispatch-agent"] {
        let to = dir.join(b);
        std::fs::copy(bin(b), &to).unwrap();
        let out = Command::new("strip")
            .arg("--strip-debug")
            .arg(&to)
            .output()
            .expect("run strip");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

#[test]
#[ignore = "needs root and podman; run with --run-ignored all (.ci/run does)"]
fn the_image_runs_a_coordinator_and_an_agent_that_complete_a_task() {
    if let Some(why) = missing() {
        assert!(
            std::env::var("CI").is_err(),
            "the image test cannot run in CI: {why}"
        );
        eprintln!("SKIP the_image_runs_a_coordinator_and_an_agent_that_complete_a_task: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .unwrap();
    let podman = Podman { conf };
    ensure_base(&podman, dir.path());
    let tag = format!("dispatch-test-{}", std::process::id());
    let mut run = Run {
        podman: &podman,
        containers: vec![],
        network: None,
        image: None,
    };

    // Build the runtime image from deploy/Dockerfile, as README says.
    let ctx = dir.path().join("ctx");
    context(&ctx);
    let image = format!("localhost/{tag}:latest");
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join("Dockerfile");
    run.image = Some(image.clone());
    podman.ok(&[
        "build",
        "--quiet",
        "-f",
        dockerfile.to_str().unwrap(),
        "--target",
        "prebuilt",
        "--build-arg",
        &format!("BASE={BASE}"),
        "-t",
        &image,
        ctx.to_str().unwrap(),
    ]);
    // What the image promises: tini is PID 1, the user is 10001, git and CA certificates.
    let probe = podman.ok(&[
        "run",
        "--rm",
        &image,
        "sh",
        "-c",
        "cat /proc/1/comm; id -u; id -g; git --version; test -s /etc/ssl/certs/ca-certificates.crt && echo ca-certificates; dispatch-coordinator --version; ssh -V 2>&1",
    ]);
    let lines: Vec<&str> = probe.lines().collect();
    assert_eq!(&lines[..3], &["tini", "10001", "10001"], "{probe}");
    assert!(lines[3].starts_with("git version"), "{probe}");
    assert_eq!(lines[4], "ca-certificates", "{probe}");
    assert!(lines[5].starts_with("dispatch-coordinator "), "{probe}");
    assert!(
        lines[6].starts_with("OpenSSH"),
        "ssh for ssh:// remotes: {probe}"
    );

    // A network of its own, with a fixed address for the coordinator (its certificate names
    // it; CNI here resolves no container names).
    let octet = 20 + std::process::id() % 200;
    let subnet = format!("10.89.{octet}.0/24");
    let ip = format!("10.89.{octet}.10");
    podman.ok(&["network", "create", "--subnet", &subnet, &tag]);
    run.network = Some(tag.clone());

    // Certificates and the first admin token, made on the host as README says, handed to
    // the container's user.
    let certs = dir.path().join("certs");
    let out = Command::new(bin("dispatch-coordinator"))
        .args(["certs", "init", "--host", &ip])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = Command::new(bin("dispatch-coordinator"))
        .arg("new-token")
        .output()
        .unwrap();
    let admin = text(&out.stdout).trim().to_string();
    std::fs::write(certs.join("admin.token"), format!("{admin}\n")).unwrap();
    dispatch_tests::chown_tree(&certs, 10001);
    let certs_mount = format!("{}:/certs:ro", certs.display());

    let coordinator = format!("{tag}-coordinator");
    run.containers.push(coordinator.clone());
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &coordinator,
        "--network",
        &tag,
        "--ip",
        &ip,
        "-v",
        &certs_mount,
        &image,
        "dispatch-coordinator",
        "--listen=0.0.0.0:7070",
        "--data-dir=/var/lib/dispatch",
        "--tls-cert=/certs/server.pem",
        "--tls-key=/certs/server.key",
        "--bootstrap-token-file=/certs/admin.token",
    ]);
    let url = format!("https://{ip}:7070");
    let home = dir.path().join("home");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let cli = |args: &[&str]| {
        Command::new(bin("dispatch"))
            .env("DISPATCH_COORDINATOR", &url)
            .env("DISPATCH_CA", certs.join("ca.pem"))
            .env("DISPATCH_TOKEN", &admin)
            .env("DISPATCH_HOME", &home)
            .env("NO_COLOR", "1")
            .current_dir(&work)
            .args(args)
            .output()
            .unwrap()
    };
    wait_until("the coordinator in its container to answer", || {
        cli(&["nodes"]).status.success().then_some(())
    });
    let out = cli(&["token", "create", "--node", "img-node"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let node_token = text(&out.stdout).trim().to_string();

    let agent = format!("{tag}-agent");
    run.containers.push(agent.clone());
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &agent,
        "--network",
        &tag,
        "-e",
        &format!("DISPATCH_AGENT_TOKEN={node_token}"),
        "-v",
        &certs_mount,
        &image,
        "dispatch-agent",
        &format!("--coordinator={url}"),
        "--ca=/certs/ca.pem",
        "--name=img-node",
        "--workdir=/work",
        "--data-dir=/var/lib/dispatch-agent",
    ]);
    wait_until("the agent in its container to connect", || {
        let out = cli(&["nodes", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .any(|n| n["name"] == "img-node" && n["connected"] == true)
            .then_some(())
    });

    let out = cli(&[
        "--backend",
        "sim",
        "--remote",
        "img-node",
        "--id",
        "from-the-host",
        "--step",
        "look around (sleep 100ms)",
        "--step",
        "say hello",
        "--wait",
        "a task for the containers",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let status: serde_json::Value =
        serde_json::from_slice(&cli(&["status", "from-the-host", "--json"]).stdout).unwrap();
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["node"], "img-node", "{status}");

    // Both run as 10001 under tini, and the worker ran inside the agent's container.
    for c in [&coordinator, &agent] {
        let top = podman.ok(&["top", c, "user", "args"]);
        let procs: Vec<&str> = top.lines().skip(1).collect();
        assert!(
            procs
                .iter()
                .any(|l| l.split_whitespace().nth(1) == Some("/usr/bin/tini")),
            "{c}: {top}"
        );
        assert!(
            procs
                .iter()
                .all(|l| l.split_whitespace().next() == Some("dispatch")),
            "{c}: every process runs as `dispatch` (10001):\n{top}"
        );
    }
    let plan = podman.ok(&[
        "exec",
        &agent,
        "sh",
        "-c",
        "cat /work/.dispatch/tasks/from-the-host/plan.md",
    ]);
    assert!(plan.contains("- [x] say hello"), "{plan}");
    let logs = podman.ok(&["logs", &agent]);
    assert!(!logs.contains("lost the connection"), "{logs}");
}
