use super::*;

/// `executives`: who may log in, with what role, for which stakeholders.
pub struct Executives;

#[async_trait]
impl Projector for Executives {
    fn name(&self) -> &'static str {
        "executives"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["executives"]
    }

    fn wants(&self, event_type: &str) -> bool {
        ExecutiveEvent::is_one(event_type)
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE executives{s} (
                    executive_id TEXT PRIMARY KEY,
                    email TEXT NOT NULL,
                    name TEXT NOT NULL,
                    role TEXT NOT NULL,
                    stakeholders TEXT NOT NULL,
                    password_hash TEXT NOT NULL,
                    online BIGINT NOT NULL DEFAULT 0,
                    position BIGINT NOT NULL
                )"
            ),
            format!("CREATE UNIQUE INDEX executives{s}_by_email ON executives{s} (email)"),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        let Some(decoded) = ExecutiveEvent::decode(&event.event_type, &event.data) else {
            return Ok(());
        };
        let change = decoded.map_err(|e| ProjectionError::Event {
            position: event.position,
            reason: e.to_string(),
        })?;
        let id = change.executive_id().to_string();
        // (statement, its values after the executive's id)
        let (sql, values): (String, Vec<Arg>) = match change {
            ExecutiveEvent::Registered(registered) => (
                format!(
                    "INSERT INTO executives{s} (executive_id, email, name, role, stakeholders, password_hash, position)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (executive_id) DO NOTHING"
                ),
                vec![
                    registered.email.to_lowercase().into(),
                    registered.name.into(),
                    registered.role.as_str().into(),
                    serde_json::to_string(&registered.stakeholders).unwrap_or_default().into(),
                    registered.password_hash.into(),
                    event.position.into(),
                ],
            ),
            ExecutiveEvent::StatusChanged(changed) => (
                format!("UPDATE executives{s} SET online = $2 WHERE executive_id = $1"),
                vec![i64::from(changed.online).into()],
            ),
            // Whether an executive may log in is the sessions' (kept from the log by every
            // process); here a deactivated executive is only no longer online.
            ExecutiveEvent::Deactivated(_) => (
                format!("UPDATE executives{s} SET online = 0 WHERE executive_id = $1"),
                vec![],
            ),
            // Failed logins, locks and logins are the log's to tell (see `executives::load`).
            ExecutiveEvent::Reactivated(_)
            | ExecutiveEvent::LoggedOut(_)
            | ExecutiveEvent::LoginFailed(_)
            | ExecutiveEvent::Locked(_)
            | ExecutiveEvent::Unlocked(_)
            | ExecutiveEvent::LoggedIn(_) => return Ok(()),
            ExecutiveEvent::RoleChanged(changed) => (
                format!("UPDATE executives{s} SET role = $2, stakeholders = $3 WHERE executive_id = $1"),
                vec![
                    changed.role.as_str().into(),
                    serde_json::to_string(&changed.stakeholders).unwrap_or_default().into(),
                ],
            ),
            ExecutiveEvent::Renamed(renamed) => (
                format!("UPDATE executives{s} SET name = $2 WHERE executive_id = $1"),
                vec![renamed.name.into()],
            ),
            ExecutiveEvent::PasswordReset(reset) => (
                format!("UPDATE executives{s} SET password_hash = $2 WHERE executive_id = $1"),
                vec![reset.password_hash.into()],
            ),
        };
        let mut args: Vec<Arg> = vec![id.into()];
        args.extend(values);
        tx.execute(&sql, &args).await?;
        Ok(())
    }
}

/// An executive as `executives` keeps them (never the password hash, but for a login).
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutiveRow {
    pub executive_id: String,
    pub name: String,
    pub role: String,
    pub stakeholders: Vec<String>,
    pub online: bool,
}

const COLUMNS: &str = "executive_id, name, role, stakeholders, online";

impl ExecutiveRow {
    fn from_row(row: &crate::read_db::DbRow) -> Self {
        ExecutiveRow {
            executive_id: row.text(0).unwrap_or_default(),
            name: row.text(1).unwrap_or_default(),
            role: row.text(2).unwrap_or_default(),
            stakeholders: row
                .json(3)
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            online: row.i64(4) == Some(1),
        }
    }
}

/// One executive by id.
pub async fn executive(
    db: &crate::read_db::ReadDb,
    executive_id: &str,
) -> Result<Option<ExecutiveRow>, sqlx::Error> {
    let row = db
        .fetch_optional(
            &format!("SELECT {COLUMNS} FROM executives WHERE executive_id = $1"),
            &[executive_id.into()],
        )
        .await?;
    Ok(row.as_ref().map(ExecutiveRow::from_row))
}

/// These executives (those that exist), in no particular order.
pub async fn executives_by_id(
    db: &crate::read_db::ReadDb,
    ids: &[&str],
) -> Result<Vec<ExecutiveRow>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let args: Vec<Arg> = ids.iter().map(|id| (*id).into()).collect();
    let rows = db
        .fetch_all(
            &format!(
                "SELECT {COLUMNS} FROM executives WHERE executive_id IN ({})",
                crate::read_db::placeholders(args.len())
            ),
            &args,
        )
        .await?;
    Ok(rows.iter().map(ExecutiveRow::from_row).collect())
}

/// Every executive, by name.
pub async fn all_executives(db: &crate::read_db::ReadDb) -> Result<Vec<ExecutiveRow>, sqlx::Error> {
    let rows = db
        .fetch_all(
            &format!("SELECT {COLUMNS} FROM executives ORDER BY name"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(ExecutiveRow::from_row).collect())
}

/// The executive with this email (as registered, lowercased) and their password hash, for a
/// login.
pub async fn executive_for_login(
    db: &crate::read_db::ReadDb,
    email: &str,
) -> Result<Option<(ExecutiveRow, String)>, sqlx::Error> {
    let row = db
        .fetch_optional(
            &format!("SELECT {COLUMNS}, password_hash FROM executives WHERE email = $1"),
            &[email.into()],
        )
        .await?;
    Ok(row.map(|row| {
        (
            ExecutiveRow::from_row(&row),
            row.text(5).unwrap_or_default(),
        )
    }))
}
