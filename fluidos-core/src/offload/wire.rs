//! The `/fluidos/workload/1` messages: what an owner asks of the provider that
//! hosts its replicas (start, stop, logs), and the typed answers. Canonical CBOR,
//! one request and one response per stream (`docs/PROTOCOL.md` §8).

use fluidos_contracts::{ContractId, canonical};
use serde::{Deserialize, Serialize};

use super::AdmitError;

/// The largest request or response, bytes: an image chunk of [`IMAGE_CHUNK_BYTES`]
/// and its envelope. A spec is small; a logs answer carries at most [`MAX_LOG_TAIL`].
pub const MAX_WORKLOAD_MESSAGE_BYTES: usize = IMAGE_CHUNK_BYTES + 64 * 1024;
/// The most image bytes one `image_chunk` carries.
pub const IMAGE_CHUNK_BYTES: usize = 1 << 20;
/// The largest image tarball a provider accepts.
pub const MAX_IMAGE_BYTES: u64 = 4 << 30;
/// The most output one `logs` answer carries.
pub const MAX_LOG_TAIL: u32 = 128 * 1024;

/// A request from the owner of a workload to the node hosting (or to host) it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadRequest {
    /// Run replica `replica` of workload `workload` under `contract`.
    Start {
        /// The contract the replica runs under; its buyer must be the sender.
        contract: ContractId,
        /// The workload id (unique per owner).
        workload: String,
        /// The replica index.
        replica: u32,
        /// The workload spec in its JSON form (`docs/WORKLOADS.md`).
        spec: String,
    },
    /// Stop a replica and forget it.
    Stop {
        /// The workload id.
        workload: String,
        /// The replica index.
        replica: u32,
    },
    /// The owner is about to send the `docker save` tarball with sha256 `digest`
    /// (`sha256:<64 hex>`) of `size` bytes for replicas under `contract`. Answered with
    /// [`WorkloadResponse::Image`]: how much of it the provider has, or that the image
    /// is loaded already.
    ImageOffer {
        /// The contract the image's replicas will run under; its buyer must be the sender.
        contract: ContractId,
        /// `sha256:` and the lower-case hex sha256 of the whole tarball.
        digest: String,
        /// Its size, bytes (at most [`MAX_IMAGE_BYTES`]).
        size: u64,
    },
    /// Bytes `offset .. offset + data.len()` of the offered tarball. Chunks go in order;
    /// a chunk the provider has already is answered again, unchanged (idempotent).
    ImageChunk {
        /// The contract of the offer.
        contract: ContractId,
        /// The offer's digest.
        digest: String,
        /// Where the bytes go.
        offset: u64,
        /// At most [`IMAGE_CHUNK_BYTES`].
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The last `tail` bytes of a replica's output.
    Logs {
        /// The workload id.
        workload: String,
        /// The replica index.
        replica: u32,
        /// How many bytes at most (capped at [`MAX_LOG_TAIL`]).
        tail: u32,
    },
}

/// The answer to a [`WorkloadRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadResponse {
    /// The replica runs (or ran and ended already: `state` says which).
    Started {
        /// `running`, or `exited` / `failed` when it ended at once.
        state: String,
    },
    /// The replica was stopped (or had ended) and is forgotten.
    Stopped,
    /// Where an image transfer stands.
    Image {
        /// Bytes of the tarball the provider holds, in order from 0 (send from here).
        received: u64,
        /// Non-empty once the whole tarball arrived, matched its digest and is loaded
        /// into the engine: the images (tags) it held.
        loaded: Vec<String>,
    },
    /// Output (lossy UTF-8).
    Logs {
        /// The bytes.
        data: String,
        /// Earlier output was dropped.
        truncated: bool,
    },
    /// The request was refused.
    Error {
        /// Why, for programs.
        code: WorkloadErrorCode,
        /// Why, for people.
        message: String,
    },
}

/// Why a workload request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkloadErrorCode {
    /// The bytes are not a request.
    Malformed,
    /// The request exceeds [`MAX_WORKLOAD_MESSAGE_BYTES`].
    TooLarge,
    /// The spec does not parse or cannot run on this node.
    BadSpec,
    /// No contract with that id here.
    NoContract,
    /// The contract's buyer is another node.
    NotYourContract,
    /// The contract is not countersigned yet.
    NotActiveYet,
    /// The contract is outside its validity.
    Expired,
    /// The contract was terminated.
    Terminated,
    /// The replica does not fit what the contract has left.
    OverQuota,
    /// The replica runs here already under another contract.
    AlreadyRunning,
    /// No such replica here.
    UnknownReplica,
    /// The runtime could not start it.
    RuntimeFailed,
    /// This node runs no workloads.
    Unavailable,
    /// An image offer or chunk was refused: bad digest or size, a chunk out of order
    /// (the message says how much the provider has), or a tarball that does not match
    /// its digest or does not load.
    ImageRefused,
    /// The spec names a container image and this node has no container engine (its
    /// flavors' `fluidos.runtimes` label does not list `docker`).
    ImagesUnsupported,
}

impl From<&AdmitError> for WorkloadErrorCode {
    fn from(e: &AdmitError) -> Self {
        match e {
            AdmitError::NoContract { .. } => Self::NoContract,
            AdmitError::NotYourContract { .. } => Self::NotYourContract,
            AdmitError::NotActiveYet { .. } => Self::NotActiveYet,
            AdmitError::Expired { .. } => Self::Expired,
            AdmitError::Terminated { .. } => Self::Terminated,
            AdmitError::OverQuota { .. } => Self::OverQuota,
            AdmitError::AlreadyAdmitted { .. } => Self::AlreadyRunning,
        }
    }
}

impl WorkloadResponse {
    /// A refusal.
    pub fn error(code: WorkloadErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }
}

/// Decodes a request, or says which error answers it.
pub fn decode_request(bytes: &[u8]) -> Result<WorkloadRequest, WorkloadResponse> {
    canonical::from_slice_lenient_limited(bytes, MAX_WORKLOAD_MESSAGE_BYTES).map_err(|e| match e {
        canonical::DecodeError::TooLarge { len, max } => WorkloadResponse::error(
            WorkloadErrorCode::TooLarge,
            format!("request of {len} bytes exceeds {max} bytes"),
        ),
        e => WorkloadResponse::error(WorkloadErrorCode::Malformed, e.to_string()),
    })
}

/// Encodes a message (infallible for these types; an encoder failure becomes an
/// empty message, which the peer reads as malformed).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    canonical::to_vec(msg).unwrap_or_default()
}

/// Why a response could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// The answer was empty: the peer's transport dropped the request unanswered
    /// (too many requests in flight, or refused by its incoming policy). Every
    /// response is a non-empty CBOR map, so an empty one is never an answer.
    #[error("no answer: the peer dropped the request (busy, or refused by its policy)")]
    Unanswered,
    /// The answer is not a response.
    #[error(transparent)]
    Decode(#[from] canonical::DecodeError),
}

/// Decodes a response.
pub fn decode_response(bytes: &[u8]) -> Result<WorkloadResponse, ResponseError> {
    if bytes.is_empty() {
        return Err(ResponseError::Unanswered);
    }
    Ok(canonical::from_slice_lenient_limited(
        bytes,
        MAX_WORKLOAD_MESSAGE_BYTES,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_answer_is_a_dropped_request_not_malformed() {
        assert!(matches!(
            decode_response(&[]),
            Err(ResponseError::Unanswered)
        ));
        assert!(matches!(
            decode_response(&[0xff]),
            Err(ResponseError::Decode(_))
        ));
    }

    #[test]
    fn requests_round_trip_and_garbage_is_typed() {
        let req = WorkloadRequest::Logs {
            workload: "w-1".into(),
            replica: 2,
            tail: 10,
        };
        assert_eq!(decode_request(&encode(&req)), Ok(req));
        // A full image chunk fits a message, as a CBOR byte string.
        let chunk = WorkloadRequest::ImageChunk {
            contract: ContractId([7; 16]),
            digest: format!("sha256:{}", "ab".repeat(32)),
            offset: 5,
            data: vec![0xa5; IMAGE_CHUNK_BYTES],
        };
        let bytes = encode(&chunk);
        assert!(bytes.len() < IMAGE_CHUNK_BYTES + 256, "{}", bytes.len());
        assert_eq!(decode_request(&bytes), Ok(chunk));
        let Err(WorkloadResponse::Error { code, .. }) = decode_request(b"\xff\x00garbage") else {
            panic!("garbage decoded");
        };
        assert_eq!(code, WorkloadErrorCode::Malformed);
        let big = vec![0x40u8; MAX_WORKLOAD_MESSAGE_BYTES + 10];
        let Err(WorkloadResponse::Error { code, .. }) = decode_request(&big) else {
            panic!("oversized decoded");
        };
        assert_eq!(code, WorkloadErrorCode::TooLarge);
    }

    #[test]
    fn responses_round_trip() {
        for r in [
            WorkloadResponse::Started {
                state: "running".into(),
            },
            WorkloadResponse::Stopped,
            WorkloadResponse::error(WorkloadErrorCode::OverQuota, "no"),
            WorkloadResponse::error(WorkloadErrorCode::ImagesUnsupported, "no engine"),
            WorkloadResponse::Image {
                received: 3,
                loaded: vec!["a:1".into()],
            },
        ] {
            assert_eq!(decode_response(&encode(&r)).ok(), Some(r));
        }
    }
}
