use super::*;
use serde_json::json;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn message(id: &str, text: &str) -> InboundMessage {
    InboundMessage {
        provider: "meta".into(),
        provider_message_id: id.into(),
        kind: "text".into(),
        text: Some(text.into()),
        media: None,
        details: None,
        context: None,
        referral: None,
        customer: Customer {
            phone: Some("+919638120888".into()),
            user_id: None,
            name: Some("Asha".into()),
        },
        sent_at: None,
        errors: vec![],
        raw: json!({"id": id}),
    }
}

fn receipt(id: &str, status: &str) -> Receipt {
    Receipt {
        provider: "meta".into(),
        provider_message_id: id.into(),
        status: status.into(),
        at: None,
        recipient: Customer::default(),
        errors: vec![],
        callback: None,
        raw: json!({"id": id, "status": status}),
    }
}

/// given `history`, when `command`, then the decision.
fn given(history: &[ConversationEvent], command: ConversationCommand) -> Vec<ConversationEvent> {
    Conversation::fold(history)
        .decide(command)
        .expect("accepted")
}

/// given `history`, when `command`, then it is refused: why.
fn then_rejects(
    history: &[ConversationEvent],
    command: ConversationCommand,
) -> ConversationRejection {
    match Conversation::fold(history).decide(command) {
        Ok(events) => panic!("expected a refusal, the decision was {events:?}"),
        Err(rejection) => rejection,
    }
}

fn receive(id: &str, chat: u128, now: &str) -> ConversationCommand {
    ConversationCommand::ReceiveMessage {
        conversation: ConversationRef {
            channel: "9099039188".into(),
            channel_number: "919099039188".into(),
            stakeholder: "partner".into(),
            customer: CustomerKey::Phone("+919638120888".into()),
        },
        message: Box::new(message(id, "hi")),
        new_chat_id: Uuid::from_u128(chat),
        now: at(now),
    }
}

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

fn change(fields: &[(&str, &str)], chat: u128) -> ConversationCommand {
    ConversationCommand::ChangeContext {
        conversation: ConversationRef {
            channel: "9099039188".into(),
            channel_number: "919099039188".into(),
            stakeholder: "partner".into(),
            customer: CustomerKey::Phone("+919638120888".into()),
        },
        changes: fields
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
        identity_fields: vec!["documents_status".into(), "dco_status".into()],
        new_chat_id: Uuid::from_u128(chat),
        now: at("2026-11-22T11:00:00Z"),
    }
}

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

fn exec(n: u128, name: &str) -> ExecutiveRef {
    ExecutiveRef {
        id: Uuid::from_u128(n),
        name: name.into(),
    }
}

fn assign(chat: u128, to: Option<ExecutiveRef>, cause: u128) -> ConversationCommand {
    ConversationCommand::Assign {
        chat_id: Uuid::from_u128(chat),
        executive: to,
        rule: AssignmentRule::RoundRobin,
        candidates: vec![exec(10, "Asha"), exec(11, "Ravi")],
        by: None,
        cause: Uuid::from_u128(cause),
        now: at("2026-11-22T10:01:00Z"),
    }
}

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

fn tag(chat: u128, tag: &str, apply: bool) -> ConversationCommand {
    let (chat_id, tag, by, now) = (
        Uuid::from_u128(chat),
        tag.to_owned(),
        "asha".to_owned(),
        at("2026-11-22T10:02:00Z"),
    );
    if apply {
        ConversationCommand::ApplyTag {
            chat_id,
            tag,
            catalog: vec!["Payment".into(), "Documents".into()],
            by,
            now,
        }
    } else {
        ConversationCommand::RemoveTag {
            chat_id,
            tag,
            by,
            now,
        }
    }
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

fn reply(chat: u128, message: u128, now: &str) -> ConversationCommand {
    ConversationCommand::SendReply {
        chat_id: Uuid::from_u128(chat),
        message_id: Uuid::from_u128(message),
        text: "on its way".into(),
        by: "asha".into(),
        now: at(now),
    }
}

#[test]
fn replies_only_within_24_hours_of_the_customers_last_message() {
    // The customer's message was sent at 10:00 (received_at; sent_at not given).
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let queued = given(&history, reply(1, 50, "2026-11-23T09:59:59Z"));
    assert!(
        matches!(&queued[..], [ConversationEvent::ReplyQueued { kind, .. }, ConversationEvent::SlaClockStopped { reason: SlaStop::Answered, .. }]
        if kind == "text")
    );
    let late = then_rejects(&history, reply(1, 51, "2026-11-23T10:00:00Z"));
    assert!(
        matches!(late, ConversationRejection::OutsideServiceWindow(Some(_))),
        "{late}"
    );
    assert!(late.to_string().contains("send a template"));
    let template = ConversationCommand::SendTemplate {
        chat_id: Uuid::from_u128(1),
        message_id: Uuid::from_u128(52),
        template: Template {
            name: "follow_up".into(),
            language: "en".into(),
            params: vec![],
        },
        withdrawn: None,
        by: "asha".into(),
        now: at("2026-11-25T10:00:00Z"),
    };
    assert!(
        matches!(&given(&history, template)[..], [ConversationEvent::ReplyQueued { kind, .. }, ..] if kind == "template")
    );
}

#[test]
fn a_dispatch_outcome_is_recorded_once_and_receipts_find_the_message() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let queued = given(&history, reply(1, 50, "2026-11-22T10:01:00Z"));
    let history: Vec<_> = history.into_iter().chain(queued).collect();
    assert_eq!(
        Conversation::fold(&history).chat.unwrap().status,
        ChatStatus::AwaitingCustomer
    );
    let sent = ConversationCommand::RecordDispatch {
        message_id: Uuid::from_u128(50),
        outcome: DispatchOutcome::Sent {
            provider_message_id: "wamid.out".into(),
        },
        attempts: 3,
        now: at("2026-11-22T10:01:01Z"),
    };
    let dispatched = given(&history, sent.clone());
    assert!(matches!(
        &dispatched[..],
        [ConversationEvent::MessageDispatched { attempts: 3, .. }]
    ));
    let history: Vec<_> = history.into_iter().chain(dispatched).collect();
    assert!(given(&history, sent).is_empty(), "one outcome per message");
    let read = given(
        &history,
        ConversationCommand::RecordReceipt {
            receipt: Box::new(receipt("wamid.out", "read")),
            now: at("2026-11-22T10:02:00Z"),
        },
    );
    assert!(
        matches!(&read[..], [ConversationEvent::ReceiptRecorded { known_message: true, chat_id: Some(c), .. }] if *c == Uuid::from_u128(1))
    );
    // The customer answers: the chat is no longer awaiting them.
    let answered = given(&history, receive("wamid.2", 9, "2026-11-22T10:05:00Z"));
    let history: Vec<_> = history.into_iter().chain(answered).collect();
    assert_eq!(
        Conversation::fold(&history).chat.unwrap().status,
        ChatStatus::Open
    );
}

fn attempt(message: u128, attempt: u32) -> ConversationCommand {
    ConversationCommand::RecordDispatchAttempt {
        message_id: Uuid::from_u128(message),
        attempt,
        now: at("2026-11-22T10:01:01Z"),
    }
}

#[test]
fn each_try_is_recorded_once_and_none_after_the_outcome() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let queued = given(&history, reply(1, 50, "2026-11-22T10:01:00Z"));
    let history: Vec<_> = history.into_iter().chain(queued).collect();
    let first = given(&history, attempt(50, 1));
    assert!(matches!(
        &first[..],
        [ConversationEvent::DispatchAttempted { attempt: 1, .. }]
    ));
    let history: Vec<_> = history.into_iter().chain(first).collect();
    assert!(
        given(&history, attempt(50, 1)).is_empty(),
        "a try another process recorded is not recorded (nor sent) again"
    );
    assert_eq!(given(&history, attempt(50, 2)).len(), 1, "a next try is");
    let sent = given(
        &history,
        ConversationCommand::RecordDispatch {
            message_id: Uuid::from_u128(50),
            outcome: DispatchOutcome::Sent {
                provider_message_id: "wamid.out".into(),
            },
            attempts: 1,
            now: at("2026-11-22T10:01:02Z"),
        },
    );
    let history: Vec<_> = history.into_iter().chain(sent).collect();
    assert!(
        given(&history, attempt(50, 2)).is_empty(),
        "nothing is tried once the outcome is known"
    );
    assert_eq!(
        then_rejects(&history, attempt(99, 1)).code(),
        "UNKNOWN_MESSAGE"
    );
}

#[test]
fn a_try_that_will_be_made_again_says_when_and_only_for_the_latest_try() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let queued = given(&history, reply(1, 50, "2026-11-22T10:01:00Z"));
    let history: Vec<_> = history.into_iter().chain(queued).collect();
    let tried: Vec<_> = [attempt(50, 1), attempt(50, 2)]
        .into_iter()
        .scan(history, |history, command| {
            let events = given(history, command);
            history.extend(events);
            Some(history.clone())
        })
        .last()
        .unwrap();
    let retrying = |attempts: u32| ConversationCommand::RecordDispatch {
        message_id: Uuid::from_u128(50),
        outcome: DispatchOutcome::Retrying {
            code: Some(130429),
            error: "Rate limit hit".into(),
            retry_at: at("2026-11-22T10:02:00Z"),
        },
        attempts,
        now: at("2026-11-22T10:01:30Z"),
    };
    assert!(
        given(&tried, retrying(1)).is_empty(),
        "a failure of an older try says nothing once a newer one was made"
    );
    let recorded = given(&tried, retrying(2));
    assert!(matches!(
        &recorded[..],
        [ConversationEvent::DispatchRetrying {
            attempt: 2,
            code: Some(130429),
            ..
        }]
    ));
    assert!(
        !Conversation::fold(&[tried.clone(), recorded].concat()).outbound[&Uuid::from_u128(50)]
            .settled,
        "still to be sent"
    );
}

#[test]
fn a_receipt_echoing_our_id_settles_a_try_whose_outcome_was_never_recorded() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let queued = given(&history, reply(1, 50, "2026-11-22T10:01:00Z"));
    let history: Vec<_> = history.into_iter().chain(queued).collect();
    let tried = given(&history, attempt(50, 1));
    let history: Vec<_> = history.into_iter().chain(tried).collect();
    // The sender stopped after the provider accepted it; the provider's receipt names it.
    let mut echoed = receipt("wamid.out", "sent");
    echoed.callback = Some(Uuid::from_u128(50).to_string());
    let recorded = given(
        &history,
        ConversationCommand::RecordReceipt {
            receipt: Box::new(echoed.clone()),
            now: at("2026-11-22T10:01:05Z"),
        },
    );
    assert!(
        matches!(&recorded[..], [
            ConversationEvent::MessageDispatched { message_id, provider_message_id, attempts: 1, .. },
            ConversationEvent::ReceiptRecorded { known_message: true, chat_id: Some(c), .. },
        ] if *message_id == Uuid::from_u128(50) && provider_message_id == "wamid.out" && *c == Uuid::from_u128(1)),
        "{recorded:?}"
    );
    let history: Vec<_> = history.into_iter().chain(recorded).collect();
    assert!(
        given(&history, attempt(50, 2)).is_empty(),
        "settled: never sent again"
    );
    // A later receipt of the same message finds it by the provider's id, as usual.
    let mut delivered = echoed;
    delivered.status = "delivered".into();
    assert!(matches!(
        &given(
            &history,
            ConversationCommand::RecordReceipt {
                receipt: Box::new(delivered),
                now: at("2026-11-22T10:01:09Z")
            }
        )[..],
        [ConversationEvent::ReceiptRecorded {
            known_message: true,
            ..
        }]
    ));
}

fn resolve(chat: u128, now: &str) -> ConversationCommand {
    ConversationCommand::Resolve {
        chat_id: Uuid::from_u128(chat),
        rating_message_id: Uuid::from_u128(700),
        rating_template: Template {
            name: "rating_request".into(),
            language: "en".into(),
            params: vec![],
        },
        rating_at_most_every: chrono::Duration::hours(1),
        by: "asha".into(),
        now: at(now),
    }
}

fn customer_says(id: &str, text: &str, chat: u128) -> ConversationCommand {
    let mut m = message(id, text);
    m.sent_at = Some(at("2026-11-22T10:10:00Z"));
    ConversationCommand::ReceiveMessage {
        conversation: ConversationRef {
            channel: "9099039188".into(),
            channel_number: "919099039188".into(),
            stakeholder: "partner".into(),
            customer: CustomerKey::Phone("+919638120888".into()),
        },
        message: Box::new(m),
        new_chat_id: Uuid::from_u128(chat),
        now: at("2026-11-22T10:10:00Z"),
    }
}

#[test]
fn resolve_then_rating_then_a_new_chat() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let resolved = given(&history, resolve(1, "2026-11-22T10:05:00Z"));
    assert!(
        matches!(&resolved[..], [ConversationEvent::SlaClockStopped { reason: SlaStop::Resolved, .. }, ConversationEvent::ChatResolved { .. },
        ConversationEvent::ReplyQueued { purpose: OutboundPurpose::RatingRequest, text: Some(t), .. }] if t == RATING_REQUEST_TEXT)
    );
    let history: Vec<_> = history.into_iter().chain(resolved).collect();
    let rated = given(&history, customer_says("wamid.r", " 4 ", 2));
    assert!(
        matches!(&rated[..], [ConversationEvent::MessageReceived { chat_id, .. }, ConversationEvent::ChatRated { rating: 4, .. }]
        if *chat_id == Uuid::from_u128(1))
    );
    let history: Vec<_> = history.into_iter().chain(rated).collect();
    let after = given(&history, customer_says("wamid.h", "hello", 3));
    assert!(
        matches!(&after[0], ConversationEvent::ChatOpened { reason: OpenReason::AfterResolution, previous_chat_id: Some(p), .. }
        if *p == Uuid::from_u128(1))
    );
}

#[test]
fn anything_but_a_rating_after_resolution_opens_a_new_chat() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let resolved = given(&history, resolve(1, "2026-11-22T10:05:00Z"));
    let history: Vec<_> = history.into_iter().chain(resolved).collect();
    for text in ["hello", "7", "4 stars please", "0"] {
        let events = given(&history, customer_says("wamid.x", text, 5));
        assert!(
            matches!(
                &events[0],
                ConversationEvent::ChatOpened {
                    reason: OpenReason::AfterResolution,
                    ..
                }
            ),
            "{text}"
        );
    }
}

#[test]
fn outside_the_window_the_rating_request_is_a_template() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let resolved = given(&history, resolve(1, "2026-11-24T10:00:00Z"));
    assert!(
        matches!(resolved.last().unwrap(), ConversationEvent::ReplyQueued { kind, template: Some(t), .. } if kind == "template" && t.name == "rating_request")
    );
}

fn raise(level: crate::sla::SlaLevel, customer_message: &str, chat: u128) -> ConversationCommand {
    ConversationCommand::RaiseSla {
        level,
        breach: SlaBreach {
            chat_id: Uuid::from_u128(chat),
            customer_message: customer_message.into(),
            clock_started_at: at("2026-11-22T10:00:00Z"),
            due_at: at("2026-11-22T10:03:00Z"),
            fired_at: at("2026-11-22T10:03:00Z"),
            policy_version: 0,
            threshold_seconds: 180,
            notification: None,
        },
    }
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

#[test]
fn a_message_without_an_id_is_refused() {
    let err = then_rejects(&[], receive("", 1, "2026-11-22T10:00:00Z"));
    assert_eq!(err, ConversationRejection::MissingMessageId);
}

/// One event of every variant, as the log would hold them.
fn one_of_each() -> Vec<ConversationEvent> {
    use ConversationEvent as E;
    let t = at("2026-11-22T10:00:00Z");
    let chat_id = Uuid::from_u128(1);
    let conversation = ConversationRef {
        channel: "9099039188".into(),
        channel_number: "919099039188".into(),
        stakeholder: "partner".into(),
        customer: CustomerKey::Phone("+919638120888".into()),
    };
    let asha = ExecutiveRef {
        id: Uuid::from_u128(2),
        name: "asha".into(),
    };
    let breach = SlaBreach {
        chat_id,
        customer_message: "wamid.1".into(),
        clock_started_at: t,
        due_at: t,
        fired_at: t,
        policy_version: 3,
        threshold_seconds: 180,
        notification: Some(Notification {
            message_id: Uuid::from_u128(3),
            to: "+919000000777".into(),
            template: Template {
                name: "sla_alert".into(),
                language: "en".into(),
                params: vec!["x".into()],
            },
        }),
    };
    vec![
        E::ChatOpened {
            chat_id,
            conversation: conversation.clone(),
            reason: OpenReason::ContextChanged,
            context: json!({"documents_status": "Approved"}),
            previous_chat_id: Some(Uuid::from_u128(9)),
            opened_at: t,
        },
        E::MessageReceived {
            chat_id,
            received_at: t,
            message: Box::new(message("wamid.1", "hi")),
        },
        E::ReceiptRecorded {
            chat_id: Some(chat_id),
            known_message: true,
            received_at: t,
            receipt: Box::new(receipt("wamid.out", "read")),
        },
        E::ContextChanged {
            conversation,
            changes: json!({"city": "Surat"}).as_object().unwrap().clone(),
            previous: json!({"city": null}).as_object().unwrap().clone(),
            context: json!({"city": "Surat"}),
            identity_fields: vec!["documents_status".into()],
            identity_changed: false,
            chat_id: Some(chat_id),
            changed_at: t,
        },
        E::ChatClosed {
            chat_id,
            reason: CloseReason::ContextChanged,
            superseded_by: Uuid::from_u128(4),
            closed_at: t,
        },
        E::ChatAssigned {
            chat_id,
            executive: asha.clone(),
            rule: AssignmentRule::RoundRobin,
            candidates: vec![asha.clone()],
            by: None,
            cause: Uuid::from_u128(5),
            assigned_at: t,
        },
        E::ChatReassigned {
            chat_id,
            executive: None,
            previous: asha,
            rule: AssignmentRule::AssigneeLeft,
            candidates: vec![],
            by: Some("lead".into()),
            cause: Uuid::from_u128(6),
            assigned_at: t,
        },
        E::TagApplied {
            chat_id,
            tag: "Payment".into(),
            by: "asha".into(),
            at: t,
        },
        E::TagRemoved {
            chat_id,
            tag: "Payment".into(),
            by: "asha".into(),
            at: t,
        },
        E::ReplyQueued {
            chat_id,
            message_id: Uuid::from_u128(7),
            to: CustomerKey::UserId("IN.1".into()),
            kind: "text".into(),
            text: Some("on it".into()),
            template: None,
            media: None,
            purpose: OutboundPurpose::Reply,
            by: "asha".into(),
            queued_at: t,
        },
        E::ReplyQueued {
            chat_id,
            message_id: Uuid::from_u128(9),
            to: CustomerKey::UserId("IN.1".into()),
            kind: "document".into(),
            text: Some("your invoice".into()),
            template: None,
            media: Some(stored_pdf()),
            purpose: OutboundPurpose::Reply,
            by: "asha".into(),
            queued_at: t,
        },
        E::MediaStored {
            chat_id,
            message: "wamid.1".into(),
            index: 0,
            media: stored_pdf(),
            stored_at: t,
        },
        E::ForwardedToAgent {
            chat_id,
            message: "wamid.1".into(),
            tenant: "onewaycab".into(),
            genesys_message_id: Some("c327c2078ca056db130c55ce648d9fa2".into()),
            attempts: 1,
            forwarded_at: t,
        },
        E::ForwardToAgentFailed {
            chat_id,
            message: "wamid.2".into(),
            tenant: "onewaycab".into(),
            code: Some("InvalidMessageStructure".into()),
            reason: "should have required property 'content'".into(),
            attempts: 1,
            failed_at: t,
        },
        E::GenesysConversationMapped {
            chat_id,
            tenant: "onewaycab".into(),
            conversation_id: "d06cb41e-f938-4dcf-b823-c8af1a39d7e5".into(),
            mapped_at: t,
        },
        E::ReceiptForwardedToAgent {
            chat_id,
            message_id: Uuid::from_u128(7),
            tenant: "onewaycab".into(),
            status: "Failed".into(),
            accepted: false,
            reason: Some("(RateLimited) you have reached your limit".into()),
            forwarded_at: t,
        },
        E::MediaFetchFailed {
            chat_id,
            message: "wamid.1".into(),
            index: 1,
            attempt: 2,
            code: Some(131052),
            reason: "Media download error".into(),
            retryable: true,
            retry_at: Some(t),
            failed_at: t,
        },
        E::ChatResolved {
            chat_id,
            by: "asha".into(),
            resolved_at: t,
        },
        E::SlaClockStarted {
            chat_id,
            stakeholder: "partner".into(),
            customer_message: "wamid.1".into(),
            started_at: t,
        },
        E::SlaClockStopped {
            chat_id,
            customer_message: "wamid.1".into(),
            reason: SlaStop::Answered,
            stopped_at: t,
        },
        E::SlaAlertRaised(breach.clone()),
        E::SlaEscalated(SlaBreach {
            notification: None,
            ..breach
        }),
        E::ChatRated {
            chat_id,
            rating: 5,
            provider_message_id: "wamid.9".into(),
            rated_at: t,
        },
        E::DispatchAttempted {
            chat_id,
            message_id: Uuid::from_u128(7),
            attempt: 1,
            attempted_at: t,
        },
        E::DispatchRetrying {
            chat_id,
            message_id: Uuid::from_u128(7),
            attempt: 1,
            code: Some(130429),
            error: "Rate limit hit".into(),
            retry_at: t,
        },
        E::MessageDispatched {
            chat_id,
            message_id: Uuid::from_u128(7),
            provider_message_id: "wamid.out".into(),
            attempts: 1,
            dispatched_at: t,
        },
        E::MessageDispatchFailed {
            chat_id,
            message_id: Uuid::from_u128(8),
            code: Some(131047),
            error: "Re-engagement message".into(),
            permanent: true,
            attempts: 1,
            failed_at: t,
        },
        E::PersonalDataErased {
            customer: CustomerKey::Phone("+919638120888".into()),
            key_id: "k".into(),
            by: "dpo".into(),
            erased_at: t,
        },
    ]
}

#[test]
fn every_variant_round_trips_and_its_type_is_in_the_list() {
    let events = one_of_each();
    let mut types: Vec<&str> = events.iter().map(ConversationEvent::event_type).collect();
    types.sort_unstable();
    types.dedup();
    let mut listed = ConversationEvent::TYPES.to_vec();
    listed.sort_unstable();
    assert_eq!(
        types, listed,
        "one event of each variant, each type listed once"
    );
    for event in &events {
        let new = event.to_new_event("conversation-x-+91", Metadata::by("test"));
        assert_eq!(new.event_type, event.event_type());
        let recorded = RecordedEvent {
            event_id: new.event_id,
            stream: "conversation-x-+91".into(),
            version: 0,
            position: 1,
            event_type: new.event_type.clone(),
            schema_version: 1,
            data: new.data.clone(),
            metadata: new.metadata.clone(),
            recorded_at: at("2026-11-22T10:00:00Z"),
            hash: crate::EventHash::GENESIS,
        };
        assert_eq!(
            ConversationEvent::from_recorded(&recorded)
                .unwrap()
                .as_ref(),
            Some(event),
            "{}",
            event.event_type()
        );
    }
}

#[test]
fn events_round_trip_through_the_envelope_with_stable_ids() {
    let events = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    for event in &events {
        let new = event.to_new_event("conversation-x-+91", Metadata::by("test"));
        assert_eq!(new.event_id, event.event_id("conversation-x-+91"));
        assert_ne!(
            new.event_id,
            event.event_id("conversation-y-+91"),
            "ids differ per stream"
        );
        let recorded = RecordedEvent {
            event_id: new.event_id,
            stream: "conversation-x-+91".into(),
            version: 0,
            position: 1,
            event_type: new.event_type.clone(),
            schema_version: 1,
            data: new.data.clone(),
            metadata: new.metadata.clone(),
            recorded_at: at("2026-11-22T10:00:00Z"),
            hash: crate::EventHash::GENESIS,
        };
        assert_eq!(
            ConversationEvent::from_recorded(&recorded)
                .unwrap()
                .as_ref(),
            Some(event)
        );
    }
    assert_eq!(
        events[1].to_new_event("s", Metadata::default()).data["text"],
        "hi"
    );
}

fn stored_pdf() -> crate::media::StoredMedia {
    crate::media::StoredMedia {
        key: format!("conversation-partner-+919638120888/{}", "ab".repeat(32)),
        sha256: "ab".repeat(32),
        size: 1234,
        mime: "application/pdf".into(),
        filename: Some("invoice.pdf".into()),
    }
}

fn record_media(
    message: &str,
    index: u32,
    attempt: u32,
    outcome: Result<crate::media::StoredMedia, MediaError>,
) -> ConversationCommand {
    ConversationCommand::RecordMedia {
        message: message.into(),
        index,
        attempt,
        outcome,
        retry_at: Some(at("2026-11-22T10:01:00Z")),
        now: at("2026-11-22T10:00:30Z"),
    }
}

#[test]
fn an_attachment_is_stored_once_and_each_failed_try_recorded_once() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let outage = || Err(MediaError::transient("HTTP 503"));
    let gone = || {
        Err(MediaError {
            code: Some(131052),
            reason: "media not found".into(),
            retryable: false,
        })
    };
    // (what was recorded before, the command, what it records)
    let cases: Vec<(Vec<ConversationEvent>, ConversationCommand, Vec<&str>)> = vec![
        (
            vec![],
            record_media("wamid.1", 0, 1, outage()),
            vec!["MediaFetchFailed"],
        ),
        (
            vec![],
            record_media("wamid.1", 0, 1, Ok(stored_pdf())),
            vec!["MediaStored"],
        ),
        (
            given(&history, record_media("wamid.1", 0, 1, outage())),
            record_media("wamid.1", 0, 1, outage()),
            vec![],
        ),
        (
            given(&history, record_media("wamid.1", 0, 1, outage())),
            record_media("wamid.1", 0, 2, Ok(stored_pdf())),
            vec!["MediaStored"],
        ),
        (
            given(&history, record_media("wamid.1", 0, 1, Ok(stored_pdf()))),
            record_media("wamid.1", 0, 2, Ok(stored_pdf())),
            vec![],
        ),
        (
            given(&history, record_media("wamid.1", 0, 1, gone())),
            record_media("wamid.1", 0, 2, Ok(stored_pdf())),
            vec![],
        ),
        // Each attachment of a message on its own.
        (
            given(&history, record_media("wamid.1", 0, 1, Ok(stored_pdf()))),
            record_media("wamid.1", 1, 1, Ok(stored_pdf())),
            vec!["MediaStored"],
        ),
    ];
    for (before, command, expected) in cases {
        let mut all = history.clone();
        all.extend(before);
        let decided: Vec<&str> = given(&all, command.clone())
            .iter()
            .map(|e| e.event_type())
            .collect();
        assert_eq!(decided, expected, "{command:?}");
    }
    let failed = given(&history, record_media("wamid.1", 0, 1, gone()));
    assert!(
        matches!(
            &failed[0],
            ConversationEvent::MediaFetchFailed {
                retry_at: None,
                retryable: false,
                code: Some(131052),
                ..
            }
        ),
        "a failure given up says so and names no retry: {failed:?}"
    );
    assert_eq!(
        then_rejects(&history, record_media("wamid.9", 0, 1, Ok(stored_pdf()))),
        ConversationRejection::UnknownInboundMessage("wamid.9".into())
    );
}

#[test]
fn attachments_go_out_like_text_only_inside_the_window() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let send = |now: &str| ConversationCommand::SendMedia {
        chat_id: Uuid::from_u128(1),
        message_id: Uuid::from_u128(50),
        media: stored_pdf(),
        caption: Some("your invoice".into()),
        by: "asha".into(),
        now: at(now),
    };
    let queued = given(&history, send("2026-11-22T11:00:00Z"));
    assert!(
        matches!(&queued[0], ConversationEvent::ReplyQueued { kind, text, media: Some(m), .. }
            if kind == "document" && text.as_deref() == Some("your invoice") && m.mime == "application/pdf"),
        "{queued:?}"
    );
    assert!(matches!(
        then_rejects(&history, send("2026-11-23T10:00:01Z")),
        ConversationRejection::OutsideServiceWindow(Some(_))
    ));
}

#[test]
fn a_message_goes_to_genesys_once_and_its_conversation_is_recorded_when_new() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let forward = |message: &str, conversation: Option<&str>| ConversationCommand::RecordForward {
        message: message.into(),
        tenant: "onewaycab".into(),
        outcome: Ok(crate::genesys::Delivered {
            id: Some("g1".into()),
            conversation_id: conversation.map(str::to_owned),
        }),
        attempts: 1,
        now: at("2026-11-22T10:00:01Z"),
    };
    let types = |events: Vec<ConversationEvent>| -> Vec<&'static str> {
        events.iter().map(|e| e.event_type()).collect()
    };
    let first = given(&history, forward("wamid.1", Some("conv-1")));
    assert_eq!(
        types(first.clone()),
        ["ForwardedToAgent", "GenesysConversationMapped"]
    );
    let mut all = history.clone();
    all.extend(first);
    assert!(
        given(&all, forward("wamid.1", Some("conv-1"))).is_empty(),
        "once"
    );
    all.extend(given(&all, receive("wamid.2", 1, "2026-11-22T10:01:00Z")));
    assert_eq!(
        types(given(&all, forward("wamid.2", Some("conv-1")))),
        ["ForwardedToAgent"],
        "a conversation already known is not recorded again"
    );
    assert_eq!(
        then_rejects(&all, forward("wamid.9", None)),
        ConversationRejection::UnknownInboundMessage("wamid.9".into())
    );
    // An agent's reply: queued once under the id derived from Genesys's message.
    let reply = |now: &str| ConversationCommand::QueueAgentReply {
        message_id: Uuid::from_u128(77),
        text: Some("Hello from the desk".into()),
        media: None,
        by: "genesys:Asha".into(),
        now: at(now),
    };
    let queued = given(&all, reply("2026-11-22T11:00:00Z"));
    assert_eq!(types(queued.clone()), ["ReplyQueued", "SlaClockStopped"]);
    all.extend(queued);
    assert!(
        given(&all, reply("2026-11-22T11:00:05Z")).is_empty(),
        "a redelivery queues nothing"
    );
    assert!(matches!(
        then_rejects(&history, reply("2026-11-24T11:00:00Z")),
        ConversationRejection::OutsideServiceWindow(_)
    ));
    assert_eq!(
        then_rejects(&[], reply("2026-11-22T11:00:00Z")),
        ConversationRejection::NoOpenChat
    );
}

#[test]
fn a_customer_is_asked_for_a_rating_at_most_once_an_hour() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let resolved = given(&history, resolve(1, "2026-11-22T10:05:00Z"));
    let history: Vec<_> = history.into_iter().chain(resolved).collect();
    let reopened = given(&history, customer_says("wamid.h", "one more thing", 2));
    let history: Vec<_> = history.into_iter().chain(reopened).collect();
    // Resolved again ten minutes later: resolved, but not asked again.
    let mut again = resolve(2, "2026-11-22T10:15:00Z");
    if let ConversationCommand::Resolve {
        rating_message_id, ..
    } = &mut again
    {
        *rating_message_id = Uuid::from_u128(701);
    }
    let events = given(&history, again.clone());
    assert!(matches!(
        &events[..],
        [.., ConversationEvent::ChatResolved { .. }]
    ));
    assert!(!events
        .iter()
        .any(|e| matches!(e, ConversationEvent::ReplyQueued { .. })));
    // An hour after the last request, asked again.
    if let ConversationCommand::Resolve { now, .. } = &mut again {
        *now = at("2026-11-22T11:05:00Z");
    }
    let events = given(&history, again);
    assert!(events.iter().any(|e| matches!(
        e,
        ConversationEvent::ReplyQueued {
            purpose: OutboundPurpose::RatingRequest,
            ..
        }
    )));
}
