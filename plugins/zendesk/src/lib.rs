//! The Zendesk integration (the reference document's "Partner Tool for Setup"): for an
//! in-app rating campaign, every customer who rated at or below a threshold gets a Zendesk
//! support ticket, so support can reach out.
//!
//! A transform plugin: from a campaign payload it plans one
//! `POST /api/v2/tickets.json` per low rating, with a deterministic `Idempotency-Key` per
//! (campaign, profile, rating) so a resent campaign opens no second ticket. For the test
//! payload sent when the template loads it plans `GET /api/v2/users/me.json` instead: a
//! credential check that opens no ticket. Auth comes from the template (`basic` with an API
//! token, or `oauth2`).

use std::collections::BTreeMap;

use hookgate_plugin_sdk::{PluginError, PluginInfo, Request, TransformOutput, export_plugin, host, parse_config};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `acme` for https://acme.zendesk.com.
    #[serde(default)]
    pub subdomain: Option<String>,
    /// Instead of `subdomain`: the API's base URL (a proxy, a sandbox).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Ratings at or below this open a ticket. Default 3.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Where the rating is: `profile.FIELD` or `key_values.KEY`. Default `profile.Rating`.
    #[serde(default = "default_rating")]
    pub rating: String,
    /// Profile fields.
    #[serde(default = "default_email")]
    pub email_field: String,
    #[serde(default = "default_name")]
    pub name_field: String,
    #[serde(default = "default_identity")]
    pub identity_field: String,
    #[serde(default = "default_feedback")]
    pub feedback_field: String,
    /// Ticket priority by rating (rounded down). Default 1 → urgent, 2 → high, 3 → normal;
    /// others `normal`.
    #[serde(default = "default_priorities")]
    pub priorities: BTreeMap<String, String>,
    /// Tags on every ticket (plus `rating-N`). Default `[hookgate, in-app-rating]`.
    #[serde(default = "default_tags")]
    pub tags: Vec<String>,
    /// For the template's `auth` plugin when it is a WASM plugin too; ignored here.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
}

fn default_threshold() -> f64 {
    3.0
}
fn default_rating() -> String {
    "profile.Rating".into()
}
fn default_email() -> String {
    "Email".into()
}
fn default_name() -> String {
    "Name".into()
}
fn default_identity() -> String {
    "Identity".into()
}
fn default_feedback() -> String {
    "Feedback".into()
}
fn default_priorities() -> BTreeMap<String, String> {
    [("1", "urgent"), ("2", "high"), ("3", "normal")].into_iter().map(|(k, v)| (k.into(), v.into())).collect()
}
fn default_tags() -> Vec<String> {
    vec!["hookgate".into(), "in-app-rating".into()]
}

const PRIORITIES: [&str; 4] = ["urgent", "high", "normal", "low"];

impl Config {
    pub fn base(&self) -> Result<String, String> {
        match (&self.base_url, &self.subdomain) {
            (Some(url), _) => Ok(url.trim_end_matches('/').to_string()),
            (None, Some(sub)) if !sub.is_empty() && sub.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
                Ok(format!("https://{sub}.zendesk.com"))
            }
            (None, Some(_)) => Err("`subdomain` must be letters, digits and `-`".into()),
            (None, None) => Err("set `subdomain` (acme for https://acme.zendesk.com) or `base_url`".into()),
        }
    }

    fn validate(&self) -> Result<(), String> {
        self.base()?;
        if !(self.rating.starts_with("profile.") || self.rating.starts_with("key_values.")) {
            return Err("`rating` must be `profile.FIELD` or `key_values.KEY`".into());
        }
        if let Some((_, p)) = self.priorities.iter().find(|(_, p)| !PRIORITIES.contains(&p.as_str())) {
            return Err(format!("`priorities`: `{p}` is not urgent, high, normal or low"));
        }
        Ok(())
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A profile's ticket, or `None` when it has no email or no rating (skipped), or `Some(None)`
/// when its rating is above the threshold.
pub fn ticket(config: &Config, campaign: &str, key_values: &Value, profile: &Value) -> Option<Option<Value>> {
    let rating = match config.rating.split_once('.') {
        Some(("profile", field)) => number(profile.get(field)),
        Some((_, key)) => number(key_values.get(key)),
        None => None,
    }?;
    let email = text(profile.get(&config.email_field))?;
    if rating > config.threshold {
        return Some(None);
    }
    let name = text(profile.get(&config.name_field)).unwrap_or_else(|| email.clone());
    let identity = text(profile.get(&config.identity_field)).unwrap_or_else(|| email.clone());
    let feedback = text(profile.get(&config.feedback_field));
    let stars = format_rating(rating);
    let priority =
        config.priorities.get(&(rating.floor() as i64).to_string()).cloned().unwrap_or_else(|| "normal".into());
    let mut tags = config.tags.clone();
    tags.push(format!("rating-{}", rating.floor() as i64));
    let mut body = format!("{name} <{email}> (identity {identity}) rated the app {stars} in campaign {campaign}.");
    match &feedback {
        Some(f) => body.push_str(&format!("\n\nTheir feedback: \"{f}\"")),
        None => body.push_str("\n\nThey left no written feedback."),
    }
    body.push_str("\n\nOpened by hookgate for an in-app rating at or below the threshold; please reach out.");
    Some(Some(json!({
        "ticket": {
            "subject": format!("Low in-app rating ({stars}) from {name}"),
            "comment": {"body": body},
            "requester": {"name": name, "email": email},
            "priority": priority,
            "tags": tags,
            "external_id": format!("hookgate-{campaign}-{identity}"),
        }
    })))
}

fn format_rating(rating: f64) -> String {
    if rating.fract() == 0.0 { format!("{}/5", rating as i64) } else { format!("{rating}/5") }
}

/// The same key for the same (campaign, profile, rating): a resend is recognised by Zendesk.
fn idempotency_key(campaign: &str, ticket: &Value) -> String {
    let identity = ticket["ticket"]["external_id"].as_str().unwrap_or_default();
    let rating = ticket["ticket"]["tags"].as_array().and_then(|t| t.last()).and_then(Value::as_str).unwrap_or_default();
    let digest = host::hmac_sha256(b"hookgate-zendesk", format!("{campaign}\n{identity}\n{rating}").as_bytes());
    format!("hookgate-{}", digest[..16].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

struct Zendesk;

impl hookgate_plugin_sdk::Plugin for Zendesk {
    fn info() -> PluginInfo {
        PluginInfo::transform("zendesk", env!("CARGO_PKG_VERSION"))
    }

    fn transform(payload: &[u8], config: &str) -> Result<TransformOutput, PluginError> {
        let config: Config = parse_config(config)?;
        config.validate().map_err(PluginError::permanent)?;
        let base = config.base().map_err(PluginError::permanent)?;
        let payload: Value =
            serde_json::from_slice(payload).map_err(|e| PluginError::permanent(format!("payload: {e}")))?;
        if payload["is_test"] == true {
            // Verification: check the credentials, open nothing.
            return Ok(TransformOutput {
                requests: vec![Request {
                    method: "GET".into(),
                    url: format!("{base}/api/v2/users/me.json"),
                    headers: vec![],
                    body: vec![],
                    profiles: 0,
                }],
                skipped: 0,
            });
        }
        let campaign = match &payload["targetId"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let empty = Vec::new();
        let profiles = payload["profiles"].as_array().unwrap_or(&empty);
        let mut requests = Vec::new();
        let mut skipped = 0;
        for profile in profiles {
            match ticket(&config, &campaign, &payload["key_values"], profile) {
                None => skipped += 1,
                Some(None) => {}
                Some(Some(ticket)) => {
                    let key = idempotency_key(&campaign, &ticket);
                    requests.push(
                        Request::json("POST", &format!("{base}/api/v2/tickets.json"), &ticket, 1)
                            .header("idempotency-key", &key),
                    );
                }
            }
        }
        if skipped > 0 {
            host::log(host::LogLevel::Info, &format!("{skipped} profile(s) without an email or a rating were skipped"));
        }
        Ok(TransformOutput { requests, skipped })
    }
}

export_plugin!(Zendesk);

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        serde_json::from_value(json!({"subdomain": "acme"})).unwrap()
    }

    #[test]
    fn low_ratings_make_tickets() {
        let c = config();
        let t = ticket(
            &c,
            "42",
            &json!({}),
            &json!({"Identity": "u1", "Email": "a@x.io", "Name": "Ann", "Rating": 1, "Feedback": "crashes"}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(t["ticket"]["priority"], "urgent");
        assert_eq!(t["ticket"]["requester"], json!({"name": "Ann", "email": "a@x.io"}));
        assert_eq!(t["ticket"]["tags"], json!(["hookgate", "in-app-rating", "rating-1"]));
        assert_eq!(t["ticket"]["external_id"], "hookgate-42-u1");
        let body = t["ticket"]["comment"]["body"].as_str().unwrap();
        assert!(body.contains("rated the app 1/5 in campaign 42") && body.contains("\"crashes\""), "{body}");
        assert_eq!(ticket(&c, "42", &json!({}), &json!({"Email": "a@x.io", "Rating": "4"})).unwrap(), None);
        assert_eq!(
            ticket(&c, "42", &json!({}), &json!({"Email": "a@x.io", "Rating": 3})).unwrap().unwrap()["ticket"]["priority"],
            "normal"
        );
    }

    #[test]
    fn profiles_without_email_or_rating_are_skipped() {
        let c = config();
        assert!(ticket(&c, "1", &json!({}), &json!({"Rating": 1})).is_none());
        assert!(ticket(&c, "1", &json!({}), &json!({"Email": "a@x.io"})).is_none());
        assert!(ticket(&c, "1", &json!({}), &json!({"Email": "a@x.io", "Rating": "n/a"})).is_none());
    }

    #[test]
    fn rating_from_key_values_and_config_checks() {
        let c: Config =
            serde_json::from_value(json!({"subdomain": "acme", "rating": "key_values.rating", "threshold": 2}))
                .unwrap();
        assert!(ticket(&c, "1", &json!({"rating": 2}), &json!({"Email": "a@x.io"})).unwrap().is_some());
        assert!(ticket(&c, "1", &json!({"rating": 3}), &json!({"Email": "a@x.io"})).unwrap().is_none());
        assert_eq!(c.base().unwrap(), "https://acme.zendesk.com");
        let bad: Config = serde_json::from_value(json!({"subdomain": "acme", "priorities": {"1": "asap"}})).unwrap();
        assert!(bad.validate().unwrap_err().contains("asap"));
        let none: Config = serde_json::from_value(json!({})).unwrap();
        assert!(none.validate().is_err());
    }
}
