//! `chatledger config check`.

use super::*;

pub(super) fn check_config(dir: &Path) -> Result<(), CliError> {
    use std::io::Write;
    let report = crate::config::check::check(dir);
    let mut out = std::io::stdout().lock();
    let io = |e: std::io::Error| CliError::Io(e.to_string());
    for found in &report.problems {
        writeln!(out, "{found}").map_err(io)?;
    }
    if report.problems.is_empty() {
        writeln!(
            out,
            "{}: {} files, {} channels, no problems",
            dir.display(),
            report.files,
            report.channels
        )
        .map_err(io)?;
        Ok(())
    } else {
        Err(CliError::Config(format!(
            "{} problems in {}",
            report.problems.len(),
            dir.display()
        )))
    }
}
