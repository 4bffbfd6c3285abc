//! Customer numbers to E.164, once, at the edge, so that every shape of one number lands in
//! one conversation: `919638120888` (WhatsApp), `9638120888` (the transaction system),
//! `+91 96381 20888`, `whatsapp:+919638120888` (Twilio).

use phonenumber::country::Id as Country;
use phonenumber::Mode;

/// Normalises numbers with a default country for numbers written without one.
#[derive(Debug, Clone, Copy)]
pub struct PhoneNormalizer {
    default_country: Country,
}

/// A country code that is not an ISO 3166 alpha-2 code the phone-number library knows.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a known two-letter country code (e.g. IN)")]
pub struct UnknownCountry(String);

impl PhoneNormalizer {
    /// `default_country`: ISO 3166 alpha-2, e.g. `IN`.
    pub fn new(default_country: &str) -> Result<Self, UnknownCountry> {
        let country = default_country
            .trim()
            .to_ascii_uppercase()
            .parse::<Country>()
            .map_err(|_| UnknownCountry(default_country.to_owned()))?;
        Ok(PhoneNormalizer {
            default_country: country,
        })
    }

    /// A number as WhatsApp writes a user's (`from`, `wa_id`, `recipient_id`): international
    /// digits without `+`. That is E.164 already, but for the `+`: nothing needs parsing (which,
    /// done for every webhook, was a noticeable share of ingest).
    pub fn whatsapp(&self, digits: &str) -> Option<String> {
        let digits = digits.trim().trim_start_matches('+');
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(format!("+{digits}"))
    }

    /// A number in any common shape; without a country code it is read as a number of the
    /// default country. `None` for something that is not a phone number.
    pub fn any(&self, raw: &str) -> Option<String> {
        let raw = raw.trim();
        let raw = raw.strip_prefix("whatsapp:").unwrap_or(raw).trim();
        if raw.is_empty() {
            return None;
        }
        let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() || raw.chars().any(|c| c.is_alphabetic()) {
            return None;
        }
        if raw.starts_with('+') || raw.starts_with("00") {
            let digits = digits
                .strip_prefix("00")
                .filter(|_| raw.starts_with("00"))
                .unwrap_or(&digits);
            return self.whatsapp(digits);
        }
        match phonenumber::parse(Some(self.default_country), raw) {
            Ok(number) if phonenumber::is_valid(&number) => {
                Some(number.format().mode(Mode::E164).to_string())
            }
            // Not valid as a national number: it may carry its country code without `+`.
            _ => self.whatsapp(&digits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_of_one_indian_number_is_one_customer() {
        let phones = PhoneNormalizer::new("IN").unwrap();
        let expected = Some("+919638120888".to_owned());
        assert_eq!(phones.whatsapp("919638120888"), expected);
        for shape in [
            "919638120888",
            "+91 96381 20888",
            "whatsapp:+919638120888",
            "9638120888",
            "09638120888",
            "0091 9638120888",
        ] {
            assert_eq!(phones.any(shape), expected, "{shape}");
        }
    }

    #[test]
    fn foreign_numbers_keep_their_country() {
        let phones = PhoneNormalizer::new("IN").unwrap();
        assert_eq!(
            phones.whatsapp("972544401243").as_deref(),
            Some("+972544401243")
        );
        assert_eq!(
            phones.any("whatsapp:+14133881111").as_deref(),
            Some("+14133881111")
        );
    }

    #[test]
    fn what_is_not_a_number_is_refused() {
        let phones = PhoneNormalizer::new("IN").unwrap();
        assert_eq!(phones.any(""), None);
        assert_eq!(phones.any("whatsapp:US.13491208655302741918"), None);
        assert_eq!(phones.whatsapp("US.1349"), None);
        assert!(PhoneNormalizer::new("Narnia").is_err());
    }
}
