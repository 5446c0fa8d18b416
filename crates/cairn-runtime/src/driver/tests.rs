//! The driver on its own, with in-memory channels and a paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_apps::token::{TokenParams, TokenProcess, Tokens};
use cairn_core::{ChannelId, Process, ProcessId, Topology};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::quiet::QUIET_RETRY;
use super::*;
use crate::send_queue::SendQueue;
use crate::transport::{In, Outbound, Outbounds};

/// Invariant: a continuous process with nothing to send stops being
/// ticked (the driver does not spin), and a message that gives it
/// something to send wakes it at once, not a retry later; while quiet, it
/// sends nothing of its own.
#[tokio::test(start_paused = true)]
async fn a_quiet_process_wakes_when_a_message_reaches_it() {
    let topology = Arc::new(Topology::new(["p", "q"], &[("p", "q"), ("q", "p")]).unwrap());
    let (p_to_q, q_to_p) = (ChannelId(0), ChannelId(1));
    let params = TokenParams {
        initial_tokens: 0,
        rate: None,
    };
    let process = TokenProcess::new(&params, ProcessId(0), &topology).unwrap();
    let queue = Arc::new(SendQueue::default());
    let pending = Arc::new(AtomicUsize::new(0));
    let mut outbound = Outbounds::new(topology.channel_count());
    outbound.insert(p_to_q, Outbound::new(queue.clone(), pending.clone()));
    let (in_tx, in_rx) = crate::batch_queue::batch_queue();
    let (_control_tx, control_rx) = mpsc::channel(8);
    let (reports_tx, _reports_rx) = mpsc::channel(REPORT_QUEUE);
    let metrics = Arc::new(Metrics::default());
    let (epoch_tx, _) = watch::channel(1);
    let driver = Driver::new(
        ProcessId(0),
        topology,
        process,
        outbound,
        in_rx,
        control_rx,
        reports_tx,
        Arc::new(Notify::new()),
        metrics.clone(),
        None,
        7,
        epoch_tx,
    )
    .unwrap();
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(driver.run(stopped));

    // With no token, the process goes quiet: the paused clock then moves
    // only from retry to retry, and nothing is sent.
    // (The clock's resolution is a millisecond, so the sleep ends with a
    // retry; the turns after it let that retry end quiet again.)
    tokio::time::sleep(QUIET_RETRY * 5).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(pending.load(Ordering::Relaxed), 0, "no token, no send");

    let given = Instant::now();
    in_tx
        .send(vec![In::Data {
            channel: q_to_p,
            epoch: 1,
            message: Tokens { tokens: 1 },
            vc: None,
            bytes: 8,
        }])
        .await
        .unwrap();
    let mut turns = 0;
    while pending.load(Ordering::Relaxed) == 0 {
        turns += 1;
        assert!(turns < 1000, "the token was never passed on");
        tokio::task::yield_now().await;
    }
    assert!(
        given.elapsed() < QUIET_RETRY,
        "the token waited {:?} for a retry instead of waking the process",
        given.elapsed()
    );
    assert_eq!(metrics.messages_received.get(), 1);
    assert_eq!(metrics.messages_sent.get(), 1);
    let _ = stop.send(true);
    run.await.unwrap().unwrap();
}
