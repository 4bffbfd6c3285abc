//! `tags.yaml`: each stakeholder's tag catalog.

use super::*;

/// What is wrong with a tag catalog as written in `tags.yaml`.
pub fn tag_problems(by_stakeholder: &BTreeMap<String, Vec<String>>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (stakeholder, tags) in by_stakeholder {
        let mut seen = std::collections::HashSet::new();
        for tag in tags {
            let spot = || Spot::Mention(format!("{stakeholder}:"));
            if tag.as_str() == chatledger_core::conversation::AWAITING_CUSTOMER_TAG {
                problems.push(Problem::new(
                    Spot::Mention(tag.clone()),
                    format!("{stakeholder}: {tag:?} is a system tag; it cannot be in a catalog"),
                ));
            } else if tag.trim().is_empty() {
                problems.push(Problem::new(
                    spot(),
                    format!("{stakeholder}: a tag is empty"),
                ));
            } else if !seen.insert(tag.trim().to_lowercase()) {
                problems.push(Problem::new(
                    Spot::Again(tag.clone()),
                    format!("{stakeholder}: the tag {tag:?} appears twice"),
                ));
            }
        }
    }
    problems
}

/// The tag catalog of each stakeholder, from `config/tags.yaml`.
#[derive(Debug, Clone, Default)]
pub struct TagCatalog {
    pub by_stakeholder: BTreeMap<String, Vec<String>>,
    pub source: String,
}

impl TagCatalog {
    pub fn load(config_dir: &Path) -> Result<Self, ConfigError> {
        let path = config_dir.join("tags.yaml");
        let source = path.display().to_string();
        let error = |message: String| ConfigError {
            source_name: source.clone(),
            message,
        };
        let by_stakeholder: BTreeMap<String, Vec<String>> = match std::fs::read_to_string(&path) {
            Ok(text) => serde_yaml_ng::from_str::<Option<BTreeMap<String, Vec<String>>>>(&text)
                .map_err(|e| error(e.to_string()))?
                .unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(error(format!("cannot be read: {e}"))),
        };
        if let Some(problem) = tag_problems(&by_stakeholder).into_iter().next() {
            return Err(error(problem.message));
        }
        let by_stakeholder: BTreeMap<String, Vec<String>> = by_stakeholder
            .into_iter()
            .map(|(stakeholder, tags)| (stakeholder_name(&stakeholder), tags))
            .collect();
        Ok(TagCatalog {
            by_stakeholder,
            source,
        })
    }

    /// The catalog of `stakeholder` (empty when none is configured).
    pub fn of(&self, stakeholder: &str) -> Vec<String> {
        self.by_stakeholder
            .get(&stakeholder_name(stakeholder))
            .cloned()
            .unwrap_or_default()
    }

    /// Records each stakeholder's catalog when it changed.
    pub async fn record(&self, store: &dyn EventStore) -> Result<Vec<String>, StoreError> {
        let mut recorded = Vec::new();
        for (stakeholder, tags) in &self.by_stakeholder {
            let stream = format!("config-tags-{stakeholder}");
            let data = serde_json::json!({"stakeholder": stakeholder, "tags": tags, "source": self.source});
            if record_config(store, &stream, "TagCatalogConfigured", data).await? {
                recorded.push(stream);
            }
        }
        Ok(recorded)
    }
}
