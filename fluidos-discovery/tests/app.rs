//! The application protocols (`/fluidos/view/1`, `/fluidos/workload/1`) between two
//! nodes over loopback: a burst of requests larger than what a receiver takes in
//! flight from one peer is paced by the sender, so none is dropped unanswered.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use fluidos_discovery::{AppBody, AppProtocol, MAX_OUTBOUND_APP_PER_PEER};

/// More than a receiver's in-flight limit for one peer (4 × `max_inbound_per_peer`).
const BURST: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_app_requests_is_paced_not_dropped() {
    init_tracing();
    let server = spawn(fast_config()).await;
    let mut requests = server.handle.take_app_requests().unwrap();
    let limit = 4 * fast_config().max_inbound_per_peer;
    assert!(
        BURST > limit && MAX_OUTBOUND_APP_PER_PEER < limit,
        "the burst must exceed what the receiver takes ({limit}), the pacing must not"
    );
    // The embedder answers slowly, so that requests pile up in flight: each answer is
    // the request's bytes back.
    let most_in_flight = tokio::spawn(async move {
        let (mut now, mut most) = (0usize, 0usize);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(BURST);
        let mut answered = 0;
        while answered < BURST {
            // An answer is counted out before it leaves (below), and counted first
            // here, so a request that its answer let the sender start is never seen
            // while that answer still counts as in flight.
            tokio::select! {
                biased;
                Some(()) = done_rx.recv() => {
                    now -= 1;
                    answered += 1;
                }
                Some(req) = requests.recv() => {
                    now += 1;
                    most = most.max(now);
                    let AppBody::Bytes(body) = req.body else { panic!("too large") };
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let _ = done.send(()).await;
                        let _ = req.reply.send(body);
                    });
                }
            }
        }
        most
    });
    let client = spawn(fast_config()).await;
    client.handle.add_peer(server.addr().await).await.unwrap();
    wait_sees(&client.handle, &[server.id()], "the server").await;

    let sends = (0..BURST).map(|i| {
        let (h, to) = (client.handle.clone(), server.id());
        tokio::spawn(async move {
            let body = format!("request {i}").into_bytes();
            let answer = h
                .app_request(
                    to,
                    AppProtocol::Workload,
                    body.clone(),
                    Duration::from_secs(30),
                )
                .await;
            (body, answer)
        })
    });
    let mut unanswered = 0;
    for s in futures::future::join_all(sends).await {
        let (body, answer) = s.unwrap();
        match answer {
            Ok(a) if a == body => {}
            Ok(a) if a.is_empty() => unanswered += 1,
            other => panic!("request {:?}: {other:?}", String::from_utf8_lossy(&body)),
        }
    }
    assert_eq!(
        unanswered, 0,
        "requests dropped by the receiver's in-flight limit"
    );
    let most = tokio::time::timeout(Duration::from_secs(10), most_in_flight)
        .await
        .unwrap()
        .unwrap();
    println!("{BURST} requests, at most {most} in flight at the receiver");
    assert!(
        most <= MAX_OUTBOUND_APP_PER_PEER,
        "{most} in flight at once, above the sender's limit {MAX_OUTBOUND_APP_PER_PEER}"
    );
    assert!(most > 1, "requests were not concurrent at all");
}
