use std::sync::atomic::AtomicBool;

use cairn_core::Topology;

use super::*;
use crate::inbound::Inbound;
use crate::transport::In;

/// Invariant: a message that cannot be a frame (over `max_frame_bytes`)
/// never wedges its channel. It is dropped at the sender, counted and
/// logged, and never numbered, so the messages after it arrive in order
/// and exactly once. Before frames were encoded in place, such a frame
/// broke the connection on every attempt and nothing after it ever
/// arrived.
#[tokio::test]
async fn an_oversized_message_is_dropped_and_the_channel_goes_on() {
    const LIMIT: usize = 1 << 12;
    let names = vec!["n1".to_string(), "n2".to_string()];
    let topo = Arc::new(Topology::new(&names, &[("n1", "n2"), ("n2", "n1")]).unwrap());
    let identity = |node: &str, incarnation| Identity {
        cluster: "c".into(),
        node: node.into(),
        max_frame_bytes: LIMIT,
        peers: Arc::new(PeerBook::new(incarnation, names.clone(), Arc::default())),
        security: None,
    };

    // The receiver, n2.
    let (tx, mut rx) = crate::batch_queue::batch_queue();
    let (_epoch_tx, epoch_rx) = watch::channel(0u64);
    let me = topo.process("n2").unwrap();
    let inbound = Arc::new(Inbound::<Vec<u8>>::new(
        &identity("n2", 7),
        me,
        topo.clone(),
        tx,
        epoch_rx.clone(),
    ));
    let listener = crate::net::Listener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop_tx, stop_rx) = watch::channel(false);
    let (_cut_tx, cut_rx) = watch::channel(0u64);
    tokio::spawn(inbound.run(listener, stop_rx.clone(), cut_rx.clone()));

    // The sender, n1.
    let queue = Arc::new(SendQueue::default());
    let pending = Arc::new(AtomicUsize::new(0));
    let metrics = Arc::new(Metrics::default());
    let mut out = Outbound::new(queue.clone(), pending.clone());
    let links = SenderLinks {
        pending: pending.clone(),
        connected: Arc::new(AtomicBool::new(false)),
        room: Arc::new(Notify::new()),
        metrics: metrics.clone(),
        epoch: epoch_rx,
        cut: cut_rx,
        shutdown: stop_rx,
    };
    let peer = topo.process("n2").unwrap().index();
    tokio::spawn(run_outbound(
        identity("n1", 42),
        "n1->n2".into(),
        peer,
        addr.to_string(),
        queue,
        links,
    ));
    let data = |message: Vec<u8>| Out::Data {
        epoch: 0,
        message,
        vc: None,
    };
    out.push(data(vec![1; 10]));
    out.push(data(vec![2; 2 * LIMIT]));
    out.push(data(vec![3; 10]));
    out.flush();
    let limit = Duration::from_secs(10);
    for want in [1u8, 3] {
        match tokio::time::timeout(limit, rx.recv()).await {
            Ok(Some(In::Data { message, .. })) => assert_eq!(message, vec![want; 10]),
            other => panic!("expected message {want}, got {other:?}"),
        }
    }
    assert_eq!(metrics.messages_unsendable.get(), 1);
    // Send one more: had the dropped one taken a sequence number, the
    // receiver would refuse a gap; had it broken the connection, this one
    // would follow a reconnect.
    out.push(data(vec![4; 10]));
    out.flush();
    match tokio::time::timeout(limit, rx.recv()).await {
        Ok(Some(In::Data { message, .. })) => assert_eq!(message, vec![4; 10]),
        other => panic!("expected message 4, got {other:?}"),
    }
    assert_eq!(metrics.connections.get(), 1, "the connection never broke");
    assert!(rx.try_recv().is_none(), "nothing else was delivered");
    tokio::time::timeout(limit, async {
        while pending.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every frame is acknowledged or dropped, none left pending");
}
