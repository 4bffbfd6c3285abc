//! Twilio's form-encoded webhooks: inbound messages and status callbacks.

use chatledger_core::conversation::{Customer, InboundMessage, Media, ProviderError, Receipt};
use serde_json::{Map, Value};

use super::phone::PhoneNormalizer;
use super::{ChannelNotice, InboundItem};

/// The most media one Twilio message carries (Twilio's documented limit).
pub const MAX_MEDIA: u64 = 10;

/// Decodes an `application/x-www-form-urlencoded` body into its fields, in order.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// The form fields as JSON, every field kept (a repeated name becomes an array).
pub fn raw_fields(params: &[(String, String)]) -> Value {
    let mut map = Map::new();
    for (name, value) in params {
        match map.get_mut(name) {
            None => {
                map.insert(name.clone(), Value::String(value.clone()));
            }
            Some(Value::Array(values)) => values.push(Value::String(value.clone())),
            Some(first) => {
                let first = first.take();
                map.insert(
                    name.clone(),
                    Value::Array(vec![first, Value::String(value.clone())]),
                );
            }
        }
    }
    Value::Object(map)
}

/// Reads one Twilio callback.
pub fn parse(params: &[(String, String)], phones: &PhoneNormalizer) -> InboundItem {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let raw = raw_fields(params);
    let sid = get("MessageSid")
        .or_else(|| get("SmsMessageSid"))
        .or_else(|| get("SmsSid"));
    let Some(sid) = sid else {
        return notice("unrecognized", vec![], raw);
    };
    let user_id =
        get("ExternalUserId").map(|u| u.strip_prefix("whatsapp:").unwrap_or(&u).to_owned());

    if let Some(status) = get("MessageStatus") {
        let errors = get("ErrorCode")
            .and_then(|code| code.parse().ok())
            .map(|code| ProviderError {
                code,
                title: None,
                message: get("ErrorMessage"),
                details: None,
            })
            .into_iter()
            .collect();
        let recipient = Customer {
            phone: get("To").and_then(|to| phones.any(&to)),
            user_id,
            name: None,
        };
        if recipient.phone.is_none() && recipient.user_id.is_none() {
            return notice("receipt_without_recipient", errors, raw);
        }
        return InboundItem::Receipt(Box::new(Receipt {
            provider: "twilio".into(),
            provider_message_id: sid,
            status: status.to_ascii_lowercase(),
            at: None,
            recipient,
            errors,
            // Twilio echoes nothing of ours on a status callback.
            callback: None,
            raw,
        }));
    }

    let customer = Customer {
        phone: get("From").and_then(|from| phones.any(&from)),
        user_id,
        name: get("ProfileName"),
    };
    if customer.phone.is_none() && customer.user_id.is_none() {
        return notice("message_without_sender", vec![], raw);
    }
    // A count read from a request is clamped to what Twilio documents: a message carries at
    // most 10 media. Attachments beyond it would have no MediaUrl fields anyway.
    let media_count: usize = get("NumMedia")
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(0, |n| n.min(MAX_MEDIA) as usize);
    let attachments: Vec<Value> = (0..media_count)
        .filter_map(|i| {
            let url = get(&format!("MediaUrl{i}"))?;
            Some(serde_json::json!({"url": url, "content_type": get(&format!("MediaContentType{i}"))}))
        })
        .collect();
    let body = get("Body");
    let (kind, text, media, details) =
        if get("MessageType").as_deref() == Some("location") || get("Latitude").is_some() {
            let details = serde_json::json!({
                "latitude": get("Latitude"), "longitude": get("Longitude"),
                "address": get("Address"), "label": get("Label"),
            });
            ("location".to_owned(), body, None, Some(details))
        } else if let Some(button) = get("ButtonText") {
            let details = serde_json::json!({"text": button, "payload": get("ButtonPayload")});
            ("button".to_owned(), Some(button), None, Some(details))
        } else if let Some(first) = attachments.first() {
            let content_type = first["content_type"].as_str().map(str::to_owned);
            let kind = match content_type.as_deref().and_then(|t| t.split('/').next()) {
                Some("image") => "image",
                Some("video") => "video",
                Some("audio") => "audio",
                _ => "document",
            };
            let media = Media {
                url: first["url"].as_str().map(str::to_owned),
                mime_type: content_type,
                caption: body.clone(),
                ..Media::default()
            };
            let details =
                (attachments.len() > 1).then(|| serde_json::json!({"attachments": attachments}));
            (kind.to_owned(), body, Some(media), details)
        } else {
            ("text".to_owned(), body, None, None)
        };
    InboundItem::Message(Box::new(InboundMessage {
        provider: "twilio".into(),
        provider_message_id: sid,
        kind,
        text,
        media,
        details,
        context: get("OriginalRepliedMessageSid").map(|id| serde_json::json!({"id": id})),
        referral: None,
        customer,
        sent_at: None,
        errors: vec![],
        raw,
    }))
}

fn notice(kind: &str, errors: Vec<ProviderError>, raw: Value) -> InboundItem {
    InboundItem::Notice(ChannelNotice {
        kind: kind.into(),
        errors,
        raw,
        account_id: None,
    })
}
