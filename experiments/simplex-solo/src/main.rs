//! Demo: an existing tokio app (#[tokio::main]) embedding the single-validator engine,
//! which runs on its own thread inside commonware's tokio Runner.
use simplex_solo::{Command, Event, Mode, NodeConfig, spawn_node_thread};
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp/simplex-solo-data".into());
    let mut node = spawn_node_thread(dir.into(), NodeConfig::default(), Mode::PendUntilWork);
    // Producer: the "axum handler" side submits work every 500ms.
    let cmds = node.commands.clone();
    tokio::spawn(async move {
        for i in 0u32.. {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if cmds.send(Command::Work(format!("tx-{i}").into_bytes())).is_err() {
                break;
            }
        }
    });
    let mut n = 0;
    while let Some(ev) = node.events.recv().await {
        if let Event::Finalized { view, height, digest, items, .. } = ev {
            println!("finalized view={view} height={height:?} digest={digest} items={items:?}");
            n += 1;
            if n == 6 {
                break;
            }
        }
    }
    tokio::task::spawn_blocking(move || node.shutdown()).await.unwrap();
}
