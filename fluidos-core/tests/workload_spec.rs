//! Workload specs in TOML and JSON, and their typed errors.

#![allow(clippy::unwrap_used)]

use fluidos_core::workload::{PreferenceKind, RestartPolicy, Run, SpecError, WorkloadSpec};

const FULL: &str = r#"
name = "hello"
replicas = 3

[run]
command = "/bin/echo"
args = ["hello", "world"]

[env]
GREETING = "hi"

[requests]
cpu = "500m"
memory = "256MiB"

[limits]
cpu = 1
memory = "512MiB"

[[ports]]
port = 8080
name = "http"

[restart]
policy = "on-failure"
max_restarts = 3

[intent.require]
architecture = "amd64"
country = "IT"
labels = { zone = "edge" }
max_price_micros_per_hour = 500000
gpu = { model = "H100" }

[[intent.prefer]]
kind = "lower_price"
weight = 2

[[intent.prefer]]
kind = "spread"
"#;

#[test]
fn full_toml_parses_and_round_trips_through_json_and_toml() {
    let s = WorkloadSpec::from_toml(FULL).unwrap();
    assert_eq!(s.replicas, 3);
    assert!(
        matches!(&s.run, Run::Command { command, args } if command == "/bin/echo" && args.len() == 2)
    );
    assert_eq!(s.requests().cpu_millis, 500);
    assert_eq!(s.requests().memory_bytes, 256 << 20);
    assert_eq!(s.limits().cpu_millis, 1000);
    assert_eq!(s.restart, RestartPolicy::OnFailure { max_restarts: 3 });
    assert_eq!(s.intent.prefer[0].kind, PreferenceKind::LowerPrice);
    assert_eq!(s.intent.prefer[1].weight, 1);
    assert!(s.intent.acquire);
    assert_eq!(WorkloadSpec::from_json(&s.to_json()).unwrap(), s);
    assert_eq!(WorkloadSpec::from_toml(&s.to_toml().unwrap()).unwrap(), s);
}

#[test]
fn json_with_an_image() {
    let s = WorkloadSpec::from_json(
        r#"{"name":"web","run":{"image":"docker.io/library/nginx:1.27"},"requests":{"cpu":0.25,"memory":134217728},"restart":{"policy":"always"}}"#,
    )
    .unwrap();
    assert!(matches!(s.run, Run::Image { .. }));
    assert_eq!(s.requests().cpu_millis, 250);
    assert_eq!(s.restart, RestartPolicy::Always);
    assert_eq!(s.replicas, 1);
}

#[test]
fn each_mistake_has_its_own_error() {
    let base = |run: &str, rest: &str| {
        format!("name = \"a\"\n{rest}\n[run]\n{run}\n[requests]\ncpu = 1\n")
    };
    let err = |t: String| WorkloadSpec::from_toml(&t).unwrap_err();
    assert!(
        matches!(err(base("command = \"x\"\nimage = \"y\"", "")), SpecError::Toml(m) if m.contains("not both"))
    );
    assert!(matches!(err(base("", "")), SpecError::Toml(m) if m.contains("command")));
    assert!(matches!(
        err(base("command = \"\"", "")),
        SpecError::EmptyRun
    ));
    assert!(matches!(
        err(base("command = \"x\"", "replicas = 0")),
        SpecError::Replicas(0)
    ));
    assert!(
        matches!(err(base("command = \"x\"", "colour = 1")), SpecError::Toml(m) if m.contains("colour"))
    );
    assert!(matches!(
        err("name = \"Bad Name\"\n[run]\ncommand = \"x\"\n[requests]\ncpu = 1\n".into()),
        SpecError::BadName(_)
    ));
    assert!(matches!(
        err("name = \"a\"\n[run]\ncommand = \"x\"\n[requests]\ncpu = \"lots\"\n".into()),
        SpecError::Toml(m) if m.contains("lots")
    ));
    assert!(matches!(
        err("name = \"a\"\n[run]\ncommand = \"x\"\n".into()),
        SpecError::EmptyRequests
    ));
    assert!(matches!(
        err(
            "name = \"a\"\n[run]\ncommand = \"x\"\n[requests]\ncpu = 2\n[limits]\ncpu = 1\n".into()
        ),
        SpecError::LimitBelowRequest {
            resource: "cpu",
            ..
        }
    ));
    assert!(matches!(
        err(base(
            "command = \"x\"",
            "[[ports]]\nport = 80\n[[ports]]\nport = 80"
        )),
        SpecError::BadPort(_)
    ));
    assert!(matches!(
        err("name = \"a\"\n[run]\ncommand = \"x\"\n[requests]\ncpu = 1\n[intent.require]\ncountry = \"Italy\"\n".into()),
        SpecError::Intent(_)
    ));
    assert!(matches!(
        err("name = \"a\"\n[run]\ncommand = \"x\"\n[requests]\ncpu = 1\n[[intent.prefer]]\nkind = \"spread\"\nweight = 0\n".into()),
        SpecError::Intent(_)
    ));
    assert!(matches!(
        WorkloadSpec::from_json("{"),
        Err(SpecError::Json(_))
    ));
}
