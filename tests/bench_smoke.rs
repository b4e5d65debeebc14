//! Each benchmark runs from its one command and prints its ratio last. Tiny sizes, so this
//! checks the commands, not performance (docs/PERFORMANCE.md has the real runs).

use std::process::Command;

fn bench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wpfleet"))
        .arg("bench")
        .args(args)
        .output()
        .expect("wpfleet bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The number on the last line, after its `:`.
fn last_ratio(stdout: &str, starts: &str) -> f64 {
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with(starts), "last line {last:?} in\n{stdout}");
    last.split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn converge_and_resync_print_their_ratios() {
    let out = bench(&["converge", "-n", "4", "--sim-speed", "400"]);
    assert!(last_ratio(&out, "ratio (wall / lower bound)") > 0.0);
    let out = bench(&["resync", "-n", "30", "--sim-speed", "400"]);
    let per = last_ratio(&out, "calls per instance");
    // Five describe calls for one batch of 30, none mutating.
    assert!(per > 0.0 && per < 1.0, "{out}");
    assert!(out.contains(" 0 mutating"), "{out}");
}

#[test]
fn latency_api_and_memory_print_their_ratios() {
    let out = bench(&[
        "latency",
        "--puts",
        "6",
        "--rate",
        "50",
        "--fleet",
        "3",
        "--sim-speed",
        "400",
    ]);
    assert!(last_ratio(&out, "ratio (p99 / 50 ms)") >= 0.0);
    assert!(
        out.contains("(6 measured, 0 without a mutating call)"),
        "{out}"
    );
    let out = bench(&["api", "-n", "20", "--concurrency", "4"]);
    assert!(last_ratio(&out, "ratio (HTTP / raw store)") > 0.0);
    let out = bench(&["memory", "-n", "50", "--watch", "1s", "--sim-speed", "400"]);
    assert!(last_ratio(&out, "ratio (controller RSS / 200 MiB)") > 0.0);
}
