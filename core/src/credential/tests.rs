use super::*;

fn sealed(tag: &str) -> SealedSecret {
    SealedSecret {
        key_id: "k1".into(),
        nonce: "n".into(),
        ciphertext: tag.into(),
    }
}

fn started(at: DateTime<Utc>, state: &str) -> CredentialEvent {
    CredentialEvent::OfficialSignupStarted {
        business_id: "acme".into(),
        state_sha256: state_digest(state),
        stakeholder: "customer".into(),
        expires_at: at + chrono::Duration::minutes(30),
        by: "admin".into(),
        at,
    }
}

#[test]
fn a_state_is_good_once_for_its_business_until_it_expires() {
    let now = Utc::now();
    let mut credential = Credential::default();
    credential.apply(&started(now, "acme.s1"));
    assert_eq!(credential.status, Some(CredentialStatus::Pending));
    assert!(credential.check_state("acme", "acme.s1", now).is_ok());
    assert_eq!(
        credential.check_state("acme", "acme.nope", now),
        Err(StateRefusal::Unknown)
    );
    assert_eq!(
        credential.check_state("acme", "other.s1", now),
        Err(StateRefusal::OtherBusiness)
    );
    assert!(matches!(
        credential.check_state("acme", "acme.s1", now + chrono::Duration::minutes(31)),
        Err(StateRefusal::Expired(_))
    ));
    let attempt_id = Uuid::new_v4();
    for event in [
        CredentialEvent::OnboardingAttempted {
            attempt_id,
            state_sha256: state_digest("acme.s1"),
            waba_id: "w".into(),
            phone_number_id: "p".into(),
            api_provider: "meta".into(),
            at: now,
        },
        CredentialEvent::TokenIssued {
            attempt_id,
            token: sealed("t1"),
            expires_at: Some(now + chrono::Duration::days(60)),
            token_type: None,
            scopes: vec![],
            at: now,
        },
    ] {
        credential.apply(&event);
    }
    // A failed step leaves the state usable for a retry.
    assert!(credential.check_state("acme", "acme.s1", now).is_ok());
    assert_eq!(
        credential.token, None,
        "no token before the signup completes"
    );
    credential.apply(&CredentialEvent::CredentialConnected {
        attempt_id,
        state_sha256: state_digest("acme.s1"),
        waba_id: "w".into(),
        phone_number_id: "p".into(),
        display_phone_number: "15550001111".into(),
        verified_name: None,
        channel_key: "15550001111".into(),
        at: now,
    });
    assert_eq!(credential.status, Some(CredentialStatus::Connected));
    assert_eq!(credential.token, Some(sealed("t1")));
    assert_eq!(
        credential.check_state("acme", "acme.s1", now),
        Err(StateRefusal::Used)
    );
}

#[test]
fn refresh_is_due_inside_the_margin_and_waits_after_a_failure() {
    let now = Utc::now();
    let day = chrono::Duration::days(1);
    let hour = chrono::Duration::hours(1);
    let mut credential = Credential {
        status: Some(CredentialStatus::Connected),
        token: Some(sealed("t")),
        token_expires_at: Some(now + day * 10),
        ..Credential::default()
    };
    assert_eq!(credential.refresh_due(day * 7, hour), Some(now + day * 3));
    credential.apply(&CredentialEvent::TokenRefreshFailed {
        attempt: 1,
        error: GraphError::local("down"),
        at: now + day * 4,
    });
    assert_eq!(
        credential.refresh_due(day * 7, hour),
        Some(now + day * 4 + hour)
    );
    credential.token_expires_at = None;
    assert_eq!(credential.refresh_due(day * 7, hour), None, "never expires");
    credential.token_expires_at = Some(now);
    credential.apply(&CredentialEvent::CredentialDisconnected {
        reason: "gone".into(),
        error: None,
        at: now,
    });
    assert_eq!(credential.refresh_due(day * 7, hour), None);
}

#[test]
fn suspensions_round_trip_and_every_type_is_listed() {
    use crate::standing::SuspensionCause;
    let at = Utc::now();
    let events = [
        started(at, "acme.s1"),
        CredentialEvent::CredentialSuspended {
            waba_id: "1".into(),
            cause: SuspensionCause::Restriction,
            reason: "Meta restricted the account".into(),
            restrictions: vec![crate::standing::CUSTOMER_INITIATED.into()],
            until: Some(at),
            notice: Uuid::from_u128(1),
            at,
        },
        CredentialEvent::CredentialReinstated {
            waba_id: "1".into(),
            cause: SuspensionCause::Restriction,
            reason: "lifted".into(),
            status: CredentialStatus::Connected,
            notice: Uuid::from_u128(2),
            at,
        },
    ];
    for event in events {
        assert!(CredentialEvent::TYPES.contains(&event.event_type()));
        let new = event.to_new_event(Uuid::new_v4(), Metadata::by("test"));
        let recorded = RecordedEvent {
            event_id: new.event_id,
            stream: credential_stream("acme"),
            version: 0,
            position: 1,
            event_type: new.event_type,
            schema_version: 1,
            data: new.data,
            metadata: new.metadata,
            recorded_at: at,
            hash: crate::canonical::EventHash::GENESIS,
        };
        assert_eq!(
            CredentialEvent::from_recorded(&recorded).unwrap(),
            Some(event)
        );
    }
}

#[test]
fn events_round_trip_through_the_log_form() {
    let event = started(Utc::now(), "acme.s1");
    let new = event.to_new_event(Uuid::new_v4(), Metadata::by("test"));
    assert_eq!(new.event_type, "OfficialSignupStarted");
    assert!(new.data.get("type").is_none());
    let recorded = RecordedEvent {
        event_id: new.event_id,
        stream: credential_stream("acme"),
        version: 0,
        position: 1,
        event_type: new.event_type,
        schema_version: 1,
        data: new.data,
        metadata: new.metadata,
        recorded_at: Utc::now(),
        hash: crate::canonical::EventHash::GENESIS,
    };
    assert_eq!(
        CredentialEvent::from_recorded(&recorded).unwrap(),
        Some(event)
    );
}
