//! Consent: what a customer agreed to receive, as events on the customer
//! (`consent-{customer}`), and the keywords that change it.
//!
//! Each change records the categories, how it was given or withdrawn, the wording the person
//! was shown, the evidence (the message that said STOP, a form submission), who recorded it
//! and when: what GDPR Art. 7(1) asks a business to be able to show. The decision is pure:
//! [`Consent::decide`] records a change only when it changes something, so a customer who
//! sends STOP five times is withdrawn once (and confirmed once).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::conversation::{CustomerKey, EVENT_ID_NAMESPACE};
use crate::event::{Metadata, NewEvent, RecordedEvent};

/// The stream of a customer's consent.
pub fn consent_stream(customer: &CustomerKey) -> String {
    format!("consent-{customer}")
}

/// What a customer may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Answers and updates about what the customer asked or booked.
    Service,
    /// Offers and promotions the business starts.
    Marketing,
}

impl Category {
    pub fn as_str(&self) -> &'static str {
        match self {
            Category::Service => "service",
            Category::Marketing => "marketing",
        }
    }
}

/// How a change came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// A keyword the customer sent (STOP, START).
    Keyword,
    /// Meta's `user_preferences` webhook.
    UserPreferences,
    Form,
    /// An executive, with a reason.
    Agent,
    /// The transaction system.
    Api,
}

/// One change of consent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentChange {
    pub categories: Vec<Category>,
    pub method: Method,
    /// The version of the wording the person was shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wording_version: Option<String>,
    /// What shows it: the message id, a form submission id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// Who recorded it.
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// The events of a consent stream. Variant names are the stored event types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ConsentEvent {
    ConsentGranted(ConsentChange),
    ConsentWithdrawn(ConsentChange),
}

impl ConsentEvent {
    pub const TYPES: [&'static str; 2] = ["ConsentGranted", "ConsentWithdrawn"];

    pub fn event_type(&self) -> &'static str {
        match self {
            ConsentEvent::ConsentGranted(_) => "ConsentGranted",
            ConsentEvent::ConsentWithdrawn(_) => "ConsentWithdrawn",
        }
    }

    pub fn change(&self) -> &ConsentChange {
        match self {
            ConsentEvent::ConsentGranted(c) | ConsentEvent::ConsentWithdrawn(c) => c,
        }
    }

    /// The envelope; its id derives from the evidence (a message, a submission) and when it
    /// was given, so the same evidence twice records once.
    pub fn to_new_event(&self, stream: &str, metadata: Metadata) -> NewEvent {
        let change = self.change();
        let basis = format!(
            "{}/{}",
            change.evidence.as_deref().unwrap_or_default(),
            change.at.timestamp_micros()
        );
        let id = Uuid::new_v5(
            &EVENT_ID_NAMESPACE,
            format!("{}/{stream}/{basis}", self.event_type()).as_bytes(),
        );
        let data = match serde_json::to_value(self) {
            Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        };
        NewEvent::new(id, self.event_type(), data, metadata)
    }

    /// Reads a stored event back; `None` for another type.
    pub fn from_recorded(event: &RecordedEvent) -> Option<Result<Self, serde_json::Error>> {
        if !Self::TYPES.contains(&event.event_type.as_str()) {
            return None;
        }
        Some(
            serde_json::from_value::<ConsentChange>(event.data.clone()).map(|change| {
                match event.event_type.as_str() {
                    "ConsentGranted" => ConsentEvent::ConsentGranted(change),
                    _ => ConsentEvent::ConsentWithdrawn(change),
                }
            }),
        )
    }
}

impl ConsentEvent {
    /// What the change did, in words an auditor reads: "withdrew marketing by keyword
    /// (evidence wamid.X), recorded by customer".
    pub fn in_words(&self) -> String {
        let change = self.change();
        let verb = match self {
            ConsentEvent::ConsentGranted(_) => "granted",
            ConsentEvent::ConsentWithdrawn(_) => "withdrew",
        };
        let categories: Vec<&str> = change.categories.iter().map(Category::as_str).collect();
        let how = match change.method {
            Method::Keyword => "by keyword",
            Method::UserPreferences => "in WhatsApp's settings (user_preferences)",
            Method::Form => "on a form",
            Method::Agent => "through an executive",
            Method::Api => "through the transaction system",
        };
        let mut words = format!("{verb} {} {how}", categories.join(" and "));
        if let Some(wording) = &change.wording_version {
            words.push_str(&format!(", shown wording {wording}"));
        }
        if let Some(evidence) = &change.evidence {
            words.push_str(&format!(" (evidence: {evidence})"));
        }
        words.push_str(&format!(", recorded by {}", change.actor));
        words
    }
}

/// Where one category stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    pub granted: bool,
    pub method: Method,
    pub at: DateTime<Utc>,
}

/// A customer's consent as folded from their events. A category never changed is neither
/// granted nor withdrawn: opt-in collected elsewhere is the business's to record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Consent {
    pub categories: BTreeMap<Category, Standing>,
}

impl Consent {
    pub fn evolve(&mut self, event: &ConsentEvent) {
        let granted = matches!(event, ConsentEvent::ConsentGranted(_));
        let change = event.change();
        for category in &change.categories {
            self.categories.insert(
                *category,
                Standing {
                    granted,
                    method: change.method,
                    at: change.at,
                },
            );
        }
    }

    /// The change to record for `wanted` (granting when `grant`), if it changes anything: only
    /// the categories whose standing it changes.
    pub fn decide(&self, grant: bool, wanted: ConsentChange) -> Option<ConsentEvent> {
        let categories: Vec<Category> = wanted
            .categories
            .iter()
            .copied()
            .filter(|c| self.categories.get(c).map(|s| s.granted) != Some(grant))
            .collect();
        if categories.is_empty() {
            return None;
        }
        let change = ConsentChange {
            categories,
            ..wanted
        };
        Some(if grant {
            ConsentEvent::ConsentGranted(change)
        } else {
            ConsentEvent::ConsentWithdrawn(change)
        })
    }

    /// When and how `category` was withdrawn, if it stands withdrawn.
    pub fn withdrawn(&self, category: Category) -> Option<&Standing> {
        self.categories.get(&category).filter(|s| !s.granted)
    }
}

/// What a keyword asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyword {
    Stop,
    Start,
    Help,
}

impl Keyword {
    pub fn name(&self) -> &'static str {
        match self {
            Keyword::Stop => "stop",
            Keyword::Start => "start",
            Keyword::Help => "help",
        }
    }
}

/// The keywords each word stands for (Twilio's defaults, which apply to WhatsApp senders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keywords {
    pub stop: Vec<String>,
    pub start: Vec<String>,
    pub help: Vec<String>,
}

impl Default for Keywords {
    fn default() -> Self {
        let words = |list: &[&str]| list.iter().map(|w| w.to_string()).collect();
        Keywords {
            stop: words(&[
                "STOP",
                "STOPALL",
                "UNSUBSCRIBE",
                "CANCEL",
                "END",
                "QUIT",
                "REVOKE",
                "OPTOUT",
            ]),
            start: words(&["START", "YES", "UNSTOP"]),
            help: words(&["HELP", "INFO"]),
        }
    }
}

impl Keywords {
    /// The keyword a message is, if it is one: that single word, in any case ("STOP PLEASE"
    /// is not).
    pub fn of(&self, text: &str) -> Option<Keyword> {
        let word = text.trim();
        let is = |list: &[String]| list.iter().any(|k| k.eq_ignore_ascii_case(word));
        if word.is_empty() || word.contains(char::is_whitespace) {
            return None;
        }
        if is(&self.stop) {
            Some(Keyword::Stop)
        } else if is(&self.start) {
            Some(Keyword::Start)
        } else if is(&self.help) {
            Some(Keyword::Help)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(at: &str) -> ConsentChange {
        ConsentChange {
            categories: vec![Category::Marketing],
            method: Method::Keyword,
            wording_version: None,
            evidence: Some("wamid.1".into()),
            actor: "customer".into(),
            at: at.parse().unwrap(),
        }
    }

    #[test]
    fn a_change_in_words() {
        let stop = ConsentEvent::ConsentWithdrawn(change("2026-12-01T10:00:00Z"));
        assert_eq!(
            stop.in_words(),
            "withdrew marketing by keyword (evidence: wamid.1), recorded by customer"
        );
        let form = ConsentEvent::ConsentGranted(ConsentChange {
            categories: vec![Category::Service, Category::Marketing],
            method: Method::Form,
            wording_version: Some("v3".into()),
            ..change("2026-12-01T10:00:00Z")
        });
        assert_eq!(
            form.in_words(),
            "granted service and marketing on a form, shown wording v3 (evidence: wamid.1), recorded by customer"
        );
    }

    #[test]
    fn keywords_are_single_words_in_any_case() {
        let k = Keywords::default();
        assert_eq!(k.of("STOP"), Some(Keyword::Stop));
        assert_eq!(k.of("  stop \n"), Some(Keyword::Stop));
        assert_eq!(k.of("OptOut"), Some(Keyword::Stop));
        assert_eq!(k.of("STOP PLEASE"), None);
        assert_eq!(k.of("unstop"), Some(Keyword::Start));
        assert_eq!(k.of("Help"), Some(Keyword::Help));
        assert_eq!(k.of("stopped"), None);
    }

    #[test]
    fn a_change_is_recorded_only_when_it_changes_something() {
        let mut consent = Consent::default();
        let first = consent
            .decide(false, change("2026-12-01T10:00:00Z"))
            .unwrap();
        consent.evolve(&first);
        assert!(
            consent
                .decide(false, change("2026-12-01T10:01:00Z"))
                .is_none(),
            "STOP again"
        );
        assert!(consent.withdrawn(Category::Marketing).is_some());
        let back = consent
            .decide(true, change("2026-12-01T11:00:00Z"))
            .unwrap();
        consent.evolve(&back);
        assert!(consent.withdrawn(Category::Marketing).is_none());
    }
}
