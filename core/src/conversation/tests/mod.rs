use super::*;
use serde_json::json;

mod attachments;
mod codec;
mod context;
mod desk;
mod inbound;
mod outbound;
mod refusals;

pub(super) fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub(super) fn message(id: &str, text: &str) -> InboundMessage {
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

pub(super) fn receipt(id: &str, status: &str) -> Receipt {
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
pub(super) fn given(
    history: &[ConversationEvent],
    command: ConversationCommand,
) -> Vec<ConversationEvent> {
    Conversation::fold(history)
        .decide(command)
        .expect("accepted")
}

/// given `history`, when `command`, then it is refused: why.
pub(super) fn then_rejects(
    history: &[ConversationEvent],
    command: ConversationCommand,
) -> ConversationRejection {
    match Conversation::fold(history).decide(command) {
        Ok(events) => panic!("expected a refusal, the decision was {events:?}"),
        Err(rejection) => rejection,
    }
}

pub(super) fn receive(id: &str, chat: u128, now: &str) -> ConversationCommand {
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

pub(super) fn change(fields: &[(&str, &str)], chat: u128) -> ConversationCommand {
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

pub(super) fn exec(n: u128, name: &str) -> ExecutiveRef {
    ExecutiveRef {
        id: Uuid::from_u128(n),
        name: name.into(),
    }
}

pub(super) fn assign(chat: u128, to: Option<ExecutiveRef>, cause: u128) -> ConversationCommand {
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

pub(super) fn tag(chat: u128, tag: &str, apply: bool) -> ConversationCommand {
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

pub(super) fn reply(chat: u128, message: u128, now: &str) -> ConversationCommand {
    ConversationCommand::SendReply {
        chat_id: Uuid::from_u128(chat),
        message_id: Uuid::from_u128(message),
        text: "on its way".into(),
        by: "asha".into(),
        now: at(now),
    }
}

pub(super) fn attempt(message: u128, attempt: u32) -> ConversationCommand {
    ConversationCommand::RecordDispatchAttempt {
        message_id: Uuid::from_u128(message),
        attempt,
        now: at("2026-11-22T10:01:01Z"),
    }
}

pub(super) fn resolve(chat: u128, now: &str) -> ConversationCommand {
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

pub(super) fn customer_says(id: &str, text: &str, chat: u128) -> ConversationCommand {
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

pub(super) fn raise(
    level: crate::sla::SlaLevel,
    customer_message: &str,
    chat: u128,
) -> ConversationCommand {
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

pub(super) fn stored_pdf() -> crate::media::StoredMedia {
    crate::media::StoredMedia {
        key: format!("conversation-partner-+919638120888/{}", "ab".repeat(32)),
        sha256: "ab".repeat(32),
        size: 1234,
        mime: "application/pdf".into(),
        filename: Some("invoice.pdf".into()),
    }
}

pub(super) fn record_media(
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
