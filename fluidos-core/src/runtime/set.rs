//! [`RuntimeSet`]: one [`Runtime`] over two, image specs on the one that runs images
//! (Docker), command specs on the one that runs programs (the process runtime).
//!
//! A provider with a Docker engine still runs `command` workloads as processes: the two
//! kinds never compete for a name (a replica's id is the same, its record lives in one
//! runtime only), and a node without an engine keeps its command workloads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::errors::{LogsError, RecoverError, RemoveError, StartError, StatusError, StopError};
use super::spec::{ReplicaId, ReplicaSpec};
use super::types::{Capabilities, Logs, ReplicaEvent, ReplicaInfo, ReplicaUsage, Runs};
use super::{Runtime, RuntimeFuture};

/// Events queued from both runtimes before the reader waits.
const EVENTS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Images,
    Commands,
}

/// Routes image specs to one runtime and command specs to another.
///
/// Every replica lives in the runtime that started it; `stop`, `status`, `logs` and
/// `remove` go there. [`recover`](Runtime::recover) recovers both.
pub struct RuntimeSet {
    images: Option<Arc<dyn Runtime>>,
    commands: Option<Arc<dyn Runtime>>,
    sides: Mutex<BTreeMap<ReplicaId, Side>>,
}

impl std::fmt::Debug for RuntimeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeSet")
            .field(
                "images",
                &self.images.as_ref().map(|r| r.capabilities().kind),
            )
            .field(
                "commands",
                &self.commands.as_ref().map(|r| r.capabilities().kind),
            )
            .finish()
    }
}

impl RuntimeSet {
    /// A set running images on `images` (when given) and commands on `commands` (when
    /// given). With neither, every start is refused.
    pub fn new(images: Option<Arc<dyn Runtime>>, commands: Option<Arc<dyn Runtime>>) -> Self {
        Self {
            images,
            commands,
            sides: Mutex::new(BTreeMap::new()),
        }
    }

    fn side_of(&self, id: &ReplicaId) -> Option<Side> {
        self.sides
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .copied()
    }

    fn set_side(&self, id: ReplicaId, side: Option<Side>) {
        let mut sides = self
            .sides
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match side {
            Some(s) => sides.insert(id, s),
            None => sides.remove(&id),
        };
    }

    fn get(&self, side: Side) -> Option<&Arc<dyn Runtime>> {
        match side {
            Side::Images => self.images.as_ref(),
            Side::Commands => self.commands.as_ref(),
        }
    }

    /// The runtime holding `id`: the recorded one, else the first that has a record of
    /// it (ids are the caller's, so an unknown one is asked of both).
    async fn holder(&self, id: &ReplicaId) -> Option<&Arc<dyn Runtime>> {
        if let Some(rt) = self.side_of(id).and_then(|s| self.get(s)) {
            return Some(rt);
        }
        for side in [Side::Commands, Side::Images] {
            if let Some(rt) = self.get(side)
                && rt.status(id).await.is_ok()
            {
                self.set_side(id.clone(), Some(side));
                return Some(rt);
            }
        }
        None
    }
}

impl Runtime for RuntimeSet {
    fn capabilities(&self) -> Capabilities {
        // The process runtime's isolation is the weaker: report it when both run.
        match (&self.commands, &self.images) {
            (Some(c), _) => c.capabilities(),
            (None, Some(i)) => i.capabilities(),
            (None, None) => Capabilities {
                kind: "none".into(),
                memory: super::Enforcement::None,
                cpu: super::Enforcement::None,
                pids: super::Enforcement::None,
                filesystem_isolation: false,
                network_isolation: false,
                user_isolation: false,
            },
        }
    }

    fn runs(&self) -> Runs {
        Runs {
            commands: self.commands.as_ref().is_some_and(|r| r.runs().commands),
            images: self.images.as_ref().is_some_and(|r| r.runs().images),
        }
    }

    fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(i) = &self.images {
            parts.push(format!("{} (image workloads)", i.summary()));
        }
        if let Some(c) = &self.commands {
            parts.push(format!("{} (command workloads)", c.summary()));
        }
        if parts.is_empty() {
            return "no runtime".into();
        }
        parts.join(" | ")
    }

    fn start(&self, spec: ReplicaSpec) -> RuntimeFuture<'_, Result<ReplicaInfo, StartError>> {
        Box::pin(async move {
            let side = if spec.image().is_some() {
                Side::Images
            } else {
                Side::Commands
            };
            let Some(rt) = self.get(side) else {
                let reason = match side {
                    Side::Images => {
                        "it names a container image and this node has no container engine \
                         (Docker is not available here)"
                    }
                    Side::Commands => "it names a program and this node runs container images only",
                };
                return Err(StartError::Unsupported {
                    id: spec.id().clone(),
                    reason: reason.into(),
                });
            };
            let id = spec.id().clone();
            let r = rt.start(spec).await;
            if r.is_ok() {
                self.set_side(id, Some(side));
            }
            r
        })
    }

    fn stop<'a>(&'a self, id: &'a ReplicaId) -> RuntimeFuture<'a, Result<ReplicaInfo, StopError>> {
        Box::pin(async move {
            match self.holder(id).await {
                Some(rt) => rt.stop(id).await,
                None => Err(StopError::NotFound(id.clone())),
            }
        })
    }

    fn status<'a>(
        &'a self,
        id: &'a ReplicaId,
    ) -> RuntimeFuture<'a, Result<ReplicaInfo, StatusError>> {
        Box::pin(async move {
            match self.holder(id).await {
                Some(rt) => rt.status(id).await,
                None => Err(StatusError::NotFound(id.clone())),
            }
        })
    }

    fn list(&self) -> RuntimeFuture<'_, Vec<ReplicaInfo>> {
        Box::pin(async move {
            let mut all = Vec::new();
            for rt in self.commands.iter().chain(self.images.iter()) {
                all.extend(rt.list().await);
            }
            all.sort_by(|a, b| a.id.cmp(&b.id));
            all
        })
    }

    fn logs<'a>(
        &'a self,
        id: &'a ReplicaId,
        tail: usize,
    ) -> RuntimeFuture<'a, Result<Logs, LogsError>> {
        Box::pin(async move {
            match self.holder(id).await {
                Some(rt) => rt.logs(id, tail).await,
                None => Err(LogsError::NotFound(id.clone())),
            }
        })
    }

    fn remove<'a>(&'a self, id: &'a ReplicaId) -> RuntimeFuture<'a, Result<(), RemoveError>> {
        Box::pin(async move {
            let Some(rt) = self.holder(id).await else {
                return Err(RemoveError::NotFound(id.clone()));
            };
            let r = rt.remove(id).await;
            if r.is_ok() {
                self.set_side(id.clone(), None);
            }
            r
        })
    }

    fn recover(&self) -> RuntimeFuture<'_, Result<Vec<ReplicaInfo>, RecoverError>> {
        Box::pin(async move {
            let mut all = Vec::new();
            for side in [Side::Commands, Side::Images] {
                let Some(rt) = self.get(side) else { continue };
                for info in rt.recover().await? {
                    self.set_side(info.id.clone(), Some(side));
                    all.push(info);
                }
            }
            all.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(all)
        })
    }

    fn take_events(&self) -> Option<mpsc::Receiver<ReplicaEvent>> {
        let mut inner: Vec<mpsc::Receiver<ReplicaEvent>> = self
            .commands
            .iter()
            .chain(self.images.iter())
            .filter_map(|r| r.take_events())
            .collect();
        if inner.len() <= 1 {
            return inner.pop();
        }
        // Forwarding needs a tokio runtime; without one only the first side's events flow.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return inner.into_iter().next();
        };
        let (tx, rx) = mpsc::channel(EVENTS);
        for mut r in inner {
            let tx = tx.clone();
            handle.spawn(async move {
                while let Some(ev) = r.recv().await {
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
            });
        }
        Some(rx)
    }

    fn load_image<'a>(
        &'a self,
        path: &'a std::path::Path,
    ) -> RuntimeFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            match &self.images {
                Some(rt) => rt.load_image(path).await,
                None => Err("this node has no container engine".to_string()),
            }
        })
    }

    fn usage(&self) -> RuntimeFuture<'_, Vec<ReplicaUsage>> {
        Box::pin(async move {
            let mut all = Vec::new();
            for rt in self.commands.iter().chain(self.images.iter()) {
                all.extend(rt.usage().await);
            }
            all.sort_by(|a, b| a.id.cmp(&b.id));
            all
        })
    }
}
