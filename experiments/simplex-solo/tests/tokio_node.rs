//! Test B: real tokio runtime (commonware_runtime::tokio::Runner on its own thread), driven
//! from an *outer* tokio runtime (stand-in for an existing axum app) over tokio channels.

use commonware_cryptography::sha256::Digest;
use simplex_solo::{Command, Event, Mode, NodeConfig, Stats, spawn_node_thread};
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Wraps the node's event stream and remembers every finalization seen.
struct Rec {
    events: UnboundedReceiver<Event>,
    commands: UnboundedSender<Command>,
    seen: BTreeMap<u64, (Digest, u64)>, // view -> (digest, height)
}

impl Rec {
    fn note(&mut self, ev: &Event) {
        if let Event::Finalized { view, digest, height, .. } = ev {
            self.seen.insert(*view, (*digest, height.expect("known block")));
        }
    }

    /// Collect events for `dur`.
    async fn collect(&mut self, dur: Duration) -> Vec<(Duration, Event)> {
        let t0 = Instant::now();
        let deadline = tokio::time::Instant::now() + dur;
        let mut out = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            self.note(&ev);
            out.push((t0.elapsed(), ev));
        }
        out
    }

    /// Send one work item and wait for the finalization that contains it.
    async fn work_latency(&mut self, tag: &[u8]) -> (Duration, u64) {
        let t0 = Instant::now();
        self.commands.send(Command::Work(tag.to_vec())).unwrap();
        loop {
            let ev = self.events.recv().await.unwrap();
            self.note(&ev);
            if let Event::Finalized { view, items, .. } = ev {
                if items.iter().any(|i| i == tag) {
                    return (t0.elapsed(), view);
                }
            }
        }
    }

    async fn stats(&self) -> Stats {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands.send(Command::Stats(tx)).unwrap();
        rx.await.unwrap()
    }
}

fn finals(evs: &[(Duration, Event)]) -> Vec<(u64, u64)> {
    evs.iter()
        .filter_map(|(_, e)| match e {
            Event::Finalized { view, height, .. } => Some((*view, height.unwrap())),
            _ => None,
        })
        .collect()
}

fn nulls(evs: &[(Duration, Event)]) -> Vec<(Duration, u64)> {
    evs.iter()
        .filter_map(|(t, e)| match e {
            Event::Nullified { view } => Some((*t, *view)),
            _ => None,
        })
        .collect()
}

#[test]
fn tokio_runner_throughput_throttle_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = NodeConfig::default(); // leader_timeout 1s, certification_timeout 2s
    // The "existing application" runtime (think: the axum server's runtime).
    let outer = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();

    // ---- run 1 -------------------------------------------------------------------------
    let mut node = spawn_node_thread(dir.path().to_path_buf(), cfg.clone(), Mode::Always);
    let mut rec = Rec {
        events: std::mem::replace(&mut node.events, tokio::sync::mpsc::unbounded_channel().1),
        commands: node.commands.clone(),
        seen: BTreeMap::new(),
    };
    outer.block_on(async {
        // Phase 1: free-running for 3s.
        let evs = rec.collect(Duration::from_secs(3)).await;
        let f = finals(&evs);
        println!(
            "[always] {} finalizations in 3s = {:.0} blocks/s; views {}..={}; nullifications {}",
            f.len(),
            f.len() as f64 / 3.0,
            f.first().unwrap().0,
            f.last().unwrap().0,
            nulls(&evs).len()
        );
        assert!(f.len() > 10);
        for w in f.windows(2) {
            assert!(w[1].0 > w[0].0);
            assert_eq!(w[1].1, w[0].1 + 1);
        }

        // Phase 2: pending proposals (oneshot kept open) with no work for 3.5s.
        rec.commands.send(Command::SetMode(Mode::PendUntilWork)).unwrap();
        let evs = rec.collect(Duration::from_millis(3500)).await;
        println!(
            "[pend, idle 3.5s] finalizations {} (in-flight drain), nullifications {:?}",
            finals(&evs).len(),
            nulls(&evs)
        );
        println!("   stats {:?}", rec.stats().await);
        let (lat, view) = rec.work_latency(b"job-1").await;
        println!("[pend] work submitted -> finalized at view {view} in {lat:?}");

        // Phase 3: declining (oneshot sender dropped) with no work for 3.5s.
        rec.commands.send(Command::SetMode(Mode::DeclineWithoutWork)).unwrap();
        let evs = rec.collect(Duration::from_millis(3500)).await;
        println!(
            "[decline, idle 3.5s] finalizations {}, nullifications {:?}",
            finals(&evs).len(),
            nulls(&evs)
        );
        println!("   stats {:?}", rec.stats().await);
        let mut lats = Vec::new();
        for i in 0..3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            lats.push(rec.work_latency(format!("job-d{i}").as_bytes()).await);
        }
        println!("[decline] work -> finalized (latency, view): {lats:?}");

        // Back to always: the current view was declined, so nothing happens until its
        // leader timeout fires.
        rec.commands.send(Command::SetMode(Mode::Always)).unwrap();
        let evs = rec.collect(Duration::from_millis(1500)).await;
        let f = finals(&evs);
        println!(
            "[always again] {} finalizations in 1.5s (first after {:?}), nullifications {:?}",
            f.len(),
            evs.iter().find(|(_, e)| matches!(e, Event::Finalized { .. })).map(|(t, _)| *t),
            nulls(&evs)
        );
    });
    // Stop, then drain what was reported right before the stop.
    let t_stop = Instant::now();
    drop(node.shutdown());
    println!("[run1] shutdown took {:?}", t_stop.elapsed());
    while let Ok(ev) = rec.events.try_recv() {
        rec.note(&ev);
    }
    let run1 = std::mem::take(&mut rec.seen);
    let (&last_view, &(_, last_height)) = run1.last_key_value().unwrap();
    println!("[run1 end] last finalized view {last_view} height {last_height}");

    // ---- run 2: same storage dir + partition ---------------------------------------------
    let mut node = spawn_node_thread(dir.path().to_path_buf(), cfg, Mode::Always);
    rec.events = std::mem::replace(&mut node.events, tokio::sync::mpsc::unbounded_channel().1);
    rec.commands = node.commands.clone();
    outer.block_on(async {
        let t0 = Instant::now();
        let evs = rec.collect(Duration::from_secs(1)).await;
        let f = finals(&evs);
        let replayed: Vec<_> = f.iter().filter(|(v, _)| *v <= last_view).collect();
        let new: Vec<_> = f.iter().filter(|(v, _)| *v > last_view).collect();
        println!(
            "[restart] first event after {:?}; {} replayed finalizations (views {:?}..={:?}), {} new in ~1s (views {:?}..={:?})",
            evs.first().map(|(t, _)| *t),
            replayed.len(),
            replayed.first().map(|x| x.0),
            replayed.last().map(|x| x.0),
            new.len(),
            new.first(),
            new.last()
        );
        let _ = t0;
        // Replayed finalizations agree with what run 1 reported.
        for (v, _) in &replayed {
            assert_eq!(rec.seen[v], run1[v], "replayed view {v} differs");
        }
        // New finalizations continue the chain.
        assert!(!new.is_empty(), "resumes at later views");
        assert_eq!(new[0].1, last_height + 1, "height continues");
        for w in new.windows(2) {
            assert_eq!(w[1].1, w[0].1 + 1);
        }
    });
    drop(node.shutdown());
}
