//! `context/*.yaml` and what the transaction system's webhooks need.

use super::*;

/// The context fields that decide one stakeholder's chat identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextFields {
    pub stakeholder: String,
    pub fields: Vec<String>,
    /// Where it was read from.
    pub source: String,
}

impl ContextFields {
    /// Its configuration stream.
    pub fn stream(&self) -> String {
        format!("config-context-{}", self.stakeholder)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ContextFile {
    fields: Vec<String>,
}

/// What is wrong with one stakeholder's context fields as written in `context/*.yaml`.
pub(super) fn context_problems(fields: &[String]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for field in fields {
        if field.trim().is_empty() {
            problems.push(Problem::new(
                Spot::Mention("fields:".into()),
                "a field name is empty",
            ));
        } else if !seen.insert(field.as_str()) {
            problems.push(Problem::new(
                Spot::Again(field.clone()),
                format!("the field {field:?} appears twice"),
            ));
        }
    }
    problems
}

/// Reads one `context/{stakeholder}.yaml`: its fields, or every problem found.
pub fn read_context_file(text: &str) -> Result<Vec<String>, Vec<Problem>> {
    let file: ContextFile = serde_yaml_ng::from_str(text).map_err(|e| vec![Problem::yaml(&e)])?;
    let problems = context_problems(&file.fields);
    if problems.is_empty() {
        Ok(file.fields)
    } else {
        Err(problems)
    }
}

/// What the transaction system's webhooks need.
#[derive(Debug)]
pub struct TransactionSettings {
    /// `TRANSACTION_API_TOKEN`: the bearer token the transaction system sends.
    pub token: Option<Secret>,
    /// Per stakeholder, from `config/context/{stakeholder}.yaml`.
    pub context_fields: BTreeMap<String, ContextFields>,
    /// How to read a ride time written without an offset (`TRANSACTION_TIMEZONE`, e.g.
    /// `+05:30`, the default).
    pub timezone: FixedOffset,
}

impl TransactionSettings {
    pub fn load(
        config_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let dir = config_dir.join("context");
        let mut context_fields = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for path in paths
                .into_iter()
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            {
                let source = path.display().to_string();
                let error = |message: String| ConfigError {
                    source_name: source.clone(),
                    message,
                };
                let stakeholder = stakeholder_name(
                    path.file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or_default(),
                );
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| error(format!("cannot be read: {e}")))?;
                let fields = read_context_file(&text)
                    .map_err(|problems| error(problems[0].message.clone()))?;
                context_fields.insert(
                    stakeholder.clone(),
                    ContextFields {
                        stakeholder,
                        fields,
                        source,
                    },
                );
            }
        }
        Self::new(context_fields, env)
    }

    pub fn new(
        context_fields: BTreeMap<String, ContextFields>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let timezone = match env("TRANSACTION_TIMEZONE") {
            Some(tz) => tz.trim().parse::<FixedOffset>().map_err(|_| ConfigError {
                source_name: "TRANSACTION_TIMEZONE".into(),
                message: format!("{tz:?} is not an offset like +05:30"),
            })?,
            None => FixedOffset::east_opt(5 * 3600 + 30 * 60).expect("+05:30 is a valid offset"),
        };
        Ok(TransactionSettings {
            token: env("TRANSACTION_API_TOKEN")
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            context_fields,
            timezone,
        })
    }

    /// The fields that decide `stakeholder`'s chat identity (none when not configured).
    pub fn identity_fields(&self, stakeholder: &str) -> Vec<String> {
        self.context_fields
            .get(&stakeholder_name(stakeholder))
            .map(|c| c.fields.clone())
            .unwrap_or_default()
    }

    /// Records each stakeholder's context fields when they changed.
    pub async fn record(&self, store: &dyn EventStore) -> Result<Vec<String>, StoreError> {
        let mut recorded = Vec::new();
        for fields in self.context_fields.values() {
            let data =
                serde_json::to_value(fields).map_err(|e| StoreError::Invalid(e.to_string()))?;
            if record_config(store, &fields.stream(), "ContextFieldsConfigured", data).await? {
                recorded.push(fields.stream());
            }
        }
        Ok(recorded)
    }
}
