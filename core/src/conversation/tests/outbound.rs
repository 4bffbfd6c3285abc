//! Replies, dispatch tries and outcomes, resolving and the rating request.

use super::*;

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
    // Not asked, so a "2" after it is a message (a new chat), not a rating.
    let not_asked: Vec<_> = history.iter().cloned().chain(events.clone()).collect();
    assert!(matches!(
        &given(&not_asked, customer_says("wamid.two", "2", 3))[..],
        [ConversationEvent::ChatOpened { .. }, ..]
    ));
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
