//! Helpers shared by the tests that run real `Node`s.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluidos_core::runtime::{ProcessRuntime, Runtime, SupervisorCommand};

pub(crate) const GIB: u64 = 1 << 30;

/// Polls `check` every 25 ms until it holds; fails the test after `limit`.
pub(crate) async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The process runtime over `dir/replicas`, with the crate's supervisor binary.
pub(crate) fn runtime(dir: &Path) -> Arc<dyn Runtime> {
    Arc::new(
        ProcessRuntime::builder(dir.join("replicas"))
            .supervisor(SupervisorCommand::new(env!(
                "CARGO_BIN_EXE_fluidos-supervise"
            )))
            .build()
            .unwrap(),
    )
}
