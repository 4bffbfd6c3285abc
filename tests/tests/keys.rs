//! The key store beside the log, on both backends: one key per stream however many ask at
//! once, a new key written with its stream's first events, and keys destroyed for good.

use std::sync::Arc;

use chatledger_core::{EventStore, ExpectedVersion, KeyStore, Metadata, NewEvent, SubjectKey};
use chatledger_tests::db::Backend;
use serde_json::json;
use uuid::Uuid;

fn key(n: u8) -> SubjectKey {
    SubjectKey {
        key_id: Uuid::new_v4().to_string(),
        key: [n; 32],
    }
}

fn event() -> NewEvent {
    NewEvent::new(
        Uuid::new_v4(),
        "Happened",
        json!({"sealed": "elsewhere"}),
        Metadata::by("test"),
    )
}

fn keys(store: &Arc<dyn EventStore>) -> &dyn KeyStore {
    store.keys().expect("the store keeps keys")
}

async fn racing_callers_all_get_the_first_key(backend: Backend) {
    let (_db, store) = backend.open().await;
    let mut racers = Vec::new();
    for n in 0..16u8 {
        let store = store.clone();
        racers.push(tokio::spawn(async move {
            keys(&store)
                .create_stream_key("conversation-c-+911", key(n))
                .await
                .unwrap()
        }));
    }
    let mut got = Vec::new();
    for racer in racers {
        got.push(racer.await.unwrap());
    }
    assert!(
        got.windows(2).all(|w| w[0] == w[1]),
        "one key for the stream"
    );
    let stored = keys(&store)
        .stream_key("conversation-c-+911")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, got[0]);
    assert_eq!(
        keys(&store).key_by_id(&stored.key_id).await.unwrap(),
        Some(stored.key)
    );
}

async fn a_new_key_is_written_with_the_first_events(backend: Backend) {
    let (_db, store) = backend.open().await;
    let stream = "conversation-c-+912";
    let first = key(1);
    let appended = keys(&store)
        .append_with_new_key(
            stream,
            ExpectedVersion::NoStream,
            vec![event()],
            first.clone(),
        )
        .await
        .unwrap()
        .expect("the stream had no key");
    assert_eq!(appended.stored.len(), 1);
    assert_eq!(
        keys(&store).stream_key(stream).await.unwrap(),
        Some(first.clone())
    );

    // Another key for the same stream is refused, and its events are not written.
    let refused = keys(&store)
        .append_with_new_key(stream, ExpectedVersion::Exact(0), vec![event()], key(2))
        .await
        .unwrap();
    assert!(refused.is_none());
    assert_eq!(store.read_stream(stream, 0, 10).await.unwrap().len(), 1);
    assert_eq!(keys(&store).stream_key(stream).await.unwrap(), Some(first));
}

async fn destroyed_keys_are_gone_and_others_stay(backend: Backend) {
    let (_db, store) = backend.open().await;
    let keys = keys(&store);
    let mine = ["conversation-a-+913", "conversation-b-+913"];
    for stream in mine {
        keys.create_stream_key(stream, key(3)).await.unwrap();
    }
    let other = keys
        .create_stream_key("conversation-a-+9139", key(4))
        .await
        .unwrap();
    let found = keys.keyed_streams_ending("-+913").await.unwrap();
    assert_eq!(
        found.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        mine
    );
    for (stream, key_id) in &found {
        keys.destroy_stream_key(stream).await.unwrap();
        assert_eq!(keys.stream_key(stream).await.unwrap(), None);
        assert_eq!(keys.key_by_id(key_id).await.unwrap(), None);
    }
    keys.destroy_stream_key(mine[0]).await.unwrap();
    keys.purge_destroyed_keys().await.unwrap();
    assert_eq!(
        keys.stream_key("conversation-a-+9139").await.unwrap(),
        Some(other)
    );
}

/// Many keys read at once (more than one read's worth), in the order asked, a destroyed or
/// unknown one as `None`: what opening a batch of events from many conversations relies on.
async fn many_keys_are_read_at_once(backend: Backend) {
    let (_db, store) = backend.open().await;
    let keys = keys(&store);
    let mut made = Vec::new();
    for n in 0..1_200u32 {
        let stream = format!("conversation-c-+91{n}");
        made.push((
            stream.clone(),
            keys.create_stream_key(&stream, key((n % 250) as u8))
                .await
                .unwrap(),
        ));
    }
    keys.destroy_stream_key(&made[7].0).await.unwrap();
    let mut asked: Vec<String> = made.iter().rev().map(|(_, k)| k.key_id.clone()).collect();
    asked.push("never-made".into());
    let found = keys.keys_by_id(&asked).await.unwrap();
    assert_eq!(found.len(), asked.len());
    for ((key_id, got), asked) in found.iter().zip(&asked) {
        assert_eq!(key_id, asked, "in the order asked");
        let expected = made
            .iter()
            .enumerate()
            .find(|(_, (_, k))| &k.key_id == asked)
            .filter(|(i, _)| *i != 7)
            .map(|(_, (_, k))| k.key);
        assert_eq!(*got, expected, "{asked}");
    }
}

/// Many first appends to one new stream at once, each with a key of its own, among plain
/// appends to other streams (so that they share the writer's groups): one key is kept, only
/// its caller's events are written, the others are told, and the plain appends are unharmed.
async fn racing_first_appends_keep_one_key(backend: Backend) {
    let (_db, store) = backend.open().await;
    let stream = "conversation-c-+914";
    let mut keyed = Vec::new();
    for n in 0..16u8 {
        let store = store.clone();
        keyed.push(tokio::spawn(async move {
            let mine = key(n);
            let answer = keys(&store)
                .append_with_new_key(stream, ExpectedVersion::Any, vec![event()], mine.clone())
                .await
                .unwrap();
            (mine, answer)
        }));
    }
    let mut plain = Vec::new();
    for n in 0..16 {
        let store = store.clone();
        plain.push(tokio::spawn(async move {
            store
                .append(
                    &format!("plain-{n}"),
                    ExpectedVersion::NoStream,
                    vec![event()],
                )
                .await
                .unwrap()
        }));
    }
    let mut winners = Vec::new();
    for racer in keyed {
        let (mine, answer) = racer.await.unwrap();
        if let Some(appended) = answer {
            assert_eq!(appended.stored.len(), 1);
            winners.push(mine);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "one caller's key is kept; the others are told"
    );
    assert_eq!(
        keys(&store).stream_key(stream).await.unwrap(),
        Some(winners[0].clone())
    );
    assert_eq!(
        store.read_stream(stream, 0, 100).await.unwrap().len(),
        1,
        "only the kept key's events are written"
    );
    for append in plain {
        assert_eq!(append.await.unwrap().stored.len(), 1);
    }
}

chatledger_tests::on_both_backends!(
    racing_callers_all_get_the_first_key,
    a_new_key_is_written_with_the_first_events,
    racing_first_appends_keep_one_key,
    destroyed_keys_are_gone_and_others_stay,
    many_keys_are_read_at_once,
);
