//! `chatledger executive add | deactivate | reactivate | unlock | set-role | rename |
//! reset-password`:
//! managing the dashboard's users from the command line, through the same decisions as the
//! GraphQL mutations ([`crate::executives`]).

use chatledger_core::executive::{ExecutiveState, Role};
use clap::Subcommand;

use super::{open_for_command, CliError};
use crate::executives::{self, ExecutiveError};

#[derive(Debug, Subcommand)]
pub(super) enum ExecutiveCommand {
    /// Register an executive. The password is asked for on a terminal, or read as one line
    /// from standard input.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// A stakeholder whose chats they work (repeat for several).
        #[arg(long = "stakeholder")]
        stakeholders: Vec<String>,
        /// executive, lead, admin or auditor.
        #[arg(long, default_value = "executive")]
        role: String,
    },
    /// Stop an executive from logging in: their tokens stop working at once and their open
    /// chats are handed on.
    Deactivate {
        /// Their email (or id).
        #[arg(long)]
        email: String,
        /// Why, recorded with the change.
        #[arg(long)]
        reason: String,
    },
    /// Lift the lock that failed logins put on an account, before its time.
    Unlock {
        /// Their email (or id).
        #[arg(long)]
        email: String,
        /// Why, recorded with the change.
        #[arg(long)]
        reason: String,
    },
    /// Let a deactivated executive log in again.
    Reactivate {
        #[arg(long)]
        email: String,
    },
    /// Give an executive another role and stakeholders (their tokens end; chats of
    /// stakeholders they no longer work are handed on).
    SetRole {
        #[arg(long)]
        email: String,
        /// executive, lead, admin or auditor.
        #[arg(long)]
        role: String,
        /// A stakeholder whose chats they work (repeat for several).
        #[arg(long = "stakeholder")]
        stakeholders: Vec<String>,
    },
    /// Change an executive's name.
    Rename {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
    },
    /// Set a new password (asked for on a terminal, or one line of standard input); their
    /// tokens end.
    ResetPassword {
        #[arg(long)]
        email: String,
    },
}

const BY: &str = "cli:executive";

pub(super) async fn run(
    database_url: Option<&str>,
    command: ExecutiveCommand,
) -> Result<(), CliError> {
    let now = chrono::Utc::now();
    let refused = |e: ExecutiveError| match e {
        ExecutiveError::Store(e) => CliError::Io(e.to_string()),
        other => CliError::Config(other.to_string()),
    };
    match command {
        ExecutiveCommand::Add {
            email,
            name,
            stakeholders,
            role,
        } => {
            let role: Role = role.parse().map_err(CliError::Config)?;
            let password = super::read_password()?;
            let (store, _) = open_for_command(database_url).await?;
            let registered = executives::register(
                store.as_ref(),
                &email,
                &name,
                role,
                &stakeholders,
                &password,
                BY,
            )
            .await
            .map_err(refused)?;
            println!(
                "registered {} <{}> as {} for {} (executive {})",
                registered.name,
                registered.email,
                role.as_str(),
                works(role, &registered.stakeholders),
                registered.executive_id
            );
        }
        ExecutiveCommand::Deactivate { email, reason } => {
            let (store, _) = open_for_command(database_url).await?;
            let state =
                executives::deactivate(store.as_ref(), executives::find(&email), &reason, BY, now)
                    .await
                    .map_err(refused)?;
            println!(
                "deactivated {}: their tokens no longer work",
                describe(&state)
            );
        }
        ExecutiveCommand::Unlock { email, reason } => {
            let (store, _) = open_for_command(database_url).await?;
            let state =
                executives::unlock(store.as_ref(), executives::find(&email), &reason, BY, now)
                    .await
                    .map_err(refused)?;
            println!("unlocked {}", describe(&state));
        }
        ExecutiveCommand::Reactivate { email } => {
            let (store, _) = open_for_command(database_url).await?;
            let state = executives::reactivate(store.as_ref(), executives::find(&email), BY, now)
                .await
                .map_err(refused)?;
            println!("reactivated {}", describe(&state));
        }
        ExecutiveCommand::SetRole {
            email,
            role,
            stakeholders,
        } => {
            let role: Role = role.parse().map_err(CliError::Config)?;
            let (store, _) = open_for_command(database_url).await?;
            let state = executives::change_role(
                store.as_ref(),
                executives::find(&email),
                role,
                &stakeholders,
                BY,
                now,
            )
            .await
            .map_err(refused)?;
            println!("{} is now {}", state.email, describe(&state));
        }
        ExecutiveCommand::Rename { email, name } => {
            let (store, _) = open_for_command(database_url).await?;
            let state =
                executives::rename(store.as_ref(), executives::find(&email), &name, BY, now)
                    .await
                    .map_err(refused)?;
            println!("renamed: {}", describe(&state));
        }
        ExecutiveCommand::ResetPassword { email } => {
            let password = super::read_password()?;
            let (store, _) = open_for_command(database_url).await?;
            let state = executives::reset_password(
                store.as_ref(),
                executives::find(&email),
                &password,
                BY,
                now,
            )
            .await
            .map_err(refused)?;
            println!(
                "new password set for {}: their earlier tokens no longer work",
                state.email
            );
        }
    }
    Ok(())
}

fn works(role: Role, stakeholders: &[String]) -> String {
    if stakeholders.is_empty() || role.sees_everything() {
        "all stakeholders".to_owned()
    } else {
        stakeholders.join(", ")
    }
}

fn describe(state: &ExecutiveState) -> String {
    format!(
        "{} <{}>, {} for {}{}",
        state.name,
        state.email,
        state.role.as_str(),
        works(state.role, &state.stakeholders),
        if state.active { "" } else { " (deactivated)" }
    )
}
