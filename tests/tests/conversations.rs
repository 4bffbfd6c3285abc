//! The conversation command handler against a real store: two handlers on one log stand for
//! two processes, which must re-decide on conflicts rather than lose or double a message.

use std::sync::Arc;

use chatledger_application::conversations::Conversations;
use chatledger_core::conversation::{stream_name, ConversationCommand, CustomerKey};
use chatledger_core::Metadata;
use chatledger_tests::db::Backend;
use chrono::Utc;

use uuid::Uuid;

fn receive(id: &str) -> ConversationCommand {
    ConversationCommand::ReceiveMessage {
        conversation: chatledger_tests::messages::partner_conversation("+919638120888"),
        message: Box::new(chatledger_tests::messages::text_message(
            id,
            "+919638120888",
            id,
        )),
        new_chat_id: Uuid::new_v4(),
        now: Utc::now(),
    }
}

async fn two_processes_deciding_on_one_conversation(backend: Backend) {
    let (_db, store) = backend.open().await;
    let processes = [
        Arc::new(Conversations::new(store.clone())),
        Arc::new(Conversations::new(store.clone())),
    ];
    let stream = stream_name("9099039188", &CustomerKey::Phone("+919638120888".into()));
    let mut tasks = Vec::new();
    for i in 0..60 {
        let handler = processes[i % 2].clone();
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            handler
                .handle(
                    &stream,
                    vec![receive(&format!("wamid.{i}"))],
                    &Metadata::by("test"),
                )
                .await
        }));
    }
    for task in tasks {
        task.await
            .unwrap()
            .expect("every message is recorded, retrying on conflicts");
    }
    // A redelivery to either process records nothing.
    let again = processes[1]
        .handle(&stream, vec![receive("wamid.0")], &Metadata::by("test"))
        .await
        .unwrap();
    assert!(again.recorded.is_empty());
    let events = store.read_stream(&stream, 0, 1000).await.unwrap();
    let opened = events
        .iter()
        .filter(|e| e.event_type == "ChatOpened")
        .count();
    let received = events
        .iter()
        .filter(|e| e.event_type == "MessageReceived")
        .count();
    assert_eq!((opened, received), (1, 60), "one chat, every message once");
}

chatledger_tests::on_both_backends!(two_processes_deciding_on_one_conversation);
