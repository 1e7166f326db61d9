//! Prints how a market of providers and buyers negotiates under latency, loss and
//! silent providers. Deterministic: the same seed gives the same table.
//!
//! Run: `cargo run -p fluidos-simulations --bin market`

use fluidos_simulations::market::{MarketConfig, run};

fn main() {
    println!(
        "| providers | buyers | silent | loss | latency (ms) | bought | failed | sold cpu | p50 ms | p99 ms | msgs (lost) | oversold |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let base = MarketConfig::default();
    let cases = [
        MarketConfig { ..base.clone() },
        MarketConfig {
            buyers: 128,
            ..base.clone()
        },
        MarketConfig {
            silent: 2,
            ..base.clone()
        },
        MarketConfig {
            loss_ppm: 20_000,
            ..base.clone()
        },
        MarketConfig {
            latency_ms: (50, 200),
            request_timeout: std::time::Duration::from_millis(1000),
            ..base.clone()
        },
        MarketConfig {
            providers: 32,
            buyers: 256,
            ..base.clone()
        },
    ];
    for cfg in &cases {
        let r = run(cfg);
        println!(
            "| {} | {} | {} | {:.1} % | {}–{} | {} | {} | {} | {} | {} | {} ({}) | {} |",
            cfg.providers,
            cfg.buyers,
            cfg.silent,
            f64::from(cfg.loss_ppm) / 10_000.0,
            cfg.latency_ms.0,
            cfg.latency_ms.1,
            r.bought,
            r.failed,
            r.sold_per_provider.iter().sum::<u64>(),
            r.percentile_ms(50),
            r.percentile_ms(99),
            r.messages.0,
            r.messages.1,
            if r.oversold { "YES" } else { "no" }
        );
    }
}
