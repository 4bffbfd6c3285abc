//! Every event through its stored form.

use super::*;

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
        let decoded = DecodedEvent::decoded_now(recorded);
        assert_eq!(
            decoded.conversation(),
            Ok(Some(event)),
            "{}: the data moved into the typed event means the same",
            event.event_type()
        );
        assert!(decoded.data.is_null(), "moved, not copied");
    }
}

#[test]
fn decoding_at_once_keeps_the_data_of_other_events_and_says_what_is_wrong() {
    let recorded = |event_type: &str, data: serde_json::Value| RecordedEvent {
        event_id: Uuid::from_u128(9),
        stream: "conversation-x-+91".into(),
        version: 0,
        position: 7,
        event_type: event_type.into(),
        schema_version: 1,
        data,
        metadata: Metadata::by("test"),
        recorded_at: at("2026-11-22T10:00:00Z"),
        hash: crate::EventHash::GENESIS,
    };
    let other = DecodedEvent::decoded_now(recorded("BookingCreated", json!({"id": "b1"})));
    assert_eq!(other.conversation(), Ok(None));
    assert_eq!(
        other.data,
        json!({"id": "b1"}),
        "not a conversation event: kept"
    );

    let broken = DecodedEvent::decoded_now(recorded("ChatResolved", json!({"chat_id": 5})));
    let error = broken.conversation().unwrap_err();
    assert!(
        error.contains("chat_id") || error.contains("invalid type"),
        "{error}"
    );
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
fn a_chat_status_reads_back_from_its_name() {
    for status in ChatStatus::ALL {
        assert_eq!(ChatStatus::parse(status.as_str()), Some(status));
    }
    assert_eq!(ChatStatus::parse("open"), None, "names are upper case");
}

#[test]
fn new_ids_sort_in_the_order_they_were_made_as_read_models_store_them() {
    let ids: Vec<String> = (0..2_000).map(|_| new_id().to_string()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "time-ordered, as text too");
    assert_eq!(Uuid::parse_str(&ids[0]).unwrap().get_version_num(), 7);
}
