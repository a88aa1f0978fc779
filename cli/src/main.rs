//! `dispatch`: send coding-agent tasks to any machine and watch them.

mod args;
mod client;
mod cmd;
mod daemon;
mod exit;
mod render;
mod retry;
mod watching;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    quiet_broken_pipe();
    let cli = args::Cli::parse();
    let _ = render::COLOR.set(cli.global.color.clone());
    if let Some(args::Command::SimWorker { args }) = &cli.command {
        return ExitCode::from(dispatch_agent::sim::main(args).clamp(0, 255) as u8);
    }
    if let Some(args::Command::Daemon {
        action: args::DaemonAction::Run { idle_timeout },
    }) = &cli.command
    {
        return match daemon::run_foreground(&cli.global, *idle_timeout) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dispatch daemon: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Spans only (its stderr is the user's), and only with OTEL_EXPORTER_OTLP_ENDPOINT set.
    let telemetry = {
        let _in = rt.enter();
        dispatch_telemetry::init("dispatch", None)
    };
    let result = rt.block_on(cmd::run(cli));
    drop(telemetry);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", render::error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// `dispatch status | head -1`: when the reader goes away, stop quietly with status 0, as
/// other command-line tools do, instead of a panic about a broken pipe. (Rust ignores SIGPIPE,
/// so a write to a closed pipe fails, and `println!` panics on that failure; every other panic
/// is reported as before.)
fn quiet_broken_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        report(info);
    }));
}
