//! A tiny discovery node for tests and benchmarks that run nodes in separate network
//! namespaces (`ip netns exec … fluidos-discovery-probe --mdns`).
//!
//! Output, one line each: `SELF <did:key>`, then `CANDIDATE <did:key> <ms>` for every
//! new candidate (milliseconds since the node started), then `DONE` or `TIMEOUT`.
//!
//! Options: `--mdns`, `--listen <multiaddr>` (default `/ip4/0.0.0.0/tcp/0`),
//! `--expect <n>` candidates (default 1), `--linger-ms <ms>` to keep answering after
//! that (default 2000), `--timeout-ms <ms>` (default 20000).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fluidos_contracts::SecretKey;
use fluidos_discovery::libp2p::Multiaddr;
use fluidos_discovery::{Discovery, DiscoveryConfig};

struct Args {
    mdns: bool,
    listen: Multiaddr,
    expect: usize,
    linger: Duration,
    timeout: Duration,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        mdns: false,
        listen: "/ip4/0.0.0.0/tcp/0".parse().map_err(|e| format!("{e}"))?,
        expect: 1,
        linger: Duration::from_millis(2000),
        timeout: Duration::from_millis(20_000),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let ms = |v: String| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| e.to_string())
        };
        match flag.as_str() {
            "--mdns" => args.mdns = true,
            "--listen" => args.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--expect" => args.expect = value()?.parse().map_err(|e| format!("--expect: {e}"))?,
            "--linger-ms" => args.linger = ms(value()?)?,
            "--timeout-ms" => args.timeout = ms(value()?)?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fluidos-discovery-probe: {e}");
            return ExitCode::from(64);
        }
    };
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let key = SecretKey::generate();
    let started = Instant::now();
    let cfg = DiscoveryConfig {
        mdns_query_interval: Duration::from_secs(5),
        ..DiscoveryConfig::default()
    }
    .with_listen([args.listen.clone()])
    .with_mdns(args.mdns);
    let (handle, _inbound) = match Discovery::spawn(&key, cfg).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("fluidos-discovery-probe: {e}");
            return ExitCode::from(1);
        }
    };
    println!("SELF {}", key.node_id());
    let mut updates = handle.candidate_updates();
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut outcome = "TIMEOUT";
    loop {
        if let Ok(list) = handle.candidates().await {
            for c in list {
                if seen.insert(c.node) {
                    println!("CANDIDATE {} {}", c.node, started.elapsed().as_millis());
                }
            }
        }
        if seen.len() >= args.expect {
            outcome = "DONE";
            break;
        }
        match tokio::time::timeout_at(deadline, updates.changed()).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    // Stay up a little so the other side can fetch our advert too.
    tokio::time::sleep(args.linger).await;
    println!("{outcome}");
    let _ = handle.shutdown().await;
    if outcome == "DONE" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
