//! mDNS only inside network namespaces this test creates: two probes, one per
//! namespace, joined by a veth pair; each must list the other as a candidate.
//! Needs root and `ip`; without them it prints why and passes, unless `CI` is set.
#![allow(clippy::unwrap_used)]

#[path = "common/netns.rs"]
mod netns;

use std::time::Duration;

#[test]
fn two_namespaces_find_each_other_over_mdns() {
    if !netns::skip_unless_available("two_namespaces_find_each_other_over_mdns") {
        return;
    }
    let pair = netns::NetnsPair::create("t").unwrap();
    let bin = env!("CARGO_BIN_EXE_fluidos-discovery-probe");
    let args = [
        "--mdns",
        "--expect",
        "1",
        "--timeout-ms",
        "20000",
        "--linger-ms",
        "3000",
    ];
    let a = pair.spawn(&pair.a, bin, &args);
    let b = pair.spawn(&pair.b, bin, &args);
    let out_a = netns::collect(a, Duration::from_secs(30));
    let out_b = netns::collect(b, Duration::from_secs(30));
    let (me_a, seen_a) = netns::parse_probe(&out_a);
    let (me_b, seen_b) = netns::parse_probe(&out_b);
    let (me_a, me_b) = (me_a.expect(&out_a), me_b.expect(&out_b));
    assert!(
        seen_a.iter().any(|(id, _)| *id == me_b),
        "A did not see B:\n{out_a}"
    );
    assert!(
        seen_b.iter().any(|(id, _)| *id == me_a),
        "B did not see A:\n{out_b}"
    );
    drop(pair);
}
