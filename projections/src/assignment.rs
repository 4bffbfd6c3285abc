//! The assignment reactor: new chats go round robin to the online executives of their
//! stakeholder; with nobody online a chat waits and is assigned, oldest first, when someone
//! comes online; an executive going offline (or deactivated, or moved to other stakeholders)
//! hands their open chats on the same way.
//!
//! The reactor decides *whom*; the conversation decider records it (`Assign`), checked
//! against the chat's real state. Each decision names its cause (the event that made the
//! chat wait, or the executive's going offline), and the event id derives from it: a
//! restarted reactor, or one in a second process, that decides the same thing again writes
//! nothing new. Replays never run reactors: assignments are read back from their events.
//!
//! The reactor's view of executives and open chats is folded from the whole log at start,
//! then kept current from the events it follows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chatledger_core::conversation::{
    AssignmentRule, ConversationCommand, ConversationEvent, DecodedEvent, ExecutiveRef,
};
use chatledger_core::executive::{ExecutiveEvent, ExecutiveState};
use chatledger_core::{EventStore, Metadata, Position, RecordedEvent};
use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::watch;
use uuid::Uuid;

use crate::ownership::Ownership;
use crate::snapshots::{Remembered, Snapshots};
use crate::tail::LogTail;
use chatledger_application::conversations::{CommandError, Conversations};

/// The shape of [`Roster`] as kept; a release that changes it (or what the fold means)
/// counts it up.
const SNAPSHOT_FORMAT: u32 = 1;
const NAME: &str = "assigner";

/// How often waiting chats and chats held by offline executives are looked at again, in
/// case a decision failed (the store was unavailable, say).
const SETTLE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Member {
    state: ExecutiveState,
    /// The event that took them offline, while they are.
    offline_since: Option<Uuid>,
    /// The last event that changed what they work (deactivation, role or stakeholders).
    changed_by: Uuid,
}

impl Member {
    /// Why this member may not keep a chat of `stakeholder`, if they may not: the rule and
    /// the event that made it so.
    fn must_hand_on(&self, stakeholder: &str) -> Option<(AssignmentRule, Uuid)> {
        if !self.state.works(stakeholder) {
            Some((AssignmentRule::AssigneeLeft, self.changed_by))
        } else if !self.state.online {
            Some((AssignmentRule::AssigneeWentOffline, self.offline_since?))
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct OpenChat {
    stream: String,
    stakeholder: String,
    assignee: Option<Uuid>,
    /// Its place in the log, for "oldest first".
    position: u64,
    /// The event that left it waiting (its opening, or its return to waiting).
    waiting_since: Uuid,
}

/// Executives and open chats, as the reactor needs them; kept as the assigner's snapshot.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Roster {
    members: BTreeMap<Uuid, Member>,
    chats: HashMap<Uuid, OpenChat>,
    /// The chats without an assignee, per stakeholder, oldest first: kept beside `chats` so
    /// that a new chat does not mean looking at every open one.
    waiting: HashMap<String, BTreeSet<(u64, Uuid)>>,
    last_assigned: HashMap<String, Uuid>,
    /// Channels whose chats agents elsewhere handle (Genesys): never assigned here.
    #[serde(skip)]
    elsewhere: std::collections::HashSet<String>,
}

impl Roster {
    /// Folds one event of the log.
    pub fn apply(&mut self, event: &DecodedEvent) {
        match event.event_type.as_str() {
            t if ExecutiveEvent::is_one(t) => {
                let Some(Ok(change)) = ExecutiveEvent::decode(t, &event.data) else {
                    return;
                };
                let id = change.executive_id();
                let previous = self.members.remove(&id);
                let mut state = previous.as_ref().map(|m| m.state.clone());
                ExecutiveState::apply(&mut state, &change);
                let Some(state) = state else { return };
                let (offline_since, changed_by) =
                    previous.map_or((None, event.event_id), |m| (m.offline_since, m.changed_by));
                let offline_since = match &change {
                    ExecutiveEvent::StatusChanged(c) => (!c.online).then_some(event.event_id),
                    ExecutiveEvent::Deactivated(_) => Some(event.event_id),
                    _ => offline_since,
                };
                let changed_by = match &change {
                    ExecutiveEvent::Deactivated(_) | ExecutiveEvent::RoleChanged(_) => {
                        event.event_id
                    }
                    _ => changed_by,
                };
                self.members.insert(
                    id,
                    Member {
                        state,
                        offline_since,
                        changed_by,
                    },
                );
            }
            _ => {
                if let Ok(Some(conversation)) = event.conversation() {
                    self.apply_conversation(
                        &event.stream,
                        event.position,
                        event.event_id,
                        conversation,
                    );
                }
            }
        }
    }

    fn apply_conversation(
        &mut self,
        stream: &str,
        position: u64,
        event_id: Uuid,
        event: &ConversationEvent,
    ) {
        match event {
            ConversationEvent::ChatOpened {
                chat_id,
                conversation,
                ..
            } => {
                self.remove(chat_id);
                if self.elsewhere.contains(&conversation.channel) {
                    return;
                }
                self.chats.insert(
                    *chat_id,
                    OpenChat {
                        stream: stream.to_owned(),
                        stakeholder: conversation.stakeholder.clone(),
                        assignee: None,
                        position,
                        waiting_since: event_id,
                    },
                );
                self.waiting
                    .entry(conversation.stakeholder.clone())
                    .or_default()
                    .insert((position, *chat_id));
            }
            ConversationEvent::ChatClosed { chat_id, .. }
            | ConversationEvent::ChatResolved { chat_id, .. } => self.remove(chat_id),
            ConversationEvent::ChatAssigned {
                chat_id, executive, ..
            } => self.set_assignee(*chat_id, Some(executive.id), event_id),
            ConversationEvent::ChatReassigned {
                chat_id, executive, ..
            } => self.set_assignee(*chat_id, executive.as_ref().map(|e| e.id), event_id),
            _ => {}
        }
    }

    /// Forgets an open chat (resolved, closed, or no longer assignable).
    fn remove(&mut self, chat_id: &Uuid) {
        if let Some(chat) = self.chats.remove(chat_id) {
            if let Some(waiting) = self.waiting.get_mut(&chat.stakeholder) {
                waiting.remove(&(chat.position, *chat_id));
            }
        }
    }

    fn set_assignee(&mut self, chat_id: Uuid, assignee: Option<Uuid>, event_id: Uuid) {
        if let Some(chat) = self.chats.get_mut(&chat_id) {
            chat.assignee = assignee;
            let waiting = self.waiting.entry(chat.stakeholder.clone()).or_default();
            match assignee {
                Some(executive) => {
                    waiting.remove(&(chat.position, chat_id));
                    self.last_assigned
                        .insert(chat.stakeholder.clone(), executive);
                }
                None => {
                    waiting.insert((chat.position, chat_id));
                    chat.waiting_since = event_id;
                }
            }
        }
    }

    /// The online executives of `stakeholder` (but `excluding`), in rotation order: the one
    /// after the last assigned first, by a stable order (their ids).
    fn rotation(&self, stakeholder: &str, excluding: Option<Uuid>) -> Vec<ExecutiveRef> {
        let online: Vec<ExecutiveRef> = self
            .members
            .iter()
            .filter(|(id, m)| {
                m.state.online && m.state.works(stakeholder) && Some(**id) != excluding
            })
            .map(|(id, m)| ExecutiveRef {
                id: *id,
                name: m.state.name.clone(),
            })
            .collect();
        let start = self
            .last_assigned
            .get(stakeholder)
            .and_then(|last| online.iter().position(|e| e.id > *last))
            .unwrap_or(0);
        online[start..]
            .iter()
            .chain(&online[..start])
            .cloned()
            .collect()
    }

    /// The waiting chats (of one stakeholder, or all) that someone online could take, oldest
    /// first. Chats of stakeholders nobody online works are not even looked at.
    fn waiting(&self, stakeholder: Option<&str>) -> Vec<Uuid> {
        let mut waiting: Vec<(u64, Uuid)> = self
            .waiting
            .iter()
            .filter(|(s, chats)| {
                !chats.is_empty()
                    && stakeholder.is_none_or(|only| only == s.as_str())
                    && !self.rotation(s, None).is_empty()
            })
            .flat_map(|(_, chats)| chats.iter().copied())
            .collect();
        waiting.sort_unstable();
        waiting.into_iter().map(|(_, id)| id).collect()
    }

    /// Chats whose assignee may not keep them (offline, deactivated, or no longer working
    /// their stakeholder), oldest first: (chat, assignee, rule, cause).
    fn held_by_absent(&self) -> Vec<(Uuid, Uuid, AssignmentRule, Uuid)> {
        let mut held: Vec<(u64, Uuid, Uuid, AssignmentRule, Uuid)> = self
            .chats
            .iter()
            .filter_map(|(chat_id, chat)| {
                let assignee = chat.assignee?;
                let (rule, cause) = self
                    .members
                    .get(&assignee)?
                    .must_hand_on(&chat.stakeholder)?;
                Some((chat.position, *chat_id, assignee, rule, cause))
            })
            .collect();
        held.sort_by_key(|(position, chat, ..)| (*position, *chat));
        held.into_iter()
            .map(|(_, chat, executive, rule, cause)| (chat, executive, rule, cause))
            .collect()
    }
}

/// The reactor.
pub struct Assigner {
    store: Arc<dyn EventStore>,
    conversations: Arc<Conversations>,
    roster: Roster,
    ownership: Ownership,
    /// How far this reactor's view of the log has got.
    seen: Position,
    memory: Option<Remembered>,
}

impl Assigner {
    pub fn new(store: Arc<dyn EventStore>, conversations: Arc<Conversations>) -> Self {
        Assigner {
            store,
            conversations,
            roster: Roster::default(),
            ownership: Ownership::local(),
            seen: 0,
            memory: None,
        }
    }

    /// Leaves the chats of `channels` to agents elsewhere (channels routed to Genesys).
    pub fn not_for(mut self, channels: impl IntoIterator<Item = String>) -> Self {
        self.roster.elsewhere = channels.into_iter().collect();
        self
    }

    /// Starts from the last snapshot in `snapshots` and keeps new ones there.
    pub fn remembered_in(mut self, snapshots: Snapshots) -> Self {
        self.memory = Some(Remembered::new(snapshots, NAME, SNAPSHOT_FORMAT));
        self
    }

    /// Takes the roster back from the last snapshot; the position it covers (0: none).
    async fn restore(&mut self) -> Position {
        let Some(memory) = self.memory.as_mut() else {
            return 0;
        };
        let Some((position, roster)) = memory.restore::<Roster>(self.store.as_ref()).await else {
            return 0;
        };
        let elsewhere = std::mem::take(&mut self.roster.elsewhere);
        self.roster = roster;
        self.roster.elsewhere = elsewhere;
        tracing::info!(
            position,
            open = self.roster.chats.len(),
            "the assigner starts from its snapshot"
        );
        position
    }

    /// Keeps the view as it stands, if a snapshot is due (or `now`, as it stops).
    async fn keep(&mut self, now: bool) {
        let Some(memory) = self.memory.as_mut() else {
            return;
        };
        memory.keep(self.seen, now, || &self.roster).await;
    }

    /// Assigns only the chats whose streams this process owns (default: all). Chats of a
    /// partition taken over are assigned at the next settling round.
    pub fn owned_by(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, tail: LogTail, mut shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        let from = self.restore().await;
        let Some(position) = crate::reactor::fold_log(
            store.as_ref(),
            from,
            |e| self.roster.apply(e),
            &mut shutdown,
            NAME,
        )
        .await
        else {
            return;
        };
        self.seen = position;
        self.keep(false).await;
        self.settle().await;
        let mut follower = tail.subscribe(position);
        let mut settle = tokio::time::interval(SETTLE_EVERY);
        loop {
            tokio::select! {
                next = follower.next() => match next {
                    Some(Ok(event)) => {
                        self.seen = self.seen.max(event.position);
                        crate::reactor::observe(NAME, &event, |e| self.roster.apply(e));
                        self.react(&event).await;
                        self.keep(false).await;
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "the assigner's read failed; it retries"),
                    None => return,
                },
                _ = settle.tick() => self.settle().await,
                _ = shutdown.changed() => {
                    self.keep(true).await;
                    return;
                }
            }
        }
    }

    async fn react(&mut self, event: &RecordedEvent) {
        match event.event_type.as_str() {
            "ChatOpened" => self.assign_waiting(None).await,
            t if ExecutiveEvent::is_one(t) => self.settle().await,
            _ => {}
        }
    }

    /// Hands on the chats of executives who went offline, were deactivated or moved, then
    /// assigns waiting chats.
    async fn settle(&mut self) {
        for (chat_id, executive, rule, cause) in self.roster.held_by_absent() {
            let Some(chat) = self.roster.chats.get(&chat_id) else {
                continue;
            };
            let candidates = self.roster.rotation(&chat.stakeholder, Some(executive));
            let chosen = candidates.first().cloned();
            self.decide(chat_id, chosen, rule, candidates, cause).await;
        }
        self.assign_waiting(None).await;
    }

    /// Assigns waiting chats (of one stakeholder, or all), oldest first.
    async fn assign_waiting(&mut self, stakeholder: Option<&str>) {
        for chat_id in self.roster.waiting(stakeholder) {
            let Some(chat) = self.roster.chats.get(&chat_id) else {
                continue;
            };
            let candidates = self.roster.rotation(&chat.stakeholder, None);
            let Some(chosen) = candidates.first().cloned() else {
                continue;
            };
            let cause = chat.waiting_since;
            self.decide(
                chat_id,
                Some(chosen),
                AssignmentRule::RoundRobin,
                candidates,
                cause,
            )
            .await;
        }
    }

    async fn decide(
        &mut self,
        chat_id: Uuid,
        executive: Option<ExecutiveRef>,
        rule: AssignmentRule,
        candidates: Vec<ExecutiveRef>,
        cause: Uuid,
    ) {
        let Some(chat) = self.roster.chats.get(&chat_id) else {
            return;
        };
        let stream = chat.stream.clone();
        // Held until the decision is recorded: the partition is not handed on meanwhile.
        let Some(_held) = self.ownership.hold(&stream, self.seen).await else {
            return;
        };
        let command = ConversationCommand::Assign {
            chat_id,
            executive,
            rule,
            candidates,
            by: None,
            cause,
            now: Utc::now(),
        };
        let mut metadata = Metadata::by("reactor:assignment");
        metadata.causation_id = Some(cause);
        match self
            .conversations
            .handle(&stream, vec![command], &metadata)
            .await
        {
            Ok(handled) => {
                for event in &handled.recorded {
                    let id = event.event_id(&stream);
                    self.roster.apply_conversation(&stream, u64::MAX, id, event);
                }
            }
            Err(CommandError::Rejected(rejection)) => {
                // Resolved, closed or replaced meanwhile: nothing to assign.
                tracing::debug!(chat.id = %chat_id, reason = %rejection, "assignment not needed");
                self.roster.remove(&chat_id);
            }
            Err(e) => {
                tracing::warn!(chat.id = %chat_id, error = %e, "assignment failed; it will be retried")
            }
        }
    }
}
