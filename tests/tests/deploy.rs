//! deploy/ as an operator uses it (issue 12): every kustomize overlay renders and validates
//! against the Kubernetes schemas, and holds together (probes on the ports the binaries serve,
//! a grace period above the drain timeout, autoscalers aimed at the pool); the systemd units
//! pass `systemd-analyze verify`; the alert rules name only metrics the coordinator exports;
//! the Dockerfile builds and copies the three binaries.

use dispatch_tests::{Cluster, bin};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A tool from the test Python's venv (where `.ci/run` installs kubectl and
/// kubernetes-validate), else from PATH; `None` (and a line saying the test skips) when
/// missing, a failure under CI.
fn tool(name: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("DISPATCH_TEST_PYTHON")
        .map(PathBuf::from)
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.exists());
    let found = venv.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.exists())
        })
    });
    if found.is_none() {
        let why = format!("`{name}` is not installed (`.ci/run` installs it)");
        if std::env::var_os("CI").is_some() {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
    }
    found
}

fn docs(yaml: &str) -> Vec<serde_json::Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| serde_json::Value::deserialize(d).expect("a YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

/// `--flag=value` among a container's args.
fn flag<'a>(args: &'a serde_json::Value, name: &str) -> &'a str {
    args.as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix(&format!("{name}=")))
        .next()
        .unwrap_or_else(|| panic!("no {name} in {args}"))
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn seconds(d: &str) -> u64 {
    dispatch_core::duration::parse(d).unwrap().as_secs()
}

#[test]
#[ignore = "needs kubectl and kubernetes-validate; run with --run-ignored all (.ci/run does)"]
fn every_kustomize_overlay_renders_validates_and_holds_together() {
    let (Some(kubectl), Some(validate)) = (tool("kubectl"), tool("kubernetes-validate")) else {
        return;
    };
    let k8s = deploy().join("k8s");
    let mut dirs = vec![k8s.join("base")];
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(k8s.join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    overlays.sort();
    assert!(overlays.len() >= 2, "{overlays:?}");
    dirs.extend(overlays);
    let out_dir = tempfile::tempdir().unwrap();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let out = Command::new(&kubectl)
            .arg("kustomize")
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = String::from_utf8(out.stdout).unwrap();
        let file = out_dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        let v = Command::new(&validate)
            .args(["--strict", "--quiet"])
            .arg(&file)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
        assert!(v.status.success(), "{name}: {said}");
        // Only custom resources (KEDA's, the Prometheus Operator's) lack a schema here; they
        // are checked below.
        for line in said.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                line.contains("Couldn't find schema for kind ScaledObject")
                    || line.contains("Couldn't find schema for kind PodMonitor"),
                "{name}: {line}"
            );
        }

        let d = docs(&rendered);
        let coordinator = find(&d, "StatefulSet", "dispatch-coordinator");
        let c = &coordinator["spec"]["template"]["spec"]["containers"][0];
        let health = port_of(flag(&c["args"], "--health-listen"));
        // gRPC probes of the health port; a replica set probes the port only (a standby's
        // health is NOT_SERVING).
        let probe_port = |p: &serde_json::Value| {
            if name == "replicas" {
                p["tcpSocket"]["port"].clone()
            } else {
                p["grpc"]["port"].clone()
            }
        };
        assert_eq!(probe_port(&c["readinessProbe"]), health, "{name}");
        assert_eq!(probe_port(&c["livenessProbe"]), health, "{name}");
        let grace = seconds(flag(&c["args"], "--shutdown-grace"));
        assert!(
            coordinator["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap()
                > grace
        );
        let pool = find(&d, "Deployment", "dispatch-agent-default");
        let spec = &pool["spec"]["template"]["spec"];
        let a = &spec["containers"][0];
        assert_eq!(flag(&a["args"], "--on-sigterm"), "drain");
        assert!(
            spec["terminationGracePeriodSeconds"].as_u64().unwrap()
                > seconds(flag(&a["args"], "--drain-timeout")),
            "{name}: the pod's grace must outlast the drain"
        );
        assert_eq!(
            a["readinessProbe"]["grpc"]["port"],
            port_of(flag(&a["args"], "--health-listen"))
        );
        // The node's pool label comes from the pod's own label.
        assert_eq!(flag(&a["args"], "--label"), "pool=$(DISPATCH_POOL)");
        assert_eq!(
            pool["spec"]["template"]["metadata"]["labels"]["dispatch.dev/pool"],
            "default"
        );
        find(&d, "PodDisruptionBudget", "dispatch-agent-default");
        find(&d, "NetworkPolicy", "dispatch-coordinator");
        // Every image from `images:` in one place: this version's tag, never `latest`.
        let version = env!("CARGO_PKG_VERSION");
        for doc in &d {
            for c in doc["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let image = c["image"].as_str().unwrap();
                assert!(
                    image == format!("dispatch:{version}")
                        || image == format!("dispatch-agent-claude:{version}"),
                    "{name}: {image}"
                );
            }
        }
        // The agent CLIs' keys and git's credentials from their (optional) Secrets; git's
        // files where GIT_SSH_COMMAND and the credential helper look.
        let env = a["env"].as_array().unwrap();
        let var = |n: &str| {
            env.iter()
                .find(|e| e["name"] == n)
                .unwrap_or_else(|| panic!("{name}: no {n}"))
                .clone()
        };
        for key in ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"] {
            let r = &var(key)["valueFrom"]["secretKeyRef"];
            assert_eq!(r["name"], "dispatch-agent-credentials");
            assert_eq!((&r["key"], &r["optional"]), (&key.into(), &true.into()));
        }
        let git = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["secret"]["secretName"] == "dispatch-git")
            .expect("the git Secret is mounted");
        assert_eq!(git["secret"]["optional"], true);
        let at = a["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == git["name"])
            .unwrap()["mountPath"]
            .as_str()
            .unwrap();
        let ssh = var("GIT_SSH_COMMAND")["value"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            ssh.contains(&format!("-i {at}/ssh-privatekey"))
                && ssh.contains(&format!("UserKnownHostsFile={at}/known_hosts")),
            "{ssh}"
        );
        assert_eq!(
            var("GIT_CONFIG_VALUE_0")["value"],
            format!("store --file={at}/git-credentials")
        );
        // The dashboard: the Service's `dashboard` port is the one --http-listen serves, and
        // clients may reach it.
        let http = port_of(flag(&c["args"], "--http-listen"));
        let svc = find(&d, "Service", "dispatch-coordinator");
        let dash = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "dashboard")
            .unwrap();
        assert_eq!(dash["port"], http);
        let admitted = |policy: &serde_json::Value, port: u64| {
            policy["spec"]["ingress"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| {
                    r["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["port"] == port)
                })
        };
        assert!(admitted(
            find(&d, "NetworkPolicy", "dispatch-coordinator"),
            http
        ));
        // Agents' metrics are scrapeable.
        let agent_metrics = port_of(flag(&a["args"], "--metrics-listen"));
        assert!(admitted(
            find(&d, "NetworkPolicy", "dispatch-agent"),
            agent_metrics
        ));
        for doc in &d {
            assert_eq!(
                doc["metadata"]["namespace"].as_str().unwrap_or("dispatch"),
                "dispatch"
            );
        }
        match name.as_str() {
            "keda" => {
                let so = find(&d, "ScaledObject", "dispatch-agent-default");
                assert_eq!(so["apiVersion"], "keda.sh/v1alpha1");
                assert_eq!(
                    so["spec"]["scaleTargetRef"]["name"],
                    "dispatch-agent-default"
                );
                let t = &so["spec"]["triggers"][0];
                assert_eq!(t["type"], "prometheus");
                assert!(
                    t["metadata"]["query"]
                        .as_str()
                        .unwrap()
                        .contains("dispatch_queue_depth")
                );
                assert!(
                    t["metadata"]["threshold"]
                        .as_str()
                        .unwrap()
                        .parse::<f64>()
                        .is_ok()
                );
            }
            "replicas" => {
                assert_eq!(coordinator["spec"]["replicas"], 2);
                assert_eq!(coordinator["spec"]["podManagementPolicy"], "Parallel");
                assert!(coordinator["spec"]["volumeClaimTemplates"].is_null());
                let env = c["env"].as_array().unwrap();
                let var = |n: &str| env.iter().find(|e| e["name"] == n).unwrap().clone();
                // The password never on the command line: from a secret, through the env.
                assert_eq!(
                    var("DISPATCH_STORE")["valueFrom"]["secretKeyRef"]["name"],
                    "dispatch-store"
                );
                assert!(
                    !c["args"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|a| a.as_str().unwrap().starts_with("--store"))
                );
                // Each pod advertises its own headless-DNS name (the env var before it is
                // POD_NAME, so Kubernetes expands it).
                let names: Vec<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
                let pod = names.iter().position(|n| *n == "POD_NAME").unwrap();
                let adv = names
                    .iter()
                    .position(|n| *n == "DISPATCH_ADVERTISE")
                    .unwrap();
                assert!(pod < adv);
                assert_eq!(
                    var("DISPATCH_ADVERTISE")["value"],
                    format!(
                        "https://$(POD_NAME).{}.dispatch.svc:{}",
                        coordinator["spec"]["serviceName"].as_str().unwrap(),
                        port_of(flag(&c["args"], "--listen"))
                    )
                );
                let data = coordinator["spec"]["template"]["spec"]["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == "data")
                    .unwrap();
                assert!(data["emptyDir"].is_object());
            }
            "dashboard" => {
                let ing = find(&d, "Ingress", "dispatch-dashboard");
                let backend = &ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
                assert_eq!(backend["name"], "dispatch-coordinator");
                assert_eq!(backend["port"]["name"], "dashboard");
                assert_eq!(
                    ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"],
                    "HTTPS"
                );
                assert!(admitted(
                    find(&d, "NetworkPolicy", "dispatch-dashboard-ingress"),
                    http
                ));
            }
            "monitoring" => {
                for (monitor, pod) in [
                    ("dispatch-coordinator", coordinator),
                    ("dispatch-agent", pool),
                ] {
                    let m = find(&d, "PodMonitor", monitor);
                    assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
                    let labels = &pod["spec"]["template"]["metadata"]["labels"];
                    for (k, v) in m["spec"]["selector"]["matchLabels"].as_object().unwrap() {
                        assert_eq!(&labels[k], v, "{monitor} selects its pods");
                    }
                    let port = m["spec"]["podMetricsEndpoints"][0]["port"]
                        .as_str()
                        .unwrap();
                    let container = &pod["spec"]["template"]["spec"]["containers"][0];
                    let named = container["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|p| p["name"] == port)
                        .unwrap_or_else(|| panic!("{monitor}: no port `{port}`"));
                    assert_eq!(
                        named["containerPort"],
                        port_of(flag(&container["args"], "--metrics-listen"))
                    );
                }
            }
            "hpa" => {
                let h = find(&d, "HorizontalPodAutoscaler", "dispatch-agent-default");
                assert_eq!(
                    h["spec"]["scaleTargetRef"]["name"],
                    "dispatch-agent-default"
                );
                assert_eq!(
                    h["spec"]["metrics"][0]["external"]["metric"]["name"],
                    "dispatch_queue_depth"
                );
            }
            _ => {}
        }
    }
}

#[test]
fn the_systemd_units_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The units as installed, with the binaries where this build put them.
    for (unit, as_name) in [
        (
            "dispatch-coordinator.service",
            "dispatch-coordinator.service",
        ),
        (
            "dispatch-agent@.service",
            "dispatch-agent@build-box.service",
        ),
    ] {
        let text = std::fs::read_to_string(deploy().join("systemd").join(unit)).unwrap();
        let bin_dir = bin("dispatch-agent")
            .parent()
            .unwrap()
            .display()
            .to_string();
        std::fs::write(
            dir.path().join(as_name),
            text.replace("/usr/local/bin", &bin_dir),
        )
        .unwrap();
    }
    let out = Command::new(analyze)
        .arg("verify")
        .arg(dir.path().join("dispatch-coordinator.service"))
        .arg(dir.path().join("dispatch-agent@build-box.service"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on a line it ignores; any word from it is a mistake in the unit.
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

/// Metric names a live coordinator exports (`# TYPE` lines of one scrape), with a node
/// connected, a task running and one queued (a family with no series is left out of a scrape).
fn exported() -> Vec<(String, String)> {
    let mut c = Cluster::with_coordinator_args(&["--metrics-listen", "127.0.0.1:0"]);
    c.add_agent(dispatch_tests::AgentOpts::new("one", 1));
    for id in ["first", "second"] {
        c.ok(&[
            "--backend",
            "sim",
            "--id",
            id,
            "--step",
            "wait (sleep 30s)",
            id,
        ]);
    }
    c.wait_task("second", "it to queue", |t| {
        t.task_state().as_str() == "queued"
    });
    c.wait_task("first", "it to run", |t| {
        t.task_state().as_str() == "running"
    });
    let body = dispatch_tests::scrape_metrics(&c.dir.path().join("coordinator/metrics.addr"));
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (n, t) = l.split_once(' ').unwrap();
            (n.to_string(), t.to_string())
        })
        .collect()
}

#[test]
fn the_alert_rules_name_only_metrics_the_coordinator_exports() {
    let text = std::fs::read_to_string(deploy().join("prometheus/alerts.yaml")).unwrap();
    let rules: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let types = exported();
    let known = |name: &str| {
        types.iter().any(|(n, t)| {
            name == n
                || (t == "counter" && name == format!("{n}_total"))
                || (t == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{n}{s}")))
        })
    };
    let mut n = 0;
    for group in rules["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            n += 1;
            let alert = r["alert"].as_str().expect("an alert name");
            let expr = r["expr"].as_str().expect("an expr");
            assert!(r["for"].is_string(), "{alert}: for");
            assert!(
                ["critical", "warning", "info"]
                    .contains(&r["labels"]["severity"].as_str().unwrap()),
                "{alert}: severity"
            );
            assert!(r["annotations"]["summary"].is_string(), "{alert}: summary");
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("dispatch_"))
                .collect();
            for m in names {
                assert!(
                    known(m),
                    "{alert} uses `{m}`, which the coordinator does not export: {types:?}"
                );
            }
        }
    }
    assert!(n >= 5, "{n} rules");
}

#[test]
fn the_dockerfile_builds_and_copies_the_three_binaries() {
    let text = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    for b in ["dispatch", "dispatch-coordinator", "dispatch-agent"] {
        assert!(
            text.contains(&format!("--bin {b} ")) || text.contains(&format!("--bin {b}\n")),
            "builds {b}"
        );
        assert!(
            text.contains(&format!("/src/target/release/{b} ")),
            "copies {b}"
        );
    }
    // The `prebuilt` target takes the three from its context (tests/tests/image.rs builds
    // and runs it).
    assert!(text.contains("FROM base AS prebuilt"));
    assert!(text.contains(
        "COPY --chmod=0755 dispatch dispatch-coordinator dispatch-agent /usr/local/bin/"
    ));
    assert!(text.contains("USER 10001:10001"), "runs as a non-root user");
    assert!(text.contains("ENTRYPOINT [\"/usr/bin/tini\", \"--\"]"));
    // `docker build` without --target gives the runtime, not an agent image.
    let last = text.lines().rfind(|l| l.starts_with("FROM ")).unwrap();
    assert_eq!(last, "FROM runtime");
    let ignore = std::fs::read_to_string(deploy().join("../.dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l == "target"),
        "the build context leaves target/ out"
    );
}

/// docs/cluster.md's "From `certs init` to Secrets" recipe, run for real (certs init, new-token, a node
/// token made by the CLI against a live coordinator) with `kubectl create secret` in
/// `--dry-run=client` mode: it makes every Secret, with every key, the base manifests read; the
/// pool's node token matches the pool's pod names; no other node-token prefix is named anywhere.
#[test]
#[ignore = "needs kubectl; run with --run-ignored all (.ci/run does)"]
fn the_secrets_recipe_makes_every_secret_the_manifests_read() {
    let Some(kubectl) = tool("kubectl") else {
        return;
    };
    let readme = std::fs::read_to_string(deploy().join("../docs/cluster.md")).unwrap();
    let at = readme
        .find("**From `certs init` to Secrets.**")
        .expect("docs/cluster.md has the recipe");
    let block = &readme[at..];
    let start = block.find("```sh\n").unwrap() + 6;
    let end = start + block[start..].find("```").unwrap();
    let recipe = &block[start..end];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deploy_key"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("known_hosts"),
        "github.com ssh-ed25519 AAAA\n",
    )
    .unwrap();
    let secrets = dir.path().join("secrets.jsonl");
    let bins = bin("dispatch").parent().unwrap().to_path_buf();
    let c = Cluster::new();
    // kubectl: `create secret` for real but client-side only; apply and port-forward have no
    // cluster to reach. The recipe's own `export DISPATCH_*` points at the cluster's port
    // forward; here the test's coordinator takes its place.
    let shim = format!(
        "kubectl() {{ case \"$*\" in *' create secret '*) '{}' \"$@\" --dry-run=client -o json | tr -d '\\n' >> '{}'; echo >> '{}';; *) echo \"(not here: kubectl $*)\";; esac; }}\n",
        kubectl.display(),
        secrets.display(),
        secrets.display()
    );
    let body: String = recipe
        .lines()
        .filter(|l| !l.starts_with("export DISPATCH_"))
        .map(|l| format!("{l}\n"))
        .collect();
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(format!("{shim}{body}wait"))
        .current_dir(dir.path())
        .env(
            "PATH",
            format!("{}:{}", bins.display(), std::env::var("PATH").unwrap()),
        )
        .env("DISPATCH_COORDINATOR", &c.url)
        .env("DISPATCH_TOKEN", &c.admin_token)
        .env("DISPATCH_HOME", dir.path().join("home"))
        .env("ANTHROPIC_API_KEY", "sk-test")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the recipe failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Vec<serde_json::Value> = std::fs::read_to_string(&secrets)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keys_of = |name: &str| -> Vec<String> {
        let s = made
            .iter()
            .find(|s| s["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("the recipe makes no Secret `{name}`"));
        assert_eq!(s["metadata"]["namespace"], "dispatch");
        s["data"].as_object().unwrap().keys().cloned().collect()
    };
    // What the base reads: secretKeyRefs and secret volumes (with the files its args and env
    // name).
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(deploy().join("k8s/base"))
        .output()
        .unwrap();
    let rendered = String::from_utf8(out.stdout).unwrap();
    // (Secret, key, optional)
    let mut wanted: Vec<(String, String, bool)> = Vec::new();
    for doc in docs(&rendered) {
        let spec = &doc["spec"]["template"]["spec"];
        for c in spec["containers"].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                let r = &e["valueFrom"]["secretKeyRef"];
                if r.is_object() {
                    wanted.push((
                        r["name"].as_str().unwrap().into(),
                        r["key"].as_str().unwrap().into(),
                        r["optional"] == true,
                    ));
                }
            }
            let text = c.to_string();
            for v in spec["volumes"].as_array().into_iter().flatten() {
                let Some(secret) = v["secret"]["secretName"].as_str() else {
                    continue;
                };
                let mount = c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|m| m["name"] == v["name"]);
                let Some(mount) = mount else { continue };
                let path = mount["mountPath"].as_str().unwrap();
                // Each file of it the container names (in args or env).
                let mut named = 0;
                for (i, _) in text.match_indices(&format!("{path}/")) {
                    let file: String = text[i + path.len() + 1..]
                        .chars()
                        .take_while(|ch| {
                            ch.is_ascii_alphanumeric() || *ch == '.' || *ch == '_' || *ch == '-'
                        })
                        .collect();
                    wanted.push((secret.into(), file, v["secret"]["optional"] == true));
                    named += 1;
                }
                assert!(named > 0, "{secret} is mounted at {path} and never read");
            }
        }
    }
    wanted.sort();
    wanted.dedup();
    assert!(wanted.len() >= 10, "{wanted:?}");
    // Every key of a required Secret; of an optional one (its keys are alternatives: an SSH
    // key or a credential store), only keys the manifests read, and at least one.
    for (secret, key, optional) in &wanted {
        assert!(
            *optional || keys_of(secret).contains(key),
            "Secret {secret} from the recipe has no `{key}` (it has {:?})",
            keys_of(secret)
        );
    }
    for s in &made {
        let name = s["metadata"]["name"].as_str().unwrap();
        for key in s["data"].as_object().unwrap().keys() {
            assert!(
                wanted.iter().any(|(n, k, _)| n == name && k == key),
                "the recipe puts `{key}` in {name}, which nothing reads"
            );
        }
    }
    // The node token is a real one, for the pool's pod names.
    let list: serde_json::Value =
        serde_json::from_str(&c.ok(&["token", "list", "--json"])).unwrap();
    let node = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "node")
        .expect("the recipe made a node token");
    let pattern = node["name"].as_str().unwrap();
    let pool = docs(&rendered)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    assert_eq!(
        pattern,
        format!("{}-*", pool["metadata"]["name"].as_str().unwrap()),
        "pods are named after their Deployment"
    );
    // No other prefix anywhere an operator reads one.
    for file in [
        "../README.md",
        "../docs/cluster.md",
        "k8s/base/kustomization.yaml",
        "../cli/src/args.rs",
        "../docs/operations.md",
    ] {
        let text = std::fs::read_to_string(deploy().join(file)).unwrap();
        for (i, _) in text.match_indices("--node '") {
            let quoted: String = text[i + 8..].chars().take_while(|c| *c != '\'').collect();
            if quoted.contains("default") {
                assert_eq!(quoted, pattern, "{file}");
            }
        }
        assert!(
            !text.contains("pool-default-"),
            "{file} names pool-default-*"
        );
    }
}
