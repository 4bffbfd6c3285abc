//! No single event stops the read side: an event a read model cannot apply is quarantined for
//! that read model, the read model goes on, readiness says so, and a retry after the fix
//! applies it (ADR 10). On both backends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatledger_core::conversation::DecodedEvent;
use chatledger_core::{EventStore, ExpectedVersion, Metadata, NewEvent};
use chatledger_projections::quarantine::{self, Retried};
use chatledger_projections::read_db::ReadTx;
use chatledger_projections::runner::{rebuild, run_live, Live, ProjectionError, Projector};
use chatledger_projections::tail::LogTail;
use chatledger_tests::db::Backend;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

/// A read model of notes, one row per `Noted` event. Until it is "fixed", it panics on a note
/// that says "poison" (a defect in the fold), and its table refuses a note longer than 20
/// characters (a value the database will not store, as a NUL is on PostgreSQL).
struct Notes {
    fixed: Arc<AtomicBool>,
}

#[async_trait]
impl Projector for Notes {
    fn name(&self) -> &'static str {
        "notes"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["notes"]
    }
    fn schema(&self, suffix: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE notes{suffix} (position BIGINT PRIMARY KEY, text TEXT NOT NULL CHECK (length(text) <= 20))"
        )]
    }
    fn wants(&self, event_type: &str) -> bool {
        event_type == "Noted"
    }
    async fn apply(
        &self,
        tx: &mut ReadTx,
        suffix: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        let text = event.data["text"].as_str().unwrap_or_default().to_owned();
        let fixed = self.fixed.load(Ordering::SeqCst);
        if text == "poison" && !fixed {
            panic!("the fold cannot take this note");
        }
        let text = if fixed {
            text.chars().take(20).collect()
        } else {
            text
        };
        tx.execute(
            &format!("INSERT INTO notes{suffix} (position, text) VALUES ($1, $2)"),
            &[event.position.into(), text.into()],
        )
        .await?;
        Ok(())
    }
}

async fn note(store: &dyn EventStore, text: &str) {
    store
        .append(
            &format!("notes-{}", Uuid::new_v4()),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                Uuid::new_v4(),
                "Noted",
                json!({ "text": text }),
                Metadata::by("test"),
            )],
        )
        .await
        .unwrap();
}

async fn notes_in(db: &chatledger_projections::read_db::ReadDb) -> Vec<String> {
    db.fetch_all("SELECT text FROM notes ORDER BY position", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.text(0).unwrap())
        .collect()
}

async fn poison_is_quarantined_and_the_read_model_goes_on(backend: Backend) {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (test_db, store) = backend.open().await;
    let db = test_db.read_db().await;
    let fixed = Arc::new(AtomicBool::new(false));
    let notes: Arc<dyn Projector> = Arc::new(Notes {
        fixed: fixed.clone(),
    });
    note(store.as_ref(), "first").await;
    note(store.as_ref(), "poison").await;
    note(store.as_ref(), "a note far too long for its column").await;
    note(store.as_ref(), "last").await;
    let head = store.head_position().await.unwrap();

    let (stop, stopped) = watch::channel(false);
    let (progress, mut reached) = watch::channel(0);
    tokio::spawn(run_live(
        LogTail::new(store.clone()),
        db.clone(),
        vec![Live {
            projector: notes.clone(),
            progress,
        }],
        stopped,
    ));
    tokio::time::timeout(Duration::from_secs(30), reached.wait_for(|p| *p >= head))
        .await
        .expect("the read model goes past the events it cannot apply")
        .unwrap();
    assert_eq!(notes_in(&db).await, ["first", "last"]);
    let quarantined = quarantine::list(&db, None).await.unwrap();
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(quarantined[0].error.contains("panicked"), "{quarantined:?}");
    assert_eq!(quarantined[0].event_type, "Noted");
    assert!(quarantined.iter().all(|q| q.read_model == "notes"));
    assert_eq!(
        quarantine::counts(&db).await.unwrap().get("notes"),
        Some(&2)
    );

    // Events after the quarantined ones keep coming through, live.
    note(store.as_ref(), "after").await;
    let head = store.head_position().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), reached.wait_for(|p| *p >= head))
        .await
        .expect("the read model follows the log")
        .unwrap();
    assert_eq!(notes_in(&db).await, ["first", "last", "after"]);

    // Before the fix, a retry keeps them; after it, they apply and leave the quarantine.
    let again = quarantine::retry(store.as_ref(), &db, std::slice::from_ref(&notes))
        .await
        .unwrap();
    assert!(again
        .iter()
        .all(|(_, outcome)| matches!(outcome, Retried::StillFails(_))));
    assert_eq!(quarantine::list(&db, None).await.unwrap().len(), 2);
    fixed.store(true, Ordering::SeqCst);
    let retried = quarantine::retry(store.as_ref(), &db, std::slice::from_ref(&notes))
        .await
        .unwrap();
    assert!(
        retried.iter().all(|(_, o)| *o == Retried::Applied),
        "{retried:?}"
    );
    assert!(quarantine::list(&db, None).await.unwrap().is_empty());
    assert_eq!(
        notes_in(&db).await,
        ["first", "poison", "a note far too long ", "last", "after"]
    );
    stop.send_replace(true);

    // A rebuild under the old code quarantines for the new generation and still switches.
    fixed.store(false, Ordering::SeqCst);
    let rebuilt = rebuild(store.clone(), &db, std::slice::from_ref(&notes), |_, _| {})
        .await
        .expect("a rebuild goes past what it cannot apply");
    assert_eq!(rebuilt.generations, [("notes", 2)]);
    assert_eq!(notes_in(&db).await, ["first", "last", "after"]);
    let quarantined = quarantine::list(&db, None).await.unwrap();
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(quarantined.iter().all(|q| q.generation == 2));
}

chatledger_tests::on_both_backends!(poison_is_quarantined_and_the_read_model_goes_on);
