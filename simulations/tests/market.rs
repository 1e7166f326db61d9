//! The market simulation: deterministic, never oversold, and robust to silent
//! providers and lost messages.
#![allow(clippy::unwrap_used)]

use fluidos_simulations::market::{MarketConfig, run};

#[test]
fn same_seed_same_run() {
    let cfg = MarketConfig {
        buyers: 24,
        ..MarketConfig::default()
    };
    assert_eq!(run(&cfg), run(&cfg));
}

#[test]
fn demand_below_supply_is_all_served_and_nothing_is_oversold() {
    // 8 providers × 8 CPUs, 32 buyers × 1 CPU.
    let r = run(&MarketConfig {
        buyers: 32,
        ..MarketConfig::default()
    });
    assert_eq!(r.bought, 32);
    assert_eq!(r.failed, 0);
    assert!(!r.oversold);
    assert_eq!(r.sold_per_provider.iter().sum::<u64>(), 32_000);
}

#[test]
fn demand_above_supply_sells_exactly_the_supply() {
    // 2 providers × 4 CPUs = 8 CPUs for 20 buyers of 1 CPU.
    let r = run(&MarketConfig {
        providers: 2,
        provider_cpu_millis: 4_000,
        buyers: 20,
        ..MarketConfig::default()
    });
    assert_eq!(r.bought, 8);
    assert_eq!(r.failed, 12);
    assert!(!r.oversold);
    assert!(r.sold_per_provider.iter().all(|s| *s == 4_000));
}

#[test]
fn silent_providers_and_lost_messages_do_not_stall_buyers() {
    let r = run(&MarketConfig {
        buyers: 32,
        silent: 3,
        loss_ppm: 20_000,
        ..MarketConfig::default()
    });
    assert_eq!(r.bought + r.failed, 32, "every buyer finished");
    assert!(r.bought >= 28, "most buyers still bought: {r:?}");
    assert!(!r.oversold);
    assert_eq!(
        r.sold_per_provider[..3],
        [0, 0, 0],
        "silent providers sold nothing"
    );
}
