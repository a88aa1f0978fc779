//! The settings every command runs with, built once before it runs (and passed down): the
//! command line first, then the environment (clap reads both: `--coordinator` or
//! `DISPATCH_COORDINATOR`), then the config file (`coordinator:`, `token:`, `tls:`, `remote:`).
//!
//! The config file is read here and nowhere else in a command's run (its warnings are printed
//! once). One that cannot be read is an error naming its path — for every command but those
//! that exist to inspect or repair it (`config`, `doctor`), which get the error when they ask.

use crate::args::Global;
use anyhow::{Context, Result, anyhow};
use dispatch_core::config::Config;
use std::path::PathBuf;

/// What a command runs with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The coordinator (an address list), or None for the local daemon.
    pub(crate) coordinator: Option<String>,
    /// Print JSON instead of text.
    pub(crate) json: bool,
    /// The CA an `https://` coordinator is verified against (None: the system's roots).
    pub(crate) ca: Option<PathBuf>,
    /// The token sent to the coordinator.
    pub(crate) token: Option<String>,
    /// The config's `remote:`: the node a submit goes to when it names none (with a
    /// coordinator only).
    pub(crate) remote: Option<String>,
    /// Where dispatch keeps its files (None: HOME is not set and neither is --home).
    home: Option<PathBuf>,
    /// The config file: None when there is none; the error when it cannot be read.
    config: Result<Option<Config>, String>,
}

impl Settings {
    /// Builds the settings from the command line (and environment) and the config file. With
    /// `lenient`, a config file that cannot be read is kept as an error for [`Settings::config`]
    /// instead of failing here.
    pub(crate) fn load(g: &Global, lenient: bool) -> Result<Settings> {
        let home = match &g.home {
            Some(h) => Some(h.clone()),
            None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".dispatch")),
        };
        let config = match &home {
            Some(h) => read_config(&h.join("config.yaml")),
            None => Ok(None),
        };
        let file = match &config {
            Ok(c) => c.as_ref(),
            Err(e) if !lenient => return Err(anyhow!("{e}")),
            Err(_) => None,
        };
        // The token: a file named on the command line, the environment, the config.
        let token = match &g.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read --token-file {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("DISPATCH_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty())
                .or_else(|| file.and_then(|c| c.token.clone())),
        };
        Ok(Settings {
            coordinator: g
                .coordinator
                .clone()
                .or_else(|| file.and_then(|c| c.coordinator.clone())),
            json: g.json,
            ca: g
                .ca
                .clone()
                .or_else(|| file.and_then(|c| c.tls.as_ref()).map(PathBuf::from)),
            token,
            remote: file.and_then(|c| c.remote.clone()),
            home,
            config,
        })
    }

    /// Where dispatch keeps its files: --home, DISPATCH_HOME, else ~/.dispatch.
    pub(crate) fn home(&self) -> Result<PathBuf> {
        self.home.clone().ok_or_else(|| {
            anyhow!("HOME is not set; set DISPATCH_HOME to where dispatch may keep its files")
        })
    }

    /// The config file's path.
    pub(crate) fn config_path(&self) -> Result<PathBuf> {
        Ok(self.home()?.join("config.yaml"))
    }

    /// The config, if there is one (as read when the settings were built).
    pub(crate) fn config(&self) -> Result<Option<Config>> {
        self.config.clone().map_err(|e| anyhow!("{e}"))
    }
}

/// Reads the config at `p` (None when there is none), printing its warnings.
fn read_config(p: &std::path::Path) -> Result<Option<Config>, String> {
    let cfg = Config::load(p).map_err(|e| {
        format!("{e}\nFix the file, or move it away and run `dispatch config init`.")
    })?;
    if let Some(c) = &cfg {
        for w in &c.warnings {
            eprintln!("warning: {}: {w}", p.display());
        }
        if c.is_legacy() {
            eprintln!(
                "note: {} uses the old `agents:` format; `dispatch config migrate` upgrades it.",
                p.display()
            );
        }
    }
    Ok(cfg)
}
