//! Image workloads between real `fluidos-node` processes on a real Docker engine
//! (loopback, mDNS off, own data dirs and control ports): a consumer deploys an image
//! through the CLI, the provider runs it as a container under the contract's limits and
//! labels, reports its usage (and a pay-per-use contract's cost grows), survives
//! `kill -9` by adopting the container, and removes it on undeploy and termination; a
//! memory hog is killed and reported as out of memory.
//!
//! Needs a Docker engine (`/var/run/docker.sock` or `DOCKER_HOST`) and the `docker`
//! CLI. Without them each test prints why and passes; under `CI` it fails. The test
//! image (`fluidos-test/busybox:1`) is built here without a registry, from Debian's
//! `busybox-static` (`docker import`), unless it exists.
//!
//! `cargo test -p fluidos-node --test docker_daemons`
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, init_with, peer_dids, poll, run, stderr, stdout};

#[allow(unused_imports)]
use common::free_port as _;

const IMAGE: &str = "fluidos-test/busybox:1";
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "head", "tr", "seq", "httpd", "nc", "mkdir", "ls", "true",
    "false", "yes", "dd", "wc",
];

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Whether the engine can be used; `false` after printing why (a failure under `CI`).
fn engine_or_skip(test: &str) -> bool {
    let why = match Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "no Docker engine answers: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("no docker CLI: {e}")),
    };
    match why {
        None => {
            ensure_test_image();
            true
        }
        Some(why) if std::env::var_os("CI").is_some() => panic!("{test} cannot run in CI: {why}"),
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// Builds the test image unless it exists: a rootfs with busybox and its applets,
/// imported with `docker import` (no registry).
fn ensure_test_image() {
    if docker(&["image", "inspect", IMAGE]).status.success() {
        return;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox not found: apt-get install busybox-static");
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["tmp", "proc", "sys", "dev", "etc"] {
        std::fs::create_dir_all(root.path().join(d)).unwrap();
    }
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
    }
    let tar = root.path().with_extension("tar");
    let o = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-cf"])
        .arg(&tar)
        .arg(".")
        .output()
        .unwrap();
    assert!(o.status.success(), "tar: {o:?}");
    let o = docker(&[
        "import",
        "--change",
        "ENV PATH=/bin",
        tar.to_str().unwrap(),
        IMAGE,
    ]);
    // Another test may have imported it meanwhile; what counts is that it exists.
    assert!(
        docker(&["image", "inspect", IMAGE]).status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Names of the containers labelled as `node`'s (running or not).
fn containers_of(node: &str) -> Vec<String> {
    let o = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=fluidos.node={node}"),
        "--format",
        "{{.Names}}",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).lines().map(str::to_string).collect()
}

/// Removes `node`'s containers when dropped, so that a failed test leaves none running.
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        cleanup(&self.0);
    }
}

/// Removes what an earlier (crashed) run left for `node`.
fn cleanup(node: &str) {
    for c in containers_of(node) {
        let _ = docker(&["rm", "-f", &c]);
    }
}

fn inspect(name: &str) -> serde_json::Value {
    let o = docker(&["inspect", name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v[0].clone()
}

/// A provider (Docker runtime, pay-per-use, 1 s usage samples) and a consumer linked to
/// it. Returns (provider dir, provider did, consumer dir, provider, consumer).
fn pair(
    tmp: &Path,
) -> (
    std::path::PathBuf,
    String,
    std::path::PathBuf,
    Daemon,
    Daemon,
) {
    let (p_dir, c_dir) = (tmp.join("p"), tmp.join("c"));
    // A fixed port, so that the consumer finds the provider again after its restart.
    let listen = format!("/ip4/127.0.0.1/tcp/{}", common::free_port());
    let p_did = init_with(
        &p_dir,
        &[
            "--listen",
            &listen,
            "--runtime",
            "docker",
            "--usage-interval",
            "1s",
            "--price-model",
            "pay_per_use",
            // A high price, so that seconds of cpu cost whole micro-units.
            "--price",
            "360000",
        ],
    )["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    cleanup(&p_did);
    init_with(&c_dir, &["--provider", "false"]);
    let p = Daemon::start(&p_dir);
    let c = start_debug(&c_dir);
    let p_addr = p.status()["listen_addrs"][0].as_str().unwrap().to_string();
    let o = run(&c_dir, &["peer", "add", &p_addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    let found = poll(100, Duration::from_millis(100), || {
        peer_dids(&c_dir).contains(&p_did).then_some(())
    });
    assert!(found.is_some(), "the consumer never listed the provider");
    (p_dir, p_did, c_dir, p, c)
}

fn start_debug(dir: &Path) -> Daemon {
    let log = dir.with_extension("log");
    let file = std::fs::File::create(&log).unwrap();
    let child = common::cmd(dir)
        .env("RUST_LOG", "info,fluidos_core::node::workloads=debug")
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let d = Daemon {
        dir: dir.to_owned(),
        child: Some(child),
        log,
    };
    poll(400, Duration::from_millis(50), || {
        run(dir, &["status", "--json"])
            .status
            .success()
            .then_some(())
    })
    .unwrap();
    d
}

/// Deploys `spec` (TOML) from `c_dir`; returns the workload id.
fn deploy(c_dir: &Path, tmp: &Path, name: &str, spec: &str, c: &Daemon) -> String {
    let file = tmp.join(format!("{name}.toml"));
    std::fs::write(&file, spec).unwrap();
    let o = run(c_dir, &["deploy", file.to_str().unwrap(), "--wait", "30s"]);
    let text = stdout(&o);
    assert!(o.status.success(), "{text}\n{}\n{}", stderr(&o), c.log());
    text.lines()
        .find_map(|l| l.strip_prefix("workload "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string()
}

fn replica(c_dir: &Path, id: &str) -> Option<serde_json::Value> {
    let o = run(c_dir, &["workload", id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    Some(v["replicas"][0].clone())
}

fn contracts(dir: &Path) -> Vec<serde_json::Value> {
    let o = run(dir, &["contracts", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The consumer's view of its one contract's usage and cost: (cpu ns, cost micros).
fn usage_and_cost(c_dir: &Path) -> Option<(u64, u64)> {
    let list = contracts(c_dir);
    let c = list.iter().find(|c| c["state"] == "active")?;
    let cpu = c["usage"]["cpu_time_ns"].as_u64()?;
    let cost = c["cost"]["micros"].as_u64()?;
    Some((cpu, cost))
}

#[test]
fn image_workload_runs_under_the_contract_reports_usage_and_is_adopted_after_kill_9() {
    if !engine_or_skip("image_workload_runs_under_the_contract") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (p_dir, p_did, c_dir, mut p, c) = pair(tmp.path());
    let _clean = RemoveOnDrop(p_did.clone());
    let s = p.status();
    assert_eq!(s["docker"]["available"], true, "{s}");
    assert!(s["docker"]["api_version"].as_str().is_some(), "{s}");
    let text = stdout(&run(&p_dir, &["status"]));
    assert!(text.contains("docker:      available"), "{text}");

    // A CPU-busy container; its limits ask for more than the contract will hold.
    let id = deploy(
        &c_dir,
        tmp.path(),
        "busy",
        &format!(
            r#"
name = "busy"
[run]
image = "{IMAGE}"
args = ["sh", "-c", "echo started; while :; do :; done"]
[requests]
cpu = "250m"
memory = "64MiB"
[limits]
cpu = "8"
memory = "64GiB"
"#
        ),
        &c,
    );
    let running = poll(200, Duration::from_millis(100), || {
        replica(&c_dir, &id).filter(|r| r["state"] == "running")
    });
    assert!(running.is_some(), "never running\n{}\n{}", c.log(), p.log());

    // docker inspect: the contract's limits (smaller than the spec's) and the labels.
    let names = containers_of(&p_did);
    assert_eq!(names.len(), 1, "{names:?}");
    let before = inspect(&names[0]);
    let contract = contracts(&c_dir)
        .into_iter()
        .find(|k| k["state"] == "active")
        .unwrap();
    let cid = contract["id"].as_str().unwrap().to_string();
    let part = &contract["partition"];
    let hc = &before["HostConfig"];
    assert_eq!(
        hc["NanoCpus"].as_u64().unwrap(),
        part["cpu_millis"].as_u64().unwrap() * 1_000_000,
        "{hc}\n{contract}"
    );
    assert_eq!(hc["Memory"], part["memory_bytes"], "{hc}\n{contract}");
    assert!(hc["PidsLimit"].as_i64().unwrap_or(0) > 0, "{hc}");
    let labels = &before["Config"]["Labels"];
    assert_eq!(labels["fluidos.node"], p_did.as_str(), "{labels}");
    assert_eq!(labels["fluidos.contract"], cid.as_str(), "{labels}");
    assert_eq!(labels["fluidos.workload"], id.as_str(), "{labels}");
    assert_eq!(labels["fluidos.replica"], "0", "{labels}");
    assert!(labels["fluidos.owner"].as_str().is_some(), "{labels}");

    // Telemetry: the reported cpu time grows, and the pay-per-use cost with it.
    let first = poll(200, Duration::from_millis(100), || {
        usage_and_cost(&c_dir).filter(|(cpu, _)| *cpu > 0)
    })
    .unwrap_or_else(|| panic!("no usage reported\n{:?}", contracts(&c_dir)));
    let later = poll(200, Duration::from_millis(100), || {
        usage_and_cost(&c_dir).filter(|(cpu, cost)| *cpu > first.0 && *cost > first.1)
    })
    .unwrap_or_else(|| panic!("usage never grew from {first:?}\n{:?}", contracts(&c_dir)));
    assert!(later.1 > 0);
    let text = stdout(&run(&c_dir, &["contracts"]));
    assert!(
        text.contains("COST SO FAR") && text.contains("cpu"),
        "{text}"
    );

    // kill -9 the provider while the container runs; restart it: adopted, not restarted.
    let mut child = p.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        inspect(&names[0])["State"]["Running"],
        true,
        "the container died with the daemon"
    );
    let p2 = Daemon::start(&p_dir);
    let adopted = poll(100, Duration::from_millis(100), || {
        p2.log().contains("adopted a replica").then_some(())
    });
    assert!(adopted.is_some(), "{}", p2.log());
    let after = inspect(&names[0]);
    assert_eq!(containers_of(&p_did), names, "a second container appeared");
    assert_eq!(
        after["State"]["StartedAt"], before["State"]["StartedAt"],
        "the container was restarted"
    );
    assert_eq!(after["Id"], before["Id"]);
    // The view still says running, and the counters go on from where they were.
    let still = poll(100, Duration::from_millis(100), || {
        replica(&c_dir, &id).filter(|r| r["state"] == "running")
    });
    assert!(still.is_some(), "{:?}", replica(&c_dir, &id));
    let resumed = poll(200, Duration::from_millis(100), || {
        usage_and_cost(&c_dir).filter(|(cpu, _)| *cpu > later.0)
    });
    assert!(
        resumed.is_some(),
        "usage did not go on after the restart\nconsumer: {:?}\nprovider: {:?}\n{}",
        contracts(&c_dir),
        contracts(&p_dir),
        c.log()
    );

    // undeploy removes the container.
    let o = run(&c_dir, &["undeploy", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let gone = poll(300, Duration::from_millis(100), || {
        containers_of(&p_did).is_empty().then_some(())
    });
    assert!(gone.is_some(), "{:?}\n{}", containers_of(&p_did), p2.log());
    drop((p2, c));
}

#[test]
fn a_memory_hog_is_killed_and_reported_and_termination_removes_the_container() {
    if !engine_or_skip("a_memory_hog_is_killed_and_reported") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_p_dir, p_did, c_dir, p, c) = pair(tmp.path());
    let _clean = RemoveOnDrop(p_did.clone());

    // 128 MiB held in a shell variable under a 32 MiB limit.
    let hog = deploy(
        &c_dir,
        tmp.path(),
        "hog",
        &format!(
            r#"
name = "hog"
[run]
image = "{IMAGE}"
args = ["sh", "-c", "x=$(head -c 134217728 /dev/zero | tr '\\0' a); echo survived ${{#x}}"]
[requests]
cpu = "250m"
memory = "16MiB"
[limits]
memory = "32MiB"
"#
        ),
        &c,
    );
    let failed = poll(300, Duration::from_millis(100), || {
        replica(&c_dir, &hog).filter(|r| r["state"] == "failed")
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", replica(&c_dir, &hog), p.log()));
    let detail = failed["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("out of memory"), "{failed}");
    assert_eq!(failed["cause"], "over_quota", "{failed}");

    // A long-running container stops when its contract is terminated.
    let sleeper = deploy(
        &c_dir,
        tmp.path(),
        "sleeper",
        &format!(
            r#"
name = "sleeper"
[run]
image = "{IMAGE}"
args = ["sleep", "3600"]
[requests]
cpu = "250m"
memory = "16MiB"
"#
        ),
        &c,
    );
    let running = poll(200, Duration::from_millis(100), || {
        replica(&c_dir, &sleeper).filter(|r| r["state"] == "running")
    });
    assert!(
        running.is_some(),
        "{:?}\n{}",
        replica(&c_dir, &sleeper),
        p.log()
    );
    let live = containers_of(&p_did)
        .into_iter()
        .filter(|n| inspect(n)["State"]["Running"] == true)
        .count();
    assert_eq!(live, 1);
    for k in contracts(&c_dir)
        .into_iter()
        .filter(|k| k["state"] == "active")
    {
        let o = run(
            &c_dir,
            &["contract", "terminate", k["id"].as_str().unwrap()],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // The sleeper was evicted because its owner ended the contract, and says so.
    let evicted = poll(300, Duration::from_millis(100), || {
        replica(&c_dir, &sleeper).filter(|r| r["state"] == "evicted")
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", replica(&c_dir, &sleeper), p.log()));
    assert_eq!(evicted["cause"], "by_owner", "{evicted}");
    let ended: Vec<_> = contracts(&c_dir)
        .into_iter()
        .filter(|k| k["state"] == "ended")
        .collect();
    assert!(!ended.is_empty());
    assert!(ended.iter().all(|k| k["end"] == "by_owner"), "{ended:?}");
    let removed = poll(300, Duration::from_millis(100), || {
        containers_of(&p_did).is_empty().then_some(())
    });
    assert!(
        removed.is_some(),
        "{:?}\n{}",
        containers_of(&p_did),
        p.log()
    );
    drop((p, c));
    cleanup(&p_did);
}

#[test]
fn a_process_only_provider_refuses_image_workloads_with_a_typed_reason() {
    // No engine needed: the provider is told not to use one.
    let tmp = tempfile::tempdir().unwrap();
    let (p_dir, c_dir) = (tmp.path().join("p"), tmp.path().join("c"));
    init_with(&p_dir, &["--runtime", "process"]);
    init_with(&c_dir, &["--provider", "false"]);
    let p = Daemon::start(&p_dir);
    let c = Daemon::start(&c_dir);
    let s = p.status();
    assert_eq!(s["docker"]["available"], false, "{s}");
    assert!(
        s["docker"]["reason"]
            .as_str()
            .unwrap()
            .contains("runtime = \"process\""),
        "{s}"
    );
    let flavors = run(&p_dir, &["flavors", "--json"]);
    assert!(
        stdout(&flavors).contains("\"fluidos.runtimes\": \"process\"")
            || stdout(&flavors).contains("\"fluidos.runtimes\":\"process\""),
        "{}",
        stdout(&flavors)
    );
    let p_addr = s["listen_addrs"][0].as_str().unwrap().to_string();
    let o = run(&c_dir, &["peer", "add", &p_addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    let p_did = s["did_key"].as_str().unwrap().to_string();
    let found = poll(100, Duration::from_millis(100), || {
        peer_dids(&c_dir).contains(&p_did).then_some(())
    });
    assert!(found.is_some(), "the consumer never listed the provider");
    let file = tmp.path().join("img.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"img\"\n[run]\nimage = \"{IMAGE}\"\n[requests]\ncpu = \"250m\"\nmemory = \"16MiB\"\n"
        ),
    )
    .unwrap();
    let o = run(&c_dir, &["deploy", file.to_str().unwrap(), "--wait", "20s"]);
    let text = format!("{}{}", stdout(&o), stderr(&o));
    // Placement skips the provider (its flavors list no docker), or the provider refuses.
    assert!(
        text.contains("fluidos.runtimes") || text.contains("no container engine"),
        "{text}\n{}\n{}",
        c.log(),
        p.log()
    );
    drop((p, c));
}

#[test]
fn an_image_sent_by_its_owner_in_chunks_is_loaded_on_the_provider_and_runs() {
    if !engine_or_skip("an_image_sent_by_its_owner") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A tag only the tarball holds: the provider's engine (the same one here) has it only
    // once the owner's transfer is loaded.
    let tag = format!(
        "fluidos-test/sent:{}",
        tmp.path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_lowercase()
            .replace(['.', '_'], "")
    );
    assert!(docker(&["tag", IMAGE, &tag]).status.success());
    let tar = tmp.path().join("image.tar");
    let o = docker(&["save", "-o", tar.to_str().unwrap(), &tag]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(docker(&["rmi", &tag]).status.success());
    assert!(!docker(&["image", "inspect", &tag]).status.success());
    // More than one chunk.
    assert!(std::fs::metadata(&tar).unwrap().len() > 1 << 20);

    let (_p_dir, p_did, c_dir, p, c) = pair(tmp.path());
    let _clean = RemoveOnDrop(p_did.clone());
    let id = deploy(
        &c_dir,
        tmp.path(),
        "sent",
        &format!(
            r#"
name = "sent"
[run]
image = "{tag}"
file = "{}"
args = ["sh", "-c", "echo hello from a sent image"]
[requests]
cpu = "250m"
memory = "16MiB"
"#,
            tar.display()
        ),
        &c,
    );
    let done = poll(300, Duration::from_millis(100), || {
        replica(&c_dir, &id).filter(|r| r["state"] == "exited")
    })
    .unwrap_or_else(|| panic!("{:?}\n{}\n{}", replica(&c_dir, &id), c.log(), p.log()));
    assert_eq!(done["detail"], "exit code 0", "{done}");
    assert!(
        done["output_tail"]
            .as_str()
            .unwrap_or_default()
            .contains("hello from a sent image"),
        "{done}"
    );
    assert!(
        p.log().contains("loaded an image sent by its owner"),
        "{}",
        p.log()
    );
    assert!(docker(&["image", "inspect", &tag]).status.success());
    drop((p, c));
    let _ = docker(&["rmi", &tag]);
}
