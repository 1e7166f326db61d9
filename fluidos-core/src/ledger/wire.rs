//! Dispatching REAR requests from the wire to the ledger's operations.

use fluidos_contracts::rear::{ErrorCode, RearError, Request, Response};
use fluidos_contracts::{NodeId, Timestamp};

use super::Ledger;
use crate::store::Record;

impl Ledger {
    /// Answers one REAR request from `from` (the peer the transport
    /// authenticated), and returns the records that must be durable **before**
    /// the response is sent. An empty vector means nothing needs persisting
    /// (listing, idempotent repeats, refusals).
    ///
    /// The `Terminate` request's signature is checked here (`BadSignature`).
    pub fn handle(
        &mut self,
        from: NodeId,
        request: Request,
        now: Timestamp,
    ) -> (Response, Vec<Record>) {
        let kind = request.kind();
        self.advance(now);
        let result = match request {
            Request::ListFlavors { selector } => Ok(Response::Flavors {
                flavors: self
                    .list(&selector, now)
                    .into_iter()
                    .map(|f| f.signed().clone())
                    .collect(),
            }),
            Request::Reserve {
                flavor,
                partition,
                nonce,
            } => self
                .reserve(from, flavor, partition, nonce, now)
                .map(|reservation| Response::Reserved { reservation }),
            Request::ReserveAndPurchase {
                flavor,
                partition,
                nonce,
                terms,
            } => self
                .reserve_and_purchase(from, flavor, partition, nonce, terms, now)
                .map(|offer| Response::Offer {
                    contract: offer.signed().clone(),
                }),
            Request::Purchase { reservation, terms } => self
                .purchase(from, reservation, terms, now)
                .map(|offer| Response::Offer {
                    contract: offer.signed().clone(),
                }),
            Request::Countersign {
                contract,
                signature,
            } => self
                .countersign(from, contract, signature, now)
                .map(|c| Response::Countersigned { contract: c.id() }),
            Request::Terminate { termination } => match termination.verify() {
                Ok(verified) => self
                    .terminate(&verified, now)
                    .map(|contract| Response::Terminated { contract }),
                Err(e) => Err(RearError::new(
                    ErrorCode::BadSignature,
                    format!("termination: {e}"),
                )),
            },
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(peer = %from.short(), request = kind, code = ?error.code, "refused");
                Response::Error(error)
            }
        };
        (response, self.take_records())
    }
}
