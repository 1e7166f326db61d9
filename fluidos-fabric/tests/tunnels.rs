//! The contract-driven tunnel manager in memory: tunnels follow the active contracts,
//! ended contracts' keys get no answer, a restart restores the tunnels, IPv4
//! collisions are resolved, and a hub forwards only the pairs its policy allows.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use fluidos_contracts::{ContractId, FabricParams, NodeId, SecretKey};
use fluidos_fabric::{
    ApplyError, Change, ContractPeer, Desired, Fabric, FabricConfig, Forward, Forwarding,
    PeerParamsError, Relayed, Status, Tunnels, TunnelsConfig, WireGuardSecret, fabric_params,
    overlay,
};
use ipnet::IpNet;

struct Node {
    id: NodeId,
    secret: WireGuardSecret,
    addr: SocketAddr,
    params: FabricParams,
    tunnels: Tunnels,
    delivered: Vec<Vec<u8>>,
}

fn node(i: u8) -> Node {
    let id = SecretKey::from_seed(&[i; 32]).node_id();
    let secret = WireGuardSecret::generate();
    let addr = SocketAddr::from(([198, 18, 0, i], 51820));
    let params = fabric_params(&secret, [addr], &id);
    let tunnels = Tunnels::new(
        id,
        Fabric::new(&secret, FabricConfig::default()),
        TunnelsConfig::default(),
    );
    Node {
        id,
        secret,
        addr,
        params,
        tunnels,
        delivered: Vec::new(),
    }
}

fn contract(n: u8) -> ContractId {
    ContractId([n; 16])
}

fn peer(c: u8, other: &Node) -> ContractPeer {
    ContractPeer {
        contract: contract(c),
        node: other.id,
        params: other.params.clone(),
    }
}

fn v6(n: &Node) -> Ipv6Addr {
    overlay::address(&n.id)
}

fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40 + 8 + payload.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[44..46].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[48..].copy_from_slice(payload);
    p
}

/// Moves datagrams between the nodes until quiet (bounded); returns how many datagrams
/// each node sent, by index.
fn pump(nodes: &mut [Node], now: Instant) -> BTreeMap<usize, usize> {
    let mut sent = BTreeMap::new();
    for _ in 0..100 {
        let mut moved = false;
        for i in 0..nodes.len() {
            while let Some(p) = nodes[i].tunnels.fabric_mut().poll_packet() {
                nodes[i].delivered.push(p);
            }
            while let Some(t) = nodes[i].tunnels.fabric_mut().poll_transmit() {
                moved = true;
                *sent.entry(i).or_default() += 1;
                let from = nodes[i].addr;
                if let Some(j) = nodes.iter().position(|n| n.addr == t.to) {
                    nodes[j]
                        .tunnels
                        .fabric_mut()
                        .handle_datagram(from, &t.payload, now);
                }
            }
        }
        if !moved {
            for n in nodes.iter_mut() {
                while let Some(p) = n.tunnels.fabric_mut().poll_packet() {
                    n.delivered.push(p);
                }
            }
            return sent;
        }
    }
    panic!("the network did not become quiet");
}

fn changes(t: &mut Tunnels) -> Vec<Change> {
    std::iter::from_fn(|| t.poll_change()).collect()
}

fn host(addr: IpAddr) -> IpNet {
    IpNet::from(addr)
}

#[test]
fn tunnels_follow_contracts_and_ended_keys_get_no_answer() {
    let now = Instant::now();
    let mut nodes = vec![node(1), node(2)];
    let d0 = Desired {
        peers: vec![peer(1, &nodes[1])],
        ..Desired::default()
    };
    let d1 = Desired {
        peers: vec![peer(1, &nodes[0])],
        ..Desired::default()
    };
    let r = nodes[0].tunnels.apply(&d0, now);
    assert_eq!(r.added, vec![nodes[1].secret.public()]);
    assert!(r.refused.is_empty(), "{:?}", r.refused);
    let b_v4 = overlay::ipv4_address(&nodes[1].id);
    assert_eq!(
        changes(&mut nodes[0].tunnels),
        vec![
            Change::InterfaceUp {
                ipv6: v6(&nodes[0]),
                ipv4: Some(overlay::ipv4_address(&nodes[0].id)),
            },
            Change::AddRoute(host(IpAddr::V4(b_v4))),
            Change::AddRoute(host(IpAddr::V6(v6(&nodes[1])))),
        ]
    );
    nodes[1].tunnels.apply(&d1, now);
    pump(&mut nodes, now);

    let (a, b) = (v6(&nodes[0]), v6(&nodes[1]));
    let packet = ipv6_packet(b, a, b"from b");
    nodes[1].tunnels.fabric_mut().handle_packet(&packet, now);
    pump(&mut nodes, now);
    assert_eq!(nodes[0].delivered, vec![packet]);
    let status = Status::of(
        &nodes[0].tunnels,
        fluidos_fabric::BackendStatus {
            kind: fluidos_fabric::BackendKind::Idle,
            reason: "test".into(),
            interface: None,
        },
        None,
    );
    assert_eq!(status.peers.len(), 1);
    assert!(status.peers[0].latest_handshake_secs.is_some());
    assert!(status.peers[0].rx_bytes > 0);
    assert!(
        status
            .to_string()
            .contains("latest handshake: 0 seconds ago")
    );
    let json = serde_json::to_string(&status).unwrap();
    assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), status);

    // The contract ends on A's side: peer, routes and interface go.
    let r = nodes[0].tunnels.apply(&Desired::default(), now);
    assert_eq!(r.ended, vec![contract(1)]);
    assert_eq!(r.removed, vec![nodes[1].secret.public()]);
    assert_eq!(changes(&mut nodes[0].tunnels), vec![Change::InterfaceDown]);
    assert!(!nodes[0].tunnels.interface_up());
    assert!(nodes[0].tunnels.fabric().peers().is_empty());

    // B still has a session and sends on it, then tries a new handshake: A answers
    // neither, and delivers nothing.
    nodes[0].delivered.clear();
    nodes[1]
        .tunnels
        .fabric_mut()
        .handle_packet(&ipv6_packet(b, a, b"late"), now);
    let sent = pump(&mut nodes, now);
    assert_eq!(sent.get(&0), None, "A answered a revoked key");
    assert!(nodes[0].delivered.is_empty());
    let a_key = nodes[0].secret.public();
    nodes[1].tunnels.fabric_mut().connect(&a_key, now);
    let sent = pump(&mut nodes, now);
    assert_eq!(sent.get(&1), Some(&1), "B sent its initiation");
    assert_eq!(sent.get(&0), None, "A answered a revoked key's initiation");
    assert!(nodes[0].tunnels.fabric().drops().unknown_key >= 1);

    // The ended contract is refused if passed again; a new contract with the same
    // key admits the peer again.
    let r = nodes[0].tunnels.apply(&d0, now);
    assert_eq!(r.refused.len(), 1);
    assert_eq!(r.refused[0].error, ApplyError::Ended);
    assert!(nodes[0].tunnels.peers().is_empty());
    let again = Desired {
        peers: vec![peer(2, &nodes[1])],
        ..Desired::default()
    };
    let r = nodes[0].tunnels.apply(&again, now);
    assert!(r.refused.is_empty(), "{:?}", r.refused);
    assert_eq!(r.added.len(), 1);
    pump(&mut nodes, now);
    nodes[0].delivered.clear();
    let packet = ipv6_packet(b, a, b"renewed");
    nodes[1].tunnels.fabric_mut().handle_packet(&packet, now);
    pump(&mut nodes, now);
    assert_eq!(nodes[0].delivered, vec![packet]);
}

#[test]
fn a_restart_restores_the_tunnels_of_active_contracts() {
    let now = Instant::now();
    let mut nodes = vec![node(3), node(4)];
    let d0 = Desired {
        peers: vec![peer(7, &nodes[1])],
        ..Desired::default()
    };
    let d1 = Desired {
        peers: vec![peer(7, &nodes[0])],
        ..Desired::default()
    };
    nodes[0].tunnels.apply(&d0, now);
    nodes[1].tunnels.apply(&d1, now);
    pump(&mut nodes, now);
    let routes_before: Vec<IpNet> = nodes[0].tunnels.routes().copied().collect();

    // A restarts: a new fabric with the same key, the same active contracts.
    let me = nodes[0].id;
    nodes[0].tunnels = Tunnels::new(
        me,
        Fabric::new(&nodes[0].secret, FabricConfig::default()),
        TunnelsConfig::default(),
    );
    let r = nodes[0].tunnels.apply(&d0, now);
    assert_eq!(r.added.len(), 1);
    assert_eq!(
        nodes[0].tunnels.routes().copied().collect::<Vec<_>>(),
        routes_before
    );
    pump(&mut nodes, now);
    let (a, b) = (v6(&nodes[0]), v6(&nodes[1]));
    let packet = ipv6_packet(a, b, b"after restart");
    nodes[0].tunnels.fabric_mut().handle_packet(&packet, now);
    pump(&mut nodes, now);
    assert_eq!(nodes[1].delivered, vec![packet]);
}

#[test]
fn bad_entries_are_refused_and_the_rest_applied() {
    let now = Instant::now();
    let mut a = node(5);
    let b = node(6);
    let c = node(7);
    let mut weak = c.params.clone();
    weak.wireguard_key = fluidos_contracts::WireGuardKey([0; 32]);
    let other_key = fabric_params(&WireGuardSecret::generate(), [b.addr], &b.id);
    let desired = Desired {
        peers: vec![
            peer(1, &b),
            ContractPeer {
                contract: contract(2),
                node: b.id,
                params: other_key,
            },
            ContractPeer {
                contract: contract(3),
                node: c.id,
                params: weak,
            },
            ContractPeer {
                contract: contract(4),
                node: a.id,
                params: a.params.clone(),
            },
        ],
        relayed: vec![Relayed {
            contract: contract(5),
            node: c.id,
            hub: node(8).id,
        }],
        forwarding: Forwarding::None,
    };
    let r = a.tunnels.apply(&desired, now);
    let mut errors: Vec<(ContractId, ApplyError)> = r
        .refused
        .into_iter()
        .map(|x| (x.contract, x.error))
        .collect();
    errors.sort_by_key(|(c, _)| *c);
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert_eq!(errors[0], (contract(2), ApplyError::KeyConflict));
    assert_eq!(
        errors[1],
        (contract(3), ApplyError::Params(PeerParamsError::WeakKey))
    );
    assert_eq!(errors[2], (contract(4), ApplyError::OwnNode));
    assert!(matches!(errors[3], (_, ApplyError::NoTunnelToHub { .. })));
    assert_eq!(r.added, vec![b.secret.public()]);
}

#[test]
fn colliding_ipv4_addresses_go_to_one_node_and_the_other_keeps_ipv6() {
    // Find two node ids whose derived IPv4 addresses collide (birthday search over
    // 2^22 addresses: a few thousand tries, bounded).
    let mut seen: BTreeMap<std::net::Ipv4Addr, u32> = BTreeMap::new();
    let mut pair = None;
    for i in 0..200_000u32 {
        let mut seed = [0x33u8; 32];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        let id = SecretKey::from_seed(&seed).node_id();
        if let Some(j) = seen.insert(overlay::ipv4_address(&id), i) {
            pair = Some((j, i));
            break;
        }
    }
    let (i, j) = pair.expect("no collision in 200 000 tries");
    let make = |k: u32, last: u8| {
        let mut seed = [0x33u8; 32];
        seed[..4].copy_from_slice(&k.to_le_bytes());
        let id = SecretKey::from_seed(&seed).node_id();
        let secret = WireGuardSecret::generate();
        (
            id,
            fabric_params(&secret, [SocketAddr::from(([198, 18, 0, last], 1))], &id),
        )
    };
    let (x, px) = make(i, 10);
    let (y, py) = make(j, 11);
    let now = Instant::now();
    let mut a = node(9);
    let desired = Desired {
        peers: vec![
            ContractPeer {
                contract: contract(1),
                node: x,
                params: px,
            },
            ContractPeer {
                contract: contract(2),
                node: y,
                params: py,
            },
        ],
        ..Desired::default()
    };
    let r = a.tunnels.apply(&desired, now);
    assert!(r.refused.is_empty(), "{:?}", r.refused);
    let (small, large) = if x < y { (x, y) } else { (y, x) };
    assert_eq!(r.ipv4_conflicts, vec![large]);
    let v4 = host(IpAddr::V4(overlay::ipv4_address(&x)));
    let holder: Vec<_> = a
        .tunnels
        .peers()
        .values()
        .filter(|p| p.allowed_ips.contains(&v4))
        .map(|p| p.node)
        .collect();
    assert_eq!(holder, vec![small]);
    assert_eq!(a.tunnels.routes().filter(|n| **n == v4).count(), 1);
    // Both keep their IPv6 overlay address.
    for n in [x, y] {
        let addr = host(IpAddr::V6(overlay::address(&n)));
        assert!(a.tunnels.routes().any(|r| *r == addr));
    }
}

/// A, C and D are spokes of hub B; B forwards between A and C only.
#[test]
fn a_hub_forwards_only_the_pairs_its_policy_allows() {
    let now = Instant::now();
    let mut nodes = vec![node(11), node(12), node(13), node(14)];
    let (a, b, c, d) = (0, 1, 2, 3);
    let hub = nodes[b].id;
    let spoke = |hub_peer: ContractPeer, relayed: &[(u8, &Node)]| Desired {
        peers: vec![hub_peer],
        relayed: relayed
            .iter()
            .map(|(k, r)| Relayed {
                contract: contract(*k),
                node: r.id,
                hub,
            })
            .collect(),
        forwarding: Forwarding::None,
    };
    let da = spoke(peer(1, &nodes[b]), &[(10, &nodes[c])]);
    let dc = spoke(peer(2, &nodes[b]), &[(10, &nodes[a])]);
    // D believes it may reach A through B, but B's policy does not list the pair.
    let dd = spoke(peer(3, &nodes[b]), &[(11, &nodes[a])]);
    let db = Desired {
        peers: vec![peer(1, &nodes[a]), peer(2, &nodes[c]), peer(3, &nodes[d])],
        relayed: Vec::new(),
        forwarding: Forwarding::Pairs(vec![Forward {
            contract: contract(10),
            a: nodes[a].id,
            b: nodes[c].id,
        }]),
    };
    for (i, desired) in [(a, &da), (b, &db), (c, &dc), (d, &dd)] {
        let r = nodes[i].tunnels.apply(desired, now);
        assert!(r.refused.is_empty(), "{i}: {:?}", r.refused);
    }
    // A's routes to C's addresses go to its one peer, the hub.
    let c_v6 = host(IpAddr::V6(v6(&nodes[c])));
    assert!(nodes[a].tunnels.routes().any(|r| *r == c_v6));
    pump(&mut nodes, now);

    let (va, vc) = (v6(&nodes[a]), v6(&nodes[c]));
    let packet = ipv6_packet(va, vc, b"a to c through b");
    nodes[a].tunnels.fabric_mut().handle_packet(&packet, now);
    pump(&mut nodes, now);
    assert_eq!(nodes[c].delivered, vec![packet]);
    assert!(nodes[b].delivered.is_empty(), "the hub kept it for itself");
    let back = ipv6_packet(vc, va, b"c to a");
    nodes[c].tunnels.fabric_mut().handle_packet(&back, now);
    pump(&mut nodes, now);
    assert_eq!(nodes[a].delivered, vec![back]);
    assert_eq!(nodes[b].tunnels.fabric().forwarded(), 2);

    // D to A: the hub drops it.
    let vd = v6(&nodes[d]);
    nodes[d]
        .tunnels
        .fabric_mut()
        .handle_packet(&ipv6_packet(vd, va, b"d to a"), now);
    pump(&mut nodes, now);
    assert_eq!(nodes[a].delivered.len(), 1);
    assert_eq!(nodes[b].tunnels.fabric().drops().forbidden, 1);

    // The A–C contract ends on the hub: forwarding stops.
    let db2 = Desired {
        forwarding: Forwarding::Pairs(Vec::new()),
        ..db.clone()
    };
    let r = nodes[b].tunnels.apply(&db2, now);
    assert_eq!(r.ended, vec![contract(10)]);
    assert!(nodes[b].tunnels.forwarding().is_empty());
    nodes[a]
        .tunnels
        .fabric_mut()
        .handle_packet(&ipv6_packet(va, vc, b"after the end"), now);
    pump(&mut nodes, now);
    assert_eq!(nodes[c].delivered.len(), 1);
    assert_eq!(nodes[b].tunnels.fabric().drops().forbidden, 2);
}

#[test]
fn a_relayed_node_reached_directly_later_moves_off_the_hub() {
    let now = Instant::now();
    let mut a = node(21);
    let b = node(22);
    let c = node(23);
    let relayed = Desired {
        peers: vec![peer(1, &b)],
        relayed: vec![Relayed {
            contract: contract(2),
            node: c.id,
            hub: b.id,
        }],
        forwarding: Forwarding::None,
    };
    let r = a.tunnels.apply(&relayed, now);
    assert!(r.refused.is_empty(), "{:?}", r.refused);
    let c_v6 = host(IpAddr::V6(v6(&c)));
    let hub = &a.tunnels.peers()[&b.secret.public()];
    assert!(hub.allowed_ips.contains(&c_v6));
    assert_eq!(hub.relays.len(), 1);

    // A contract with C itself: the direct tunnel wins, the hub keeps only its own.
    let direct = Desired {
        peers: vec![peer(1, &b), peer(3, &c)],
        ..relayed.clone()
    };
    let r = a.tunnels.apply(&direct, now);
    assert!(r.refused.is_empty(), "{:?}", r.refused);
    assert_eq!(r.added, vec![c.secret.public()]);
    let peers = a.tunnels.peers();
    assert!(!peers[&b.secret.public()].allowed_ips.contains(&c_v6));
    assert!(peers[&c.secret.public()].allowed_ips.contains(&c_v6));
    let fabric_view = a.tunnels.fabric().peers();
    let owner: Vec<_> = fabric_view
        .iter()
        .filter(|p| p.allowed_ips.contains(&c_v6))
        .map(|p| p.public_key)
        .collect();
    assert_eq!(owner, vec![c.secret.public()]);
}

#[test]
fn forwarding_among_peers_lets_every_pair_through() {
    let now = Instant::now();
    let mut nodes = vec![node(31), node(32), node(33)];
    let hub = nodes[1].id;
    let relay = |k: u8, n: &Node| Relayed {
        contract: contract(k),
        node: n.id,
        hub,
    };
    let da = Desired {
        peers: vec![peer(1, &nodes[1])],
        relayed: vec![relay(9, &nodes[2])],
        forwarding: Forwarding::None,
    };
    let dc = Desired {
        peers: vec![peer(2, &nodes[1])],
        relayed: vec![relay(9, &nodes[0])],
        forwarding: Forwarding::None,
    };
    let db = Desired {
        peers: vec![peer(1, &nodes[0]), peer(2, &nodes[2])],
        relayed: Vec::new(),
        forwarding: Forwarding::AmongPeers,
    };
    for (i, d) in [(0, &da), (1, &db), (2, &dc)] {
        assert!(nodes[i].tunnels.apply(d, now).refused.is_empty());
    }
    assert_eq!(nodes[1].tunnels.forwarding().len(), 1);
    pump(&mut nodes, now);
    let packet = ipv6_packet(v6(&nodes[0]), v6(&nodes[2]), b"among peers");
    nodes[0].tunnels.fabric_mut().handle_packet(&packet, now);
    pump(&mut nodes, now);
    assert_eq!(nodes[2].delivered, vec![packet]);
    assert_eq!(nodes[1].tunnels.fabric().forwarded(), 1);
    // The spokes forward nothing themselves.
    assert_eq!(nodes[0].tunnels.fabric().forwarded(), 0);
}
