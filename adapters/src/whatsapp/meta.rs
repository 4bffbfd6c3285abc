//! Meta's Cloud API webhook envelope, as Meta, 360dialog and Pinbot send it.
//!
//! `{object, entry: [{id, changes: [{field, value: {metadata, contacts, messages, statuses,
//! errors}}]}]}`: every entry and every change is read; `field`s other than `messages` and
//! shapes we do not know become notices with their raw JSON.

use std::collections::HashMap;

use chatledger_core::conversation::{Customer, InboundMessage, Media, Receipt};
use serde_json::Value;

use super::phone::PhoneNormalizer;
use super::{provider_errors, string_field, unix_seconds, ChannelNotice, InboundItem, Routed};

/// Message types whose payload object is media.
const MEDIA_TYPES: [&str; 5] = ["image", "video", "document", "audio", "sticker"];

/// Reads a webhook body (already parsed as JSON) into items. `provider` names who sent it.
pub fn parse(body: &Value, provider: &str, phones: &PhoneNormalizer) -> Vec<Routed> {
    let mut items = Vec::new();
    match body.get("entry").and_then(Value::as_array) {
        Some(entries) => {
            for entry in entries {
                let changes = entry.get("changes").and_then(Value::as_array);
                for change in changes.into_iter().flatten() {
                    let field = change
                        .get("field")
                        .and_then(Value::as_str)
                        .unwrap_or("messages");
                    match change.get("value") {
                        Some(value) if field == "messages" && value.is_object() => {
                            parse_value(value, provider, phones, &mut items)
                        }
                        _ => {
                            let mut about =
                                notice(None, format!("field:{field}"), vec![], change.clone());
                            if let InboundItem::Notice(n) = &mut about.item {
                                n.account_id = string_field(entry, "id");
                            }
                            items.push(about)
                        }
                    }
                }
                if changes.is_none() {
                    items.push(notice(None, "unrecognized".into(), vec![], entry.clone()));
                }
            }
        }
        // 360dialog's legacy on-premises format: the `value` object at the top level.
        None if ["messages", "statuses"]
            .iter()
            .any(|k| body.get(k).is_some()) =>
        {
            parse_value(body, provider, phones, &mut items)
        }
        None => items.push(notice(None, "unrecognized".into(), vec![], body.clone())),
    }
    items
}

fn notice(
    phone_number_id: Option<String>,
    kind: String,
    errors: Vec<chatledger_core::conversation::ProviderError>,
    raw: Value,
) -> Routed {
    Routed {
        phone_number_id,
        item: InboundItem::Notice(ChannelNotice {
            kind,
            errors,
            raw,
            account_id: None,
        }),
    }
}

fn parse_value(value: &Value, provider: &str, phones: &PhoneNormalizer, items: &mut Vec<Routed>) {
    let metadata = value.get("metadata");
    let phone_number_id = metadata.and_then(|m| string_field(m, "phone_number_id"));
    let contacts: Vec<&Value> = value
        .get("contacts")
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    let value_errors = provider_errors(value.get("errors"));
    let messages = value.get("messages").and_then(Value::as_array);
    let statuses = value.get("statuses").and_then(Value::as_array);

    for message in messages.into_iter().flatten() {
        let item = match parse_message(message, &contacts, &value_errors, provider, phones) {
            Some(message) => InboundItem::Message(Box::new(message)),
            None => InboundItem::Notice(ChannelNotice {
                kind: "message_without_sender".into(),
                errors: value_errors.clone(),
                raw: serde_json::json!({"message": message, "contacts": contacts}),
                account_id: None,
            }),
        };
        items.push(Routed {
            phone_number_id: phone_number_id.clone(),
            item,
        });
    }
    for status in statuses.into_iter().flatten() {
        let receipt = parse_status(status, provider, phones);
        let item = match receipt {
            Some(receipt)
                if receipt.recipient.phone.is_some() || receipt.recipient.user_id.is_some() =>
            {
                InboundItem::Receipt(Box::new(receipt))
            }
            _ => InboundItem::Notice(ChannelNotice {
                kind: "receipt_without_recipient".into(),
                errors: provider_errors(status.get("errors")),
                raw: serde_json::json!({"status": status}),
                account_id: None,
            }),
        };
        items.push(Routed {
            phone_number_id: phone_number_id.clone(),
            item,
        });
    }
    if messages.is_none() && statuses.is_none() {
        let kind = if value_errors.is_empty() {
            "unrecognized"
        } else {
            "errors"
        };
        items.push(notice(
            phone_number_id,
            kind.into(),
            value_errors,
            value.clone(),
        ));
    }
}

/// The sender of a message: `from` / `from_user_id`, and the matching `contacts[]` entry
/// (by `wa_id` or `user_id`, or the only one there is).
fn sender<'a>(
    message: &Value,
    contacts: &[&'a Value],
    phones: &PhoneNormalizer,
) -> (Customer, Option<&'a Value>) {
    let from = string_field(message, "from");
    let from_user_id = string_field(message, "from_user_id");
    let contact = contacts
        .iter()
        .find(|c| from.is_some() && string_field(c, "wa_id") == from)
        .or_else(|| {
            contacts
                .iter()
                .find(|c| from_user_id.is_some() && string_field(c, "user_id") == from_user_id)
        })
        .or_else(|| {
            if contacts.len() == 1 {
                contacts.first()
            } else {
                None
            }
        })
        .copied();
    let phone = from
        .as_deref()
        .or_else(|| contact.and_then(|c| c.get("wa_id")).and_then(Value::as_str))
        .and_then(|digits| phones.whatsapp(digits));
    let customer = Customer {
        phone,
        user_id: from_user_id.or_else(|| contact.and_then(|c| string_field(c, "user_id"))),
        name: contact
            .and_then(|c| c.get("profile"))
            .and_then(|p| string_field(p, "name")),
    };
    (customer, contact)
}

fn parse_message(
    message: &Value,
    contacts: &[&Value],
    value_errors: &[chatledger_core::conversation::ProviderError],
    provider: &str,
    phones: &PhoneNormalizer,
) -> Option<InboundMessage> {
    let id = string_field(message, "id")?;
    let (customer, contact) = sender(message, contacts, phones);
    if customer.phone.is_none() && customer.user_id.is_none() {
        return None;
    }
    let provider_type = message
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let kind = match provider_type.as_str() {
        "unknown" => "unsupported".to_owned(),
        other => other.to_owned(),
    };
    let body = message.get(&provider_type);
    let text_of = |v: Option<&Value>, key: &str| v.and_then(|v| string_field(v, key));
    let text = match provider_type.as_str() {
        "text" => text_of(body, "body"),
        "button" => text_of(body, "text"),
        "reaction" => text_of(body, "emoji"),
        "system" => text_of(body, "body"),
        "order" => text_of(body, "text"),
        "interactive" => body.and_then(|i| {
            text_of(i.get("button_reply"), "title")
                .or_else(|| text_of(i.get("list_reply"), "title"))
                .or_else(|| text_of(i.get("nfm_reply"), "body"))
        }),
        "edit" => body.and_then(|e| e.get("message")).and_then(|m| {
            text_of(m.get("text"), "body").or_else(|| text_of(m.get("image"), "caption"))
        }),
        t if MEDIA_TYPES.contains(&t) => text_of(body, "caption"),
        _ => None,
    };
    let media = body
        .filter(|_| MEDIA_TYPES.contains(&provider_type.as_str()))
        .map(|m| Media {
            id: string_field(m, "id"),
            url: string_field(m, "url").or_else(|| string_field(m, "link")),
            mime_type: string_field(m, "mime_type"),
            sha256: string_field(m, "sha256"),
            caption: string_field(m, "caption"),
            filename: string_field(m, "filename"),
            voice: m.get("voice").and_then(Value::as_bool).unwrap_or(false),
            animated: m.get("animated").and_then(Value::as_bool).unwrap_or(false),
        });
    let details = body
        .filter(|_| !MEDIA_TYPES.contains(&provider_type.as_str()) && provider_type != "text")
        .cloned();
    let mut errors = provider_errors(message.get("errors"));
    errors.extend(value_errors.iter().cloned());
    let mut raw = serde_json::Map::new();
    raw.insert("message".into(), message.clone());
    if let Some(contact) = contact {
        raw.insert("contact".into(), contact.clone());
    }
    Some(InboundMessage {
        provider: provider.to_owned(),
        provider_message_id: id,
        kind,
        text,
        media,
        details,
        context: message.get("context").cloned(),
        referral: message.get("referral").cloned(),
        customer,
        sent_at: unix_seconds(message.get("timestamp")),
        errors,
        raw: Value::Object(raw),
    })
}

fn parse_status(status: &Value, provider: &str, phones: &PhoneNormalizer) -> Option<Receipt> {
    Some(Receipt {
        provider: provider.to_owned(),
        provider_message_id: string_field(status, "id")?,
        status: string_field(status, "status")?.to_ascii_lowercase(),
        at: unix_seconds(status.get("timestamp")),
        recipient: Customer {
            phone: string_field(status, "recipient_id").and_then(|d| phones.whatsapp(&d)),
            user_id: string_field(status, "recipient_user_id"),
            name: None,
        },
        errors: provider_errors(status.get("errors")),
        callback: string_field(status, "biz_opaque_callback_data"),
        raw: serde_json::json!({"status": status}),
    })
}

/// Counts of what a payload held, for logs and answers.
pub fn summary(items: &[Routed]) -> HashMap<&'static str, usize> {
    let mut counts = HashMap::new();
    for routed in items {
        let key = match routed.item {
            InboundItem::Message(_) => "messages",
            InboundItem::Receipt(_) => "receipts",
            InboundItem::Notice(_) => "notices",
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}
