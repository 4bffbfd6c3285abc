//! Assignment, tags and the SLA clock.

use super::*;

#[test]
fn assignment_then_reassignment_then_back_to_waiting() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let assigned = given(&history, assign(1, Some(exec(10, "Asha")), 100));
    assert!(
        matches!(&assigned[..], [ConversationEvent::ChatAssigned { executive, .. }] if executive.name == "Asha")
    );
    let history: Vec<_> = history.into_iter().chain(assigned).collect();
    assert_eq!(
        Conversation::fold(&history).chat.unwrap().status,
        ChatStatus::Assigned
    );
    assert!(
        given(&history, assign(1, Some(exec(10, "Asha")), 101)).is_empty(),
        "already hers"
    );
    let moved = given(&history, assign(1, Some(exec(11, "Ravi")), 102));
    assert!(
        matches!(&moved[..], [ConversationEvent::ChatReassigned { previous, executive: Some(e), .. }]
        if previous.name == "Asha" && e.name == "Ravi")
    );
    let history: Vec<_> = history.into_iter().chain(moved).collect();
    let waiting = given(&history, assign(1, None, 103));
    let history: Vec<_> = history.into_iter().chain(waiting).collect();
    let state = Conversation::fold(&history);
    assert_eq!(state.chat.as_ref().unwrap().status, ChatStatus::Open);
    assert!(state.chat.unwrap().assignee.is_none());
}

#[test]
fn only_the_open_chat_can_be_assigned() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let err = then_rejects(&history, assign(9, Some(exec(10, "Asha")), 1));
    assert_eq!(err, ConversationRejection::ChatNotOpen(Uuid::from_u128(9)));
}

#[test]
fn the_same_cause_gives_the_same_event_id() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let a = given(&history, assign(1, Some(exec(10, "Asha")), 100));
    let b = given(&history, assign(1, Some(exec(11, "Ravi")), 100));
    assert_eq!(
        a[0].event_id("s"),
        b[0].event_id("s"),
        "a second process deciding the same cause is a duplicate"
    );
}

#[test]
fn tags_come_from_the_catalog_and_the_system_tag_is_not_for_hands() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let state = Conversation::fold(&history);
    assert!(matches!(
        state.decide(tag(1, "VIP", true)),
        Err(ConversationRejection::UnknownTag { .. })
    ));
    assert!(matches!(
        state.decide(tag(1, AWAITING_CUSTOMER_TAG, true)),
        Err(ConversationRejection::SystemTag(_))
    ));
    assert!(matches!(
        state.decide(tag(1, AWAITING_CUSTOMER_TAG, false)),
        Err(ConversationRejection::SystemTag(_))
    ));
    let applied = given(&history, tag(1, "Payment", true));
    assert!(
        matches!(&applied[..], [ConversationEvent::TagApplied { tag, .. }] if tag == "Payment")
    );
    let history: Vec<_> = history.into_iter().chain(applied).collect();
    assert!(
        given(&history, tag(1, "Payment", true)).is_empty(),
        "already tagged"
    );
    assert!(
        given(&history, tag(1, "Documents", false)).is_empty(),
        "not tagged"
    );
    let removed = given(&history, tag(1, "Payment", false));
    assert!(matches!(
        &removed[..],
        [ConversationEvent::TagRemoved { .. }]
    ));
}

#[test]
fn the_sla_clock_runs_from_the_first_unanswered_message_until_an_answer() {
    use crate::sla::SlaLevel::{Alert, Escalation};
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let history: Vec<_> = history
        .clone()
        .into_iter()
        .chain(given(
            &history,
            receive("wamid.2", 9, "2026-11-22T10:01:00Z"),
        ))
        .collect();
    let clock = Conversation::fold(&history).sla.unwrap();
    assert_eq!(
        clock.customer_message, "wamid.1",
        "the first unanswered message starts it"
    );
    let alert = given(&history, raise(Alert, "wamid.1", 1));
    assert!(matches!(&alert[..], [ConversationEvent::SlaAlertRaised(_)]));
    let history: Vec<_> = history.into_iter().chain(alert).collect();
    assert!(
        given(&history, raise(Alert, "wamid.1", 1)).is_empty(),
        "raised once"
    );
    assert!(matches!(
        &given(&history, raise(Escalation, "wamid.1", 1))[..],
        [ConversationEvent::SlaEscalated(_)]
    ));
    // An executive's reply stops the clock: nothing more is raised for that message.
    let answered = given(&history, reply(1, 60, "2026-11-22T10:04:00Z"));
    let history: Vec<_> = history.into_iter().chain(answered).collect();
    assert!(Conversation::fold(&history).sla.is_none());
    assert!(
        given(&history, raise(Escalation, "wamid.1", 1)).is_empty(),
        "an answer that came first wins"
    );
    // The next unanswered message starts it again.
    let again = given(&history, receive("wamid.3", 9, "2026-11-22T10:06:00Z"));
    let history: Vec<_> = history.into_iter().chain(again).collect();
    assert_eq!(
        Conversation::fold(&history).sla.unwrap().customer_message,
        "wamid.3"
    );
}
