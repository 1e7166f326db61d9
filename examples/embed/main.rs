//! Embeds fluidos-core in a small application: builds a node, starts it, prints its
//! identity and the flavors it would sell, and stops.
//!
//! Run: `cargo run --example embed` (data goes to a temporary directory).

use fluidos_core::Node;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let node = Node::builder()
        .data_dir(data.path())
        .detect_gpus(true)
        .bind()
        .await?;

    println!("node id : {}", node.did_key());
    println!("peer id : {}", node.peer_id());
    for addr in node.listen_addrs().await {
        println!("listens : {addr}");
    }
    for flavor in node.flavors().await? {
        let p = &flavor.price;
        println!(
            "flavor  : {} {} — {} µ{}/{:?} ({:?})",
            flavor.id,
            flavor.characteristics.resources,
            p.amount_micros,
            p.currency,
            p.period,
            p.model
        );
    }
    node.shutdown().await;
    Ok(())
}
