//! The transaction system's context changes.

use super::*;

#[test]
fn an_identity_field_change_replaces_the_open_chat() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let events = given(&history, change(&[("documents_status", "Approved")], 2));
    assert_eq!(
        events.iter().map(|e| e.event_type()).collect::<Vec<_>>(),
        vec![
            "ContextChanged",
            "SlaClockStopped",
            "ChatClosed",
            "ChatOpened"
        ],
        "the unanswered message's clock stops with the chat it belonged to"
    );
    assert!(
        matches!(&events[2], ConversationEvent::ChatClosed { chat_id, superseded_by, .. }
        if *chat_id == Uuid::from_u128(1) && *superseded_by == Uuid::from_u128(2))
    );
    assert!(
        matches!(&events[3], ConversationEvent::ChatOpened { reason: OpenReason::ContextChanged, previous_chat_id: Some(p), context, .. }
        if *p == Uuid::from_u128(1) && context["documents_status"] == "Approved")
    );
    // The next message joins the new chat.
    let history: Vec<_> = history.into_iter().chain(events).collect();
    let next = given(&history, receive("wamid.2", 3, "2026-11-22T11:05:00Z"));
    assert!(
        matches!(&next[..], [ConversationEvent::MessageReceived { chat_id, .. }, ConversationEvent::SlaClockStarted { .. }]
        if *chat_id == Uuid::from_u128(2))
    );
}

#[test]
fn other_fields_are_recorded_and_keep_the_chat() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let events = given(&history, change(&[("city", "Surat")], 2));
    assert!(
        matches!(&events[..], [ConversationEvent::ContextChanged { identity_changed: false, chat_id: Some(c), .. }]
        if *c == Uuid::from_u128(1))
    );
}

#[test]
fn the_same_change_again_changes_nothing() {
    let first = given(&[], change(&[("documents_status", "Pending")], 1));
    assert_eq!(first.len(), 1, "no chat yet: only the context is recorded");
    assert!(given(&first, change(&[("documents_status", "Pending")], 2)).is_empty());
    let back = given(&first, change(&[("documents_status", "Approved")], 3));
    assert_ne!(back[0].event_id("s"), first[0].event_id("s"));
}

#[test]
fn a_context_set_before_the_first_chat_becomes_its_context() {
    let history = given(&[], change(&[("documents_status", "Pending")], 9));
    let events = given(&history, receive("wamid.1", 1, "2026-11-22T12:00:00Z"));
    assert!(
        matches!(&events[0], ConversationEvent::ChatOpened { context, reason: OpenReason::FirstMessage, .. }
        if context["documents_status"] == "Pending")
    );
}
