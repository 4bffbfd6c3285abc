//! The bench end to end, small: every measurement runs and gives a figure.

use std::process::Command;

use serde_json::Value;

/// Every figure the README's table shows, by the name the bench gives it.
const FIGURES: [&str; 22] = [
    "append: engine events/s",
    "append: rows per commit (engine's groups)",
    "append: raw-insert ceiling rows/s",
    "append: engine / ceiling",
    "log built: conversations appended/s",
    "replay: events/s",
    "replay: peak RSS MB",
    "chat list over 200 chats: p50 ms",
    "chat list over 200 chats: p99 ms",
    "ingest: messages/s at saturation",
    "ingest at 1,000/s: p50 ms",
    "ingest at 1,000/s: p99 ms",
    "projection lag at 1,000/s: p50 ms",
    "projection lag at 1,000/s: p99 ms",
    "SLA alert delay under load: p50 ms",
    "SLA alert delay under load: p99 ms",
    "media: 100 KB images fetched+kept/s (filesystem)",
    "media: 100 KB images fetched+kept/s (S3)",
    "media: server RSS when ready (MB)",
    "media: peak RSS before the large document (MB)",
    "media: peak RSS after the large document (MB)",
    "media: large document fetched+kept (s)",
];

#[test]
fn every_measurement_gives_a_figure_on_sqlite() {
    every_measurement_gives_a_figure(&[]);
}

/// On the local PostgreSQL server, in databases the bench creates and drops.
#[test]
fn every_measurement_gives_a_figure_on_postgres() {
    every_measurement_gives_a_figure(&["--database-url", &chatledger_tests::db::pg_url()]);
}

fn every_measurement_gives_a_figure(backend: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.json");
    let run = Command::new(env!("CARGO_BIN_EXE_chatledger-bench"))
        .args([
            "--replay-events",
            "2000",
            "--seconds",
            "1",
            "--append-events",
            "800",
            "--media-images",
            "40",
            "--media-document-mb",
            "8",
        ])
        .args(backend)
        .arg("--out")
        .arg(&out)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the bench failed:\n{printed}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        printed.contains("cores shared"),
        "it says how the cores were shared:\n{printed}"
    );
    let figures: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    for name in FIGURES {
        let figure = figures[name].as_f64();
        assert!(
            figure.is_some_and(|f| f >= 0.0),
            "{name}: {:?} (every measurement must have samples)\n{printed}",
            figures[name]
        );
        assert!(printed.contains(name), "{name} is printed too");
    }
    assert!(figures["replay: events/s"].as_f64().unwrap() > 0.0);
    assert!(
        figures["ingest: messages/s at saturation"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}
