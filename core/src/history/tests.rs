use super::*;
use crate::conversation::{ConversationRef, CustomerKey};
use serde_json::json;

fn conversation() -> ConversationRef {
    ConversationRef {
        channel: "partner".into(),
        channel_number: "919099039188".into(),
        stakeholder: "partner".into(),
        customer: CustomerKey::Phone("+919638120888".into()),
    }
}

#[test]
fn a_new_chat_says_which_context_change_opened_it() {
    let at: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
    let (old, new) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let change = ConversationEvent::ContextChanged {
        conversation: conversation(),
        changes: json!({"documents_status": "Approved"})
            .as_object()
            .unwrap()
            .clone(),
        previous: json!({"documents_status": "Pending"})
            .as_object()
            .unwrap()
            .clone(),
        context: json!({"documents_status": "Approved"}),
        identity_fields: vec!["documents_status".into()],
        identity_changed: true,
        chat_id: Some(old),
        changed_at: at,
    };
    let opened = ConversationEvent::ChatOpened {
        chat_id: new,
        conversation: conversation(),
        reason: OpenReason::ContextChanged,
        context: json!({"documents_status": "Approved"}),
        previous_chat_id: Some(old),
        opened_at: at,
    };
    let mut narrator = Narrator::default();
    assert!(narrator.describe(&change).ends_with("so a new chat opens"));
    assert_eq!(
        narrator.describe(&opened),
        "new chat: documents_status changed Pending → Approved"
    );
}

#[test]
fn assignments_name_the_rule_and_the_candidates() {
    let asha = ExecutiveRef {
        id: Uuid::from_u128(1),
        name: "Asha".into(),
    };
    let ravi = ExecutiveRef {
        id: Uuid::from_u128(2),
        name: "Ravi".into(),
    };
    let assigned = ConversationEvent::ChatAssigned {
        chat_id: Uuid::from_u128(9),
        executive: asha.clone(),
        rule: AssignmentRule::RoundRobin,
        candidates: vec![asha.clone(), ravi.clone()],
        by: None,
        cause: Uuid::from_u128(8),
        assigned_at: "2026-11-22T10:00:00Z".parse().unwrap(),
    };
    assert_eq!(
        Narrator::default().describe(&assigned),
        "assigned to Asha by round robin; candidates: Asha, Ravi"
    );
    let handed_on = ConversationEvent::ChatReassigned {
        chat_id: Uuid::from_u128(9),
        executive: Some(ravi.clone()),
        previous: asha,
        rule: AssignmentRule::AssigneeWentOffline,
        candidates: vec![ravi],
        by: None,
        cause: Uuid::from_u128(7),
        assigned_at: "2026-11-22T10:05:00Z".parse().unwrap(),
    };
    assert_eq!(
        Narrator::default().describe(&handed_on),
        "reassigned from Asha to Ravi: Asha went offline; candidates: Ravi"
    );
}
