//! What Meta's `account_update` webhooks say about a WhatsApp Business Account's standing:
//! whether messages may go out through it.
//!
//! Meta reports restrictions (`ACCOUNT_RESTRICTION` with `restriction_info`: each restriction
//! type and when it expires) and disabling (`DISABLED_UPDATE` with `ban_info.waba_ban_state`:
//! `DISABLE`, `REINSTATE`, `SCHEDULE_FOR_DISABLE`). A restriction event lists every restriction
//! in force; an expiration is Unix seconds (some relays forward it as text,
//! `2026-04-19T13:59:20+0000`). Of the restriction types, two stop messages:
//! `RESTRICTED_BIZ_INITIATED_MESSAGING` (messages the business starts: templates) and
//! `RESTRICTED_CUSTOMER_INITIATED_MESSAGING` (replies to customers); the others (adding phone
//! numbers, calling, utility templates) do not concern what chatledger sends.
//! Sources: `tests/fixtures/whatsapp/SOURCES.md`, section C.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Restriction type: messages the business starts (templates) cannot go out.
pub const BUSINESS_INITIATED: &str = "RESTRICTED_BIZ_INITIATED_MESSAGING";
/// Restriction type: replies to customers cannot go out.
pub const CUSTOMER_INITIATED: &str = "RESTRICTED_CUSTOMER_INITIATED_MESSAGING";
/// What a disabled account cannot do: anything.
pub const DISABLED: &str = "DISABLED";

/// Why a credential is suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspensionCause {
    /// Meta restricted messaging on the account (it may end at a time Meta gave).
    Restriction,
    /// Meta disabled the account.
    Disabled,
}

/// What an `account_update` means for sending.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountStanding {
    /// Messages (of the kinds `restrictions` names) may not go out, until `until` if Meta
    /// gave an end.
    Suspended {
        cause: SuspensionCause,
        reason: String,
        restrictions: Vec<String>,
        until: Option<DateTime<Utc>>,
    },
    /// What `cause` stopped may go out again.
    Lifted {
        cause: SuspensionCause,
        reason: String,
    },
}

/// The standing an `account_update` value reports, when it reports one that concerns sending.
pub fn account_standing(value: &Value) -> Option<AccountStanding> {
    match value.get("event")?.as_str()? {
        "ACCOUNT_RESTRICTION" => {
            let listed = value
                .get("restriction_info")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let messaging: Vec<(String, Option<DateTime<Utc>>)> = listed
                .iter()
                .filter_map(|r| {
                    let kind = r.get("restriction_type")?.as_str()?;
                    [BUSINESS_INITIATED, CUSTOMER_INITIATED]
                        .contains(&kind)
                        .then(|| (kind.to_owned(), r.get("expiration").and_then(expiration)))
                })
                .collect();
            if messaging.is_empty() {
                return Some(AccountStanding::Lifted {
                    cause: SuspensionCause::Restriction,
                    reason: if listed.is_empty() {
                        "Meta reports no restriction on the account".to_owned()
                    } else {
                        "Meta's restrictions on the account no longer concern messaging".to_owned()
                    },
                });
            }
            // Until the last of them ends; never, if one has no end.
            let until = messaging
                .iter()
                .map(|(_, until)| *until)
                .collect::<Option<Vec<_>>>()
                .and_then(|all| all.into_iter().max());
            let kinds: Vec<String> = messaging.into_iter().map(|(kind, _)| kind).collect();
            let reason = format!(
                "Meta restricted the account ({}){}",
                kinds.join(", "),
                until.map_or(String::new(), |u| format!(" until {}", u.to_rfc3339()))
            );
            Some(AccountStanding::Suspended {
                cause: SuspensionCause::Restriction,
                reason,
                restrictions: kinds,
                until,
            })
        }
        "DISABLED_UPDATE" => {
            let ban = value.get("ban_info")?;
            let date = ban
                .get("waba_ban_date")
                .and_then(Value::as_str)
                .map_or(String::new(), |d| format!(" on {d}"));
            match ban.get("waba_ban_state")?.as_str()? {
                "DISABLE" => Some(AccountStanding::Suspended {
                    cause: SuspensionCause::Disabled,
                    reason: format!("Meta disabled the account{date}"),
                    restrictions: vec![DISABLED.to_owned()],
                    until: None,
                }),
                "REINSTATE" => Some(AccountStanding::Lifted {
                    cause: SuspensionCause::Disabled,
                    reason: format!("Meta reinstated the account{date}"),
                }),
                // Scheduled, not yet in force: kept as the notice it is.
                _ => None,
            }
        }
        _ => None,
    }
}

/// An `expiration`: Unix seconds, or text such as `2026-04-19T13:59:20+0000`.
fn expiration(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::Number(n) => DateTime::from_timestamp(n.as_i64()?, 0),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .and_then(|n| DateTime::from_timestamp(n, 0))
            .or_else(|| {
                DateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S%z")
                    .ok()
                    .map(|d| d.with_timezone(&Utc))
            })
            .or_else(|| {
                DateTime::parse_from_rfc3339(s.trim())
                    .ok()
                    .map(|d| d.with_timezone(&Utc))
            }),
        _ => None,
    }
}

/// Whether a suspension stops a message now: a template (business-initiated) or a reply.
pub fn stops(
    restrictions: &[String],
    until: Option<DateTime<Utc>>,
    template: bool,
    now: DateTime<Utc>,
) -> bool {
    if until.is_some_and(|until| until <= now) {
        return false;
    }
    restrictions.iter().any(|r| {
        r == DISABLED
            || (template && r == BUSINESS_INITIATED)
            || (!template && r == CUSTOMER_INITIATED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `value` of a fixture's only change.
    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../tests/fixtures/whatsapp/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let body: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        body["entry"][0]["changes"][0]["value"].clone()
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    #[test]
    fn meta_reports_as_published() {
        // Business-initiated messaging and adding numbers restricted: only the first stops
        // anything chatledger sends.
        assert_eq!(
            account_standing(&fixture("meta-account-update-restriction.json")),
            Some(AccountStanding::Suspended {
                cause: SuspensionCause::Restriction,
                reason: "Meta restricted the account (RESTRICTED_BIZ_INITIATED_MESSAGING) until 2022-01-04T21:08:18+00:00".into(),
                restrictions: vec![BUSINESS_INITIATED.into()],
                until: Some(at(1_641_330_498)),
            })
        );
        assert_eq!(
            account_standing(&fixture("meta-account-update-ban.json")),
            Some(AccountStanding::Suspended {
                cause: SuspensionCause::Disabled,
                reason: "Meta disabled the account on April 17, 2025".into(),
                restrictions: vec![DISABLED.into()],
                until: None,
            })
        );
        assert_eq!(
            account_standing(&fixture("meta-account-update-restriction-lifted.json")),
            Some(AccountStanding::Lifted {
                cause: SuspensionCause::Disabled,
                reason: "Meta reinstated the account on April 17, 2025".into(),
            })
        );
        assert_eq!(
            account_standing(&fixture("meta-phone-number-quality-update.json")),
            None
        );
    }

    #[test]
    fn a_restriction_list_without_messaging_lifts_and_text_expirations_read() {
        let only_numbers = json!({"event": "ACCOUNT_RESTRICTION", "restriction_info": [
            {"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION", "expiration": 1}]});
        assert!(matches!(
            account_standing(&only_numbers),
            Some(AccountStanding::Lifted {
                cause: SuspensionCause::Restriction,
                ..
            })
        ));
        let none = json!({"event": "ACCOUNT_RESTRICTION", "restriction_info": []});
        assert!(matches!(
            account_standing(&none),
            Some(AccountStanding::Lifted { .. })
        ));
        let text = json!({"event": "ACCOUNT_RESTRICTION", "restriction_info": [
            {"restriction_type": CUSTOMER_INITIATED, "expiration": "2026-04-19T13:59:20+0000"},
            {"restriction_type": BUSINESS_INITIATED}]});
        let Some(AccountStanding::Suspended {
            until,
            restrictions,
            ..
        }) = account_standing(&text)
        else {
            panic!()
        };
        assert_eq!(until, None, "one of them has no end");
        assert_eq!(restrictions.len(), 2);
        let text = json!({"event": "ACCOUNT_RESTRICTION", "restriction_info": [
            {"restriction_type": CUSTOMER_INITIATED, "expiration": "2026-04-19T13:59:20+0000"}]});
        let Some(AccountStanding::Suspended { until, .. }) = account_standing(&text) else {
            panic!()
        };
        assert_eq!(until, Some(at(1_776_607_160)));
        let scheduled = json!({"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "SCHEDULE_FOR_DISABLE"}});
        assert_eq!(account_standing(&scheduled), None);
    }

    #[test]
    fn what_stops_what() {
        let now = at(1_000);
        let replies = vec![CUSTOMER_INITIATED.to_owned()];
        assert!(stops(&replies, None, false, now));
        assert!(!stops(&replies, None, true, now), "templates still go");
        assert!(!stops(&replies, Some(now), false, now), "ended");
        assert!(stops(
            &[BUSINESS_INITIATED.to_owned()],
            Some(at(2_000)),
            true,
            now
        ));
        assert!(stops(&[DISABLED.to_owned()], None, true, now));
        assert!(stops(&[DISABLED.to_owned()], None, false, now));
    }
}
