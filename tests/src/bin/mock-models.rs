//! Runs the test suite's mock model servers (Anthropic Messages and OpenAI Responses on one
//! loopback port) until interrupted, to try the real `claude` and `codex` against dispatch by
//! hand:
//!
//! ```sh
//! cargo run -p dispatch-tests --bin mock-models -- [--fail anthropic=429] [--fail openai=usage]
//! ANTHROPIC_BASE_URL=http://127.0.0.1:PORT ANTHROPIC_API_KEY=x claude -p "..."
//! ```
//!
//! A fault is `API=STATUS` (401, 403, 429, 500, 529) or `API=usage` (a usage limit that resets
//! in two hours); it applies to every request of that API. Each request is logged on stderr.

use dispatch_tests::mock_models::{Api, Fault, MockModels};

fn main() {
    let mut faults = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--fail" => {
                let Some(spec) = args.next() else {
                    eprintln!("--fail needs API=STATUS");
                    std::process::exit(2);
                };
                let Some((api, what)) = spec.split_once('=') else {
                    eprintln!("--fail {spec}: use API=STATUS, e.g. anthropic=429");
                    std::process::exit(2);
                };
                let api = match api {
                    "anthropic" => Api::Anthropic,
                    "openai" => Api::OpenAi,
                    _ => {
                        eprintln!("--fail {spec}: the API is anthropic or openai");
                        std::process::exit(2);
                    }
                };
                let fault = match what {
                    "usage" => {
                        Fault::UsageLimit(dispatch_tests::mock_models::now_ms() / 1000 + 7200)
                    }
                    s => match s.parse() {
                        Ok(n) => Fault::Status(n),
                        Err(_) => {
                            eprintln!("--fail {spec}: the fault is an HTTP status or `usage`");
                            std::process::exit(2);
                        }
                    },
                };
                faults.push((api, fault));
            }
            "-h" | "--help" => {
                println!(
                    "mock-models [--fail API=STATUS|usage]...\n\nServes the Anthropic Messages API (/v1/messages) and the OpenAI Responses API\n(/v1/responses) on one loopback port, answered by a scripted dispatch worker."
                );
                return;
            }
            other => {
                eprintln!("unknown argument `{other}`; see --help");
                std::process::exit(2);
            }
        }
    }
    let m = MockModels::start();
    for (api, f) in faults {
        m.fail(api, f, None);
    }
    println!("{}", m.url);
    let mut shown = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let seen = m.seen();
        for s in &seen[shown..] {
            eprintln!(
                "{:?} model={} task={} status={} results={}",
                s.api, s.model, s.task, s.status, s.results
            );
        }
        shown = seen.len();
    }
}
