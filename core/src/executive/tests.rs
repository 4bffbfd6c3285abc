use super::*;

#[test]
fn one_email_is_one_executive() {
    assert_eq!(
        executive_id("Asha@Example.com "),
        executive_id("asha@example.com")
    );
    assert_ne!(
        executive_id("asha@example.com"),
        executive_id("ravi@example.com")
    );
}

#[test]
fn a_stream_folds_to_who_the_executive_is_now() {
    let id = executive_id("asha@example.com");
    let at = chrono::Utc::now();
    let registered = ExecutiveEvent::Registered(ExecutiveRegistered {
        executive_id: id,
        email: "asha@example.com".into(),
        name: "Asha".into(),
        role: Role::Executive,
        stakeholders: vec!["partner".into()],
        password_hash: "h1".into(),
    });
    let events = [
        registered,
        ExecutiveEvent::StatusChanged(ExecutiveStatusChanged {
            executive_id: id,
            online: true,
            at,
        }),
        ExecutiveEvent::Renamed(ExecutiveRenamed {
            executive_id: id,
            name: "Asha K".into(),
            at,
        }),
        ExecutiveEvent::RoleChanged(ExecutiveRoleChanged {
            executive_id: id,
            role: Role::Lead,
            stakeholders: vec!["customer".into()],
            at,
        }),
        ExecutiveEvent::Deactivated(ExecutiveDeactivated {
            executive_id: id,
            reason: "left".into(),
            at,
        }),
    ];
    let state = ExecutiveState::fold(&events).unwrap();
    assert_eq!(state.name, "Asha K");
    assert_eq!(state.role, Role::Lead);
    assert!(!state.active && !state.online);
    assert_eq!(
        state.session_generation, 2,
        "the role change and the deactivation"
    );
    assert!(!state.works("customer"), "deactivated");
    let events: Vec<_> = events
        .into_iter()
        .chain([ExecutiveEvent::Reactivated(ExecutiveReactivated {
            executive_id: id,
            at,
        })])
        .collect();
    let state = ExecutiveState::fold(&events).unwrap();
    assert!(state.works("customer") && !state.works("partner"));
    assert_eq!(state.session_generation, 2, "reactivating ends nothing");
    assert!(
        ExecutiveState::fold(&events[1..]).is_none(),
        "not registered"
    );
}

#[test]
fn every_type_decodes() {
    for event_type in ExecutiveEvent::TYPES {
        assert!(ExecutiveEvent::decode(event_type, &serde_json::json!({})).is_some());
    }
    assert!(ExecutiveEvent::decode("MessageReceived", &serde_json::json!({})).is_none());
}

#[test]
fn failures_in_a_row_lock_until_a_login_lock_or_unlock_ends_them() {
    let id = executive_id("asha@example.com");
    let at = chrono::Utc::now();
    let mut state = ExecutiveState::fold(&[ExecutiveEvent::Registered(ExecutiveRegistered {
        executive_id: id,
        email: "asha@example.com".into(),
        name: "Asha".into(),
        role: Role::Executive,
        stakeholders: vec!["partner".into()],
        password_hash: "h".into(),
    })]);
    let hour = chrono::Duration::hours(1);
    let fail = |state: &mut Option<ExecutiveState>| {
        let (failed, lock) = state.as_ref().unwrap().login_failed(None, at, 3, hour);
        ExecutiveState::apply(state, &ExecutiveEvent::LoginFailed(failed));
        if let Some(lock) = lock.clone() {
            ExecutiveState::apply(state, &ExecutiveEvent::Locked(lock));
        }
        lock
    };
    assert!(fail(&mut state).is_none());
    ExecutiveState::apply(
        &mut state,
        &ExecutiveEvent::LoggedIn(ExecutiveLoggedIn {
            executive_id: id,
            token_id: "t".into(),
            at,
        }),
    );
    assert!(
        fail(&mut state).is_none() && fail(&mut state).is_none(),
        "a login starts the count again"
    );
    let lock = fail(&mut state).expect("the third in a row locks");
    assert_eq!(lock.until, at + hour);
    let s = state.as_ref().unwrap();
    assert_eq!(s.locked_at(at), Some(at + hour));
    assert_eq!(s.locked_at(at + hour), None, "a lock ends by itself");
    for _ in 0..3 {
        assert!(
            fail(&mut state).is_none(),
            "a locked account is not locked again"
        );
    }
    ExecutiveState::apply(
        &mut state,
        &ExecutiveEvent::Unlocked(AccountUnlocked {
            executive_id: id,
            reason: "verified by phone".into(),
            at,
        }),
    );
    assert_eq!(state.unwrap().locked_at(at), None);
}

#[test]
fn roles() {
    assert_eq!("auditor".parse::<Role>().unwrap(), Role::Auditor);
    assert_eq!(" Lead ".parse::<Role>().unwrap(), Role::Lead);
    assert!(!Role::Auditor.may_change() && Role::Auditor.sees_everything());
    assert!(Role::Executive.may_change() && !Role::Executive.sees_everything());
    assert!("boss".parse::<Role>().is_err());
}
