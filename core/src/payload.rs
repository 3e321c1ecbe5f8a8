//! The dispatch payload (the reference document's format) and how it is split into requests.
//!
//! ```json
//! {"is_test": false, "targetId": 1234, "key_values": {"key": "value"},
//!  "profiles": [{"Identity": "UserId", "Email": "User@user.com", "push_token": "Token"}]}
//! ```

use std::ops::Range;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::body::RequestBody;

/// A campaign's identity: the payload's `targetId`, as text.
pub type CampaignId = String;

/// The longest `targetId` string, in characters (it is a key of the campaign stats, a path
/// of `GET /v1/campaigns/{targetId}`, and a field of log lines). An integer is at most 20.
pub const MAX_TARGET_ID: usize = 128;

/// A checked payload. Keys other than the four known ones are kept and sent as they came.
#[derive(Debug, Clone)]
pub struct Payload {
    pub campaign: CampaignId,
    /// Everything but `profiles`, as it will be sent.
    envelope: Map<String, Value>,
    /// The text the profiles are in: the body the platform sent, kept whole and shared.
    text: Bytes,
    /// Where each profile's JSON text is in `text`, as the platform sent it: a profile
    /// reaches the partner byte for byte (its numbers, key order and escapes unchanged), and
    /// is neither parsed into a tree, nor written out again, nor copied on the way in.
    profiles: Vec<Range<usize>>,
}

/// What is wrong with a payload, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid payload: {0}")]
pub struct PayloadError(pub String);

/// One outgoing request's body and how many profiles it carries.
#[derive(Debug, Clone)]
pub struct Batch {
    pub body: RequestBody,
    pub profiles: usize,
}

impl Payload {
    /// Reads a payload from a copy of `body`; [`Payload::from_bytes`] reads it in place.
    pub fn from_slice(body: &[u8]) -> Result<Self, PayloadError> {
        Self::from_bytes(Bytes::copy_from_slice(body))
    }

    /// Reads a payload; the profiles stay where they are in `body`, which the payload keeps.
    pub fn from_bytes(body: Bytes) -> Result<Self, PayloadError> {
        let not_json = |e: serde_json::Error| PayloadError(format!("not valid JSON: {e}"));
        // The top level's values stay JSON text until each is known: `profiles` is kept as
        // it is, the rest read as values. Each `RawValue` borrows from `body`.
        let fields: std::collections::BTreeMap<String, &RawValue> =
            serde_json::from_slice(&body).map_err(|e| match e.classify() {
                serde_json::error::Category::Data => {
                    PayloadError("the payload must be a JSON object with `targetId` and `profiles`".into())
                }
                _ => not_json(e),
            })?;
        let mut envelope = Map::new();
        let mut profiles = None;
        for (key, value) in fields {
            if key == "profiles" {
                profiles = Some(value);
            } else {
                envelope.insert(key, serde_json::from_str(value.get()).map_err(not_json)?);
            }
        }
        let ranges = match profiles {
            Some(list) if list.get().starts_with('[') => {
                let items = serde_json::from_str::<Vec<&RawValue>>(list.get()).map_err(not_json)?;
                items.iter().map(|item| within(&body, item.get())).collect()
            }
            Some(_) => return Err(PayloadError("`profiles` must be an array of objects".into())),
            None => return Err(PayloadError("`profiles` is missing".into())),
        };
        Self::checked(envelope, body, ranges)
    }

    pub fn from_value(value: Value) -> Result<Self, PayloadError> {
        let Value::Object(mut envelope) = value else {
            return Err(PayloadError("the payload must be a JSON object with `targetId` and `profiles`".into()));
        };
        let (text, profiles) = match envelope.remove("profiles") {
            Some(Value::Array(items)) => {
                let mut text = Vec::new();
                let mut ranges = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        text.push(b',');
                    }
                    let start = text.len();
                    write_json(&mut text, item);
                    ranges.push(start..text.len());
                }
                (Bytes::from(text), ranges)
            }
            Some(_) => return Err(PayloadError("`profiles` must be an array of objects".into())),
            None => return Err(PayloadError("`profiles` is missing".into())),
        };
        Self::checked(envelope, text, profiles)
    }

    /// How many profiles.
    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }

    /// Each profile's JSON text, in order, as it came.
    pub fn profiles(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.profiles.iter().map(|range| &self.text[range.clone()])
    }

    /// Checks the known keys of `envelope` and that every profile is an object.
    fn checked(envelope: Map<String, Value>, text: Bytes, profiles: Vec<Range<usize>>) -> Result<Self, PayloadError> {
        let campaign = match envelope.get("targetId") {
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            Some(Value::String(s))
                if !s.is_empty() && s.chars().count() <= MAX_TARGET_ID && !s.chars().any(char::is_control) =>
            {
                s.clone()
            }
            Some(_) => {
                return Err(PayloadError(format!(
                    "`targetId` must be an integer or a string of 1 to {MAX_TARGET_ID} characters without control characters"
                )));
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
        if let Some(i) = profiles.iter().position(|p| text[p.clone()].first() != Some(&b'{')) {
            return Err(PayloadError(format!("`profiles[{i}]` must be an object")));
        }
        Ok(Self { campaign, envelope, text, profiles })
    }

    /// The whole payload as JSON (what a transform plugin gets).
    pub fn to_json(&self) -> Vec<u8> {
        self.split(self.profiles.len()).body(&self.profiles)
    }

    /// The bodies of the outgoing requests: the payload with at most `batch_size` profiles
    /// each, in order. A payload without profiles is one request with an empty list.
    pub fn batches(&self, batch_size: usize) -> Vec<Batch> {
        self.split(batch_size).batches()
    }

    /// The payload split into requests of at most `batch_size` profiles. The part every
    /// request shares (everything but `profiles`, `key_values` included) is serialized once,
    /// here; what the requests will weigh together is then known without building them.
    pub fn split(&self, batch_size: usize) -> Split<'_> {
        let batch_size = batch_size.max(1);
        let at = profiles_position(&self.envelope);
        let mut head = b"{".to_vec();
        let mut tail = b"]".to_vec();
        for (i, (key, value)) in self.envelope.iter().enumerate() {
            let out = if i < at { &mut head } else { &mut tail };
            if i > 0 || i >= at {
                out.push(b',');
            }
            write_json(out, key);
            out.push(b':');
            write_json(out, value);
        }
        if at > 0 {
            head.push(b',');
        }
        head.extend_from_slice(b"\"profiles\":[");
        tail.push(b'}');
        let profile_bytes = self.profiles.iter().map(|p| p.len() as u64).sum();
        Split { payload: self, head, tail, profile_bytes, batch_size }
    }
}

/// A payload split into requests (see [`Payload::split`]).
#[derive(Debug)]
pub struct Split<'a> {
    payload: &'a Payload,
    /// The body up to the first profile: `{"is_test":false,"key_values":{..},"profiles":[`.
    head: Vec<u8>,
    /// The body after the last profile: `],"targetId":42}`.
    tail: Vec<u8>,
    /// The profiles' JSON text, without separators.
    profile_bytes: u64,
    batch_size: usize,
}

impl Split<'_> {
    /// How many requests: one per `batch_size` profiles, and one for no profiles at all.
    pub fn requests(&self) -> usize {
        self.payload.profiles.len().div_ceil(self.batch_size).max(1)
    }

    /// The sum of the sizes of all the request bodies, in bytes: every request carries the
    /// shared part, each profile is in one request, and `n` profiles in a request have
    /// `n - 1` commas between them. Computed, not built: this is what is checked against
    /// the limits before anything is.
    pub fn body_bytes(&self) -> u64 {
        let requests = self.requests() as u64;
        let shared = (self.head.len() + self.tail.len()) as u64;
        let commas = (self.payload.profiles.len() as u64).saturating_sub(requests);
        requests.saturating_mul(shared).saturating_add(self.profile_bytes).saturating_add(commas)
    }

    /// The bodies, in order: each is the shared part, held once for all of them, framing
    /// its profiles where they are in the payload's text (see [`RequestBody::framed`]). A
    /// single request is built in a buffer of its own instead: it would hold the whole text
    /// for no saving (with one profile per dispatch, the keys around it weigh as much).
    pub fn batches(&self) -> Vec<Batch> {
        let profiles = &self.payload.profiles;
        let chunks: Vec<&[Range<usize>]> =
            if profiles.is_empty() { vec![&[]] } else { profiles.chunks(self.batch_size).collect() };
        if let [chunk] = chunks[..] {
            return vec![Batch { body: RequestBody::from(self.body(chunk)), profiles: chunk.len() }];
        }
        let frame = Bytes::from([&self.head[..], &self.tail[..]].concat());
        let (head, tail) = (frame.slice(..self.head.len()), frame.slice(self.head.len()..));
        (chunks.into_iter())
            .map(|chunk| Batch {
                body: RequestBody::framed(head.clone(), self.profiles_text(chunk), tail.clone()),
                profiles: chunk.len(),
            })
            .collect()
    }

    /// One body in a buffer of its own: the shared part around `chunk`'s profiles.
    fn body(&self, chunk: &[Range<usize>]) -> Vec<u8> {
        let text: usize = chunk.iter().map(|p| p.len() + 1).sum();
        let mut body = Vec::with_capacity(self.head.len() + self.tail.len() + text);
        body.extend_from_slice(&self.head);
        self.write_profiles(chunk, &mut body);
        body.extend_from_slice(&self.tail);
        body
    }

    /// `chunk`'s profiles separated by commas: a slice of the payload's text when they are
    /// so there (compact JSON), else a copy joined so.
    fn profiles_text(&self, chunk: &[Range<usize>]) -> Bytes {
        let text = &self.payload.text;
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else { return Bytes::new() };
        if chunk.windows(2).all(|pair| &text[pair[0].end..pair[1].start] == b",") {
            return text.slice(first.start..last.end);
        }
        let mut joined = Vec::with_capacity(chunk.iter().map(|p| p.len() + 1).sum());
        self.write_profiles(chunk, &mut joined);
        Bytes::from(joined)
    }

    /// Appends `chunk`'s profiles to `out`, separated by commas.
    fn write_profiles(&self, chunk: &[Range<usize>], out: &mut Vec<u8>) {
        for (i, profile) in chunk.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&self.payload.text[profile.clone()]);
        }
    }
}

/// Where `part`, a slice of `text` (a value the parser borrowed from it), is in `text`.
fn within(text: &[u8], part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - text.as_ptr() as usize;
    debug_assert!(start + part.len() <= text.len(), "a borrowed value lies within its text");
    start..start + part.len()
}

/// Where `profiles` goes among the envelope's keys, as a `serde_json::Map` would put it:
/// in key order (serde_json's default), or last (its `preserve_order` feature appends).
fn profiles_position(envelope: &Map<String, Value>) -> usize {
    static SORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let sorted = *SORTED.get_or_init(|| {
        let mut probe = Map::new();
        probe.insert("b".into(), Value::Null);
        probe.insert("a".into(), Value::Null);
        probe.keys().next().is_some_and(|k| k == "a")
    });
    if sorted { envelope.keys().take_while(|k| k.as_str() < "profiles").count() } else { envelope.len() }
}

/// Appends `value` as compact JSON (what `serde_json::to_vec` writes; it cannot fail for a
/// `Value` or a string).
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(out, value);
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
        let last: Value = serde_json::from_slice(&batches[2].body.to_vec()).unwrap();
        assert_eq!(last["targetId"], 42);
        assert_eq!(last["key_values"]["k"], "v");
        assert_eq!(last["extra"], 1);
        assert_eq!(last["profiles"][0]["Identity"], 200);
        assert_eq!(last["profiles"].as_array().unwrap().len(), 50);
    }

    /// Compact JSON (what platforms send) is not copied: each body's profiles are a slice of
    /// the text that came in; profiles with space between them are joined by one comma.
    #[test]
    fn bodies_share_the_text_of_compact_profiles() {
        let text = br#"{"targetId":1,"profiles":[{"a":1},{"b":2},{"c":3}]}"#;
        let compact = Payload::from_slice(text).unwrap();
        let within = |b: &Batch| {
            let middle = b.body.parts()[1];
            let start = compact.text.as_ptr() as usize;
            (start..start + compact.text.len()).contains(&(middle.as_ptr() as usize))
        };
        let by_two = compact.batches(2);
        assert!(by_two.iter().all(within), "the profiles are not copied");
        assert_eq!(by_two[0].body.to_vec(), br#"{"profiles":[{"a":1},{"b":2}],"targetId":1}"#);
        assert_eq!(by_two[1].body.to_vec(), br#"{"profiles":[{"c":3}],"targetId":1}"#);
        let one = compact.batches(3);
        assert!(!one[0].body.is_framed() && !within(&one[0]), "a single request has a buffer of its own");
        assert_eq!(one[0].body.to_vec(), br#"{"profiles":[{"a":1},{"b":2},{"c":3}],"targetId":1}"#);
        let spaced = Payload::from_slice(br#"{"targetId":1,"profiles":[{"a":1}, {"b":2}, {"c":3}]}"#).unwrap();
        assert_eq!(spaced.batches(2)[0].body.to_vec(), br#"{"profiles":[{"a":1},{"b":2}],"targetId":1}"#);
    }

    #[test]
    fn empty_profiles_is_one_request() {
        assert_eq!(payload(0).batches(100).len(), 1);
    }

    /// Numbers reach the partner as they were given: a float in a profile reads back from
    /// its request body as the same number (serde_json's default float parser is off by
    /// one unit in the last place for some inputs; found by the `payload` fuzz target).
    #[test]
    fn numbers_read_back_from_the_bodies_unchanged() {
        let text =
            br#"{"targetId": 1, "profiles": [{"Rating": 299999999999999999999999999}, {"Score": 4.35}, {"P": 0.1}]}"#;
        let payload = Payload::from_slice(text).unwrap();
        let mut profiles = Vec::new();
        for batch in payload.batches(2) {
            profiles.extend(
                Payload::from_slice(&batch.body.to_vec())
                    .unwrap()
                    .profiles()
                    .map(|p| String::from_utf8(p.to_vec()).unwrap()),
            );
        }
        let sent: Vec<String> = payload.profiles().map(|p| String::from_utf8(p.to_vec()).unwrap()).collect();
        assert_eq!(profiles, sent);
        assert_eq!(sent[0], "{\"Rating\": 299999999999999999999999999}", "a profile is sent as it came");
    }

    /// The bodies, built from the shared part serialized once, are byte for byte what
    /// serializing the whole envelope per batch gave.
    #[test]
    fn bodies_are_the_envelope_with_each_batch() {
        let envelopes = [
            json!({"targetId": 42, "key_values": {"k": "v", "profiles": [1]}, "is_test": false, "zz": "\"q\u{1}"}),
            json!({"targetId": "c"}),
            json!({"aaa": 1}),
            json!({"targetId": 1, "profilesz": 1, "profile": 2, "prof": 3}),
        ];
        for envelope in envelopes {
            for n in [0, 1, 2, 7] {
                let mut whole = envelope.clone();
                whole["targetId"] = whole.get("targetId").cloned().unwrap_or(json!(1));
                whole["profiles"] = (0..n).map(|i| json!({"Identity": i, "e": "é"})).collect();
                let p = Payload::from_value(whole).unwrap();
                let all: Vec<&[u8]> = p.profiles().collect();
                for size in [1, 2, 3, 100] {
                    let split = p.split(size);
                    let batches = split.batches();
                    let expected: Vec<Vec<u8>> =
                        if all.is_empty() { vec![&[][..]] } else { all.chunks(size).collect() }
                            .into_iter()
                            .map(|chunk| {
                                let mut body = p.envelope.clone();
                                let parsed = chunk.iter().map(|p| serde_json::from_slice(p).unwrap()).collect();
                                body.insert("profiles".into(), Value::Array(parsed));
                                serde_json::to_vec(&body).unwrap()
                            })
                            .collect();
                    let got: Vec<Vec<u8>> = batches.iter().map(|b| b.body.to_vec()).collect();
                    assert_eq!(got, expected, "{n} profiles by {size}");
                    assert_eq!(split.requests(), batches.len());
                    let total: usize = batches.iter().map(|b| b.body.len()).sum();
                    assert_eq!(split.body_bytes(), total as u64, "{n} profiles by {size}: the computed size is exact");
                }
            }
        }
    }

    /// The expansion is computed from the sizes: a 1 MiB `key_values` sent with a million
    /// tiny profiles one per request is known to be about a terabyte without building any.
    #[test]
    fn expansion_is_computed_without_building_it() {
        let big = "x".repeat(1 << 20);
        let profiles: Vec<Value> = (0..1_000_000).map(|_| json!({})).collect();
        let p = Payload::from_value(json!({"targetId": 7, "key_values": {"big": big}, "profiles": profiles})).unwrap();
        let started = std::time::Instant::now();
        let split = p.split(1);
        assert_eq!(split.requests(), 1_000_000);
        let shared = (split.head.len() + split.tail.len()) as u64;
        assert!(shared > 1 << 20);
        // Every request: the shared part and one `{}`; no commas.
        assert_eq!(split.body_bytes(), 1_000_000 * (shared + 2));
        assert!(split.body_bytes() > 1_000_000_000_000, "over a terabyte");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
        let by_1000 = p.split(1000);
        assert_eq!(by_1000.requests(), 1000);
        assert_eq!(by_1000.body_bytes(), 1000 * shared + 2_000_000 + 999 * 1000);
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
        let long = "c".repeat(MAX_TARGET_ID + 1);
        assert!(e(json!({"targetId": long, "profiles": []})).contains("1 to 128 characters"));
        assert!(e(json!({"targetId": "a\nforged log line", "profiles": []})).contains("without control characters"));
        assert!(e(json!({"targetId": "", "profiles": []})).contains("`targetId`"));
        assert!(e(json!({"targetId": 1e300, "profiles": []})).contains("`targetId`"));
        let longest = "é".repeat(MAX_TARGET_ID);
        assert_eq!(Payload::from_value(json!({"targetId": longest, "profiles": []})).unwrap().campaign, longest);
        assert_eq!(
            Payload::from_value(json!({"targetId": u64::MAX, "profiles": []})).unwrap().campaign,
            "18446744073709551615"
        );
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
