//! Workloads between real `fluidos-node` processes (loopback, mDNS off, own data
//! dirs and control ports): `deploy` on a consumer buys from a provider, the
//! replica runs there, and `workload`, `logs`, `nodes`, `view export` and
//! `undeploy` show and end it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Daemon, init_with, peer_dids, poll, run, stderr, stdout};

#[test]
fn deploy_on_a_consumer_runs_the_workload_on_the_provider_and_brings_its_output_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (p_dir, c_dir) = (tmp.path().join("p"), tmp.path().join("c"));
    let p_did = init_with(&p_dir, &[])["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    init_with(&c_dir, &["--provider", "false"]);
    let p = Daemon::start(&p_dir);
    let c = Daemon::start(&c_dir);
    let p_status = p.status();
    let p_addr = p_status["listen_addrs"][0].as_str().unwrap().to_string();
    // status says which isolation applies to hosted replicas.
    let runtime = p_status["runtime"].as_str().unwrap_or_default().to_string();
    assert!(runtime.contains("process runtime"), "{p_status}");
    let text = stdout(&run(&p_dir, &["status"]));
    // With a Docker engine the line names it first (image workloads), then the process
    // runtime (command workloads).
    assert!(
        text.lines()
            .any(|l| l.starts_with("workloads:   ") && l.contains("process runtime")),
        "{text}"
    );
    let o = run(&c_dir, &["peer", "add", &p_addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    let found = poll(100, Duration::from_millis(100), || {
        peer_dids(&c_dir).contains(&p_did).then_some(())
    });
    assert!(found.is_some(), "the consumer never listed the provider");

    let spec = tmp.path().join("hello.toml");
    std::fs::write(
        &spec,
        r#"
name = "hello"
[run]
command = "/bin/sh"
args = ["-c", "echo hello over the mesh; exit 4"]
[requests]
cpu = "250m"
memory = "128MiB"
"#,
    )
    .unwrap();

    // A dry run explains and changes nothing.
    let o = run(&c_dir, &["deploy", "--dry-run", spec.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("acquire"), "{}", stdout(&o));
    let o = run(&c_dir, &["workloads", "--json"]);
    assert_eq!(stdout(&o).trim(), "[]");

    let o = run(&c_dir, &["deploy", spec.to_str().unwrap(), "--wait", "20s"]);
    let text = stdout(&o);
    println!("{text}");
    assert!(o.status.success(), "{text}\n{}\n{}", stderr(&o), c.log());
    assert!(text.contains("[  acquiring]"), "{text}");
    assert!(text.contains("[     bought]"), "{text}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("workload "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();

    // The exit code and output come back through the view.
    let done = poll(100, Duration::from_millis(100), || {
        let o = run(&c_dir, &["workload", &id, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        (v["replicas"][0]["state"] == "exited").then_some(v)
    })
    .unwrap_or_else(|| panic!("never exited\n{}\n{}", c.log(), p.log()));
    assert_eq!(done["replicas"][0]["detail"], "exit code 4", "{done}");
    assert_eq!(done["replicas"][0]["node"], p_did.as_str(), "{done}");
    assert!(
        done["replicas"][0]["output_tail"]
            .as_str()
            .unwrap()
            .contains("hello over the mesh"),
        "{done}"
    );
    let o = run(&c_dir, &["workload", &id]);
    assert!(stdout(&o).contains("placement:"), "{}", stdout(&o));

    // logs fetches the output from the provider.
    let o = run(&c_dir, &["logs", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("hello over the mesh"), "{}", stdout(&o));
    let o = run(&c_dir, &["logs", "nope-1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no workload"), "{}", stderr(&o));

    // nodes shows the virtual node; the provider lists the hosted workload.
    let o = run(&c_dir, &["nodes", "--json"]);
    let nodes: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let v = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == p_did.as_str())
        .unwrap_or_else(|| panic!("{nodes}"));
    assert_eq!(v["kind"], "virtual");
    assert_eq!(v["contracts"], 1);
    let o = run(&p_dir, &["workloads", "--json"]);
    let hosted: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(hosted[0]["id"], id.as_str(), "{hosted}");
    assert_eq!(hosted[0]["own"], false);

    // view export writes a standard Automerge document.
    let file = tmp.path().join("view.automerge");
    let o = run(&c_dir, &["view", "export", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..4], &[0x85, 0x6f, 0x4a, 0x83], "Automerge magic");

    // undeploy removes it; a bad spec is refused with the reason.
    let o = run(&c_dir, &["undeploy", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&c_dir, &["workloads", "--json"]);
    assert_eq!(stdout(&o).trim(), "[]");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"Bad Name\"\n[run]\ncommand = \"/bin/true\"\n",
    )
    .unwrap();
    let o = run(&c_dir, &["deploy", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("name"), "{}", stderr(&o));
    drop((p, c));
}

/// Live processes whose command line contains `marker`.
fn live(marker: &str) -> usize {
    let o = std::process::Command::new("pgrep")
        .args(["-fc", marker])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn a_replica_lost_with_a_killed_provider_daemon_runs_again_on_the_other_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = ["p1", "p2", "c"]
        .iter()
        .map(|n| tmp.path().join(n))
        .collect();
    // Fixed ports: the crashed provider must come back where the consumer knows it.
    let port = common::free_port();
    let second = (0..10)
        .map(|_| common::free_port())
        .find(|p| *p != port)
        .unwrap();
    let listen = [
        format!("/ip4/127.0.0.1/tcp/{port}"),
        format!("/ip4/127.0.0.1/tcp/{second}"),
    ];
    let mut dids = Vec::new();
    for (d, l) in dirs.iter().zip(&listen) {
        let v = init_with(d, &["--listen", l]);
        dids.push(v["node_id"].as_str().unwrap().to_string());
    }
    init_with(&dirs[2], &["--provider", "false"]);
    // The consumer counts a provider lost after 6 s of silence (the shortest allowed).
    let cfg = dirs[2].join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("provider_lost_after = \"30s\""), "{text}");
    std::fs::write(
        &cfg,
        text.replace(
            "provider_lost_after = \"30s\"",
            "provider_lost_after = \"6s\"",
        ),
    )
    .unwrap();
    let mut p = [Daemon::start(&dirs[0]), Daemon::start(&dirs[1])];
    let c = Daemon::start(&dirs[2]);
    for d in &p {
        let addr = d.status()["listen_addrs"][0].as_str().unwrap().to_string();
        let o = run(&dirs[2], &["peer", "add", &addr]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let found = poll(100, Duration::from_millis(100), || {
        let peers = peer_dids(&dirs[2]);
        dids.iter().all(|d| peers.contains(d)).then_some(())
    });
    assert!(found.is_some(), "the consumer never listed both providers");

    // A long-running replica, restarted on failure; its command line carries a
    // marker unique to this test, and each start is counted in a file.
    let marker = format!("sleep 600.{port}");
    let count = tmp.path().join("starts");
    let spec = tmp.path().join("svc.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "svc"
[run]
command = "/bin/sh"
args = ["-c", "echo start >> \"$COUNT\"; exec {marker}"]
[env]
COUNT = {count:?}
[requests]
cpu = "250m"
memory = "128MiB"
[restart]
policy = "on-failure"
max_restarts = 3
"#,
            count = count.display().to_string()
        ),
    )
    .unwrap();
    let o = run(
        &dirs[2],
        &["deploy", spec.to_str().unwrap(), "--wait", "20s"],
    );
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let id = stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("workload "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let running_on = |on: Option<&str>| {
        poll(300, Duration::from_millis(100), || {
            let o = run(&dirs[2], &["workload", &id, "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            let r = &v["replicas"][0];
            let node = r["node"].as_str()?.to_string();
            (r["state"] == "running" && on.is_none_or(|n| n == node)).then_some(node)
        })
    };
    let first = running_on(None).unwrap_or_else(|| panic!("never ran\n{}", c.log()));
    let lost = dids.iter().position(|d| *d == first).unwrap();
    let other = dids[1 - lost].clone();
    assert_eq!(live(&marker), 1);

    // The provider's daemon crashes (its replica's supervisor lives on, as after
    // any daemon crash); the consumer hears nothing for 6 s and places the
    // replica on the other provider, buying there.
    p[lost].kill9();
    running_on(Some(&other)).unwrap_or_else(|| panic!("not rescheduled\n{}", c.log()));
    let o = run(&dirs[2], &["workload", &id]);
    assert!(stdout(&o).contains("provider lost"), "{}", stdout(&o));
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);

    // The crashed provider starts again: it recovers its replica, learns from the
    // view that its owner took it back, and stops it. Exactly one copy runs.
    if lost == 0 {
        p[0] = Daemon::start(&dirs[0]);
    } else {
        p[1] = Daemon::start(&dirs[1]);
    }
    let one = poll(200, Duration::from_millis(100), || {
        (live(&marker) == 1).then_some(())
    });
    assert!(
        one.is_some(),
        "{} copies run\n{}\n{}",
        live(&marker),
        p[lost].log(),
        c.log()
    );
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);
    let o = run(&dirs[2], &["undeploy", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let none = poll(100, Duration::from_millis(100), || {
        (live(&marker) == 0).then_some(())
    });
    assert!(none.is_some(), "undeploy left a copy running");
    drop((p, c));
}
