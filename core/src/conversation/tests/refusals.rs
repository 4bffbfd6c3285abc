//! Every refusal, each with its code: given a chat, a command that cannot be carried out is
//! refused and records nothing.

use super::*;

#[test]
fn each_refusal_names_what_is_wrong_with_its_code() {
    let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
    let nameless = receive("", 2, "2026-11-22T10:01:00Z");
    let mut empty_reply = reply(1, 50, "2026-11-22T10:02:00Z");
    if let ConversationCommand::SendReply { text, .. } = &mut empty_reply {
        *text = "  ".into();
    }
    let withdrawn = crate::consent::Standing {
        granted: false,
        method: crate::consent::Method::Keyword,
        at: at("2026-11-22T10:00:30Z"),
    };
    let marketing = ConversationCommand::SendTemplate {
        chat_id: Uuid::from_u128(1),
        message_id: Uuid::from_u128(51),
        template: Template {
            name: "diwali_offer".into(),
            language: "en".into(),
            params: vec![],
        },
        withdrawn: Some(withdrawn.clone()),
        by: "asha".into(),
        now: at("2026-11-22T10:02:00Z"),
    };
    let agent_reply = ConversationCommand::QueueAgentReply {
        message_id: Uuid::from_u128(52),
        text: Some("hello".into()),
        media: None,
        by: "genesys".into(),
        now: at("2026-11-22T10:02:00Z"),
    };
    // (the case, the history, the command, the refusal, its code)
    type Case<'a> = (
        &'a str,
        &'a [ConversationEvent],
        ConversationCommand,
        ConversationRejection,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "a message without an id",
            &[],
            nameless,
            ConversationRejection::MissingMessageId,
            "MISSING_MESSAGE_ID",
        ),
        (
            "a chat that is not the open one",
            &history,
            assign(9, Some(exec(10, "Asha")), 1),
            ConversationRejection::ChatNotOpen(Uuid::from_u128(9)),
            "CHAT_NOT_OPEN",
        ),
        (
            "a tag not in the catalog",
            &history,
            tag(1, "VIP", true),
            ConversationRejection::UnknownTag {
                tag: "VIP".into(),
                catalog: vec!["Payment".into(), "Documents".into()],
            },
            "UNKNOWN_TAG",
        ),
        (
            "the system tag by hand",
            &history,
            tag(1, AWAITING_CUSTOMER_TAG, true),
            ConversationRejection::SystemTag(AWAITING_CUSTOMER_TAG.into()),
            "SYSTEM_TAG",
        ),
        (
            "a reply a day later",
            &history,
            reply(1, 50, "2026-11-23T10:00:01Z"),
            ConversationRejection::OutsideServiceWindow(Some(at("2026-11-23T10:00:00Z"))),
            "OUTSIDE_SERVICE_WINDOW",
        ),
        (
            "a blank reply",
            &history,
            empty_reply,
            ConversationRejection::EmptyReply,
            "EMPTY_REPLY",
        ),
        (
            "a try of a message never queued",
            &history,
            attempt(99, 1),
            ConversationRejection::UnknownMessage(Uuid::from_u128(99)),
            "UNKNOWN_MESSAGE",
        ),
        (
            "a file of a message never received",
            &history,
            record_media("wamid.9", 0, 1, Ok(stored_pdf())),
            ConversationRejection::UnknownInboundMessage("wamid.9".into()),
            "UNKNOWN_MESSAGE",
        ),
        (
            "an agent's reply with no chat open",
            &[],
            agent_reply,
            ConversationRejection::NoOpenChat,
            "NO_OPEN_CHAT",
        ),
        (
            "marketing after a STOP",
            &history,
            marketing,
            ConversationRejection::ConsentWithdrawn(withdrawn),
            "CONSENT_WITHDRAWN",
        ),
    ];
    for (case, history, command, refusal, code) in cases {
        let refused = then_rejects(history, command);
        assert_eq!(refused, refusal, "{case}");
        assert_eq!(refused.code(), code, "{case}");
    }
}
