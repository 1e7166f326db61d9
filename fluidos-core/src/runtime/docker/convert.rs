//! Pure conversions between fluidos' replica types and the engine's: names, labels, the
//! container's configuration, its status, its usage. No I/O, so they are unit-tested here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    ContainerStatsResponse, HostConfig, HostConfigLogConfig, PortBinding, PortMap, RestartPolicy,
    RestartPolicyNameEnum,
};

use crate::runtime::spec::{ReplicaId, ReplicaSpec};
use crate::runtime::types::{ExitInfo, ReplicaStatus, ReplicaUsage};

/// Prefix of every label the runtime sets.
pub const LABEL_PREFIX: &str = "fluidos.";
/// Label: the node (this provider) whose runtime created the container. Recovery only looks
/// at containers with its own node label, so several nodes can share one engine.
pub const LABEL_NODE: &str = "fluidos.node";
/// Label: the node that owns the workload (the consumer), when the spec names it.
pub const LABEL_OWNER: &str = "fluidos.owner";
/// Label: the contract the replica runs under.
pub const LABEL_CONTRACT: &str = "fluidos.contract";
/// Label: the workload.
pub const LABEL_WORKLOAD: &str = "fluidos.workload";
/// Label: the replica's index within its workload.
pub const LABEL_REPLICA: &str = "fluidos.replica";

/// A port of a replica published on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublishedPort {
    /// The TCP port inside the container (from the spec).
    pub container_port: u16,
    /// Where it is reachable on the host.
    pub host: SocketAddr,
}

/// The container's name: `fluidos.<workload>.<index>.<contract>.<hash>`, where the hash (of
/// the node label and the id) keeps names apart that the dots would make ambiguous and
/// those of different nodes on one engine. The name is the claim: the engine refuses a
/// second container with it, so a replica is never created twice.
pub(crate) fn container_name(node: &str, id: &ReplicaId) -> String {
    let mut h = crc32fast::Hasher::new();
    h.update(node.as_bytes());
    h.update(&[0]);
    h.update(id.dir_name().as_bytes());
    format!(
        "fluidos.{}.{}.{}.{:08x}",
        id.workload(),
        id.index(),
        id.contract(),
        h.finalize()
    )
}

/// The labels of a replica's container.
pub(crate) fn labels(node: &str, spec: &ReplicaSpec) -> HashMap<String, String> {
    let id = spec.id();
    let mut l = HashMap::from([
        (LABEL_NODE.to_owned(), node.to_owned()),
        (LABEL_CONTRACT.to_owned(), id.contract().to_owned()),
        (LABEL_WORKLOAD.to_owned(), id.workload().to_owned()),
        (LABEL_REPLICA.to_owned(), id.index().to_string()),
    ]);
    if let Some(owner) = spec.owner() {
        l.insert(LABEL_OWNER.to_owned(), owner.to_owned());
    }
    l
}

/// The replica id a container's labels name, if they name a valid one.
pub(crate) fn id_from_labels(labels: &HashMap<String, String>) -> Option<ReplicaId> {
    let index = labels.get(LABEL_REPLICA)?.parse().ok()?;
    ReplicaId::new(
        labels.get(LABEL_WORKLOAD)?.clone(),
        index,
        labels.get(LABEL_CONTRACT)?.clone(),
    )
    .ok()
}

/// How the runtime configures containers (from its builder).
#[derive(Clone, Debug)]
pub(crate) struct ContainerPolicy {
    pub(crate) node: String,
    pub(crate) host_ip: IpAddr,
    pub(crate) same_host_ports: bool,
    pub(crate) output_limit: u64,
    pub(crate) network: Option<String>,
}

/// The container's configuration: image, command, env (with the `FLUIDOS_*` labels), the
/// limits enforced by the engine, published ports, bounded logs, no engine restarts.
pub(crate) fn create_body(policy: &ContainerPolicy, spec: &ReplicaSpec) -> ContainerCreateBody {
    let id = spec.id();
    let mut env: Vec<String> = spec.env().iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("FLUIDOS_WORKLOAD={}", id.workload()));
    env.push(format!("FLUIDOS_REPLICA={}", id.index()));
    env.push(format!("FLUIDOS_CONTRACT={}", id.contract()));
    let limits = spec.limits();
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let memory = limits.memory_bytes.map(to_i64);
    let mut exposed = Vec::new();
    let mut bindings = PortMap::new();
    for &p in spec.ports() {
        let key = format!("{p}/tcp");
        exposed.push(key.clone());
        bindings.insert(
            key,
            Some(vec![PortBinding {
                host_ip: Some(policy.host_ip.to_string()),
                // An empty host port lets the engine pick a free one.
                host_port: Some(if policy.same_host_ports {
                    p.to_string()
                } else {
                    String::new()
                }),
            }]),
        );
    }
    // Two files of half the limit each: at most the limit on disk, the last half always kept.
    let half = (policy.output_limit / 2).max(1);
    let host_config = HostConfig {
        nano_cpus: limits
            .cpu_millicores
            .map(|m| to_i64(m.saturating_mul(1_000_000))),
        memory,
        // Swap equal to the memory limit means no swap at all: past it, the OOM killer.
        memory_swap: memory,
        pids_limit: limits.pids.map(to_i64),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        // fluidos supervises restarts (the owner's policy, counted by the caller); the
        // engine never restarts a container behind its back.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        log_config: Some(HostConfigLogConfig {
            typ: Some("local".into()),
            config: Some(HashMap::from([
                ("max-size".to_owned(), half.to_string()),
                ("max-file".to_owned(), "2".to_owned()),
                ("compress".to_owned(), "false".to_owned()),
            ])),
        }),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        network_mode: policy.network.clone(),
        ..HostConfig::default()
    };
    ContainerCreateBody {
        image: spec.image().map(str::to_owned),
        cmd: (!spec.args().is_empty()).then(|| spec.args().to_vec()),
        env: Some(env),
        labels: Some(labels(&policy.node, spec)),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    }
}

/// The replica's status from the engine's view of its container.
pub(crate) fn status_of(c: &ContainerInspectResponse, stop_requested: bool) -> ReplicaStatus {
    let Some(state) = &c.state else {
        return ReplicaStatus::Lost {
            reason: "the engine reports no state for the container".into(),
        };
    };
    let started_at_ms = state.started_at.as_deref().map_or(0, rfc3339_ms);
    match state.status {
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING,
        ) => ReplicaStatus::Running {
            pid: state
                .pid
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or_default(),
            started_at_ms,
        },
        Some(ContainerStateStatusEnum::CREATED) => ReplicaStatus::Failed {
            reason: "the container was created but never started (the runtime stopped in between)"
                .into(),
        },
        Some(ContainerStateStatusEnum::EXITED) => ReplicaStatus::Exited {
            exit: exit_of(
                state.exit_code.unwrap_or(-1),
                state.oom_killed.unwrap_or(false),
                stop_requested,
            ),
            started_at_ms,
            finished_at_ms: state.finished_at.as_deref().map_or(0, rfc3339_ms),
        },
        other => ReplicaStatus::Lost {
            reason: format!(
                "the container is {}{}",
                other.map_or_else(
                    || "in an unknown state".to_owned(),
                    |s| format!("{s:?}").to_lowercase()
                ),
                state
                    .error
                    .as_deref()
                    .filter(|e| !e.is_empty())
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        },
    }
}

/// The engine reports a container killed by signal N as exit code 128 + N (what a shell
/// does too): such codes are read as signals. A program that itself exits with 137 is
/// therefore reported as killed by signal 9.
pub(crate) fn exit_of(code: i64, oom_killed: bool, stop_requested: bool) -> ExitInfo {
    let (code, signal) = match code {
        129..=192 => (None, i32::try_from(code - 128).ok()),
        c => (Some(i32::try_from(c).unwrap_or(-1)), None),
    };
    ExitInfo {
        code,
        signal,
        oom_killed,
        stop_requested,
    }
}

/// Where the engine published the container's ports.
pub(crate) fn published_ports(c: &ContainerInspectResponse) -> Vec<PublishedPort> {
    let mut out = Vec::new();
    let Some(ports) = c.network_settings.as_ref().and_then(|n| n.ports.as_ref()) else {
        return out;
    };
    for (key, bindings) in ports {
        let Some(container_port) = key.strip_suffix("/tcp").and_then(|p| p.parse::<u16>().ok())
        else {
            continue;
        };
        for b in bindings.iter().flatten() {
            let ip = b.host_ip.as_deref().and_then(|i| i.parse::<IpAddr>().ok());
            let port = b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok());
            if let (Some(ip), Some(port)) = (ip, port) {
                out.push(PublishedPort {
                    container_port,
                    host: SocketAddr::new(ip, port),
                });
            }
        }
    }
    out.sort();
    out
}

/// Usage from one stats sample: cumulative cpu time, memory in use without the inactive
/// page cache (what `docker stats` shows), the peak where cgroup v1 keeps it.
pub(crate) fn usage_of(
    id: ReplicaId,
    s: &ContainerStatsResponse,
    now_ms: u64,
) -> Option<ReplicaUsage> {
    let cpu_time_ns = s.cpu_stats.as_ref()?.cpu_usage.as_ref()?.total_usage?;
    let mem = s.memory_stats.as_ref();
    let usage = mem.and_then(|m| m.usage).unwrap_or(0);
    let inactive = mem
        .and_then(|m| m.stats.as_ref())
        .and_then(|st| {
            st.get("total_inactive_file")
                .or_else(|| st.get("inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    Some(ReplicaUsage {
        id,
        cpu_time_ns,
        memory_bytes: usage.saturating_sub(inactive),
        memory_peak_bytes: mem.and_then(|m| m.max_usage).filter(|p| *p > 0),
        sampled_at_ms: now_ms,
    })
}

/// UNIX milliseconds of an RFC 3339 time as the engine writes it
/// (`2026-12-02T16:56:27.891567290Z`); 0 for the engine's zero time or anything unreadable.
pub(crate) fn rfc3339_ms(s: &str) -> u64 {
    parse_rfc3339(s).unwrap_or(0)
}

fn parse_rfc3339(s: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if s.get(4..5)? != "-" || !s.get(10..11)?.eq_ignore_ascii_case("T") {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let f = frac.get(..digits.min(3))?;
        ms = f.parse::<i64>().ok()? * 10i64.pow(3 - u32::try_from(f.len()).ok()?);
        rest = frac.get(digits..)?;
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 => {
            let sign = match o.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            sign * (o.get(1..3)?.parse::<i64>().ok()? * 3600
                + o.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    u64::try_from(secs.checked_mul(1000)?.checked_add(ms)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::Limits;

    fn id() -> ReplicaId {
        ReplicaId::new("web", 2, "c-1").expect("valid id")
    }

    #[test]
    fn times_parse() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), 0);
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), 1500);
        assert_eq!(
            rfc3339_ms("2026-12-02T16:56:27.891567290Z"),
            1_796_230_587_891
        );
        assert_eq!(
            rfc3339_ms("2026-12-02T17:56:27.891+01:00"),
            1_796_230_587_891
        );
        assert_eq!(rfc3339_ms("0001-01-01T00:00:00Z"), 0);
        assert_eq!(rfc3339_ms("yesterday"), 0);
    }

    #[test]
    fn names_and_labels() {
        let a = container_name("node-a", &id());
        assert!(a.starts_with("fluidos.web.2.c-1."), "{a}");
        assert_ne!(a, container_name("node-b", &id()));
        let spec = ReplicaSpec::image_builder(id(), "img:1")
            .owner("did:key:z6Mkx")
            .build()
            .expect("valid spec");
        let l = labels("node-a", &spec);
        assert_eq!(l[LABEL_NODE], "node-a");
        assert_eq!(l[LABEL_OWNER], "did:key:z6Mkx");
        assert_eq!(id_from_labels(&l), Some(id()));
        let mut bad = l.clone();
        bad.insert(LABEL_REPLICA.into(), "x".into());
        assert_eq!(id_from_labels(&bad), None);
    }

    #[test]
    fn limits_become_engine_limits() {
        let spec = ReplicaSpec::image_builder(id(), "img:1")
            .args(["sh", "-c", "true"])
            .env("K", "v")
            .ports([8080])
            .limits(Limits {
                cpu_millicores: Some(250),
                memory_bytes: Some(64 << 20),
                pids: Some(32),
            })
            .build()
            .expect("valid spec");
        let policy = ContainerPolicy {
            node: "n".into(),
            host_ip: IpAddr::from([127, 0, 0, 1]),
            same_host_ports: false,
            output_limit: 1 << 20,
            network: None,
        };
        let body = create_body(&policy, &spec);
        let hc = body.host_config.expect("host config");
        assert_eq!(hc.nano_cpus, Some(250_000_000));
        assert_eq!(hc.memory, Some(64 << 20));
        assert_eq!(hc.memory_swap, Some(64 << 20));
        assert_eq!(hc.pids_limit, Some(32));
        let bind = &hc.port_bindings.expect("ports")["8080/tcp"];
        assert_eq!(
            bind.as_ref().expect("binding")[0].host_ip.as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            body.cmd,
            Some(vec!["sh".into(), "-c".into(), "true".into()])
        );
        let env = body.env.expect("env");
        assert!(env.contains(&"K=v".to_owned()));
        assert!(env.contains(&"FLUIDOS_CONTRACT=c-1".to_owned()));
    }

    #[test]
    fn exits_map_signals() {
        let e = exit_of(3, false, false);
        assert_eq!((e.code, e.signal), (Some(3), None));
        let e = exit_of(137, true, false);
        assert_eq!((e.code, e.signal, e.oom_killed), (None, Some(9), true));
    }
}
