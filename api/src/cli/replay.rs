//! `chatledger replay`: read models rebuilt from the log and switched to.

use super::*;

pub(super) async fn replay(database_url: Option<&str>, only: Option<&str>) -> Result<(), CliError> {
    let projectors: Vec<_> = chatledger_projections::read_models::all()
        .into_iter()
        .filter(|p| only.is_none_or(|name| p.name() == name))
        .collect();
    if projectors.is_empty() {
        let names: Vec<&str> = chatledger_projections::read_models::all()
            .iter()
            .map(|p| p.name())
            .collect();
        return Err(CliError::Config(format!(
            "there is no read model {:?}; there are: {}",
            only.unwrap_or_default(),
            names.join(", ")
        )));
    }
    let (store, db) = open_for_command(database_url).await?;
    let head = store
        .head_position()
        .await
        .map_err(|e| CliError::Io(e.to_string()))?;
    let names: Vec<&str> = projectors.iter().map(|p| p.name()).collect();
    let bar = indicatif::ProgressBar::new(head);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} positions, {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(names.join(", "));
    let started = std::time::Instant::now();
    let rebuilt = chatledger_projections::runner::rebuild(
        store.clone(),
        &db,
        &projectors,
        |position, events| {
            bar.set_position(position.min(head));
            let rate = events as f64 / started.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!("{rate:.0} events/s"));
        },
    )
    .await
    .map_err(|e| CliError::Io(format!("rebuilding {} failed: {e}", names.join(", "))))?;
    bar.finish_and_clear();
    for (name, generation) in &rebuilt.generations {
        println!(
            "{name:<12} generation {generation}, up to position {}",
            rebuilt.checkpoint
        );
    }
    let seconds = rebuilt.elapsed.as_secs_f64();
    println!(
        "replayed {} events into {} fresh read models in {seconds:.2}s ({:.0} events/s)",
        rebuilt.events,
        rebuilt.generations.len(),
        rebuilt.events as f64 / seconds.max(0.001)
    );
    Ok(())
}
