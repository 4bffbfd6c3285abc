//! Attachments kept and sent, and the Genesys bridge.

use super::*;

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
