//! The real agent CLIs as dispatch workers: Claude Code and Codex from the npm registry,
//! pinned in `tests/clis/package-lock.json` (an outdated Codex in `tests/clis/old/`), installed
//! by `.ci/run` with `npm ci`. A node that runs them talks to the mock model servers
//! ([`crate::mock_models`]) the way a user's node talks to a gateway: `ANTHROPIC_BASE_URL` for
//! Claude Code, a model provider in `CODEX_HOME/config.toml` for Codex.

use crate::mock_models::MockModels;
use crate::{AgentOpts, Cluster};
use std::path::{Path, PathBuf};

/// Where the pinned CLIs are installed.
pub struct RealClis {
    /// `tests/clis/node_modules/.bin` (`claude`, `codex`).
    pub bin: PathBuf,
    /// `tests/clis/old/node_modules/.bin`: a Codex too old to drive (no `exec --json`).
    pub old_bin: PathBuf,
    /// `claude --version`, `codex --version`.
    pub versions: (String, String),
}

fn version(bin: &Path, program: &str) -> Option<String> {
    let out = std::process::Command::new(bin.join(program))
        .arg("--version")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl RealClis {
    /// The installed CLIs; None (with a line saying the test skips) when `tests/clis` has not
    /// been installed. Under CI (`CI` set) that fails instead: `.ci/run` installs them.
    pub fn installed() -> Option<RealClis> {
        // Where `.ci/run` installed them (outside the checkout when the unprivileged user the
        // agents run as cannot enter it), else tests/clis.
        let root = std::env::var_os("DISPATCH_TEST_CLIS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("clis"));
        let bin = root.join("node_modules/.bin");
        let old_bin = root.join("old/node_modules/.bin");
        let reachable = !nix::unistd::geteuid().is_root()
            || crate::nobody_can_run(&bin.join("claude"), &["--version"]);
        let found = version(&bin, "claude")
            .zip(version(&bin, "codex"))
            .filter(|_| version(&old_bin, "codex").is_some() && reachable);
        match found {
            Some(versions) => Some(RealClis {
                bin,
                old_bin,
                versions,
            }),
            None => {
                let why = format!(
                    "the real agent CLIs are not installed in {} (or the unprivileged user the agents run as cannot reach them there): run `npm ci --ignore-scripts` there and in old/, then `node node_modules/@anthropic-ai/claude-code/install.cjs`, or point DISPATCH_TEST_CLIS at such a directory (`.ci/run` does)",
                    root.display()
                );
                if std::env::var_os("CI").is_some() {
                    panic!("{why}");
                }
                eprintln!("skipped: {why}");
                None
            }
        }
    }
}

/// What a node's environment needs to reach `mock` as its model API, with `home` its HOME:
/// Claude Code's base URL and key, Codex's home with a model provider at the mock.
pub fn gateway_env(home: &Path, mock: &MockModels) -> Vec<(String, String)> {
    let codex_home = home.join(".codex");
    std::fs::create_dir_all(&codex_home).unwrap();
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            "model = \"gpt-5.3-codex\"\nmodel_provider = \"gateway\"\n\n[model_providers.gateway]\nname = \"test gateway\"\nbase_url = \"{}/v1\"\nenv_key = \"GATEWAY_OPENAI_KEY\"\nwire_api = \"responses\"\n",
            mock.url
        ),
    )
    .unwrap();
    [
        ("HOME", home.display().to_string()),
        ("ANTHROPIC_BASE_URL", mock.url.clone()),
        ("ANTHROPIC_API_KEY", "sk-ant-gateway-key".to_string()),
        // A node behind a gateway sends nothing else out.
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
        ("DISABLE_AUTOUPDATER", "1".to_string()),
        ("CODEX_HOME", codex_home.display().to_string()),
        ("GATEWAY_OPENAI_KEY", "sk-gateway-key".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A node `name` whose agent runs the real CLIs on `bin` against `mock`, as an unprivileged
/// user when the tests run as root, in its own workdir (not a git repository).
pub fn node(c: &Cluster, name: &str, max_tasks: u32, bin: &Path, mock: &MockModels) -> AgentOpts {
    let home = c.dir.path().join(format!("home-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    let work = c.dir.path().join(format!("work-{name}"));
    std::fs::create_dir_all(&work).unwrap();
    let mut o = AgentOpts::new(name, max_tasks);
    o.env = gateway_env(&home, mock);
    o.path_prefix = Some(bin.to_path_buf());
    o.workdir = Some(work);
    o.unprivileged = true;
    if nix::unistd::geteuid().is_root() {
        crate::chown_tree(&home, crate::NOBODY);
    }
    o
}
