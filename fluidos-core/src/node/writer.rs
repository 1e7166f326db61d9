//! The store's writer thread. `fsync` blocks for milliseconds; on a runtime thread
//! that would stall every task of the node (and of every other node in the same
//! process). The engine hands each batch of records to this thread and awaits the
//! result; requests arriving meanwhile queue up and form the next batch, which is
//! what makes group commit happen by itself under load.

use tokio::sync::{mpsc, oneshot};

use crate::store::{Record, Store, StoreError};

type Job = (Vec<Record>, oneshot::Sender<Result<(), StoreError>>);

/// A handle to the writer thread; dropping it stops the thread after pending batches.
#[derive(Debug)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Moves `store` onto its own thread.
    pub(super) fn spawn(mut store: Store) -> std::io::Result<Self> {
        let (jobs, mut rx) = mpsc::channel::<Job>(4);
        std::thread::Builder::new()
            .name("fluidos-store".into())
            .spawn(move || {
                while let Some((records, reply)) = rx.blocking_recv() {
                    let _ = reply.send(store.commit(&records));
                }
            })?;
        Ok(Self { jobs })
    }

    /// Makes `records` durable (one write, one fdatasync).
    pub(super) async fn commit(&self, records: Vec<Record>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let gone = || StoreError::Io {
            path: "store writer".into(),
            source: std::io::Error::other("the store writer thread has stopped"),
        };
        self.jobs.send((records, tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}
