//! Tables and formatting for people (`--json` prints the API's JSON instead).

use fluidos_contracts::resources::{format_bytes, format_millis};
use fluidos_contracts::{Flavor, Resources, Timestamp};

use super::fabric;
use crate::control::types::{ContractInfo, PeerView, StatusView};

/// The last 8 characters of an id, for tables.
pub(super) fn short(id: &str) -> String {
    let n = id.chars().count();
    id.chars().skip(n.saturating_sub(8)).collect()
}

pub(super) fn table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

pub(super) fn resources_cells(r: &Resources) -> Vec<String> {
    vec![
        format_millis(r.cpu_millis),
        format_bytes(r.memory_bytes),
        format_bytes(r.storage_bytes),
        r.pods.to_string(),
        r.gpus.to_string(),
    ]
}

/// A wall-clock time relative to now, for tables: `in 9m59s`, `3m ago`.
pub(super) fn when(t: Timestamp) -> String {
    let now = Timestamp::now();
    let span = |ms: u64| {
        let s = ms / 1000;
        match s {
            0..=59 => format!("{s}s"),
            60..=3599 => format!("{}m{}s", s / 60, s % 60),
            3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
            _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
        }
    };
    if t >= now {
        format!("in {}", span(now.until(t)))
    } else {
        format!("{} ago", span(t.until(now)))
    }
}

pub(super) fn money(micros: u64) -> String {
    format!(
        "{}.{:02}",
        micros / 1_000_000,
        (micros % 1_000_000) / 10_000
    )
}

pub(super) fn print_status(s: &StatusView) {
    let n = &s.node;
    out!("node id:     {}", n.did_key);
    out!("peer id:     {}", n.peer_id);
    out!("version:     {} (up {}s)", s.version, s.uptime_secs);
    match &s.runtime {
        Some(r) => out!("workloads:   {r}"),
        None => out!("workloads:   none (no runtime: this node hosts no workloads)"),
    }
    if let Some(f) = &s.fabric {
        fabric::print_summary(f);
    }
    if let Some(d) = &s.docker {
        if d.available {
            out!(
                "docker:      available (engine {}, API {}, {})",
                d.engine_version.as_deref().unwrap_or("?"),
                d.api_version.as_deref().unwrap_or("?"),
                d.endpoint.as_deref().unwrap_or("?")
            );
        } else {
            out!(
                "docker:      not available: {} (runtime = \"{}\": image workloads are refused)",
                d.reason.as_deref().unwrap_or("not tried"),
                d.mode
            );
        }
    }
    let mut roles = Vec::new();
    if n.roles.provider {
        roles.push("provider");
    }
    if n.roles.consumer {
        roles.push("consumer");
    }
    if n.roles.supernode {
        roles.push("supernode");
    }
    out!("roles:       {}", roles.join(", "));
    for (i, a) in n.listen_addrs.iter().enumerate() {
        out!(
            "{}{a}",
            if i == 0 {
                "listening:   "
            } else {
                "             "
            }
        );
    }
    let d = &s.discovery;
    out!(
        "catalogs:    {} (catalog_server = {})",
        if d.catalog_server {
            "serving: this node answers catalog lookups"
        } else {
            "not serving (Kademlia client)"
        },
        d.catalog_server_mode
    );
    for c in &d.catalogs {
        let state = if c.reached {
            format!("reached, {} other member(s)", c.members)
        } else {
            "not reached yet".to_string()
        };
        out!(
            "  catalog {}: {state}, {} failed dial(s) of its address",
            c.name,
            c.bootstrap_failures
        );
    }
    out!("capacity:    {}", n.capacity);
    out!("committed:   {}", n.committed);
    out!(
        "flavors: {}  reservations: {}  sold: {}  bought: {}  peers: {}",
        n.flavors.len(),
        n.reservations,
        n.contracts_sold,
        n.contracts_bought,
        n.candidates
    );
}

pub(super) fn print_flavors(flavors: &[Flavor]) {
    if flavors.is_empty() {
        out!("no flavors offered");
        return;
    }
    table(
        &[
            "ID", "CPU", "MEMORY", "STORAGE", "PODS", "GPUS", "ARCH", "PRICE", "LOCATION",
        ],
        flavors.iter().map(|f| {
            let mut row = vec![short(&f.id.to_string())];
            row.extend(resources_cells(&f.characteristics.resources));
            row.push(f.characteristics.architecture.to_string());
            let period = match f.price.period {
                fluidos_contracts::PricePeriod::Hour => "hour",
                fluidos_contracts::PricePeriod::Day => "day",
                fluidos_contracts::PricePeriod::Month => "month",
            };
            row.push(format!(
                "{} {}/{period}",
                money(f.price.amount_micros),
                f.price.currency
            ));
            row.push(
                f.properties
                    .location
                    .as_ref()
                    .map(|l| match &l.city {
                        Some(c) => format!("{c}, {}", l.country),
                        None => l.country.clone(),
                    })
                    .unwrap_or_else(|| "-".into()),
            );
            row
        }),
    );
}

pub(super) fn print_peers(peers: &[PeerView]) {
    table(
        &[
            "NODE", "PEER ID", "SOURCES", "SEEN", "RATING", "ROLES", "ADDRESS",
        ],
        peers.iter().map(|p| {
            vec![
                short(&p.node_id),
                short(&p.peer_id),
                p.sources.join(","),
                when(p.last_seen),
                p.rating
                    .map(|r| format!("{r:.2}"))
                    .unwrap_or_else(|| "-".into()),
                p.roles.join(","),
                p.addresses.first().cloned().unwrap_or_default(),
            ]
        }),
    );
}

pub(super) fn print_contracts(contracts: &[ContractInfo]) {
    if contracts.is_empty() {
        out!("no contracts");
        return;
    }
    table(
        &[
            "ID",
            "ROLE",
            "STATE",
            "PROVIDER",
            "BUYER",
            "CPU",
            "MEMORY",
            "STORAGE",
            "PODS",
            "GPUS",
            "PRICE",
            "UNTIL",
            "USED",
            "COST SO FAR",
        ],
        contracts.iter().map(|c| {
            let mut row = vec![
                c.id.to_string(),
                format!("{:?}", c.role).to_lowercase(),
                match c.end {
                    Some(end) => format!("{:?} ({end})", c.state).to_lowercase(),
                    None => format!("{:?}", c.state).to_lowercase(),
                },
                short(&c.provider.to_did_key()),
                short(&c.buyer.to_did_key()),
            ];
            row.extend(resources_cells(&c.partition));
            row.push(format!("{} {}", money(c.price_micros), c.currency));
            row.push(when(c.valid_until));
            row.push(usage_cell(c));
            row.push(cost_cell(c));
            row
        }),
    );
}

/// `USED`: the provider's last usage report (cpu time, memory now).
pub(super) fn usage_cell(c: &ContractInfo) -> String {
    match &c.usage {
        None => "-".into(),
        Some(u) => format!(
            "{:.1}s cpu, {} mem",
            u.cpu_time_ns as f64 / 1e9,
            format_bytes(u.memory_bytes)
        ),
    }
}

/// `COST SO FAR`: for pay-per-use contracts, with a warning when usage goes beyond it.
pub(super) fn cost_cell(c: &ContractInfo) -> String {
    let Some(cost) = &c.cost else {
        return match c.price_model {
            fluidos_contracts::PriceModel::PayPerUse => "0.00 (no usage yet)".into(),
            _ => "reserved".into(),
        };
    };
    let mut s = format!("{:.6} {}", cost.micros as f64 / 1e6, cost.currency);
    if cost.over_memory {
        s.push_str(" OVER MEMORY");
    }
    if cost.over_cpu {
        s.push_str(" OVER CPU");
    }
    s
}
