//! Domain values tests build often.

use chatledger_core::conversation::{ConversationRef, Customer, CustomerKey, InboundMessage};

/// A text message from `phone` (E.164) as a provider would deliver it; override what a test
/// cares about with struct update syntax.
pub fn text_message(provider_message_id: &str, phone: &str, text: &str) -> InboundMessage {
    InboundMessage {
        provider: "meta".into(),
        provider_message_id: provider_message_id.into(),
        kind: "text".into(),
        text: Some(text.into()),
        media: None,
        details: None,
        context: None,
        referral: None,
        customer: Customer {
            phone: Some(phone.into()),
            ..Customer::default()
        },
        sent_at: None,
        errors: vec![],
        raw: serde_json::json!({"id": provider_message_id}),
    }
}

/// The partner channel's conversation with `phone` (E.164).
pub fn partner_conversation(phone: &str) -> ConversationRef {
    ConversationRef {
        channel: "9099039188".into(),
        channel_number: "919099039188".into(),
        stakeholder: "partner".into(),
        customer: CustomerKey::Phone(phone.into()),
    }
}
