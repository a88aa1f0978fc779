//! The benchmark harness runs (small counts, no thresholds) so it never rots.

use std::process::Command;

#[test]
fn the_bench_scenarios_run() {
    for args in [
        &["questions", "--count", "3", "--baseline", "0"][..],
        &["receivers", "--count", "3"][..],
        &["dispatch", "--count", "3"][..],
        &["handoff", "--count", "3"][..],
        &[
            "throughput",
            "--tasks",
            "2",
            "--events",
            "3",
            "--watchers",
            "2",
        ][..],
        &["scale", "--nodes", "5", "--seconds", "1"][..],
        &["footprint", "--tasks", "20"][..],
        &["idle", "--tasks", "2", "--seconds", "1"][..],
        &["results", "--events", "20", "--parse-mb", "1"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_dispatch-bench"))
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("| measure"), "{stdout}");
        assert_eq!(
            stdout
                .lines()
                .filter(|l| l.starts_with("| ") && !l.starts_with("| measure"))
                .count(),
            match args[0] {
                "questions" => 4,
                "receivers" => 5,
                "throughput" => 4,
                "scale" => 3,
                "footprint" => 4,
                "idle" => 4,
                "results" => 10,
                _ => 1,
            },
            "{stdout}"
        );
    }
}
