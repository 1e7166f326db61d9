//! Group commit with pipelining: a batch of inbound requests is applied to the
//! ledger and handed to the writer; its answers leave once it is durable, in the
//! order the batches were applied, while the engine goes on with the next batch.

use std::collections::VecDeque;

use fluidos_contracts::Timestamp;
use fluidos_contracts::rear::{ErrorCode, RearError, Request, Response};
use fluidos_discovery::InboundRequest;
use tracing::error;

use super::super::writer::Durable;
use super::{DEFERRED_MAX_WAIT, Engine};
use crate::store::Record;

impl Engine {
    /// Applies a batch of inbound requests and hands their records to the writer.
    /// The answers go out once the batch is durable ([`Answers::send`]), and
    /// after the answers of every earlier batch: an answer may depend on state an
    /// earlier batch created (a repeated purchase returns an offer made before).
    pub(super) async fn inbound(&mut self, batch: Vec<InboundRequest>) -> Answers {
        let now = Timestamp::now();
        let mut answers = Vec::with_capacity(batch.len());
        let mut records = Vec::new();
        for req in batch {
            let (response, mut recs) = match req.request {
                Request::Terminate { termination } if self.is_bought(&termination) => {
                    self.terminated_by_provider(req.from, termination, now)
                }
                request => self.ledger.handle(req.from, request, now),
            };
            let durable = !recs.is_empty();
            records.append(&mut recs);
            answers.push((req.reply, response, durable));
        }
        records.extend(self.ledger.take_records());
        let records = self.with_deferred(records);
        let synced = if records.is_empty() {
            Synced::Already
        } else {
            match self.store.submit(records).await {
                Ok(durable) => Synced::Waiting(durable),
                Err(e) => {
                    error!(error = %e, "store commit failed");
                    Synced::Failed
                }
            }
        };
        self.drain_ledger_events().await;
        Answers { synced, answers }
    }

    /// Makes `records` durable with one fsync, after any write-behind records
    /// (which go first, so that a later record of the same key wins on replay).
    pub(super) async fn persist(
        &mut self,
        records: Vec<Record>,
    ) -> Result<(), crate::store::StoreError> {
        let records = self.with_deferred(records);
        self.store.commit(records).await.inspect_err(|e| {
            // Write-behind records in a failed batch are dropped: each was a state
            // the node can rebuild after a restart (a `PendingAck` contract is
            // confirmed again with the provider).
            error!(error = %e, "store commit failed");
        })
    }

    /// `records`, after the write-behind records, which go first so that a later
    /// record of the same key wins on replay.
    fn with_deferred(&mut self, records: Vec<Record>) -> Vec<Record> {
        if self.deferred.is_empty() {
            return records;
        }
        self.deferred_until = None;
        let mut all = std::mem::take(&mut self.deferred);
        all.extend(records);
        all
    }

    /// Queues a record that needs no fsync before anything is answered.
    pub(super) fn write_behind(&mut self, record: Record) {
        self.deferred.push(record);
        if self.deferred_until.is_none() {
            self.deferred_until = Some(tokio::time::Instant::now() + DEFERRED_MAX_WAIT);
        }
    }

    pub(super) async fn flush_ledger(&mut self) {
        let records = self.ledger.take_records();
        let _ = self.persist(records).await;
    }
}

/// Whether a batch's records are durable.
#[derive(Debug)]
pub(super) enum Synced {
    /// The batch wrote nothing.
    Already,
    /// Handed to the writer.
    Waiting(Durable),
    /// The writer could not take it.
    Failed,
}

/// The answers of one batch, waiting for its records to be durable.
#[derive(Debug)]
pub(super) struct Answers {
    synced: Synced,
    /// Reply channel, response, and whether the response depends on the batch's records.
    answers: Vec<(tokio::sync::oneshot::Sender<Response>, Response, bool)>,
}

impl Answers {
    /// Sends the answers; those that depend on the batch's records become
    /// `Unavailable` if they are not durable.
    pub(super) fn send(self, synced: bool) {
        for (reply, response, durable) in self.answers {
            let response = if durable && !synced {
                Response::Error(RearError::new(
                    ErrorCode::Unavailable,
                    "the provider could not make the change durable",
                ))
            } else {
                response
            };
            let _ = reply.send(response);
        }
    }
}

/// Waits until the oldest unsynced batch is durable (`true`) or failed.
pub(super) async fn next_synced(unsynced: &mut VecDeque<Answers>) -> bool {
    let Some(oldest) = unsynced.front_mut() else {
        return std::future::pending().await;
    };
    match &mut oldest.synced {
        Synced::Already => true,
        Synced::Failed => false,
        Synced::Waiting(durable) => match durable.await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                error!(error = %e, "store commit failed");
                false
            }
            Err(_) => false,
        },
    }
}
