//! `dispatch`: send coding-agent tasks to any machine and watch them.

mod args;
mod client;
mod cmd;
mod embedded;
mod exit;
mod render;
mod retry;
mod settings;
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
    if let Some(args::Command::ApproveHook { args }) = &cli.command {
        return ExitCode::from(dispatch_agent::approvals::hook_main(args).clamp(0, 255) as u8);
    }
    if let Some(args::Command::Daemon {
        action: args::DaemonAction::Run { idle_timeout },
    }) = &cli.command
    {
        let home = settings::Settings::load(&cli.global, true).and_then(|s| s.home());
        return match home.and_then(|home| embedded::run_foreground(home, *idle_timeout)) {
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
        Ok(code) => ExitCode::from(u8::from(code)),
        Err(e) => {
            eprintln!("error: {}", render::error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// `dispatch status | head -1`: when the reader goes away, stop quietly with status 0 instead
/// of a panic about a broken pipe. (Rust ignores SIGPIPE, so a write to a closed pipe fails,
/// and `println!` panics on that failure.) The hook asks the pipe itself — the write end of a
/// pipe whose reader is gone polls as an error — rather than reading the panic's words; every
/// other panic is reported as before.
fn quiet_broken_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if reader_gone(&std::io::stdout()) || reader_gone(&std::io::stderr()) {
            std::process::exit(0);
        }
        report(info);
    }));
}

/// True when `out` is a pipe (or socket) whose reader has gone away.
fn reader_gone(out: &impl std::os::fd::AsFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(out.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}
