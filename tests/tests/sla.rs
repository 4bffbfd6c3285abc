//! SLA timers across restarts and processes, with a clock the test drives.

use std::sync::Arc;
use std::time::Duration;

use chatledger_application::conversations::Conversations;
use chatledger_core::conversation::ConversationCommand;
use chatledger_core::Metadata;
use chatledger_projections::clock::{Clock, ManualClock};
use chatledger_projections::sla::{SlaNotifications, SlaTimers};
use chatledger_projections::tail::LogTail;
use chatledger_tests::db::Backend;

use uuid::Uuid;

fn notifications() -> SlaNotifications {
    SlaNotifications {
        alert_to: Some("+919000000777".into()),
        escalate_to: None,
        alert_template: "sla_alert".into(),
        escalation_template: "sla_escalation".into(),
        language: "en".into(),
    }
}

/// A process was down when the alert fell due. Two processes start after it: the alert is
/// recorded once, at once, with the time it was due beside the time it fired.
async fn an_overdue_alert_fires_once_after_a_restart_even_with_two_processes(backend: Backend) {
    let (_db, store) = backend.open().await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let received = clock.now();
    let conversation = chatledger_tests::messages::partner_conversation("+919638120888");
    let stream = conversation.stream();
    let message =
        chatledger_tests::messages::text_message("wamid.down", "+919638120888", "anyone there?");
    Conversations::new(store.clone())
        .handle(
            &stream,
            vec![ConversationCommand::ReceiveMessage {
                conversation,
                message: Box::new(message),
                new_chat_id: Uuid::new_v4(),
                now: received,
            }],
            &Metadata::by("test"),
        )
        .await
        .unwrap();

    // Nobody ran the timers while the alert fell due.
    clock.advance(chrono::Duration::seconds(200));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for _ in 0..2 {
        let process = SlaTimers::new(
            store.clone(),
            Arc::new(Conversations::new(store.clone())),
            clock.clone(),
            notifications(),
        );
        tokio::spawn(process.run(LogTail::new(store.clone()), stopped.clone()));
    }
    let alerts = async {
        loop {
            let alerts: Vec<_> = store
                .read_stream(&stream, 0, 100)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.event_type == "SlaAlertRaised")
                .collect();
            if !alerts.is_empty() {
                tokio::time::sleep(Duration::from_millis(300)).await;
                return alerts;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), alerts)
        .await
        .expect("the overdue alert fires");
    let alerts: Vec<_> = store
        .read_stream(&stream, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "SlaAlertRaised")
        .collect();
    assert_eq!(alerts.len(), 1, "two processes, one alert");
    let due: chrono::DateTime<chrono::Utc> =
        alerts[0].data["due_at"].as_str().unwrap().parse().unwrap();
    let fired: chrono::DateTime<chrono::Utc> = alerts[0].data["fired_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        due,
        received + chrono::Duration::seconds(180),
        "the true due time is kept"
    );
    assert_eq!(
        fired,
        received + chrono::Duration::seconds(200),
        "beside the time it fired"
    );
    assert_eq!(alerts[0].data["notification"]["to"], "+919000000777");
    stop.send_replace(true);
}

chatledger_tests::on_both_backends!(
    an_overdue_alert_fires_once_after_a_restart_even_with_two_processes
);
