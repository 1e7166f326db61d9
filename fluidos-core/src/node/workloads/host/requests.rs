//! `/fluidos/workload/1` requests a peer sends the host: start, stop, logs, and images.

use super::*;

impl Workloads {
    pub(in crate::node::workloads) fn workload_request(&mut self, req: AppRequest) {
        let AppRequest {
            from, body, reply, ..
        } = req;
        let bytes = match body {
            AppBody::Bytes(b) => b,
            AppBody::TooLarge { at_least } => {
                return answer(
                    reply,
                    &WorkloadResponse::error(
                        Code::TooLarge,
                        format!("request of at least {at_least} bytes is too large"),
                    ),
                );
            }
        };
        let request = match wire::decode_request(&bytes) {
            Ok(r) => r,
            Err(refusal) => return answer(reply, &refusal),
        };
        match request {
            WorkloadRequest::Start {
                contract,
                workload,
                replica,
                spec,
            } => self.start_for_peer(from, contract, workload, replica, &spec, reply),
            WorkloadRequest::ImageOffer {
                contract,
                digest,
                size,
            } => {
                if let Err(refusal) = self.image_contract(&from, &contract) {
                    return answer(reply, &refusal);
                }
                let step = self.uploads.offer(from, &digest, size);
                self.image_step(step, reply);
            }
            WorkloadRequest::ImageChunk {
                contract,
                digest,
                offset,
                data,
            } => {
                if let Err(refusal) = self.image_contract(&from, &contract) {
                    return answer(reply, &refusal);
                }
                let step = self.uploads.chunk(from, &digest, offset, &data);
                self.image_step(step, reply);
            }
            WorkloadRequest::Stop { workload, replica } => {
                let key = (from, workload, replica);
                if let Some(r) = self.hosted.replicas.get_mut(&key) {
                    r.forget = true;
                    let why = Eviction::new(Some(EndCause::ByOwner), "stopped by its owner");
                    self.stop_hosted(&key, why, Some(reply));
                } else {
                    let gone = self.hosted.forget_ended(|k, _| *k == key);
                    self.remove_records(gone);
                    answer(reply, &WorkloadResponse::Stopped);
                }
            }
            WorkloadRequest::Logs {
                workload,
                replica,
                tail,
            } => {
                let key = (from, workload, replica);
                let (Some(rid), Some(runtime)) = (self.hosted.rid_of(&key), self.runtime.clone())
                else {
                    return answer(
                        reply,
                        &WorkloadResponse::error(Code::UnknownReplica, "no such replica here"),
                    );
                };
                let tail = tail.min(MAX_LOG_TAIL) as usize;
                tokio::spawn(async move {
                    let r = match runtime.logs(&rid, tail).await {
                        Ok(l) => WorkloadResponse::Logs {
                            data: String::from_utf8_lossy(&l.data).into_owned(),
                            truncated: l.truncated,
                        },
                        Err(e) => WorkloadResponse::error(Code::UnknownReplica, e.to_string()),
                    };
                    answer(reply, &r);
                });
            }
        }
    }

    /// An image may be sent only under an active contract this node sold the sender,
    /// and only to a node that runs images.
    fn image_contract(&self, from: &NodeId, contract: &ContractId) -> Result<(), WorkloadResponse> {
        if !self.runtime.as_ref().is_some_and(|r| r.runs().images) {
            return Err(WorkloadResponse::error(
                Code::ImagesUnsupported,
                "this node has no container engine: it takes no images",
            ));
        }
        match self.active(contract) {
            Some(c) if c.role == ContractRole::Provider && c.peer == *from => Ok(()),
            Some(_) => Err(WorkloadResponse::error(
                Code::NotYourContract,
                format!("contract {contract} belongs to another party"),
            )),
            None => Err(WorkloadResponse::error(
                Code::NoContract,
                format!("no active contract {contract} with this provider"),
            )),
        }
    }

    fn image_step(&mut self, step: super::super::image::Step, reply: oneshot::Sender<Vec<u8>>) {
        match step {
            super::super::image::Step::Answer(r) => answer(reply, &r),
            super::super::image::Step::Load { from, digest, path } => {
                let (Some(runtime), done) = (self.runtime.clone(), self.done_tx.clone()) else {
                    return answer(
                        reply,
                        &WorkloadResponse::error(Code::Unavailable, "this node runs no workloads"),
                    );
                };
                tokio::spawn(async move {
                    let result = match tokio::time::timeout(
                        super::super::image::LOAD_TIMEOUT,
                        runtime.load_image(&path),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err("the engine did not load the image in time".into()),
                    };
                    let _ = done
                        .send(Done::Host(HostDone::ImageLoaded {
                            from,
                            digest,
                            result,
                            reply,
                        }))
                        .await;
                });
            }
        }
    }

    fn start_for_peer(
        &mut self,
        from: NodeId,
        contract: ContractId,
        workload: String,
        replica: u32,
        spec: &str,
        reply: oneshot::Sender<Vec<u8>>,
    ) {
        let refuse = |reply, code, msg: String| answer(reply, &WorkloadResponse::error(code, msg));
        let Some(runtime) = self.runtime.clone() else {
            return refuse(
                reply,
                Code::Unavailable,
                "this node runs no workloads".into(),
            );
        };
        let spec = match WorkloadSpec::from_json(spec) {
            Ok(s) => s,
            Err(e) => return refuse(reply, Code::BadSpec, e.to_string()),
        };
        let key = (from, workload.clone(), replica);
        if let Some(r) = self.hosted.replicas.get(&key) {
            // Its earlier copy is still stopping (taken back, evicted): not running,
            // and not to be started twice either. The owner tries again later.
            if r.evicting.is_some() {
                return refuse(
                    reply,
                    Code::Unavailable,
                    "an earlier copy of the replica is still stopping here".into(),
                );
            }
            // A repeat (the owner retried): never start a replica twice.
            if r.contract == Some(contract) {
                return answer(
                    reply,
                    &WorkloadResponse::Started {
                        state: "running".into(),
                    },
                );
            }
            return refuse(
                reply,
                Code::AlreadyRunning,
                "the replica runs here under another contract".into(),
            );
        }
        let rid = match replica_id(&workload, replica, Some(&contract)) {
            Ok(r) => r,
            Err(e) => return refuse(reply, Code::BadSpec, e.to_string()),
        };
        // Limits are the workload's, capped by what the contract sold; an unknown
        // contract is refused by admission below.
        let cap = self.active(&contract).map(|c| c.partition);
        let rspec = match replica_spec(
            rid.clone(),
            &spec,
            cap.as_ref(),
            runtime.runs(),
            Some(&from),
        ) {
            Ok(s) => s,
            Err((code, msg)) => return refuse(reply, code, msg),
        };
        // As admission charges it: at least one pod.
        let demand = Resources {
            pods: spec.requests().pods.max(1),
            ..spec.requests()
        };
        let (tx, rx) = oneshot::channel();
        let admit = Command::Quota(QuotaCommand::Admit {
            from,
            contract,
            key: key.clone(),
            demand,
            reply: tx,
        });
        self.hosted.insert(
            key.clone(),
            HostedReplica {
                rid,
                contract: Some(contract),
                demand,
                evicting: None,
                policy: spec.restart,
                restarts: 0,
                spec: Some(rspec.clone()),
                seen_placed: false,
                forget: false,
                status: None,
            },
        );
        // An ended run of the same replica kept for `logs` gives way to the new one.
        let stale = self.hosted.forget_ended(|k, _| *k == key);
        let (engine, done) = (self.engine.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            for rid in &stale {
                let _ = runtime.remove(rid).await;
            }
            let result = match engine.send(admit).await {
                Ok(()) => start(runtime, Some(rx), rspec).await,
                Err(_) => Err((Code::Unavailable, "the node is shutting down".into())),
            };
            let _ = done
                .send(Done::Host(HostDone::Started {
                    key,
                    result,
                    reply: Some(reply),
                }))
                .await;
        });
    }
}
