//! Sending each business's messages the way it chose.

use super::*;

impl Onboarding {
    /// The business's token in the clear, for one send.
    pub(super) fn token(
        &self,
        business_id: &str,
        credential: &Credential,
    ) -> Result<Secret, SendError> {
        let permanent = |message: String| SendError {
            code: None,
            message,
            transient: false,
            retry_after: None,
        };
        if !credential.is_connected() {
            return Err(permanent(format!(
                "business {business_id} chose the official integration but its credential is {}{}; complete Embedded Signup",
                credential.status.map_or("missing", |s| s.as_str()),
                credential
                    .last_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )));
        }
        let keyring = self.settings.keyring.as_ref().ok_or_else(|| {
            permanent(
                "CHATLEDGER_SECRETS_KEY is not set: the business's token cannot be opened".into(),
            )
        })?;
        let sealed: &SealedSecret = credential
            .token
            .as_ref()
            .ok_or_else(|| permanent(format!("business {business_id} has no token")))?;
        keyring
            .open(sealed, &token_context(business_id))
            .map_err(|e: SecretsError| permanent(e.to_string()))
    }
}

/// Sends each message the way its business chose.
pub struct RoutingSender {
    http: HttpSender,
    whatsapp: Arc<WhatsAppSettings>,
    onboarding: Arc<Onboarding>,
}

impl RoutingSender {
    pub fn new(
        http: HttpSender,
        whatsapp: Arc<WhatsAppSettings>,
        onboarding: Arc<Onboarding>,
    ) -> Self {
        RoutingSender {
            http,
            whatsapp,
            onboarding,
        }
    }
}

#[async_trait]
impl MessageSender for RoutingSender {
    async fn send(&self, channel: &str, message: &OutboundMessage) -> Result<Sent, SendError> {
        let integrations = &self.onboarding.integrations;
        let Some(found) = self
            .whatsapp
            .channel(channel)
            .cloned()
            .or_else(|| integrations.channel(channel))
        else {
            return self.http.send(channel, message).await;
        };
        let business = integrations.business(&found.business);
        let onboarded = business.channels.iter().any(|c| c.key == channel)
            || business.credential.channel_key.as_deref() == Some(channel);
        let official = match business.integration {
            Some(kind) => kind == IntegrationKind::Official,
            None => onboarded,
        };
        if !official {
            return self.http.send(channel, message).await;
        }
        let credential = &business.credential;
        if let Some(reason) = credential.refuses(message.template.is_some(), Utc::now()) {
            return Err(SendError {
                code: None,
                message: reason,
                transient: false,
                retry_after: None,
            });
        }
        let token = self.onboarding.token(&found.business, credential)?;
        let Some(phone_number_id) = found
            .phone_number_id
            .clone()
            .or_else(|| credential.phone_number_id.clone())
        else {
            return Err(SendError {
                code: None,
                message: format!("channel {channel} has no phone_number_id for the Cloud API"),
                transient: false,
                retry_after: None,
            });
        };
        let provider = &self.onboarding.settings.provider;
        let mut headers = vec![(
            "Authorization".to_owned(),
            format!("Bearer {}", token.expose()),
        )];
        headers.extend(provider.header.clone());
        let endpoint = Endpoint::CloudApi {
            url: format!("{}/{phone_number_id}/messages", provider.base_url),
            headers,
        };
        let sent = self.http.send_to(&endpoint, message).await;
        if let Err(e) = &sent {
            if matches!(e.code, Some(190) | Some(0)) {
                let error = GraphError {
                    http_status: None,
                    code: e.code,
                    subcode: None,
                    kind: None,
                    message: e.message.clone(),
                    fbtrace_id: None,
                };
                self.onboarding
                    .token_refused(&found.business, error, Utc::now())
                    .await;
            }
        }
        sent
    }
}
