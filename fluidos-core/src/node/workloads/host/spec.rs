//! The runtime's replica spec for a workload spec: limits capped by the contract, on the
//! runtime kind the host offers.

use super::*;

/// `limit` capped by `cap` (0 means "none" for both).
fn capped(limit: u64, cap: u64) -> Option<u64> {
    match (limit, cap) {
        (0, 0) => None,
        (0, c) => Some(c),
        (l, 0) => Some(l),
        (l, c) => Some(l.min(c)),
    }
}

/// A replica spec for the runtime from a workload spec: the workload's limits capped by
/// `cap` (the contract's partition, for a peer's replica), on the runtime kind that
/// `runs` offers for it.
pub(in crate::node::workloads) fn replica_spec(
    rid: ReplicaId,
    spec: &WorkloadSpec,
    cap: Option<&Resources>,
    runs: Runs,
    owner: Option<&NodeId>,
) -> Result<ReplicaSpec, (Code, String)> {
    let limits = spec.limits();
    let cap = cap.copied().unwrap_or(Resources::ZERO);
    let mut limits = Limits {
        cpu_millicores: capped(limits.cpu_millis, cap.cpu_millis),
        memory_bytes: capped(limits.memory_bytes, cap.memory_bytes),
        pids: None,
    };
    let b = match &spec.run {
        Run::Command { command, args } => {
            if !runs.commands {
                return Err((
                    Code::BadSpec,
                    "this node runs container images only, not commands".into(),
                ));
            }
            ReplicaSpec::builder(rid, command.clone()).args(args.iter().cloned())
        }
        Run::Image { image, args, .. } => {
            if !runs.images {
                return Err((
                    Code::ImagesUnsupported,
                    format!(
                        "this node has no container engine, so it cannot run image {image}: \
                         it runs command workloads only (its flavors say {}={})",
                        crate::runtime::RUNTIMES_LABEL,
                        runs.names().join(",")
                    ),
                ));
            }
            limits.pids = Some(CONTAINER_PIDS);
            let b = ReplicaSpec::image_builder(rid, image.clone()).args(args.iter().cloned());
            match owner {
                Some(o) => b.owner(o.to_did_key()),
                None => b,
            }
        }
    };
    let mut b = b.limits(limits).ports(spec.ports.iter().map(|p| p.port));
    for (k, v) in &spec.env {
        b = b.env(k.clone(), v.clone());
    }
    b.build().map_err(|e| (Code::BadSpec, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(run: &str, limits: &str) -> WorkloadSpec {
        WorkloadSpec::from_toml(&format!(
            "name = \"w\"\n[run]\n{run}\n[requests]\ncpu = \"250m\"\nmemory = \"64MiB\"\n{limits}"
        ))
        .unwrap()
    }

    fn rid() -> ReplicaId {
        ReplicaId::new("w-1", 0, "c1").unwrap()
    }

    const IMAGE: &str = "image = \"busybox:1\"\nargs = [\"sleep\", \"1\"]";
    const BOTH: Runs = Runs {
        commands: true,
        images: true,
    };

    #[test]
    fn limits_are_the_workloads_capped_by_the_contract() {
        let part = Resources {
            cpu_millis: 500,
            memory_bytes: 512 << 20,
            ..Resources::ZERO
        };
        // Limits above the contract: the contract's.
        let s = spec(IMAGE, "[limits]\ncpu = \"4\"\nmemory = \"8GiB\"\n");
        let r = replica_spec(rid(), &s, Some(&part), BOTH, None).unwrap();
        assert_eq!(r.limits().cpu_millicores, Some(500));
        assert_eq!(r.limits().memory_bytes, Some(512 << 20));
        assert_eq!(r.limits().pids, Some(CONTAINER_PIDS));
        assert_eq!(r.image(), Some("busybox:1"));
        // No limits: the requests, below the contract, stay.
        let s = spec(IMAGE, "");
        let r = replica_spec(rid(), &s, Some(&part), BOTH, None).unwrap();
        assert_eq!(r.limits().cpu_millicores, Some(250));
        assert_eq!(r.limits().memory_bytes, Some(64 << 20));
        // A command gets no pids limit (rlimits would count the whole user's).
        let s = spec("command = \"/bin/true\"", "");
        let r = replica_spec(rid(), &s, Some(&part), BOTH, None).unwrap();
        assert_eq!(r.limits().pids, None);
        assert_eq!(capped(0, 0), None);
        assert_eq!(capped(0, 7), Some(7));
    }

    #[test]
    fn an_image_on_a_node_without_docker_is_refused_with_its_own_code() {
        let process_only = Runs {
            commands: true,
            images: false,
        };
        let Err((code, msg)) = replica_spec(rid(), &spec(IMAGE, ""), None, process_only, None)
        else {
            panic!("an image spec was accepted without a container engine");
        };
        assert_eq!(code, Code::ImagesUnsupported);
        assert!(msg.contains("fluidos.runtimes=process"), "{msg}");
        let docker_only = Runs {
            commands: false,
            images: true,
        };
        let Err((code, _)) = replica_spec(
            rid(),
            &spec("command = \"/bin/true\"", ""),
            None,
            docker_only,
            None,
        ) else {
            panic!("a command was accepted by an images-only runtime");
        };
        assert_eq!(code, Code::BadSpec);
    }
}
