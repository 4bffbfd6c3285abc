//! What every GraphQL request is checked for before anything runs: its arguments and
//! variables are text any store can take, and it logs in at most once.
//!
//! A string argument with a NUL character or far past any real length would be recorded
//! (a reply's text) or sent to the database (a filter) and refused there; it is refused here
//! instead, naming the argument, with the code `BAD_USER_INPUT`. A request that aliases
//! `login` a thousand times would make the server check a thousand passwords: one `login` per
//! request, whatever the aliases.

use std::collections::HashSet;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, Positioned, ServerError, ServerResult, Value, Variables};
use chatledger_core::validate::{self, TEXT_MAX};
use std::sync::Arc;

/// The extension that checks each request (see the module's documentation).
pub struct InputGuard;

impl ExtensionFactory for InputGuard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(InputGuard)
    }
}

/// An error of the request's input: `BAD_USER_INPUT`, with the field at fault.
pub fn refused(field: &str, message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", "BAD_USER_INPUT");
    extensions.set("field", field);
    error.extensions = Some(extensions);
    error
}

#[async_trait::async_trait]
impl Extension for InputGuard {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let variables_json = variables
            .clone()
            .into_value()
            .into_json()
            .unwrap_or_default();
        validate::json("", &variables_json, TEXT_MAX)
            .map_err(|r| refused(&format!("${}", r.field), r.to_string()))?;
        let document = next.run(ctx, query, variables).await?;
        let mut walk = Walk {
            document: &document,
            fragments_seen: HashSet::new(),
            logins: 0,
        };
        for (_, operation) in document.operations.iter() {
            walk.selections(&operation.node.selection_set, 0)?;
        }
        if walk.logins > 1 {
            return Err(refused(
                "login",
                format!(
                    "a request may log in once; this one asks {} times",
                    walk.logins
                ),
            ));
        }
        Ok(document)
    }
}

/// Selection sets deeper than this are not walked (the schema refuses queries deeper than 10).
const DEPTH: usize = 64;

struct Walk<'a> {
    document: &'a ExecutableDocument,
    fragments_seen: HashSet<&'a Name>,
    logins: usize,
}

impl<'a> Walk<'a> {
    fn selections(
        &mut self,
        set: &'a Positioned<SelectionSet>,
        depth: usize,
    ) -> Result<(), ServerError> {
        if depth > DEPTH {
            return Ok(());
        }
        for selection in &set.node.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    if field.name.node.as_str() == "login" {
                        self.logins += 1;
                    }
                    for (name, value) in &field.arguments {
                        let path = format!("{}.{}", field.name.node, name.node);
                        // Variables are checked on their own, above; here only literals.
                        let literal = value
                            .node
                            .clone()
                            .into_const_with(|_| Ok::<_, ()>(Value::Null))
                            .unwrap_or(Value::Null);
                        argument(&path, &literal)?;
                    }
                    self.selections(&field.selection_set, depth + 1)?;
                }
                Selection::InlineFragment(fragment) => {
                    self.selections(&fragment.node.selection_set, depth + 1)?;
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    // Each fragment once: a cycle is the validator's to refuse, not ours to follow.
                    if !self.fragments_seen.insert(name) {
                        continue;
                    }
                    if let Some(fragment) = self.document.fragments.get(name) {
                        self.selections(&fragment.node.selection_set, depth + 1)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A literal argument's every string, as a text of at most [`TEXT_MAX`] characters.
fn argument(path: &str, value: &Value) -> Result<(), ServerError> {
    match value {
        Value::String(s) => {
            validate::text(path, s, TEXT_MAX).map_err(|r| refused(path, r.to_string()))
        }
        Value::List(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| argument(&format!("{path}[{i}]"), item)),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(key, item)| argument(&format!("{path}.{key}"), item)),
        _ => Ok(()),
    }
}
