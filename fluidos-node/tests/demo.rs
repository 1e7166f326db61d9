//! The README's first command: `fluidos-node demo` must run every step and succeed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn demo_runs_every_step() {
    let out = Command::new(env!("CARGO_BIN_EXE_fluidos-node"))
        .arg("demo")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in 1..=8 {
        assert!(
            stdout.contains(&format!("[{step}]")),
            "step {step} missing:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("provider copy == buyer copy: yes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("provider and buyer signatures valid"),
        "{stdout}"
    );
    assert!(
        stdout.contains("committed capacity back to cpu=0"),
        "{stdout}"
    );
    // Step 7: the workload was bought for, ran on a provider, and its output came back.
    assert!(stdout.contains("… acquiring"), "{stdout}");
    assert!(stdout.contains("exited with code 0"), "{stdout}");
    assert!(stdout.contains("hello from"), "{stdout}");
    // It says which runtime ran it: a container where an engine answers.
    assert!(stdout.contains("workload runtime: "), "{stdout}");
    let docker = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if docker {
        assert!(stdout.contains("workload runtime: Docker"), "{stdout}");
        assert!(
            stdout.contains("in a container on the provider"),
            "{stdout}"
        );
    } else {
        assert!(stdout.contains("in a process on the provider"), "{stdout}");
    }
    assert_eq!(
        stdout.matches("advert signature verified").count(),
        2,
        "{stdout}"
    );
}
