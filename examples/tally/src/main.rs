//! `cargo run -p cairn-example-tally`: the tally service's tour on loopback
//! ports 7401-7406, with snapshots in memory.

use cairn_example_tally::tour;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let ports = [(7401, 7402), (7403, 7404), (7405, 7406)];
    match tour(&ports, "memory://tally").await {
        Ok(t) => {
            println!(
                "hits in the snapshot taken while they poured in: {}",
                t.during
            );
            println!(
                "hits in the snapshot before node n3 crashed: {}",
                t.before_crash
            );
            println!(
                "hits after n3 came back and the cluster rolled back: {}",
                t.after_recovery
            );
            println!("hits at the end: {}", t.at_end);
            if let Some((id, hits)) = t.restored {
                println!("hits after restoring snapshot {id}: {hits}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
