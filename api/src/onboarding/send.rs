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
            ours: false,
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

/// Sends each message the way its business chose, and fetches each channel's media the same
/// way (the configured gateway, or the Cloud API with the business's own token).
pub struct RoutingSender {
    http: HttpSender,
    whatsapp: Arc<WhatsAppSettings>,
    onboarding: Arc<Onboarding>,
    /// Each configured channel's media API.
    media_apis: HashMap<String, MediaApi>,
}

/// The way one channel's traffic goes now.
enum Route {
    /// Through the channel's configured provider.
    Configured,
    /// The Cloud API with the business's own token.
    Official {
        business: String,
        token: Secret,
        phone_number_id: String,
        channel: Box<Channel>,
    },
}

fn permanent(message: String) -> SendError {
    SendError {
        code: None,
        message,
        transient: false,
        retry_after: None,
        ours: false,
    }
}

impl RoutingSender {
    pub fn new(
        http: HttpSender,
        whatsapp: Arc<WhatsAppSettings>,
        onboarding: Arc<Onboarding>,
        media_apis: HashMap<String, MediaApi>,
    ) -> Self {
        RoutingSender {
            http,
            whatsapp,
            onboarding,
            media_apis,
        }
    }

    /// How `channel`'s traffic goes; `template` says whether it is a template (which a
    /// restricted credential may still send).
    fn route(&self, channel: &str, template: bool) -> Result<Route, SendError> {
        let integrations = &self.onboarding.integrations;
        let Some(found) = self
            .whatsapp
            .channel(channel)
            .cloned()
            .or_else(|| integrations.channel(channel))
        else {
            return Ok(Route::Configured);
        };
        let business = integrations.business(&found.business);
        let onboarded = business.channels.iter().any(|c| c.key == channel)
            || business.credential.channel_key.as_deref() == Some(channel);
        let official = match business.integration {
            Some(kind) => kind == IntegrationKind::Official,
            None => onboarded,
        };
        if !official {
            return Ok(Route::Configured);
        }
        let credential = &business.credential;
        if let Some(reason) = credential.refuses(template, Utc::now()) {
            return Err(permanent(reason));
        }
        let token = self.onboarding.token(&found.business, credential)?;
        let Some(phone_number_id) = found
            .phone_number_id
            .clone()
            .or_else(|| credential.phone_number_id.clone())
        else {
            return Err(permanent(format!(
                "channel {channel} has no phone_number_id for the Cloud API"
            )));
        };
        Ok(Route::Official {
            business: found.business.clone(),
            token,
            phone_number_id,
            channel: Box::new(found),
        })
    }

    /// The auth headers of the Cloud API with `token`.
    fn official_headers(&self, token: &Secret) -> Vec<(String, String)> {
        let mut headers = vec![(
            "Authorization".to_owned(),
            format!("Bearer {}", token.expose()),
        )];
        headers.extend(self.onboarding.settings.provider.header.clone());
        headers
    }
}

#[async_trait]
impl MessageSender for RoutingSender {
    async fn send(&self, channel: &str, message: &OutboundMessage) -> Result<Sent, SendError> {
        let Route::Official {
            business,
            token,
            phone_number_id,
            channel: found,
        } = self.route(channel, message.template.is_some())?
        else {
            return self.http.send(channel, message).await;
        };
        let provider = &self.onboarding.settings.provider;
        let endpoint = Endpoint::CloudApi {
            url: format!("{}/{phone_number_id}/messages", provider.base_url),
            headers: self.official_headers(&token),
            media: found.send.media.unwrap_or(MediaDelivery::Upload),
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
                    .token_refused(&business, error, Utc::now())
                    .await;
            }
        }
        sent
    }
}

#[async_trait]
impl MediaApis for RoutingSender {
    async fn media_api(&self, channel: &str) -> Result<MediaApi, MediaError> {
        match self.route(channel, false) {
            Ok(Route::Official { token, .. }) => {
                let provider = &self.onboarding.settings.provider;
                Ok(MediaApi::CloudApi {
                    base: provider.base_url.clone(),
                    headers: self.official_headers(&token),
                    own_download_host: provider.name == "360dialog",
                })
            }
            Ok(Route::Configured) => self.media_apis.media_api(channel).await.map_err(|_| {
                MediaError::permanent(format!(
                    "channel {channel} cannot fetch media: the token its provider needs is not set"
                ))
            }),
            Err(e) => Err(MediaError::permanent(e.message)),
        }
    }
}
