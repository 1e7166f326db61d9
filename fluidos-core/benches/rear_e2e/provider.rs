//! The provider of the throughput runs: in this process or in a child process.

use super::*;

/// What the oversold check needs from the provider.
#[derive(Debug)]
pub(super) struct Book {
    pub(super) reservations: usize,
    pub(super) committed: Resources,
    pub(super) capacity: Resources,
    pub(super) sold: BTreeSet<ContractId>,
    pub(super) sold_pods: u64,
}

pub(super) async fn book_of(p: &Node) -> Book {
    let st = p.status().await.unwrap();
    let sold: Vec<_> = p
        .contracts()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.role == ContractRole::Provider && i.state == ContractState::Active)
        .collect();
    Book {
        reservations: st.reservations,
        committed: st.committed,
        capacity: st.capacity,
        sold_pods: sold.iter().map(|i| i.partition.pods).sum(),
        sold: sold.iter().map(|i| i.id).collect(),
    }
}

/// The provider of the throughput run: in this process, or (`REAR_BENCH_SPLIT=1`)
/// in a child process of its own, so that each side's CPU can be read apart.
pub(super) enum Provider {
    Here(Node),
    Child(ChildProvider),
}

impl Provider {
    /// Starts the provider of a throughput run in `dir`: in its own process with
    /// `REAR_BENCH_SPLIT=1`, else in this one.
    pub(super) async fn start(dir: &Path) -> Self {
        if std::env::var("REAR_BENCH_SPLIT").is_ok_and(|v| v == "1") {
            Provider::Child(ChildProvider::spawn(dir))
        } else {
            Provider::Here(provider(dir, throughput_tuning()).await)
        }
    }

    pub(super) async fn listen_addrs(&self) -> Vec<libp2p::Multiaddr> {
        match self {
            Provider::Here(p) => p.listen_addrs().await,
            Provider::Child(c) => c.addrs.clone(),
        }
    }

    pub(super) fn node_id(&self) -> NodeId {
        match self {
            Provider::Here(p) => p.node_id(),
            Provider::Child(c) => c.node,
        }
    }

    pub(super) fn cpu_seconds(&self) -> f64 {
        match self {
            Provider::Here(_) => 0.0,
            Provider::Child(c) => proc_cpu_seconds(&format!("/proc/{}/stat", c.child.id())),
        }
    }

    pub(super) async fn book(&mut self) -> Book {
        match self {
            Provider::Here(p) => book_of(p).await,
            Provider::Child(c) => c.book(),
        }
    }

    pub(super) async fn shutdown(self) {
        match self {
            Provider::Here(p) => p.shutdown().await,
            Provider::Child(mut c) => {
                drop(c.stdin.take());
                let _ = c.child.wait();
            }
        }
    }
}

/// A provider in a child process (this binary with `--serve-provider <dir>`),
/// driven over its standard input and output.
pub(super) struct ChildProvider {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    addrs: Vec<libp2p::Multiaddr>,
    node: NodeId,
}

impl ChildProvider {
    fn spawn(dir: &Path) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--serve-provider")
            .arg(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("PROVIDER"), "child said {line:?}");
        let node: NodeId = words.next().unwrap().parse().unwrap();
        let addrs = words.map(|a| a.parse().unwrap()).collect();
        Self {
            child,
            stdin,
            stdout,
            addrs,
            node,
        }
    }

    fn book(&mut self) -> Book {
        use std::io::{BufRead, Write};
        writeln!(self.stdin.as_mut().unwrap(), "book").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        // BOOK <reservations> <committed pods> <capacity pods> <sold pods> <contract id>…
        let mut w = line.split_whitespace();
        assert_eq!(w.next(), Some("BOOK"), "child said {line:?}");
        let mut num = || w.next().unwrap().parse::<u64>().unwrap();
        let (reservations, committed, capacity, sold_pods) = (num(), num(), num(), num());
        let pods = |n: u64| Resources {
            pods: n,
            ..Resources::ZERO
        };
        Book {
            reservations: reservations as usize,
            committed: pods(committed),
            capacity: pods(capacity),
            sold: w.map(|id| id.parse().unwrap()).collect(),
            sold_pods,
        }
    }
}

/// `--serve-provider <dir>`: runs the throughput provider and answers `book`
/// lines on standard input until it closes.
pub(super) fn serve_provider(dir: &Path) {
    use std::io::BufRead;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let p = provider(dir, throughput_tuning()).await;
        let addrs: Vec<String> = p
            .listen_addrs()
            .await
            .iter()
            .map(|a| a.to_string())
            .collect();
        println!("PROVIDER {} {}", p.did_key(), addrs.join(" "));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            if line.trim() == "book" {
                let b = book_of(&p).await;
                let ids: Vec<String> = b.sold.iter().map(|id| id.to_string()).collect();
                println!(
                    "BOOK {} {} {} {} {}",
                    b.reservations,
                    b.committed.pods,
                    b.capacity.pods,
                    b.sold_pods,
                    ids.join(" ")
                );
            }
        }
        p.shutdown().await;
    });
}
