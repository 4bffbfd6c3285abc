//! The dispatcher's records: each try before it is made (the fence between processes), a
//! failed try with when the next is due, and the outcome (kept and written again if writing
//! it fails, never sent again).

use super::*;

impl Dispatcher {
    /// Records try `attempt` before it is made. True when this dispatcher may make it; false
    /// when it was recorded by someone else first (then it is unknown here) or could not be
    /// recorded (then it is tried again later).
    pub(super) async fn record_attempt(
        &mut self,
        pending: &Pending,
        message_id: Uuid,
        attempt: u32,
    ) -> bool {
        let command = ConversationCommand::RecordDispatchAttempt {
            message_id,
            attempt,
            now: Utc::now(),
        };
        let result = self
            .conversations
            .handle(
                &pending.stream,
                vec![command],
                &Metadata::by("reactor:dispatcher"),
            )
            .await;
        match result {
            Ok(handled) if !handled.recorded.is_empty() => {
                if let Some(p) = self.pending.get_mut(&message_id) {
                    p.attempts = attempt;
                    p.tried_here = attempt;
                    p.unknown = false;
                }
                true
            }
            Ok(_) => {
                // Settled or tried by another process meanwhile: its events are on their way.
                let grace = self.limits.unknown_grace;
                if let Some(p) = self.pending.get_mut(&message_id) {
                    p.attempts = p.attempts.max(attempt);
                    p.unknown = true;
                    p.due = Instant::now() + grace;
                }
                false
            }
            Err(CommandError::Rejected(rejection)) => {
                tracing::error!(message.id = %message_id, reason = %rejection, "a queued message cannot be sent; dropping it");
                self.pending.remove(&message_id);
                false
            }
            Err(e) => {
                tracing::warn!(message.id = %message_id, error = %e, "recording a try failed; nothing sent, trying again shortly");
                self.postpone(&message_id, Instant::now() + Duration::from_secs(1));
                false
            }
        }
    }

    /// Records that try `attempt` failed and when the next is due, so that a process taking
    /// the message over goes on then instead of waiting out the grace. Not recorded: the next
    /// owner waits the grace, nothing worse.
    pub(super) async fn record_retrying(
        &self,
        pending: &Pending,
        message_id: Uuid,
        outcome: DispatchOutcome,
        attempt: u32,
    ) {
        let command = ConversationCommand::RecordDispatch {
            message_id,
            outcome,
            attempts: attempt,
            now: Utc::now(),
        };
        if let Err(e) = self
            .conversations
            .handle(
                &pending.stream,
                vec![command],
                &Metadata::by("reactor:dispatcher"),
            )
            .await
        {
            tracing::warn!(message.id = %message_id, error = %e, "recording a failed try failed");
        }
    }

    pub(super) async fn record(
        &mut self,
        pending: &Pending,
        message_id: Uuid,
        outcome: DispatchOutcome,
        attempts: u32,
    ) {
        let outcome_kept = outcome.clone();
        let command = ConversationCommand::RecordDispatch {
            message_id,
            outcome,
            attempts,
            now: Utc::now(),
        };
        let mut metadata = Metadata::by("reactor:dispatcher");
        metadata
            .extra
            .insert("channel".into(), serde_json::json!(pending.channel));
        match self
            .conversations
            .handle(&pending.stream, vec![command], &metadata)
            .await
        {
            Ok(_) | Err(CommandError::Rejected(_)) => {
                self.pending.remove(&message_id);
            }
            Err(e) => {
                // The outcome could not be written: keep it and write it later; the message
                // is not sent again.
                tracing::error!(message.id = %message_id, error = %e, "recording a dispatch outcome failed; writing it again shortly");
                if let Some(p) = self.pending.get_mut(&message_id) {
                    p.unwritten = Some(outcome_kept);
                    p.attempts = attempts;
                    p.due = Instant::now() + Duration::from_secs(1);
                }
            }
        }
    }
}
