//! Logging in: the password checked (bounded, slowed for failures), failures recorded and an
//! account locked after too many in a row, and a token issued to an executive who starts
//! offline.

use super::*;

/// Checks an executive's email and password and issues a token. `client` is the address
/// the attempt came from, for the failure counts (see [`crate::login`]).
pub async fn login(
    state: &AppState,
    email: &str,
    password: &str,
    client: Option<std::net::IpAddr>,
) -> Result<LoginPayload, AuthError> {
    use chatledger_core::validate::{text, NAME_MAX, TEXT_MAX};
    text("email", email, NAME_MAX).map_err(|r| AuthError::RefusedInput(r.to_string()))?;
    text("password", password, TEXT_MAX).map_err(|r| AuthError::RefusedInput(r.to_string()))?;
    let attempt = crate::login::Attempt::new(email, client);
    state
        .logins
        .admit(&attempt)
        .map_err(|wait| AuthError::TooManyAttempts(wait.as_secs().max(1)))?;
    let row = chatledger_projections::read_models::executives::executive_for_login(
        &state.read_side.db,
        &email.trim().to_lowercase(),
    )
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "reading executives for a login failed");
        AuthError::Unavailable("the executives cannot be read from the database".into())
    })?;
    // Verify against a real hash even for an unknown email, so both take the same time and
    // the answer does not tell which emails exist.
    static UNKNOWN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let unknown =
        UNKNOWN.get_or_init(|| crate::auth::hash_password("no such executive").unwrap_or_default());
    let hash = row
        .as_ref()
        .map_or_else(|| unknown.clone(), |(_, hash)| hash.clone());
    let known = row
        .as_ref()
        .and_then(|(r, _)| Uuid::parse_str(&r.executive_id).ok());
    let now = Utc::now();
    // The account as its stream stands now (failures in a row, a lock), read from the log.
    let account = match known {
        Some(id) => Some(
            crate::executives::load(state.store.as_ref(), id)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "reading an executive for a login failed");
                    AuthError::Unavailable("the executive cannot be read from the log".into())
                })?
                .0,
        ),
        None => None,
    };
    // A locked account is refused before any password is checked, whatever the password:
    // a guesser learns nothing from its answers, and the guesses are not recorded.
    if let Some(until) = account.as_ref().and_then(|a| a.locked_at(now)) {
        state.logins.failed(&attempt);
        metrics::counter!("chatledger_login_failures_total", "reason" => "locked").increment(1);
        return Err(AuthError::Locked(until));
    }
    let matches = state.logins.verify(hash, password.to_owned()).await;
    let (Some((row, _)), true) = (row, matches) else {
        state.logins.failed(&attempt);
        let reason = if account.is_some() {
            "wrong_password"
        } else {
            "unknown_account"
        };
        metrics::counter!("chatledger_login_failures_total", "reason" => reason).increment(1);
        if let Some(account) = &account {
            let locked = crate::executives::login_failed(
                state.store.as_ref(),
                account.executive_id,
                client.map(|ip| ip.to_string()),
                now,
                state.limits.login_lock_after,
                chrono::Duration::from_std(state.limits.login_lock_for)
                    .unwrap_or(chrono::Duration::MAX),
            )
            .await;
            match locked {
                Ok(Some(lock)) => tracing::warn!(executive = %account.executive_id,
                    failures = lock.failures_in_a_row, until = %lock.until,
                    "account locked after failed logins in a row"),
                Ok(None) => {}
                Err(e) => tracing::warn!(executive = %account.executive_id, error = %e,
                    "a failed login could not be recorded"),
            }
        }
        return Err(AuthError::BadCredentials);
    };
    state.logins.succeeded(&attempt);
    let mut executive = Executive::from(row);
    let executive_id = Uuid::parse_str(&executive.id).map_err(|_| AuthError::BadCredentials)?;
    state.sessions.ready().await?;
    if state.sessions.active(executive_id) == Some(false) {
        return Err(AuthError::Deactivated);
    }
    // "Default OFFLINE on login": the executive goes online when they say so.
    match crate::executives::start_offline(state.store.as_ref(), executive_id, Utc::now()).await {
        // The dashboard reads the executive offline as soon as the login answers.
        Ok(Some(position)) => {
            let wait = state.read_side.wait_for(position);
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(executive = %executive_id, error = %e, "could not record the executive offline at login")
        }
    }
    executive.online = false;
    let viewer = Viewer {
        role: executive
            .role
            .parse()
            .map_err(|_| AuthError::BadCredentials)?,
        executive_id: Some(executive.id.clone()),
        name: executive.name.clone(),
        stakeholders: executive.stakeholders.clone(),
    };
    let generation = state.sessions.generation(executive_id);
    let (token, expires_at) = state.auth.issue_in(&viewer, generation, Utc::now())?;
    if let Ok((_, Some(facts))) = state.auth.read_token(&token) {
        if let Err(e) =
            crate::executives::logged_in(state.store.as_ref(), executive_id, &facts.token_id, now)
                .await
        {
            tracing::warn!(executive = %executive_id, error = %e, "a login could not be recorded");
        }
    }
    Ok(LoginPayload {
        token,
        expires_at,
        executive,
    })
}
