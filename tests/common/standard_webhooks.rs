//! A verifier written from the Standard Webhooks spec (<https://www.standardwebhooks.com/>),
//! for the example plugins in every language.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};

/// The secret the tests configure.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The signed content is `{id}.{timestamp}.{body}`, the key is the base64 after `whsec_`,
/// and the header holds space-separated `v1,<base64 HMAC-SHA256>` signatures; the timestamp
/// must be within 5 minutes of now.
pub fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], signatures: &str) -> Result<(), String> {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").ok_or("no whsec_ prefix")?).map_err(|e| e.to_string())?;
    let ts: i64 = timestamp.parse().map_err(|_| "timestamp is not an integer")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - ts).abs() > 300 {
        return Err(format!("timestamp {ts} is too far from now {now}"));
    }
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    let ok = signatures.split(' ').any(|s| s.strip_prefix("v1,") == Some(expected.as_str()));
    if ok { Ok(()) } else { Err(format!("no v1 signature matches in `{signatures}`")) }
}

/// Verifies a request the mock recorded, and that a tampered body fails.
pub fn verify_request(request: &super::Recorded) -> Result<(), String> {
    let header = |name: &str| request.header(name).ok_or(format!("no `{name}` header"));
    let (id, ts, sig) = (header("webhook-id")?, header("webhook-timestamp")?, header("webhook-signature")?);
    if !id.starts_with("msg_") {
        return Err(format!("the id `{id}` does not start with msg_"));
    }
    verify(SECRET, &id, &ts, &request.body, &sig)?;
    let mut tampered = request.body.to_vec();
    tampered.push(b' ');
    match verify(SECRET, &id, &ts, &tampered, &sig) {
        Ok(()) => Err("a tampered body verifies".into()),
        Err(_) => Ok(()),
    }
}
