//! Which parts of an event are a customer's personal data, and how they are taken out of
//! the event before it is stored sealed, put back when it is read, or shown erased once the
//! customer's key is destroyed.
//!
//! The message text, captions and file names, the customer's profile name, and the raw
//! provider payload (which holds all of them) are personal data. Ids, times, statuses,
//! numbers that name the conversation and the business context are not: the log and its
//! hash chain stay readable and verifiable without them.

use serde_json::Value;

/// Where a sealed event keeps its personal data.
pub const SEALED_FIELD: &str = "personal_data";
/// What a read model shows where erased text was.
pub const ERASED: &str = "[erased]";

/// The personal fields of an event type, as JSON pointers into its data.
pub fn personal_fields(event_type: &str) -> &'static [&'static str] {
    match event_type {
        "MessageReceived" => &[
            "/text",
            "/media/caption",
            "/media/filename",
            "/details",
            "/referral",
            "/customer/name",
            "/raw",
        ],
        "ReceiptRecorded" => &["/recipient/name", "/raw"],
        "ReplyQueued" => &["/text", "/template/params", "/media/filename"],
        "MediaStored" => &["/filename"],
        _ => &[],
    }
}

/// What an erased field reads as: text becomes "[erased]", lists become empty, payloads
/// and structured details become null.
pub fn erased_value(pointer: &str) -> Value {
    match pointer {
        "/raw" | "/details" | "/referral" => Value::Null,
        "/template/params" => Value::Array(vec![]),
        _ => Value::String(ERASED.to_owned()),
    }
}

/// Takes the personal fields present in `data` out of it: the pointers and their values.
pub fn take_personal(event_type: &str, data: &mut Value) -> Vec<(&'static str, Value)> {
    personal_fields(event_type)
        .iter()
        .filter_map(|pointer| {
            let (parent, key) = pointer.rsplit_once('/')?;
            let holder = if parent.is_empty() {
                Some(&mut *data)
            } else {
                data.pointer_mut(parent)
            }?;
            let value = holder.as_object_mut()?.remove(key)?;
            (!value.is_null()).then_some((*pointer, value))
        })
        .collect()
}

/// Puts a field back at `pointer` (its parent object must be there).
pub fn put_back(data: &mut Value, pointer: &str, value: Value) {
    let Some((parent, key)) = pointer.rsplit_once('/') else {
        return;
    };
    let holder = if parent.is_empty() {
        Some(data)
    } else {
        data.pointer_mut(parent)
    };
    if let Some(object) = holder.and_then(Value::as_object_mut) {
        object.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn personal_fields_come_out_and_go_back() {
        let original = json!({"text": "my address is 42 Elm", "kind": "image",
            "media": {"id": "m1", "caption": "see this"}, "customer": {"phone": "+91", "name": "Ramesh"},
            "raw": {"any": "thing"}, "provider_message_id": "wamid.1"});
        let mut data = original.clone();
        let taken = take_personal("MessageReceived", &mut data);
        assert_eq!(
            taken.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            ["/text", "/media/caption", "/customer/name", "/raw"]
        );
        assert_eq!(
            data,
            json!({"kind": "image", "media": {"id": "m1"}, "customer": {"phone": "+91"}, "provider_message_id": "wamid.1"})
        );
        for (pointer, value) in taken {
            put_back(&mut data, pointer, value);
        }
        assert_eq!(data, original);
        assert!(take_personal("ChatAssigned", &mut data).is_empty());
    }
}
