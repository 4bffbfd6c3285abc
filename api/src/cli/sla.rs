//! `chatledger sla recompute`: what another SLA policy would have done.

use super::*;

pub(super) fn parse_day_or_time(
    text: &str,
    what: &str,
) -> Result<chrono::DateTime<chrono::Utc>, CliError> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| {
            CliError::Config(format!(
                "--{what} {text:?} is neither RFC 3339 nor YYYY-MM-DD"
            ))
        })
}

pub(super) async fn sla_recompute(
    database_url: Option<&str>,
    policy: &Path,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(policy)
        .map_err(|e| CliError::Config(format!("{}: {e}", policy.display())))?;
    let policy: chatledger_core::sla::SlaPolicy = serde_yaml_ng::from_str(&text)
        .map_err(|e| CliError::Config(format!("{}: {e}", policy.display())))?;
    policy.validate().map_err(CliError::Config)?;
    let from = from.map(|f| parse_day_or_time(f, "from")).transpose()?;
    let to = match to {
        Some(t) => parse_day_or_time(t, "to")?,
        None => chrono::Utc::now(),
    };
    let store = open_store(database_url).await?;
    let mut fold = chatledger_projections::sla::WhatIfFold::new(policy, from, to);
    let mut after = 0;
    loop {
        let batch = store
            .read_all(after, 5_000)
            .await
            .map_err(|e| CliError::Io(e.to_string()))?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        for event in &batch {
            fold.apply(event);
        }
    }
    let report = fold.finish();
    println!(
        "{:<12} {:>12} {:>12} {:>12} {:>12}",
        "stakeholder", "alerts", "escalations", "what-if", "what-if"
    );
    println!(
        "{:<12} {:>12} {:>12} {:>12} {:>12}",
        "", "(recorded)", "(recorded)", "alerts", "escalations"
    );
    for (stakeholder, c) in &report.by_stakeholder {
        println!(
            "{:<12} {:>12} {:>12} {:>12} {:>12}",
            stakeholder, c.live_alerts, c.live_escalations, c.alerts, c.escalations
        );
    }
    if report.differences.is_empty() {
        println!("\nno chat would have been treated differently");
    } else {
        println!("\nchats treated differently (alert, escalation: recorded -> what-if):");
        let yn = |(a, e): (bool, bool)| {
            format!(
                "{}/{}",
                if a { "alert" } else { "-" },
                if e { "escalation" } else { "-" }
            )
        };
        for d in &report.differences {
            println!(
                "  chat {} ({}), message {} waited {}s: {} -> {}",
                d.chat_id,
                d.stream,
                d.customer_message,
                d.waited_seconds,
                yn(d.live),
                yn(d.what_if)
            );
        }
    }
    Ok(())
}
