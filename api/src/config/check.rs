//! `chatledger config check`: every problem in a configuration directory, each with its file
//! and line, found by the same rules `serve` loads it with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chatledger_core::channel::stakeholder_name;
use chatledger_core::sla::SlaPolicy;

use super::{read_channels, read_context_file, tag_problems, Problem, Spot};

/// One problem, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub file: String,
    /// From 1.
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// What a check read: the problems, and how much was configured.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<Found>,
    pub channels: usize,
    pub files: usize,
}

/// Checks `channels.yaml`, `context/*.yaml`, `tags.yaml` and `sla.yaml` in `dir`. A missing
/// file is not a problem (each has a default); a stakeholder named in one file and served by
/// no channel is.
pub fn check(dir: &Path) -> Report {
    let mut report = Report::default();
    let mut found = |file: &Path, text: &str, problems: Vec<Problem>| {
        for problem in problems {
            report.problems.push(Found {
                file: file.display().to_string(),
                line: line_of(text, &problem.spot),
                message: problem.message,
            });
        }
    };
    let read = |path: &Path| -> Option<Result<String, String>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Some(Ok(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(format!("cannot be read: {e}"))),
        }
    };
    let unreadable = |message: String| vec![Problem::new(Spot::Line(1), message)];
    let mut files = 0;
    let mut channels = 0;

    // Channels, and the stakeholders they serve.
    let path = dir.join("channels.yaml");
    let mut served: Option<BTreeSet<String>> = None;
    match read(&path) {
        None => {}
        Some(Err(message)) => found(&path, "", unreadable(message)),
        Some(Ok(text)) => {
            files += 1;
            let (configured, problems) = read_channels(&text, &path.display().to_string());
            if let Some(configured) = configured {
                channels = configured.channels.len();
                served = Some(
                    configured
                        .channels
                        .iter()
                        .map(|c| c.stakeholder.clone())
                        .collect(),
                );
            }
            found(&path, &text, problems);
        }
    }
    // A stakeholder another file names must be served by a channel.
    let unserved = |stakeholder: &str, spot: Spot| -> Option<Problem> {
        let served = served.as_ref()?;
        let name = stakeholder_name(stakeholder);
        (!served.contains(&name)).then(|| {
            Problem::new(
                spot,
                format!(
                    "the stakeholder {stakeholder:?} is served by no channel in channels.yaml (served: {})",
                    served.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    };

    // Context fields, a file per stakeholder.
    let context = dir.join("context");
    let mut paths: Vec<_> = std::fs::read_dir(&context)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    for path in paths
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
    {
        match read(path) {
            None => {}
            Some(Err(message)) => found(path, "", unreadable(message)),
            Some(Ok(text)) => {
                files += 1;
                let mut problems = read_context_file(&text).err().unwrap_or_default();
                let stakeholder = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                problems.extend(unserved(stakeholder, Spot::Line(1)));
                found(path, &text, problems);
            }
        }
    }

    // The tag catalog.
    let path = dir.join("tags.yaml");
    if let Some(text) = read(&path) {
        match text {
            Err(message) => found(&path, "", unreadable(message)),
            Ok(text) => {
                files += 1;
                let problems =
                    match serde_yaml_ng::from_str::<Option<BTreeMap<String, Vec<String>>>>(&text) {
                        Err(e) => vec![Problem::yaml(&e)],
                        Ok(catalog) => {
                            let catalog = catalog.unwrap_or_default();
                            let mut problems = tag_problems(&catalog);
                            for stakeholder in catalog.keys() {
                                problems.extend(unserved(
                                    stakeholder,
                                    Spot::Mention(format!("{stakeholder}:")),
                                ));
                            }
                            problems
                        }
                    };
                found(&path, &text, problems);
            }
        }
    }

    // The SLA policy.
    let path = dir.join("sla.yaml");
    if let Some(text) = read(&path) {
        match text {
            Err(message) => found(&path, "", unreadable(message)),
            Ok(text) => {
                files += 1;
                let problems = match serde_yaml_ng::from_str::<SlaPolicy>(&text) {
                    Err(e) => vec![Problem::yaml(&e)],
                    Ok(policy) => {
                        let mut problems = Vec::new();
                        if let Err(message) = policy.validate() {
                            // The message starts with the stakeholder it is about.
                            let who = message.split(':').next().unwrap_or_default().to_owned();
                            let spot = if who == "default" {
                                Spot::Mention("alert_after_seconds".into())
                            } else {
                                Spot::Mention(format!("{who}:"))
                            };
                            problems.push(Problem::new(spot, message));
                        }
                        for stakeholder in policy.stakeholders.keys() {
                            problems.extend(unserved(
                                stakeholder,
                                Spot::Mention(format!("{stakeholder}:")),
                            ));
                        }
                        problems
                    }
                };
                found(&path, &text, problems);
            }
        }
    }
    report.channels = channels;
    report.files = files;
    report
}

/// The line (from 1) a problem's spot points at in `text`; the first line when it cannot be
/// found.
fn line_of(text: &str, spot: &Spot) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let is_comment = |line: &str| line.trim_start().starts_with('#');
    let found = match spot {
        Spot::Line(n) => Some(*n),
        Spot::Mention(needle) | Spot::Again(needle) => {
            let skip = usize::from(matches!(spot, Spot::Again(_)));
            lines
                .iter()
                .enumerate()
                .filter(|(_, l)| !is_comment(l) && l.contains(needle.as_str()))
                .nth(skip)
                .map(|(i, _)| i + 1)
        }
        Spot::Entry { key, n } => {
            let start = lines
                .iter()
                .position(|l| !is_comment(l) && l.trim_start().starts_with(&format!("{key}:")));
            start.map(|start| {
                // The entries of a block list: lines that start with "- " at the list's
                // indentation. (A flow list `[…]` has no line per entry: its key's line.)
                let mut indent = None;
                let mut seen = 0;
                for (i, line) in lines.iter().enumerate().skip(start + 1) {
                    if is_comment(line) || line.trim().is_empty() {
                        continue;
                    }
                    let depth = line.len() - line.trim_start().len();
                    if !line.trim_start().starts_with("- ") && !line.trim_start().eq("-") {
                        if depth == 0 {
                            break;
                        }
                        continue;
                    }
                    if *indent.get_or_insert(depth) != depth {
                        continue;
                    }
                    if seen == *n {
                        return i + 1;
                    }
                    seen += 1;
                }
                start + 1
            })
        }
    };
    found.unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_is_valid() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config"));
        let report = check(dir);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.channels, 4);
        assert_eq!(report.files, 4);
    }

    #[test]
    fn every_problem_is_named_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("channels.yaml"),
            "# two channels\ndefault_country: IN\nchannels:\n  - key: a\n    number: \"91\"\n    stakeholder: Partner\n    provider: pinbot\n  - key: b\n    number: \"+91 99\"\n    stakeholder: customer\n    provider: pinbot\n    auth: sometimes\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("tags.yaml"),
            "partner:\n  - Documents\n  - Awaiting Customer Response\nvendr:\n  - Payment\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sla.yaml"),
            "alert_after_seconds: 600\nescalate_after_seconds: 60\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("context")).unwrap();
        std::fs::write(
            dir.path().join("context/partner.yaml"),
            "fields:\n  - documents_status\n  - documents_status\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("context/srdp.yaml"),
            "fields: [a]\nextra: 1\n",
        )
        .unwrap();
        let report = check(dir.path());
        let lines: Vec<String> = report
            .problems
            .iter()
            .map(|f| {
                format!(
                    "{}:{}",
                    Path::new(&f.file)
                        .strip_prefix(dir.path())
                        .unwrap()
                        .display(),
                    f.line
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                "channels.yaml:8",
                "channels.yaml:8",
                "context/partner.yaml:3",
                "context/srdp.yaml:2",
                "context/srdp.yaml:1",
                "tags.yaml:3",
                "tags.yaml:4",
                "sla.yaml:1",
            ],
            "{:#?}",
            report.problems
        );
        let all: Vec<String> = report.problems.iter().map(|f| f.to_string()).collect();
        assert!(all[0].contains("international digits"), "{all:?}");
        assert!(all[1].contains("auth must be"), "{all:?}");
        assert!(all[2].contains("appears twice"), "{all:?}");
        assert!(all[3].contains("extra"), "{all:?}");
        assert!(
            all[4].contains("\"srdp\" is served by no channel"),
            "{all:?}"
        );
        assert!(all[5].contains("system tag"), "{all:?}");
        assert!(
            all[6].contains("vendr") && all[6].contains("served by no channel"),
            "{all:?}"
        );
        assert!(all[7].contains("before the escalation"), "{all:?}");
    }
}
