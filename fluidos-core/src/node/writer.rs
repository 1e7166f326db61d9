//! The store's writer thread. `fsync` blocks for milliseconds; on a runtime thread
//! that would stall every task of the node (and of every other node in the same
//! process). The engine hands each batch of records to this thread and goes on
//! applying the next requests while the batch is synced; the thread writes every
//! batch queued by then as one frame with one `fdatasync`. That is group commit
//! across batches, and it grows by itself with the load.

use tokio::sync::{mpsc, oneshot};

use crate::store::{Record, Store, StoreError};

type Job = (Vec<Record>, oneshot::Sender<Result<(), StoreError>>);

/// Batches queued for the writer at most; the engine waits beyond that.
const QUEUE: usize = 16;
/// Batches merged into one sync at most.
const MAX_MERGE: usize = 16;

/// Resolves when a submitted batch is durable (or failed).
pub(super) type Durable = oneshot::Receiver<Result<(), StoreError>>;

/// A handle to the writer thread; dropping it stops the thread after pending batches.
#[derive(Debug)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Moves `store` onto its own thread.
    pub(super) fn spawn(mut store: Store) -> std::io::Result<Self> {
        let (jobs, mut rx) = mpsc::channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("fluidos-store".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut replies = Vec::with_capacity(1);
                    let mut job = Some(first);
                    while let Some((records, reply)) = job.take() {
                        store.append(&records);
                        replies.push(reply);
                        if replies.len() < MAX_MERGE {
                            job = rx.try_recv().ok();
                        }
                    }
                    // One sync for every batch queued so far: all of them are
                    // durable, or none may be relied on.
                    let result = store.sync();
                    for reply in replies {
                        let _ = reply.send(result.as_ref().map(|_| ()).map_err(replicate));
                    }
                }
            })?;
        Ok(Self { jobs })
    }

    /// Queues `records` to be made durable; the answer says when they are. Waits
    /// only when [`QUEUE`] batches are queued already.
    pub(super) async fn submit(&self, records: Vec<Record>) -> Result<Durable, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send((records, tx)).await.map_err(|_| gone())?;
        Ok(rx)
    }

    /// Makes `records` durable, after every batch submitted before.
    pub(super) async fn commit(&self, records: Vec<Record>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.submit(records).await?.await.map_err(|_| gone())?
    }
}

/// The writer thread has stopped.
pub(super) fn gone() -> StoreError {
    StoreError::Io {
        path: "store writer".into(),
        source: std::io::Error::other("the store writer thread has stopped"),
    }
}

/// The same error for each batch of a failed sync (`io::Error` is not `Clone`).
fn replicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Io { path, source } => StoreError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        StoreError::Encode(s) => StoreError::Encode(s.clone()),
        StoreError::TooLarge { len } => StoreError::TooLarge { len: *len },
        StoreError::Poisoned => StoreError::Poisoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buyer::Outcome;
    use fluidos_contracts::{ContractId, SecretKey, Timestamp};

    fn ended(n: u32, provider: fluidos_contracts::NodeId) -> Record {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_le_bytes());
        Record::BuyerEnded {
            contract: ContractId(id),
            provider,
            outcome: Outcome::Delivered,
            at: Timestamp(u64::from(n)),
            cause: None,
        }
    }

    #[tokio::test]
    async fn batches_submitted_back_to_back_are_all_durable_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let provider = SecretKey::generate().node_id();
        let (store, _) = Store::open(dir.path()).unwrap();
        let writer = Writer::spawn(store).unwrap();
        // Submitted without waiting, so the thread finds several queued and
        // merges them into fewer syncs.
        let mut pending = Vec::new();
        for batch in 0..40u32 {
            let records = (0..3).map(|i| ended(batch * 3 + i, provider)).collect();
            pending.push(writer.submit(records).await.unwrap());
        }
        for durable in pending {
            durable.await.unwrap().unwrap();
        }
        // An empty commit needs nothing from the thread.
        writer.commit(Vec::new()).await.unwrap();
        drop(writer);
        // The thread releases the store (and its lock) once its queue is drained.
        let reopened = (0..100).find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            Store::open(dir.path()).ok()
        });
        let (_, records) = reopened.expect("the writer thread released the store");
        assert_eq!(records.len(), 120);
        let expected: Vec<Record> = (0..120).map(|n| ended(n, provider)).collect();
        for r in &expected {
            assert!(records.contains(r), "{r:?} lost");
        }
    }
}
