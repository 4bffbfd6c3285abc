//! The conversation command handler against a real store: two handlers on one log stand for
//! two processes, which must re-decide on conflicts rather than lose or double a message.

use std::sync::Arc;

use chatledger_application::conversations::Conversations;
use chatledger_core::conversation::{
    stream_name, ConversationCommand, ConversationEvent, CustomerKey, Template,
};
use chatledger_core::Metadata;
use chatledger_tests::db::{Backend, TestDb};
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

fn resolve(chat_id: Uuid) -> ConversationCommand {
    ConversationCommand::Resolve {
        chat_id,
        rating_message_id: Uuid::new_v4(),
        rating_template: Template {
            name: "rating".into(),
            language: "en".into(),
            params: vec![],
        },
        rating_at_most_every: chrono::Duration::hours(24),
        by: "lead".into(),
        now: Utc::now(),
    }
}

/// Two handlers on one log, as two processes, and the customer's stream.
async fn two_processes(backend: Backend) -> (TestDb, Conversations, Conversations, String) {
    let (db, store) = backend.open().await;
    let stream = stream_name("9099039188", &CustomerKey::Phone("+919638120888".into()));
    (
        db,
        Conversations::new(store.clone()),
        Conversations::new(store),
        stream,
    )
}

fn opened(events: &[ConversationEvent]) -> Vec<Uuid> {
    events
        .iter()
        .filter_map(|e| match e {
            ConversationEvent::ChatOpened { chat_id, .. } => Some(*chat_id),
            _ => None,
        })
        .collect()
}

/// What `process` records for `command` on `stream`, which it must carry out.
async fn record(
    process: &Conversations,
    stream: &str,
    command: ConversationCommand,
) -> Vec<ConversationEvent> {
    process
        .handle(stream, vec![command], &Metadata::by("test"))
        .await
        .expect("the command is carried out")
        .recorded
}

/// A process decides on the conversation as it last read it, without reading the log first.
/// When what it decided was already recorded by another process (a redelivery that reached
/// the other one first), the store answers as for the first delivery: the conversation has
/// moved on further than that one message, and the next decision must see all of it.
async fn a_redelivery_recorded_elsewhere_brings_the_conversation_up_to_date(backend: Backend) {
    let (_db, one, other, stream) = two_processes(backend).await;
    let first = record(&one, &stream, receive("wamid.1")).await;
    let chat_id = opened(&first)[0];
    // The other process records the second message and resolves the chat.
    record(&other, &stream, receive("wamid.2")).await;
    record(&other, &stream, resolve(chat_id)).await;
    // The second message redelivered to the first process: nothing new.
    let again = record(&one, &stream, receive("wamid.2")).await;
    assert!(again.is_empty(), "{again:?}");
    // The third message comes after the resolution: it opens a new chat.
    let third = record(&one, &stream, receive("wamid.3")).await;
    let opened = opened(&third);
    assert_eq!(
        opened.len(),
        1,
        "a message after the chat was resolved opens a new one: {third:?}"
    );
    assert_ne!(opened[0], chat_id);
}

/// A command the conversation as this process last read it would refuse (a chat it has not
/// seen) is decided again on what the log holds: another process opened that chat.
async fn a_command_about_what_another_process_recorded_is_carried_out(backend: Backend) {
    let (_db, one, other, stream) = two_processes(backend).await;
    let first_chat = opened(&record(&one, &stream, receive("wamid.1")).await)[0];
    // The other process resolves that chat; the customer writes again, to the other process.
    record(&other, &stream, resolve(first_chat)).await;
    let second_chat = opened(&record(&other, &stream, receive("wamid.2")).await)[0];
    // A lead resolves the new chat through the first process: the chat the other process
    // opened is known once the log is read.
    let resolved = record(&one, &stream, resolve(second_chat)).await;
    assert!(
        resolved.iter().any(
            |e| matches!(e, ConversationEvent::ChatResolved { chat_id, .. } if *chat_id == second_chat)
        ),
        "{resolved:?}"
    );
}

chatledger_tests::on_both_backends!(
    two_processes_deciding_on_one_conversation,
    a_redelivery_recorded_elsewhere_brings_the_conversation_up_to_date,
    a_command_about_what_another_process_recorded_is_carried_out
);
