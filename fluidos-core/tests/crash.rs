//! Kill -9 during negotiation. A provider and a consumer run as child processes
//! (this test binary re-executed in a child role); the consumer buys in a loop while
//! the parent kills one of them with SIGKILL at pseudo-random moments and restarts
//! it. At the end both data directories are opened again and compared:
//! no countersigned contract is lost on either side, and no reservation outlives
//! its TTL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluidos_contracts::Resources;
use fluidos_core::buyer::AcquisitionRequest;
use fluidos_core::host::OfferConfig;
use fluidos_core::{ContractRole, ContractState, LedgerTuning, Node, Roles};
use libp2p::Multiaddr;

const ROLE_VAR: &str = "FLUIDOS_CRASH_CHILD";
const TTL_MS: u64 = 2_000;
/// How many SIGKILLs the parent sends.
const KILLS: usize = 12;
/// At least this many of them must land while a negotiation is open, so a run
/// where every kill hit an idle process fails.
const MIN_MID_NEGOTIATION: usize = 4;

fn tuning() -> LedgerTuning {
    LedgerTuning {
        reservation_ttl_ms: TTL_MS,
        offer_ttl_ms: TTL_MS,
        ..LedgerTuning::default()
    }
}

fn offer() -> OfferConfig {
    OfferConfig {
        pods: 100_000,
        ..OfferConfig::default()
    }
}

async fn provider(dir: &Path, port: u16) -> Node {
    Node::builder()
        .data_dir(dir)
        .listen(vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()])
        .detect_gpus(false)
        .offer(offer())
        .ledger_tuning(tuning())
        .bind()
        .await
        .unwrap()
}

async fn consumer(dir: &Path, provider_addr: Multiaddr) -> Node {
    Node::builder()
        .data_dir(dir)
        .roles(Roles {
            provider: false,
            consumer: true,
            supernode: false,
        })
        .detect_gpus(false)
        .manual_peer(provider_addr)
        .bind()
        .await
        .unwrap()
}

/// The child side: runs when the parent re-executes this binary with `ROLE_VAR` set.
/// Ignored, so a normal run does not count it as a test; the parent runs it with
/// `--ignored --exact`.
#[test]
#[ignore = "helper process: run by kill_9_during_negotiation_loses_no_countersigned_contract"]
fn crash_child() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        println!("crash_child is a helper process; it does nothing on its own");
        return;
    };
    let dir = PathBuf::from(std::env::var("FLUIDOS_CRASH_DIR").unwrap());
    let port: u16 = std::env::var("FLUIDOS_CRASH_PORT")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        match role.as_str() {
            "provider" => {
                let node = provider(&dir, port).await;
                println!("READY {}", node.peer_id());
                std::future::pending::<()>().await;
            }
            "consumer" => {
                let addr: Multiaddr = std::env::var("FLUIDOS_CRASH_PEER")
                    .unwrap()
                    .parse()
                    .unwrap();
                let node = consumer(&dir, addr).await;
                println!("READY {}", node.peer_id());
                let want = AcquisitionRequest {
                    resources: Resources {
                        pods: 1,
                        ..Resources::ZERO
                    },
                    duration_ms: 3_600_000,
                    ..AcquisitionRequest::default()
                };
                loop {
                    // `BUY` opens a negotiation (reserve ... countersign); `CONTRACT` or
                    // `FAILED` closes it. The parent counts kills that land in between.
                    println!("BUY");
                    match node.buy(want.clone(), None).await {
                        Ok(c) => println!("CONTRACT {}", c.id()),
                        Err(_) => {
                            println!("FAILED");
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                    }
                }
            }
            other => panic!("unknown role {other}"),
        }
    });
}

/// What the consumer told the parent, read from its stdout.
#[derive(Default)]
struct Reported {
    /// Every contract id the consumer reported as bought, across all its lives.
    contracts: BTreeSet<String>,
    /// A negotiation is open: `BUY` seen, no `CONTRACT`/`FAILED` yet.
    in_flight: bool,
}

struct Proc {
    role: &'static str,
    reported: Arc<Mutex<Reported>>,
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    peer: Option<String>,
}

impl Proc {
    fn start(&mut self) -> String {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_VAR, self.role)
        .env("FLUIDOS_CRASH_DIR", &self.dir)
        .env("FLUIDOS_CRASH_PORT", self.port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if let Some(peer) = &self.peer {
            cmd.env("FLUIDOS_CRASH_PEER", peer);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        self.child = Some(child); // killed by Drop even if it never becomes ready
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let peer_id = loop {
            let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
            let line = line.unwrap_or_else(|_| panic!("{} did not start", self.role));
            // libtest prints `test crash_child ... ` without a newline first.
            if let Some((_, id)) = line.split_once("READY ") {
                break id.trim().to_string();
            }
        };
        // A new life starts with no negotiation open.
        self.reported.lock().unwrap().in_flight = false;
        // Keep draining stdout (so the child never blocks on a full pipe), recording
        // what the consumer reports.
        let reported = self.reported.clone();
        std::thread::spawn(move || {
            while let Ok(line) = rx.recv() {
                let mut r = reported.lock().unwrap();
                if line == "BUY" {
                    r.in_flight = true;
                } else if line == "FAILED" {
                    r.in_flight = false;
                } else if let Some(id) = line.strip_prefix("CONTRACT ") {
                    r.contracts.insert(id.trim().to_string());
                    r.in_flight = false;
                }
            }
        });
        peer_id
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The reader thread sees the child's lines a little late: a negotiation that
            // just ended may still count as open, so the count is an upper estimate by at
            // most one line's latency per kill.
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_negotiation_loses_no_countersigned_contract() {
    if std::env::var(ROLE_VAR).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let reported = Arc::new(Mutex::new(Reported::default()));
    let mut p = Proc {
        role: "provider",
        reported: reported.clone(),
        child: None,
        dir: dir.path().join("p"),
        port,
        peer: None,
    };
    let peer_id = p.start();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id}");
    let mut c = Proc {
        role: "consumer",
        reported: reported.clone(),
        child: None,
        dir: dir.path().join("c"),
        port: 0,
        peer: Some(addr.clone()),
    };
    c.start();

    // A fixed-seed generator: the same kill schedule on every run.
    let mut seed: u64 = 0x5eed_f1d0_5eed;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut mid_negotiation = 0;
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(100 + next(400))).await;
        // Read just before the kill: the consumer is between `BUY` and its outcome.
        mid_negotiation += usize::from(reported.lock().unwrap().in_flight);
        if next(2) == 0 {
            p.kill();
            p.start();
        } else {
            c.kill();
            c.start();
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.kill();
    c.kill();

    // Open both data directories again, in this process.
    let prov = provider(&p.dir, port).await;
    let cons = consumer(&c.dir, addr.parse().unwrap()).await;
    // The consumer re-sends countersignatures that were stored but not acknowledged.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = cons
            .contracts()
            .await
            .unwrap()
            .iter()
            .filter(|i| i.state == ContractState::PendingAck)
            .count();
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} countersignatures never settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let sold = prov.contracts().await.unwrap();
    let bought = cons.contracts().await.unwrap();
    let active_sold: Vec<_> = sold
        .iter()
        .filter(|i| i.role == ContractRole::Provider && i.state == ContractState::Active)
        .collect();
    let active_bought: Vec<_> = bought
        .iter()
        .filter(|i| i.role == ContractRole::Buyer && i.state == ContractState::Active)
        .collect();
    let told = std::mem::take(&mut reported.lock().unwrap().contracts);
    println!(
        "after {KILLS} kills ({mid_negotiation} mid-negotiation): the buyer was told of {} contracts; \
         provider holds {} active contracts ({} in all), consumer {} active ({} in all)",
        told.len(),
        active_sold.len(),
        sold.len(),
        active_bought.len(),
        bought.len()
    );
    assert!(
        mid_negotiation >= MIN_MID_NEGOTIATION,
        "only {mid_negotiation} of {KILLS} kills landed mid-negotiation"
    );
    assert!(!told.is_empty(), "the buyer was told of no contract");
    // Every contract the buyer was told about is in both stores, countersigned, active
    // and byte-identical.
    for id in &told {
        let find = |list: &[fluidos_core::ContractInfo], role| {
            list.iter()
                .find(|i| i.id.to_string() == *id && i.role == role)
                .unwrap_or_else(|| panic!("{role:?} lost reported contract {id}"))
                .clone()
        };
        let at_provider = find(&sold, ContractRole::Provider);
        let at_buyer = find(&bought, ContractRole::Buyer);
        assert_eq!(
            at_provider.state,
            ContractState::Active,
            "{id} at the provider"
        );
        assert_eq!(at_buyer.state, ContractState::Active, "{id} at the buyer");
        let mine = prov.contract(at_provider.id).await.unwrap().unwrap();
        let theirs = cons.contract(at_buyer.id).await.unwrap().unwrap();
        assert_eq!(mine.signed(), theirs.signed(), "{id} differs");
        // Both signatures check out on the stored bytes.
        mine.signed().verify().unwrap();
    }
    assert!(
        !active_bought.is_empty(),
        "the consumer bought something between the kills"
    );
    // Every contract active at the provider is held by the buyer, and vice versa,
    // with the same bytes and both signatures.
    for i in &active_sold {
        let mine = prov.contract(i.id).await.unwrap().unwrap();
        let theirs = cons
            .contract(i.id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("buyer lost {}", i.id));
        assert_eq!(mine.signed(), theirs.signed());
    }
    for i in &active_bought {
        let theirs = prov
            .contract(i.id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("provider lost {}", i.id));
        assert_eq!(
            theirs.signed(),
            cons.contract(i.id).await.unwrap().unwrap().signed()
        );
        assert!(
            active_sold.iter().any(|s| s.id == i.id),
            "provider does not hold {} as active",
            i.id
        );
    }

    // No reservation outlives its TTL: after one TTL, only contracts hold capacity.
    tokio::time::sleep(Duration::from_millis(TTL_MS + 500)).await;
    let status = prov.status().await.unwrap();
    assert_eq!(status.reservations, 0);
    let held = active_sold
        .iter()
        .fold(Resources::ZERO, |a, i| a.checked_add(&i.partition).unwrap());
    assert_eq!(status.committed, held);

    prov.shutdown().await;
    cons.shutdown().await;
}
