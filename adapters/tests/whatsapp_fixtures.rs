//! Every real provider payload in tests/fixtures/whatsapp, through the parsers.

use chatledger_adapters::whatsapp::phone::PhoneNormalizer;
use chatledger_adapters::whatsapp::{meta, twilio, InboundItem, Routed};
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../tests/fixtures/whatsapp/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn meta_items(name: &str) -> Vec<Routed> {
    let body: Value = serde_json::from_slice(&fixture(name)).unwrap();
    meta::parse(&body, "meta", &PhoneNormalizer::new("IN").unwrap())
}

fn only_message(name: &str) -> chatledger_core::conversation::InboundMessage {
    let items = meta_items(name);
    assert_eq!(items.len(), 1, "{name}: {items:?}");
    match &items[0].item {
        InboundItem::Message(m) => (**m).clone(),
        other => panic!("{name}: expected a message, got {other:?}"),
    }
}

#[test]
fn every_fixture_file_is_covered_here() {
    let dir = format!("{}/../tests/fixtures/whatsapp", env!("CARGO_MANIFEST_DIR"));
    let source = include_str!("whatsapp_fixtures.rs");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") || name.ends_with(".form") {
            assert!(
                source.contains(&format!("\"{name}\"")),
                "{name} has no expectation in this file"
            );
        }
    }
}

#[test]
fn messages_of_every_kind() {
    // (fixture, kind, text, has media)
    let cases = [
        ("meta-text.json", "text", Some("Body Text"), false),
        (
            "meta-text-signed-raw.json",
            "text",
            Some("Hey there! I am using PyWa."),
            false,
        ),
        ("meta-image.json", "image", None, true),
        ("meta-document.json", "document", None, true),
        ("meta-audio-voice.json", "audio", None, true),
        ("meta-reaction.json", "reaction", Some("😮"), false),
        ("meta-location.json", "location", None, false),
        ("meta-contacts.json", "contacts", None, false),
        ("meta-unsupported.json", "unsupported", None, false),
        ("meta-reply-context.json", "text", None, false),
        ("meta-value-level-errors.json", "interactive", None, false),
        (
            "meta-interactive-button-reply.json",
            "interactive",
            Some("title"),
            false,
        ),
        (
            "meta-button-template-quick-reply.json",
            "button",
            None,
            false,
        ),
        (
            "meta-interactive-list-reply.json",
            "interactive",
            None,
            false,
        ),
    ];
    for (name, kind, text, has_media) in cases {
        let m = only_message(name);
        assert_eq!(m.kind, kind, "{name}");
        if let Some(text) = text {
            assert_eq!(m.text.as_deref(), Some(text), "{name}");
        }
        assert_eq!(m.media.is_some(), has_media, "{name}");
        assert!(
            m.provider_message_id.starts_with("wamid.") || !m.provider_message_id.is_empty(),
            "{name}"
        );
        assert!(
            m.customer
                .phone
                .as_deref()
                .is_some_and(|p| p.starts_with('+')),
            "{name}: {:?}",
            m.customer
        );
        assert!(m.sent_at.is_some(), "{name}: timestamp");
        assert_eq!(
            m.raw["message"]["id"].as_str(),
            Some(m.provider_message_id.as_str()),
            "{name}: raw kept"
        );
    }
}

#[test]
fn kind_specific_content_is_kept() {
    let voice = only_message("meta-audio-voice.json");
    assert!(voice.media.as_ref().unwrap().voice);
    let document = only_message("meta-document.json");
    let media = document.media.unwrap();
    assert!(media.filename.is_some() && media.id.is_some());
    assert_eq!(document.context.unwrap()["forwarded"], true);
    let location = only_message("meta-location.json");
    assert!(location.details.unwrap()["latitude"].is_number());
    let contacts = only_message("meta-contacts.json");
    assert!(contacts.details.unwrap().is_array());
    let unsupported = only_message("meta-unsupported.json");
    assert_eq!(unsupported.errors[0].code, 131051);
    let reply = only_message("meta-reply-context.json");
    assert!(reply.context.unwrap()["id"].is_string());
    let with_value_errors = only_message("meta-value-level-errors.json");
    assert_eq!(with_value_errors.errors[0].code, 131000);
    assert_eq!(
        with_value_errors.errors[0].details.as_deref(),
        Some("Unsupported webhook payload")
    );
    let button = only_message("meta-interactive-button-reply.json");
    assert_eq!(
        button.customer.user_id.as_deref(),
        Some("US.13491208655302741918")
    );
    assert_eq!(button.customer.name.as_deref(), Some("Test Name"));
    let quick_reply = only_message("meta-button-template-quick-reply.json");
    assert!(quick_reply.details.unwrap()["payload"].is_string());
    let list = only_message("meta-interactive-list-reply.json");
    assert!(list.details.unwrap()["list_reply"]["description"].is_string());
    let text = only_message("meta-text.json");
    assert_eq!(text.customer.phone.as_deref(), Some("+972987654321"));
    assert_eq!(text.raw["contact"]["wa_id"], "972987654321");
}

#[test]
fn statuses_become_receipts() {
    for (name, status) in [
        ("meta-status-sent.json", "sent"),
        ("meta-status-delivered.json", "delivered"),
        ("meta-status-read.json", "read"),
        ("meta-status-failed.json", "failed"),
    ] {
        let items = meta_items(name);
        assert_eq!(items.len(), 1, "{name}");
        let InboundItem::Receipt(receipt) = &items[0].item else {
            panic!("{name}: {items:?}")
        };
        assert_eq!(receipt.status, status);
        assert!(receipt.recipient.phone.is_some());
        assert_eq!(receipt.raw["status"]["status"], status);
        if status == "failed" {
            assert_eq!(receipt.errors[0].code, 130472);
            assert!(receipt.errors[0].title.is_some());
        }
    }
}

#[test]
fn what_is_not_a_message_or_receipt_is_kept_as_a_notice() {
    for (name, kind) in [
        ("meta-change-errors-no-messages.json", "errors"),
        ("meta-error-obj-190-expired-token.json", "unrecognized"),
        ("meta-error-obj-131047-reengagement.json", "unrecognized"),
        ("meta-send-error-response-130429.json", "unrecognized"),
    ] {
        let items = meta_items(name);
        assert_eq!(items.len(), 1, "{name}");
        let InboundItem::Notice(notice) = &items[0].item else {
            panic!("{name}: {items:?}")
        };
        assert_eq!(notice.kind, kind, "{name}");
        assert!(!notice.raw.is_null());
    }
    let InboundItem::Notice(errors) = &meta_items("meta-change-errors-no-messages.json")[0].item
    else {
        unreachable!()
    };
    assert_eq!(errors.errors[0].code, 0);
}

#[test]
fn account_and_number_updates_are_kept_as_notices_of_their_field() {
    for (name, field, event) in [
        (
            "meta-account-update-restriction.json",
            "account_update",
            "ACCOUNT_RESTRICTION",
        ),
        (
            "meta-account-update-restriction-lifted.json",
            "account_update",
            "DISABLED_UPDATE",
        ),
        (
            "meta-account-update-ban.json",
            "account_update",
            "DISABLED_UPDATE",
        ),
        (
            "meta-phone-number-quality-update.json",
            "phone_number_quality_update",
            "THROUGHPUT_UPGRADE",
        ),
    ] {
        let items = meta_items(name);
        assert_eq!(items.len(), 1, "{name}");
        let InboundItem::Notice(notice) = &items[0].item else {
            panic!("{name}: {items:?}")
        };
        assert_eq!(notice.kind, format!("field:{field}"), "{name}");
        assert_eq!(
            notice.raw["value"]["event"], event,
            "{name}: {}",
            notice.raw
        );
        assert_eq!(
            notice.account_id.as_deref(),
            Some("102290129340398"),
            "{name}: the WABA it is about"
        );
    }
}

#[test]
fn several_entries_changes_and_unknown_fields() {
    let message = |id: &str| serde_json::json!({"from": "919638120888", "id": id, "timestamp": 1700000000, "type": "text", "text": {"body": id}});
    let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [
        {"id": "1", "changes": [
            {"field": "messages", "value": {"metadata": {"phone_number_id": "p1"}, "messages": [message("a"), message("b")]}},
            {"field": "account_update", "value": {"event": "PARTNER_APP_INSTALLED"}}
        ]},
        {"id": "2", "changes": [
            {"field": "messages", "value": {"metadata": {"phone_number_id": "p2"}, "messages": [message("c")],
             "statuses": [{"id": "wamid.out", "status": "read", "timestamp": "1700000001", "recipient_id": "919638120888"}]}}
        ]}
    ]});
    let items = meta::parse(&body, "pinbot", &PhoneNormalizer::new("IN").unwrap());
    let kinds: Vec<(&str, Option<&str>)> = items
        .iter()
        .map(|r| {
            let kind = match &r.item {
                InboundItem::Message(_) => "message",
                InboundItem::Receipt(_) => "receipt",
                InboundItem::Notice(_) => "notice",
            };
            (kind, r.phone_number_id.as_deref())
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("message", Some("p1")),
            ("message", Some("p1")),
            ("notice", None),
            ("message", Some("p2")),
            ("receipt", Some("p2"))
        ]
    );
    // Integer timestamps are accepted as well as strings.
    let InboundItem::Message(first) = &items[0].item else {
        unreachable!()
    };
    assert_eq!(first.sent_at.unwrap().timestamp(), 1_700_000_000);
}

#[test]
fn dialog360_legacy_shape_without_entry() {
    let body = serde_json::json!({"contacts": [{"profile": {"name": "R"}, "wa_id": "919638120888"}],
        "messages": [{"from": "919638120888", "id": "ABGG", "timestamp": "1700000000", "type": "text", "text": {"body": "hi"}}]});
    let items = meta::parse(&body, "360dialog", &PhoneNormalizer::new("IN").unwrap());
    assert!(
        matches!(&items[..], [Routed { item: InboundItem::Message(m), .. }] if m.text.as_deref() == Some("hi"))
    );
}

fn form(name: &str) -> Vec<(String, String)> {
    twilio::parse_form(fixture(name).trim_ascii())
}

#[test]
fn twilio_callbacks() {
    let phones = PhoneNormalizer::new("IN").unwrap();
    let InboundItem::Message(text) = twilio::parse(&form("twilio-wa-inbound-text.form"), &phones)
    else {
        panic!()
    };
    assert_eq!(
        (text.kind.as_str(), text.text.as_deref()),
        ("text", Some("Msg"))
    );
    assert_eq!(text.customer.phone.as_deref(), Some("+14133881111"));
    assert_eq!(
        text.provider_message_id,
        "SMe287d7109a5a925f182f0e07fe5b223b"
    );
    assert_eq!(text.raw["ToCity"], "", "empty fields are kept");

    let InboundItem::Message(media) =
        twilio::parse(&form("twilio-inbound-media-2-attachments.form"), &phones)
    else {
        panic!()
    };
    assert_eq!(
        media.media.as_ref().unwrap().url.as_deref(),
        Some("cat.jpg")
    );
    assert_eq!(
        media.details.as_ref().unwrap()["attachments"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A status callback without `To` cannot be placed in a conversation: kept as a notice.
    let InboundItem::Notice(status) = twilio::parse(&form("twilio-status-delivered.form"), &phones)
    else {
        panic!()
    };
    assert_eq!(status.kind, "receipt_without_recipient");
    assert_eq!(status.raw["MessageStatus"], "delivered");
    let mut with_to = form("twilio-status-delivered.form");
    with_to.push(("To".into(), "whatsapp:+919638120888".into()));
    let InboundItem::Receipt(receipt) = twilio::parse(&with_to, &phones) else {
        panic!()
    };
    assert_eq!(receipt.status, "delivered");
    assert_eq!(receipt.recipient.phone.as_deref(), Some("+919638120888"));
}

/// Types Meta documents that the fixtures above do not show.
#[test]
fn documented_types_beyond_the_fixtures() {
    let phones = PhoneNormalizer::new("IN").unwrap();
    let one = |message: Value| {
        let body = serde_json::json!({"entry": [{"changes": [{"field": "messages", "value": {
            "contacts": [{"profile": {"name": "C"}, "wa_id": "919638120888"}], "messages": [message]}}]}]});
        match meta::parse(&body, "meta", &phones).remove(0).item {
            InboundItem::Message(m) => *m,
            other => panic!("{other:?}"),
        }
    };
    let base = |kind: &str, extra: Value| {
        let mut m = serde_json::json!({"from": "919638120888", "id": format!("wamid.{kind}"), "timestamp": "1763800000", "type": kind});
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        m
    };
    let video = one(base(
        "video",
        serde_json::json!({"video": {"id": "v1", "mime_type": "video/mp4", "caption": "look"}}),
    ));
    assert_eq!(
        (video.kind.as_str(), video.text.as_deref()),
        ("video", Some("look"))
    );
    let sticker = one(base(
        "sticker",
        serde_json::json!({"sticker": {"id": "s1", "animated": true}}),
    ));
    assert!(sticker.media.unwrap().animated);
    let nfm = one(base(
        "interactive",
        serde_json::json!({"interactive": {"type": "nfm_reply",
        "nfm_reply": {"name": "flow", "body": "Sent", "response_json": "{\"a\":1}"}}}),
    ));
    assert_eq!(nfm.text.as_deref(), Some("Sent"));
    let order = one(base(
        "order",
        serde_json::json!({"order": {"catalog_id": "c", "text": "two please",
        "product_items": [{"product_retailer_id": "p", "quantity": 2, "item_price": 10, "currency": "INR"}]}}),
    ));
    assert_eq!(order.text.as_deref(), Some("two please"));
    assert_eq!(order.details.unwrap()["product_items"][0]["quantity"], 2);
    let removed = one(base(
        "reaction",
        serde_json::json!({"reaction": {"message_id": "wamid.x"}}),
    ));
    assert_eq!(
        (removed.kind.as_str(), removed.text),
        ("reaction", None),
        "a removed reaction has no emoji"
    );
    let system = one(
        serde_json::json!({"id": "wamid.sys", "timestamp": "1763800000", "type": "system",
        "system": {"body": "User changed number", "type": "user_changed_number", "wa_id": "919000000000"}}),
    );
    assert_eq!(
        system.customer.phone.as_deref(),
        Some("+919638120888"),
        "no `from`: the contact says who"
    );
    assert_eq!(system.text.as_deref(), Some("User changed number"));
    let welcome = one(base("request_welcome", serde_json::json!({})));
    assert_eq!(welcome.kind, "request_welcome");
    let edit = one(base(
        "edit",
        serde_json::json!({"edit": {"original_message_id": "wamid.o", "message": {"type": "text", "text": {"body": "fixed"}}}}),
    ));
    assert_eq!(
        (edit.kind.as_str(), edit.text.as_deref()),
        ("edit", Some("fixed"))
    );
    let revoke = one(base(
        "revoke",
        serde_json::json!({"revoke": {"original_message_id": "wamid.o"}}),
    ));
    assert_eq!(revoke.details.unwrap()["original_message_id"], "wamid.o");
    let ad = one(base(
        "text",
        serde_json::json!({"text": {"body": "hi"}, "referral": {"source_type": "ad", "ctwa_clid": "x"}}),
    ));
    assert_eq!(ad.referral.unwrap()["ctwa_clid"], "x");
    let future = one(base(
        "hologram",
        serde_json::json!({"hologram": {"depth": 3}}),
    ));
    assert_eq!(
        (
            future.kind.as_str(),
            future.details.unwrap()["depth"].as_i64()
        ),
        ("hologram", Some(3))
    );
}

/// Marketing preferences are kept whole as notices of their field; the consent keeper reads
/// them from there (tests/tests/consent.rs).
#[test]
fn marketing_preferences_are_kept_as_notices_of_their_field() {
    for (name, value) in [
        ("meta-user-preferences-stop.json", "stop"),
        ("meta-user-preferences-resume.json", "resume"),
    ] {
        let items = meta_items(name);
        assert_eq!(items.len(), 1, "{name}");
        let InboundItem::Notice(notice) = &items[0].item else {
            panic!("{name}: {items:?}")
        };
        assert_eq!(notice.kind, "field:user_preferences", "{name}");
        assert_eq!(notice.raw["value"]["user_preferences"][0]["value"], value);
        assert_eq!(notice.account_id.as_deref(), Some("102290129340398"));
    }
}
