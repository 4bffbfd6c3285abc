//! Messages and receipts coming in.

use super::*;

#[test]
fn the_first_message_opens_a_chat() {
    let events = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    assert_eq!(events.len(), 3);
    assert!(
        matches!(&events[2], ConversationEvent::SlaClockStarted { customer_message, stakeholder, .. }
        if customer_message == "wamid.1" && stakeholder == "partner")
    );
    assert!(matches!(
        &events[0],
        ConversationEvent::ChatOpened { chat_id, reason: OpenReason::FirstMessage, previous_chat_id: None, .. }
            if *chat_id == Uuid::from_u128(1)
    ));
    assert!(
        matches!(&events[1], ConversationEvent::MessageReceived { chat_id, .. } if *chat_id == Uuid::from_u128(1))
    );
}

#[test]
fn later_messages_join_the_open_chat() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let events = given(&history, receive("wamid.2", 2, "2026-11-22T10:01:00Z"));
    assert_eq!(events.len(), 1);
    assert!(
        matches!(&events[0], ConversationEvent::MessageReceived { chat_id, .. } if *chat_id == Uuid::from_u128(1))
    );
}

#[test]
fn a_message_already_recorded_changes_nothing() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    assert!(given(&history, receive("wamid.1", 9, "2026-11-22T10:05:00Z")).is_empty());
}

#[test]
fn a_receipt_for_an_unknown_message_is_recorded_as_such() {
    let events = given(
        &[],
        ConversationCommand::RecordReceipt {
            receipt: Box::new(receipt("wamid.out", "delivered")),
            now: at("2026-11-22T10:00:00Z"),
        },
    );
    assert!(matches!(
        &events[..],
        [ConversationEvent::ReceiptRecorded {
            known_message: false,
            chat_id: None,
            ..
        }]
    ));
}

#[test]
fn each_status_of_a_message_is_recorded_once_in_any_order() {
    let now = at("2026-11-22T10:00:00Z");
    let read = given(
        &[],
        ConversationCommand::RecordReceipt {
            receipt: Box::new(receipt("w", "read")),
            now,
        },
    );
    let delivered = given(
        &read,
        ConversationCommand::RecordReceipt {
            receipt: Box::new(receipt("w", "delivered")),
            now,
        },
    );
    assert_eq!(
        delivered.len(),
        1,
        "an earlier status arriving late is still recorded"
    );
    let history: Vec<_> = read.into_iter().chain(delivered).collect();
    assert!(given(
        &history,
        ConversationCommand::RecordReceipt {
            receipt: Box::new(receipt("w", "read")),
            now
        }
    )
    .is_empty());
}

#[test]
fn a_message_without_an_id_is_refused() {
    let err = then_rejects(&[], receive("", 1, "2026-11-22T10:00:00Z"));
    assert_eq!(err, ConversationRejection::MissingMessageId);
}
