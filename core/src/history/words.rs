//! What each event did, and why, in words an auditor reads ([`Narrator`]).

use super::*;

pub(super) fn names(executives: &[ExecutiveRef]) -> String {
    if executives.is_empty() {
        "nobody online".to_owned()
    } else {
        executives
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(super) fn shown(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "(not set)".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The changes of a context change, as "field old → new", joined.
pub(super) fn changes_in_words(
    changes: &serde_json::Map<String, Value>,
    previous: &serde_json::Map<String, Value>,
) -> String {
    changes
        .iter()
        .map(|(field, new)| {
            format!(
                "{field} changed {} → {}",
                shown(previous.get(field)),
                shown(Some(new))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn duration_in_words(seconds: u64) -> String {
    match seconds {
        s if s % 3600 == 0 && s > 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Says what events did and why, in order. Keeps what an event needs from the ones before
/// it (the context change behind a new chat).
#[derive(Debug, Default)]
pub struct Narrator {
    /// The last context change that decided chat identity, in words.
    identity_change: Option<String>,
}

impl Narrator {
    /// What `event` did, in words.
    pub fn describe(&mut self, event: &ConversationEvent) -> String {
        use ConversationEvent as E;
        match event {
            E::ChatOpened {
                reason,
                previous_chat_id,
                ..
            } => match reason {
                OpenReason::FirstMessage => "new chat: the customer's first message".to_owned(),
                OpenReason::AfterResolution => match previous_chat_id {
                    Some(previous) => {
                        format!("new chat: the customer wrote after chat {previous} was resolved")
                    }
                    None => "new chat: the customer wrote after the last chat was resolved".into(),
                },
                OpenReason::ContextChanged => match self.identity_change.take() {
                    Some(change) => format!("new chat: {change}"),
                    None => "new chat: a field that decides chat identity changed".to_owned(),
                },
            },
            E::MessageReceived { message, .. } => {
                format!("the customer sent a {} message", message.kind)
            }
            E::ReceiptRecorded {
                receipt,
                known_message,
                ..
            } => {
                let about = if *known_message {
                    "the message"
                } else {
                    "a message this conversation has no record of"
                };
                let mut words = format!(
                    "{} says {about} ({}) is {}",
                    receipt.provider, receipt.provider_message_id, receipt.status
                );
                if let Some(error) = receipt.errors.first() {
                    words.push_str(&format!(", error {}", error.code));
                    if let Some(title) = &error.title {
                        words.push_str(&format!(": {title}"));
                    }
                }
                words
            }
            E::ContextChanged {
                changes,
                previous,
                identity_changed,
                ..
            } => {
                let change = changes_in_words(changes, previous);
                if *identity_changed {
                    self.identity_change = Some(change.clone());
                    format!("context: {change}; that decides chat identity, so a new chat opens")
                } else {
                    format!("context: {change}")
                }
            }
            E::ChatAssigned {
                executive,
                rule,
                candidates,
                by,
                ..
            } => match rule {
                AssignmentRule::RoundRobin => format!(
                    "assigned to {} by round robin; candidates: {}",
                    executive.name,
                    names(candidates)
                ),
                AssignmentRule::AssigneeWentOffline => format!(
                    "assigned to {} because the assignee went offline; candidates: {}",
                    executive.name,
                    names(candidates)
                ),
                AssignmentRule::AssigneeLeft => format!(
                    "assigned to {} because the assignee no longer works these chats; candidates: {}",
                    executive.name,
                    names(candidates)
                ),
                AssignmentRule::Manual => format!(
                    "assigned to {} by {}",
                    executive.name,
                    by.as_deref().unwrap_or("a lead")
                ),
            },
            E::ChatReassigned {
                executive,
                previous,
                rule,
                candidates,
                by,
                ..
            } => {
                let to = match executive {
                    Some(e) => format!("reassigned from {} to {}", previous.name, e.name),
                    None => format!("taken from {} and back to waiting", previous.name),
                };
                match rule {
                    AssignmentRule::Manual => {
                        format!("{to} by {}", by.as_deref().unwrap_or("a lead"))
                    }
                    AssignmentRule::AssigneeWentOffline => format!(
                        "{to}: {} went offline; candidates: {}",
                        previous.name,
                        names(candidates)
                    ),
                    AssignmentRule::AssigneeLeft => format!(
                        "{to}: {} no longer works these chats (deactivated, or moved); candidates: {}",
                        previous.name,
                        names(candidates)
                    ),
                    AssignmentRule::RoundRobin => {
                        format!("{to} by round robin; candidates: {}", names(candidates))
                    }
                }
            }
            E::ReplyQueued {
                kind,
                template,
                purpose,
                by,
                ..
            } => match (purpose, template) {
                (OutboundPurpose::RatingRequest, _) => {
                    "rating request queued for the customer".to_owned()
                }
                (_, Some(template)) => {
                    format!(
                        "{by} queued template {} ({})",
                        template.name, template.language
                    )
                }
                _ => format!("{by} queued a {kind} reply"),
            },
            E::MediaStored { index, media, .. } => format!(
                "attachment {} fetched from the provider and kept ({}, {} bytes)",
                index + 1,
                media.mime,
                media.size
            ),
            E::MediaFetchFailed {
                index,
                attempt,
                code,
                reason,
                retryable,
                ..
            } => format!(
                "fetching attachment {} failed (try {attempt}): {}{}",
                index + 1,
                crate::media::failure_text(*code, reason),
                if *retryable { "; it is tried again" } else { "; given up" }
            ),
            E::ForwardedToAgent {
                tenant,
                genesys_message_id,
                attempts,
                ..
            } => format!(
                "handed to {tenant}'s agents in Genesys{} after {attempts} attempt(s)",
                genesys_message_id
                    .as_deref()
                    .map(|id| format!(" (Genesys message {id})"))
                    .unwrap_or_default()
            ),
            E::ForwardToAgentFailed {
                tenant,
                code,
                reason,
                attempts,
                ..
            } => format!(
                "Genesys ({tenant}) did not take the message after {attempts} attempt(s): {}{reason}",
                code.as_deref().map(|c| format!("({c}) ")).unwrap_or_default()
            ),
            E::GenesysConversationMapped {
                tenant,
                conversation_id,
                ..
            } => format!("the customer's messages go to Genesys conversation {conversation_id} ({tenant})"),
            E::ReceiptForwardedToAgent {
                tenant,
                status,
                accepted,
                reason,
                ..
            } => match (accepted, reason) {
                (true, _) => format!("Genesys ({tenant}) was told the agent's message is {status}"),
                (false, reason) => format!(
                    "Genesys ({tenant}) would not hear that the agent's message is {status}: {}",
                    reason.as_deref().unwrap_or("no reason given")
                ),
            },
            E::DispatchAttempted { attempt, .. } => {
                format!("sending the message to the provider (attempt {attempt})")
            }
            E::DispatchRetrying {
                attempt,
                code,
                error,
                retry_at,
                ..
            } => {
                let code = code.map(|c| format!("error {c}: ")).unwrap_or_default();
                format!(
                    "attempt {attempt} failed ({code}{error}); trying again at {}",
                    retry_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            }
            E::MessageDispatched {
                provider_message_id,
                attempts,
                ..
            } => format!(
                "the provider accepted the message as {provider_message_id} (attempt {attempts})"
            ),
            E::MessageDispatchFailed {
                code,
                error,
                permanent,
                attempts,
                ..
            } => {
                let code = code.map(|c| format!(" {c}")).unwrap_or_default();
                let outcome = if *permanent {
                    "not sent: retrying cannot help"
                } else {
                    "not sent yet: it will be retried"
                };
                format!("the provider refused the message (error{code}: {error}) after {attempts} attempts; {outcome}")
            }
            E::ChatResolved { by, .. } => format!("resolved by {by}; a rating request follows"),
            E::ChatRated { rating, .. } => format!("the customer rated the chat {rating} of 5"),
            E::SlaClockStarted { .. } => {
                "SLA clock started: a customer message waits for an answer".to_owned()
            }
            E::SlaClockStopped { reason, .. } => match reason {
                SlaStop::Answered => "SLA clock stopped: an executive answered".to_owned(),
                SlaStop::Resolved => "SLA clock stopped: the chat was resolved".to_owned(),
                SlaStop::Closed => "SLA clock stopped: the chat was closed".to_owned(),
            },
            E::SlaAlertRaised(breach) | E::SlaEscalated(breach) => {
                let what = if matches!(event, E::SlaAlertRaised(_)) {
                    "SLA alert"
                } else {
                    "SLA escalation"
                };
                let mut words = format!(
                    "{what}: no answer {} after the customer's message (policy v{}); due {}, raised {}",
                    duration_in_words(breach.threshold_seconds),
                    breach.policy_version,
                    breach.due_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    breach.fired_at.format("%Y-%m-%d %H:%M:%S UTC"),
                );
                if let Some(n) = &breach.notification {
                    words.push_str(&format!("; {} notified", n.to));
                }
                words
            }
            E::TagApplied { tag, by, .. } => format!("tag \"{tag}\" applied by {by}"),
            E::TagRemoved { tag, by, .. } => format!("tag \"{tag}\" removed by {by}"),
            E::ChatClosed { superseded_by, .. } => {
                format!("closed: a context change opened chat {superseded_by} in its place")
            }
            E::PersonalDataErased { by, .. } => format!(
                "the customer's messages and name were erased at their request ({by}); their key was destroyed"
            ),
        }
    }
}
