//! The dispatch payload (the reference document's format) and how it is split into requests.
//!
//! ```json
//! {"is_test": false, "targetId": 1234, "key_values": {"key": "value"},
//!  "profiles": [{"Identity": "UserId", "Email": "User@user.com", "push_token": "Token"}]}
//! ```

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// A campaign's identity: the payload's `targetId`, as text.
pub type CampaignId = String;

/// A checked payload. Keys other than the four known ones are kept and sent as they came.
#[derive(Debug, Clone)]
pub struct Payload {
    pub campaign: CampaignId,
    /// Everything but `profiles`, as it will be sent.
    envelope: Map<String, Value>,
    pub profiles: Vec<Value>,
}

/// What is wrong with a payload, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid payload: {0}")]
pub struct PayloadError(pub String);

/// One outgoing request's body and how many profiles it carries.
#[derive(Debug, Clone)]
pub struct Batch {
    pub body: Bytes,
    pub profiles: usize,
}

impl Payload {
    pub fn from_slice(body: &[u8]) -> Result<Self, PayloadError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| PayloadError(format!("not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, PayloadError> {
        let Value::Object(mut envelope) = value else {
            return Err(PayloadError("the payload must be a JSON object with `targetId` and `profiles`".into()));
        };
        let campaign = match envelope.get("targetId") {
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => {
                return Err(PayloadError("`targetId` must be an integer or a non-empty string".into()));
            }
            None => {
                return Err(PayloadError("`targetId` (the campaign id) is missing".into()));
            }
        };
        match envelope.get("is_test") {
            None | Some(Value::Bool(_)) => {}
            Some(_) => return Err(PayloadError("`is_test` must be true or false".into())),
        }
        match envelope.get("key_values") {
            None | Some(Value::Object(_)) => {}
            Some(_) => return Err(PayloadError("`key_values` must be an object".into())),
        }
        let profiles = match envelope.remove("profiles") {
            Some(Value::Array(items)) => items,
            Some(_) => {
                return Err(PayloadError("`profiles` must be an array of objects".into()));
            }
            None => return Err(PayloadError("`profiles` is missing".into())),
        };
        if let Some(i) = profiles.iter().position(|p| !p.is_object()) {
            return Err(PayloadError(format!("`profiles[{i}]` must be an object")));
        }
        Ok(Self { campaign, envelope, profiles })
    }

    /// The whole payload as JSON (what a transform plugin gets).
    pub fn to_json(&self) -> Vec<u8> {
        let mut whole = self.envelope.clone();
        whole.insert("profiles".into(), Value::Array(self.profiles.clone()));
        serde_json::to_vec(&whole).unwrap_or_default()
    }

    /// The bodies of the outgoing requests: the payload with at most `batch_size` profiles
    /// each, in order. A payload without profiles is one request with an empty list.
    pub fn batches(&self, batch_size: usize) -> Vec<Batch> {
        let batch_size = batch_size.max(1);
        let chunks: Vec<&[Value]> =
            if self.profiles.is_empty() { vec![&[]] } else { self.profiles.chunks(batch_size).collect() };
        chunks
            .into_iter()
            .map(|chunk| {
                let mut body = self.envelope.clone();
                body.insert("profiles".into(), Value::Array(chunk.to_vec()));
                Batch { body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()), profiles: chunk.len() }
            })
            .collect()
    }
}

/// The payload sent on "Create" and by `hookgate test`, as the reference document gives it.
pub fn test_payload() -> Value {
    let profile = json!({"Identity": "UserId", "Email": "User@user.com", "push_token": "Token"});
    json!({
        "is_test": true,
        "targetId": 1234,
        "key_values": {"key": "value"},
        "profiles": vec![profile; 5],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: usize) -> Payload {
        let profiles: Vec<Value> = (0..n).map(|i| json!({"Identity": i})).collect();
        Payload::from_value(json!({"targetId": 42, "key_values": {"k": "v"}, "profiles": profiles, "extra": 1}))
            .unwrap()
    }

    #[test]
    fn splits_into_batches_in_order() {
        let batches = payload(250).batches(100);
        assert_eq!(batches.iter().map(|b| b.profiles).collect::<Vec<_>>(), vec![100, 100, 50]);
        let last: Value = serde_json::from_slice(&batches[2].body).unwrap();
        assert_eq!(last["targetId"], 42);
        assert_eq!(last["key_values"]["k"], "v");
        assert_eq!(last["extra"], 1);
        assert_eq!(last["profiles"][0]["Identity"], 200);
        assert_eq!(last["profiles"].as_array().unwrap().len(), 50);
    }

    #[test]
    fn empty_profiles_is_one_request() {
        assert_eq!(payload(0).batches(100).len(), 1);
    }

    #[test]
    fn errors_name_the_key() {
        let e = |v: Value| Payload::from_value(v).unwrap_err().0;
        assert!(e(json!([])).contains("JSON object"));
        assert!(e(json!({"profiles": []})).contains("`targetId`"));
        assert!(e(json!({"targetId": 1})).contains("`profiles` is missing"));
        assert!(e(json!({"targetId": 1, "profiles": [{}, 3]})).contains("`profiles[1]`"));
        assert!(e(json!({"targetId": 1.5, "profiles": []})).contains("`targetId`"));
        assert!(e(json!({"targetId": 1, "is_test": "yes", "profiles": []})).contains("`is_test`"));
        assert_eq!(Payload::from_value(json!({"targetId": "c-9", "profiles": []})).unwrap().campaign, "c-9");
    }

    #[test]
    fn test_payload_is_the_documented_one() {
        let p = test_payload();
        assert_eq!(p["is_test"], true);
        assert_eq!(p["targetId"], 1234);
        assert_eq!(p["profiles"].as_array().unwrap().len(), 5);
        assert!(Payload::from_value(p).is_ok());
    }
}
