//! `chatledger verify` and `chatledger events`: the log as auditors read it.

use super::*;

pub(super) async fn verify(database_url: Option<&str>, expect: &[String]) -> Result<(), CliError> {
    let noted = expect
        .iter()
        .map(|noted| {
            noted
                .split_once(':')
                .and_then(|(p, h)| Some((p.trim().parse::<u64>().ok()?, h.trim().parse().ok()?)))
                .ok_or_else(|| {
                    CliError::Config(format!(
                        "--expect takes POSITION:HASH (a position and 64 hex digits), not {noted:?}"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let store = open_store(database_url).await?;
    let head = store
        .head_position()
        .await
        .map_err(|e| CliError::Io(e.to_string()))?;
    let bar = indicatif::ProgressBar::new(head);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "verifying [{bar:40}] {pos}/{len} positions ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let noted_count = noted.len();
    let report = chatledger_projections::audit::audit_log(store.as_ref(), noted, |position| {
        bar.set_position(position.min(head))
    })
    .await;
    bar.finish_and_clear();
    let report = report.map_err(|e| CliError::Io(e.to_string()))?;
    let seals = match report.seals_checked {
        0 => "no seals yet".to_owned(),
        n => format!(
            "{n} seals match, the last up to position {}",
            report.sealed_up_to
        ),
    };
    let noted = match noted_count {
        0 => String::new(),
        n => format!("; {n} noted heads match"),
    };
    println!(
        "verified {} events up to position {}, head hash {}; {seals}{noted}",
        report.head.events,
        report.head.position,
        report.head.head(),
    );
    Ok(())
}

pub(super) async fn events(
    database_url: Option<&str>,
    stream: Option<&str>,
    event_type: Option<&str>,
    from: Option<u64>,
    to: Option<u64>,
) -> Result<(), CliError> {
    use std::io::Write;
    let store = open_store(database_url).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut next = 0u64;
    let mut after = from.map_or(0, |f| f.saturating_sub(1));
    loop {
        let batch = match stream {
            Some(stream) => {
                let batch = store.read_stream(stream, next, 5_000).await;
                if let Ok(Some(last)) = batch.as_ref().map(|b| b.last()) {
                    next = last.version + 1;
                }
                batch
            }
            None => {
                let batch = store.read_all(after, 5_000).await;
                if let Ok(Some(last)) = batch.as_ref().map(|b| b.last()) {
                    after = last.position;
                }
                batch
            }
        }
        .map_err(|e| CliError::Io(e.to_string()))?;
        if batch.is_empty() {
            break;
        }
        for event in batch {
            if from.is_some_and(|f| event.position < f)
                || event_type.is_some_and(|t| event.event_type != t)
            {
                continue;
            }
            if to.is_some_and(|t| event.position > t) {
                return Ok(());
            }
            let line = serde_json::to_string(&event).map_err(|e| CliError::Io(e.to_string()))?;
            // A closed pipe (`| head`) just ends the listing.
            if writeln!(out, "{line}").is_err() {
                return Ok(());
            }
        }
    }
    let _ = out.flush();
    Ok(())
}
