//! The Docker runtime against a real engine: exit codes and logs, labels, limits as the
//! engine sees and enforces them, published ports, stop and removal, adoption after a
//! restart, image loading, missing images, usage counters.
//!
//! Needs a Docker engine at `/var/run/docker.sock` (or `DOCKER_HOST`). Without one each
//! test prints why and passes; under `CI` it fails. The test image
//! (`fluidos-test/busybox:1`) is built here without a registry: a rootfs of Debian's
//! `busybox-static` imported into the engine (`docker import`), once.
//!
//! `cargo test -p fluidos-core --test runtime_docker`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use fluidos_core::runtime::docker::{
    ConnectError, LABEL_CONTRACT, LABEL_NODE, LABEL_OWNER, LABEL_REPLICA, LABEL_WORKLOAD,
    LoadImageError,
};
use fluidos_core::runtime::{
    DockerRuntime, Enforcement, Limits, ReplicaId, ReplicaSpec, ReplicaStatus, Runtime, StartError,
};
use futures::TryStreamExt;

const IMAGE: &str = "fluidos-test/busybox:1";
/// The busybox applets linked into the test image.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "head", "tr", "seq", "httpd", "nc", "mkdir", "ls", "true",
    "false", "yes", "dd", "wc",
];

/// Why the engine cannot be used, if it cannot.
async fn engine() -> Result<Docker, String> {
    let docker = Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
    docker
        .ping()
        .await
        .map_err(|e| format!("no Docker engine answers: {e}"))?;
    docker.negotiate_version().await.map_err(|e| e.to_string())
}

/// The engine, or `None` after printing why the test is skipped; under `CI`, a failure.
async fn engine_or_skip(test: &str) -> Option<Docker> {
    match engine().await {
        Ok(d) => {
            ensure_test_image(&d).await;
            Some(d)
        }
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test} cannot run in CI: {why}")
        }
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}

/// Builds the test image unless it exists: a tarball of a rootfs with `/bin/busybox` and
/// its applets as symlinks, imported as `fluidos-test/busybox:1`. Idempotent.
async fn ensure_test_image(docker: &Docker) {
    static BUILD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = BUILD.lock().await;
    if docker.inspect_image(IMAGE).await.is_ok() {
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
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-c", "."])
        .output()
        .unwrap();
    assert!(tar.status.success(), "tar failed: {tar:?}");
    let opts = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo("fluidos-test/busybox")
        .tag("1")
        .changes(vec!["ENV PATH=/bin".into()])
        .build();
    let body = bollard::body_full(tar.stdout.into());
    let _: Vec<_> = docker
        .create_image(Some(opts), Some(body), None)
        .try_collect()
        .await
        .unwrap();
    docker.inspect_image(IMAGE).await.unwrap();
}

/// A runtime whose containers carry `node` as their node label; removes what earlier
/// (crashed) runs of the same test left.
async fn runtime(docker: &Docker, node: &str) -> DockerRuntime {
    cleanup(docker, node).await;
    DockerRuntime::builder(node)
        .stop_grace(Duration::from_secs(1))
        .output_limit(64 * 1024)
        .connect()
        .await
        .unwrap()
}

async fn cleanup(docker: &Docker, node: &str) {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL_NODE}={node}")])]);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    for c in docker.list_containers(Some(opts)).await.unwrap() {
        let rm = RemoveContainerOptionsBuilder::new().force(true).build();
        let _ = docker.remove_container(&c.id.unwrap(), Some(rm)).await;
    }
}

fn id(workload: &str, index: u32, contract: &str) -> ReplicaId {
    ReplicaId::new(workload, index, contract).unwrap()
}

fn sh(id: ReplicaId, script: &str) -> ReplicaSpec {
    ReplicaSpec::image_builder(id, IMAGE)
        .args(["sh", "-c", script])
        .build()
        .unwrap()
}

/// Waits (bounded: 60 s) until the replica has ended.
async fn ended(rt: &dyn Runtime, id: &ReplicaId) -> ReplicaStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = rt.status(id).await.unwrap().status;
        if s.is_terminal() {
            return s;
        }
        assert!(Instant::now() < deadline, "{id} still {s} after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn gone(docker: &Docker, name: &str) -> bool {
    docker.inspect_container(name, None).await.is_err()
}

#[tokio::test]
async fn no_engine_is_a_typed_error() {
    let r = DockerRuntime::builder("n")
        .socket("/nonexistent/docker.sock")
        .connect()
        .await;
    assert!(matches!(r, Err(ConnectError::Unavailable { .. })), "{r:?}");
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("/nonexistent/docker.sock"), "{msg}");
    let r = DockerRuntime::builder("has space").connect().await;
    assert!(matches!(r, Err(ConnectError::BadNodeLabel(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_logs_labels_and_removal() {
    let Some(docker) = engine_or_skip("exit_code_logs_labels_and_removal").await else {
        return;
    };
    let node = "fluidos-test-exit";
    let rt = runtime(&docker, node).await;
    let caps = rt.capabilities();
    assert_eq!(caps.kind, "docker");
    assert_eq!(caps.memory, Enforcement::Engine);
    assert!(
        caps.summary()
            .starts_with("docker runtime: memory by the container engine")
    );
    assert!(
        rt.engine().api_version.as_str() >= "1.41",
        "{:?}",
        rt.engine()
    );
    let mut events = rt.take_events().unwrap();

    let rid = id("echo", 1, "c-exit");
    let spec = ReplicaSpec::image_builder(rid.clone(), IMAGE)
        .args(["sh", "-c", "echo hello $GREETING; echo oops >&2; exit 3"])
        .env("GREETING", "world")
        .owner("did:key:z6MkOwner")
        .build()
        .unwrap();
    let started = rt.start(spec.clone()).await.unwrap();
    let status = ended(&rt, &rid).await;
    let ReplicaStatus::Exited { exit, .. } = &status else {
        panic!("not exited: {status}");
    };
    assert_eq!(exit.code, Some(3), "{status}");
    assert!(!exit.oom_killed && !exit.stop_requested, "{status}");
    if !started.status.is_terminal() {
        // The end was not in start's answer: it came as an event.
        let ev = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev.id, rid);
        assert_eq!(ev.status, status);
    }
    let logs = rt.logs(&rid, 4096).await.unwrap();
    let text = String::from_utf8_lossy(&logs.data);
    assert!(text.contains("hello world"), "{text:?}");
    assert!(text.contains("oops"), "{text:?}");
    let short = rt.logs(&rid, 4).await.unwrap();
    assert_eq!(short.data.len(), 4);
    assert!(short.truncated);

    let name = rt.container_name(&rid);
    let c = docker.inspect_container(&name, None).await.unwrap();
    let labels = c.config.unwrap().labels.unwrap();
    assert_eq!(labels[LABEL_NODE], node);
    assert_eq!(labels[LABEL_CONTRACT], "c-exit");
    assert_eq!(labels[LABEL_WORKLOAD], "echo");
    assert_eq!(labels[LABEL_REPLICA], "1");
    assert_eq!(labels[LABEL_OWNER], "did:key:z6MkOwner");
    let policy = c.host_config.unwrap().restart_policy.unwrap();
    assert_eq!(
        policy.name,
        Some(bollard::models::RestartPolicyNameEnum::NO)
    );

    // Never twice: the record (the container) exists until removed.
    assert!(matches!(
        rt.start(spec.clone()).await,
        Err(StartError::AlreadyExists(_))
    ));
    rt.remove(&rid).await.unwrap();
    assert!(gone(&docker, &name).await, "container {name} still there");
    assert!(rt.status(&rid).await.is_err());
    // Removed, the id may run again.
    rt.start(spec).await.unwrap();
    ended(&rt, &rid).await;
    rt.remove(&rid).await.unwrap();
    cleanup(&docker, node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_the_engines_and_enforced() {
    let Some(docker) = engine_or_skip("limits_are_the_engines_and_enforced").await else {
        return;
    };
    let node = "fluidos-test-limits";
    let rt = runtime(&docker, node).await;

    let rid = id("limited", 0, "c-limits");
    let limits = Limits {
        cpu_millicores: Some(500),
        memory_bytes: Some(32 << 20),
        pids: Some(16),
    };
    let spec = ReplicaSpec::image_builder(rid.clone(), IMAGE)
        .args(["sleep", "60"])
        .limits(limits)
        .build()
        .unwrap();
    rt.start(spec).await.unwrap();
    let hc = docker
        .inspect_container(&rt.container_name(&rid), None)
        .await
        .unwrap()
        .host_config
        .unwrap();
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.memory, Some(32 << 20));
    assert_eq!(hc.memory_swap, Some(32 << 20));
    assert_eq!(hc.pids_limit, Some(16));
    let stopped = rt.stop(&rid).await.unwrap();
    let ReplicaStatus::Exited { exit, .. } = stopped.status else {
        panic!("not exited: {}", stopped.status);
    };
    assert!(exit.stop_requested);
    rt.remove(&rid).await.unwrap();

    // Memory: a shell that holds 128 MiB in a variable under a 32 MiB limit is OOM-killed.
    let hog = id("hog", 0, "c-limits");
    let spec = ReplicaSpec::image_builder(hog.clone(), IMAGE)
        .args([
            "sh",
            "-c",
            "x=$(head -c 134217728 /dev/zero | tr '\\0' a); echo survived ${#x}",
        ])
        .limits(Limits {
            memory_bytes: Some(32 << 20),
            ..Limits::default()
        })
        .build()
        .unwrap();
    rt.start(spec).await.unwrap();
    let status = ended(&rt, &hog).await;
    let ReplicaStatus::Exited { exit, .. } = &status else {
        panic!("not exited: {status}");
    };
    assert!(exit.oom_killed, "{status}");
    let logs = rt.logs(&hog, 4096).await.unwrap();
    assert!(
        !String::from_utf8_lossy(&logs.data).contains("survived"),
        "{logs:?}"
    );
    rt.remove(&hog).await.unwrap();

    // Pids: 40 background sleeps under a limit of 8 processes cannot all fork.
    let forks = id("forks", 0, "c-limits");
    let script = "i=0; while [ $i -lt 40 ]; do sleep 5 & i=$((i+1)); done; echo forked all";
    let spec = ReplicaSpec::image_builder(forks.clone(), IMAGE)
        .args(["sh", "-c", script])
        .limits(Limits {
            pids: Some(8),
            ..Limits::default()
        })
        .build()
        .unwrap();
    rt.start(spec).await.unwrap();
    let status = ended(&rt, &forks).await;
    let logs = String::from_utf8_lossy(&rt.logs(&forks, 8192).await.unwrap().data).into_owned();
    assert!(
        logs.contains("fork") && !logs.contains("forked all"),
        "{status}: {logs:?}"
    );
    rt.remove(&forks).await.unwrap();
    cleanup(&docker, node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_port_is_reachable_on_loopback() {
    let Some(docker) = engine_or_skip("published_port_is_reachable_on_loopback").await else {
        return;
    };
    let node = "fluidos-test-ports";
    let rt = runtime(&docker, node).await;
    let rid = id("web", 0, "c-ports");
    let script = "mkdir -p /tmp/www && echo fluidos-ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";
    let spec = ReplicaSpec::image_builder(rid.clone(), IMAGE)
        .args(["sh", "-c", script])
        .ports([8080])
        .build()
        .unwrap();
    rt.start(spec).await.unwrap();
    let ports = rt.ports(&rid).await.unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0].container_port, 8080);
    assert!(ports[0].host.ip().is_loopback(), "{ports:?}");
    let addr = ports[0].host;
    // httpd may need a moment to listen: retry, bounded.
    let body = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = TcpStream::connect(addr).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            });
            match got {
                Ok(out) if out.contains("fluidos-ok") => return out,
                _ if Instant::now() > deadline => panic!("no answer from {addr}: {got:?}"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })
    .await
    .unwrap();
    assert!(body.starts_with("HTTP/1."), "{body}");
    let stopped = rt.stop(&rid).await.unwrap();
    assert!(stopped.status.is_terminal(), "{}", stopped.status);
    let name = rt.container_name(&rid);
    rt.remove(&rid).await.unwrap();
    assert!(gone(&docker, &name).await);
    cleanup(&docker, node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_adopts_covered_and_removes_the_rest() {
    let Some(docker) = engine_or_skip("restart_adopts_covered_and_removes_the_rest").await else {
        return;
    };
    let node = "fluidos-test-adopt";
    let keep0 = id("svc", 0, "c-keep");
    let keep1 = id("svc", 1, "c-keep");
    let done = id("batch", 0, "c-keep");
    let drop0 = id("svc", 0, "c-ended");
    let mut started_at = HashMap::new();
    {
        let rt = runtime(&docker, node).await;
        for r in [&keep0, &keep1, &drop0] {
            let info = rt.start(sh(r.clone(), "exec sleep 300")).await.unwrap();
            assert!(
                matches!(info.status, ReplicaStatus::Running { .. }),
                "{}",
                info.status
            );
            let c = docker
                .inspect_container(&rt.container_name(r), None)
                .await
                .unwrap();
            started_at.insert(r.clone(), c.state.unwrap().started_at.unwrap());
        }
        rt.start(sh(done.clone(), "exit 7")).await.unwrap();
        ended(&rt, &done).await;
        // The daemon "dies": the runtime is dropped, the containers run on.
    }
    // Another node's runtime on the same engine sees none of them.
    let other = runtime(&docker, "fluidos-test-adopt-other").await;
    assert!(other.recover().await.unwrap().is_empty());

    let rt = DockerRuntime::builder(node)
        .stop_grace(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let covered: BTreeSet<ReplicaId> = [keep0.clone(), keep1.clone(), done.clone()].into();
    let r = rt.reconcile(&covered).await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let adopted: Vec<&ReplicaId> = r.adopted.iter().map(|i| &i.id).collect();
    assert_eq!(adopted, [&done, &keep0, &keep1]);
    let removed: Vec<&ReplicaId> = r.removed.iter().map(|i| &i.id).collect();
    assert_eq!(removed, [&drop0]);
    assert!(gone(&docker, &rt.container_name(&drop0)).await);
    for info in &r.adopted {
        if info.id == done {
            let ReplicaStatus::Exited { exit, .. } = &info.status else {
                panic!("{}", info.status);
            };
            assert_eq!(exit.code, Some(7));
            continue;
        }
        assert!(
            matches!(info.status, ReplicaStatus::Running { .. }),
            "{}",
            info.status
        );
        // Adopted, not restarted: the container's start time is the first one.
        let c = docker
            .inspect_container(&rt.container_name(&info.id), None)
            .await
            .unwrap();
        assert_eq!(c.state.unwrap().started_at.unwrap(), started_at[&info.id]);
    }
    // Exactly one container per replica.
    let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL_NODE}={node}")])]);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    assert_eq!(docker.list_containers(Some(opts)).await.unwrap().len(), 3);
    // Adopted replicas are watched like started ones: stop, events, remove.
    let mut events = rt.take_events().unwrap();
    docker
        .kill_container(
            &rt.container_name(&keep1),
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.id, keep1);
    assert!(ev.status.is_terminal(), "{}", ev.status);
    rt.stop(&keep0).await.unwrap();
    for r in [&keep0, &keep1, &done] {
        rt.remove(r).await.unwrap();
    }
    assert!(rt.list().await.is_empty());
    cleanup(&docker, node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_must_be_present_or_loaded() {
    let Some(docker) = engine_or_skip("images_must_be_present_or_loaded").await else {
        return;
    };
    let node = "fluidos-test-images";
    let rt = runtime(&docker, node).await;
    let missing = ReplicaSpec::image_builder(id("absent", 0, "c-img"), "fluidos-test/absent:none")
        .build()
        .unwrap();
    let r = rt.start(missing).await;
    assert!(
        matches!(&r, Err(StartError::ImageNotFound { image, .. }) if image == "fluidos-test/absent:none"),
        "{r:?}"
    );
    assert!(rt.list().await.is_empty());
    let program = ReplicaSpec::builder(id("prog", 0, "c-img"), "/bin/true")
        .build()
        .unwrap();
    assert!(matches!(
        rt.start(program).await,
        Err(StartError::Unsupported { .. })
    ));

    // A `docker save` tarball of a tag the engine does not have, loaded through the API.
    let tag = "fluidos-test/loaded:1";
    let opts = TagImageOptionsBuilder::new()
        .repo("fluidos-test/loaded")
        .tag("1")
        .build();
    docker.tag_image(IMAGE, Some(opts)).await.unwrap();
    let tarball: Vec<u8> = docker
        .export_image(tag)
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await
        .unwrap();
    let untag = || async {
        let _ = docker
            .remove_image(
                tag,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    };
    untag().await;
    assert!(docker.inspect_image(tag).await.is_err());
    let loaded = rt.load_image(tarball.clone()).await.unwrap();
    assert_eq!(loaded.images, [tag]);
    let rid = id("loaded", 0, "c-img");
    rt.start(sh(rid.clone(), "echo from-loaded")).await.unwrap();
    ended(&rt, &rid).await;
    let logs = rt.logs(&rid, 1024).await.unwrap();
    assert!(String::from_utf8_lossy(&logs.data).contains("from-loaded"));
    rt.remove(&rid).await.unwrap();

    // The same from a file, streamed.
    untag().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("image.tar");
    std::fs::write(&file, &tarball).unwrap();
    let loaded = rt.load_image_file(&file).await.unwrap();
    assert_eq!(loaded.images, [tag]);
    untag().await;
    let _ = RemoveImageOptionsBuilder::new();

    let bad = rt.load_image(b"not a tarball".to_vec()).await;
    assert!(
        matches!(bad, Err(LoadImageError::Engine(_) | LoadImageError::Empty)),
        "{bad:?}"
    );
    let r = rt.load_image_file(&dir.path().join("absent.tar")).await;
    assert!(matches!(r, Err(LoadImageError::Io { .. })), "{r:?}");
    cleanup(&docker, node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counters_grow_and_logs_follow() {
    let Some(docker) = engine_or_skip("usage_counters_grow_and_logs_follow").await else {
        return;
    };
    let node = "fluidos-test-usage";
    let rt = runtime(&docker, node).await;
    let busy = id("busy", 0, "c-usage");
    let spec = ReplicaSpec::image_builder(busy.clone(), IMAGE)
        .args(["sh", "-c", "while :; do :; done"])
        .limits(Limits {
            cpu_millicores: Some(200),
            ..Limits::default()
        })
        .build()
        .unwrap();
    rt.start(spec).await.unwrap();
    let first = rt.usage().await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].id, busy);
    // The counter grows (bounded wait: it grows by about 0.2 s of cpu per second).
    let deadline = Instant::now() + Duration::from_secs(30);
    let grown = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rt.usage().await;
        if let Some(u) = now.first().filter(|u| u.cpu_time_ns > first[0].cpu_time_ns) {
            break u.clone();
        }
        assert!(
            Instant::now() < deadline,
            "cpu time did not grow: {first:?} → {now:?}"
        );
    };
    assert!(grown.memory_bytes > 0, "{grown:?}");
    assert!(grown.sampled_at_ms >= first[0].sampled_at_ms);

    let talker = id("talker", 0, "c-usage");
    let script = "i=0; while [ $i -lt 300 ]; do echo line$i; i=$((i+1)); sleep 0.1; done";
    rt.start(sh(talker.clone(), script)).await.unwrap();
    let mut follow = rt.follow_logs(&talker).unwrap();
    let chunk = tokio::time::timeout(Duration::from_secs(30), follow.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&chunk).contains("line"),
        "{chunk:?}"
    );
    drop(follow);
    for r in [&busy, &talker] {
        rt.stop(r).await.unwrap();
        rt.remove(r).await.unwrap();
    }
    // Ended replicas are not measured.
    assert!(rt.usage().await.is_empty());
    cleanup(&docker, node).await;
}
