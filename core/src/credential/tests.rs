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

fn signup(business_id: &str, state: &str) -> SignupResult {
    SignupResult {
        business_id: business_id.into(),
        code: "code-1".into(),
        waba_id: "102290129340398".into(),
        phone_number_id: "106540352242922".into(),
        state: state.into(),
    }
}

#[test]
fn onboarding_requests_are_refused_before_anything_is_recorded() {
    let now = Utc::now();
    let mut credential = Credential::default();
    credential.apply(&started(now, "acme.s1"));
    let mut used = credential.clone();
    used.states[0].used = true;
    let later = now + chrono::Duration::minutes(31);
    let edit = |f: fn(&mut SignupResult)| {
        let mut result = signup("acme", "acme.s1");
        f(&mut result);
        result
    };
    let invalid = |why: &str| Err(OnboardingRefusal::Invalid(why.into()));
    // (the case, the credential, the request, when, the decision)
    type Case<'a> = (
        &'a str,
        &'a Credential,
        SignupResult,
        DateTime<Utc>,
        Result<(), OnboardingRefusal>,
    );
    let cases: Vec<Case> = vec![
        (
            "a good request",
            &credential,
            signup("acme", "acme.s1"),
            now,
            Ok(()),
        ),
        (
            "a business id with a dot",
            &credential,
            edit(|r| r.business_id = "ac.me".into()),
            now,
            invalid("\"ac.me\" is not a business id (1–64 letters, digits, _ or -)"),
        ),
        (
            "no code",
            &credential,
            edit(|r| r.code = " ".into()),
            now,
            invalid("code must not be empty"),
        ),
        (
            "no state",
            &credential,
            edit(|r| r.state = String::new()),
            now,
            invalid("state must not be empty"),
        ),
        (
            "a WABA id that is not Meta's",
            &credential,
            edit(|r| r.waba_id = "12a".into()),
            now,
            invalid("waba_id must be Meta's numeric id, not \"12a\""),
        ),
        (
            "a phone number id too long",
            &credential,
            edit(|r| r.phone_number_id = "1".repeat(33)),
            now,
            invalid(&format!(
                "phone_number_id must be Meta's numeric id, not {:?}",
                "1".repeat(33)
            )),
        ),
        (
            "a state never issued",
            &credential,
            edit(|r| r.state = "acme.s2".into()),
            now,
            Err(StateRefusal::Unknown.into()),
        ),
        (
            "another business's state",
            &credential,
            edit(|r| r.state = "globex.s1".into()),
            now,
            Err(StateRefusal::OtherBusiness.into()),
        ),
        (
            "a used state",
            &used,
            signup("acme", "acme.s1"),
            now,
            Err(StateRefusal::Used.into()),
        ),
        (
            "an expired state",
            &credential,
            signup("acme", "acme.s1"),
            later,
            Err(StateRefusal::Expired(now + chrono::Duration::minutes(30)).into()),
        ),
    ];
    for (case, credential, result, at, expected) in cases {
        let attempt_id = Uuid::from_u128(7);
        let decided = credential
            .attempt(&result, attempt_id, "360dialog", at)
            .map(|(issued, event)| {
                assert_eq!(issued.stakeholder, "customer", "{case}");
                assert_eq!(
                    event,
                    CredentialEvent::OnboardingAttempted {
                        attempt_id,
                        state_sha256: state_digest("acme.s1"),
                        waba_id: result.waba_id.clone(),
                        phone_number_id: result.phone_number_id.clone(),
                        api_provider: "360dialog".into(),
                        at,
                    },
                    "{case}"
                );
            });
        assert_eq!(decided, expected, "{case}");
    }
}

#[test]
fn a_signup_keeps_only_the_digest_of_its_state_and_needs_a_stakeholder() {
    let now = Utc::now();
    let expires = now + chrono::Duration::minutes(30);
    assert_eq!(
        start_signup("acme", " customer ", "acme.secret", expires, "admin", now),
        Ok(started(now, "acme.secret"))
    );
    let event = start_signup("acme", "customer", "acme.secret", expires, "admin", now).unwrap();
    assert!(!serde_json::to_string(&event)
        .unwrap()
        .contains("acme.secret"));
    assert_eq!(
        start_signup("acme", "  ", "acme.s", expires, "admin", now),
        Err(OnboardingRefusal::Invalid(
            "stakeholder must not be empty".into()
        ))
    );
    assert!(matches!(
        start_signup("", "customer", "s", expires, "admin", now),
        Err(OnboardingRefusal::Invalid(_))
    ));
}

#[test]
fn an_integration_is_recorded_only_when_it_changes() {
    let now = Utc::now();
    let chosen = |kind| {
        Ok(Some(BusinessEvent::IntegrationChosen {
            business_id: "acme".into(),
            kind,
            by: "admin".into(),
            at: now,
        }))
    };
    use IntegrationKind::{Official, Unofficial};
    for (current, kind, expected) in [
        (None, "official", chosen(Official)),
        (Some(Unofficial), "official", chosen(Official)),
        (Some(Official), "official", Ok(None)),
        (Some(Official), "unofficial", chosen(Unofficial)),
        (
            None,
            "Official",
            Err(OnboardingRefusal::Invalid(
                "kind must be \"official\" or \"unofficial\", not \"Official\"".into(),
            )),
        ),
    ] {
        assert_eq!(
            choose_integration(current, "acme", kind, "admin", now),
            expected,
            "{current:?} then {kind}"
        );
    }
}

#[test]
fn failed_renewals_disconnect_at_the_limit_and_a_refused_token_only_a_connected_credential() {
    let now = Utc::now();
    let error = GraphError::local("boom");
    let mut credential = Credential::default();
    for (failures, max, disconnects) in [(0, 3, false), (1, 3, false), (2, 3, true), (0, 1, true)] {
        credential.refresh_failures = failures;
        let events = credential.refresh_failed(error.clone(), max, now);
        assert_eq!(
            events[0],
            CredentialEvent::TokenRefreshFailed {
                attempt: failures + 1,
                error: error.clone(),
                at: now
            }
        );
        assert_eq!(
            events.len(),
            if disconnects { 2 } else { 1 },
            "{failures} failures before, {max} allowed"
        );
        if disconnects {
            assert!(
                matches!(&events[1], CredentialEvent::CredentialDisconnected { reason, .. }
                if reason.contains(&format!("in {} attempts", failures + 1)))
            );
        }
    }
    assert_eq!(credential.token_refused(error.clone(), now), None);
    credential.status = Some(CredentialStatus::Connected);
    assert!(matches!(
        credential.token_refused(error, now),
        Some(CredentialEvent::CredentialDisconnected { .. })
    ));
}
