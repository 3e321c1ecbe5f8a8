//! A WASM plugin as a transform plugin of `core`: `transform` plans the requests of a
//! payload; each must stay on the template URL's origin, and the profiles they claim to
//! carry must add up (see [`check_profiles`]).

use std::sync::Arc;

use async_trait::async_trait;
use hookgate_core::plugin::transform::same_origin;
use hookgate_core::plugin::{
    PlannedRequest, RequestTarget, TransformContext, TransformFailure, TransformPlugin, Transformed, Transformer,
};
use http::Method;
use http::header::HeaderMap;
use url::Url;

use crate::adapter::{BadHeader, BoundPlugin, WasmPlugin, checked_header};
use crate::pool::Leased;
use crate::text;

pub struct WasmTransformPlugin(WasmPlugin);

impl WasmTransformPlugin {
    pub fn new(plugin: WasmPlugin) -> Self {
        Self(plugin)
    }
}

impl TransformPlugin for WasmTransformPlugin {
    fn name(&self) -> &str {
        self.0.name()
    }

    /// See [`WasmPlugin::bind`].
    fn build(
        &self,
        ctx: &TransformContext<'_>,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arc<dyn Transformer>, String> {
        Ok(Arc::new(WasmTransformer {
            plugin: self.0.bind(&ctx.build, config)?,
            url: ctx.url.clone(),
            headers: ctx.headers.clone(),
        }))
    }
}

#[derive(Debug)]
pub struct WasmTransformer {
    plugin: BoundPlugin,
    /// The template's URL (the allowed origin) and headers (the base of every request's).
    url: Url,
    headers: HeaderMap,
}

#[async_trait]
impl Transformer for WasmTransformer {
    async fn transform(&self, payload: &[u8]) -> Result<Transformed, TransformFailure> {
        let Leased { output, lease } =
            self.plugin.transform(payload).await.map_err(|e| TransformFailure::Call(e.kind.to_string()))?;
        let counts: Vec<u32> = output.requests.iter().map(|r| r.profiles).collect();
        check_profiles(&counts, output.skipped, payload_profiles(payload)).map_err(TransformFailure::Output)?;
        let mut requests = Vec::with_capacity(output.requests.len());
        for (index, r) in output.requests.into_iter().enumerate() {
            let bad = |why: String| TransformFailure::Request { index, why };
            let method = Method::from_bytes(r.method.as_bytes())
                .map_err(|_| bad(format!("`{}` is not an HTTP method", text::name(&r.method))))?;
            let url = Url::parse(&r.url).map_err(|e| bad(format!("not a valid URL: {e}")))?;
            if !same_origin(&self.url, &url) {
                return Err(bad(format!(
                    "{}://{} is not the template URL's origin; a transform may only send there",
                    url.scheme(),
                    url.host_str().unwrap_or_default()
                )));
            }
            let mut headers = self.headers.clone();
            for header in r.headers {
                let (name, mut value) = checked_header(header).map_err(|e| {
                    bad(match e {
                        BadHeader::Name(name) => format!("invalid header name `{name}`"),
                        BadHeader::Reserved(name) => format!("`{name}` is set by the gateway; a plugin may not set it"),
                        BadHeader::Value(name) => format!("invalid value for header `{name}`"),
                    })
                })?;
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            requests.push(PlannedRequest {
                target: Arc::new(RequestTarget { method, url, headers }),
                body: r.body.into(),
                profiles: r.profiles as usize,
            });
        }
        // Checked and good: the instance may serve the next call (on any error above it is
        // dropped with the lease).
        lease.keep();
        Ok(Transformed { requests, skipped: output.skipped as usize })
    }
}

/// How many profiles the payload (the dispatch payload as JSON) has, counted without
/// keeping them. A payload the dispatcher accepted always has a `profiles` list.
fn payload_profiles(payload: &[u8]) -> usize {
    #[derive(serde::Deserialize)]
    struct Count {
        #[serde(default)]
        profiles: Vec<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Count>(payload).map(|c| c.profiles.len()).unwrap_or(0)
}

/// The profile counts a transform returns feed the campaign's stats, so they are checked,
/// not taken as given: each profile of the payload is counted at most once, in one request
/// or as skipped. So no request carries more than the payload's `total`, and the requests'
/// counts plus `skipped` are at most `total` (less is fine: a profile the plugin sends
/// nothing for, a rating above the threshold say, is neither).
fn check_profiles(counts: &[u32], skipped: u32, total: usize) -> Result<(), String> {
    let total = total as u64;
    if let Some((i, n)) = counts.iter().enumerate().find(|(_, n)| u64::from(**n) > total) {
        return Err(format!("request {i} claims {n} profiles; the payload has {total}"));
    }
    let carried: u64 = counts.iter().map(|n| u64::from(*n)).sum();
    if carried + u64::from(skipped) > total {
        return Err(format!(
            "its requests claim {carried} profiles and it skipped {skipped}, more than the payload's {total} (each profile counts once)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_counted_from_the_payload() {
        assert_eq!(
            payload_profiles(br#"{"targetId": 1, "key_values": {"a": [1, 2]}, "profiles": [{}, {"x": [{}]}, {}]}"#),
            3
        );
        assert_eq!(payload_profiles(br#"{"targetId": 1, "profiles": []}"#), 0);
    }

    #[test]
    fn each_profile_counts_once() {
        assert!(check_profiles(&[1, 1, 0], 1, 3).is_ok());
        assert!(check_profiles(&[1], 0, 3).is_ok(), "profiles neither sent nor skipped are fine");
        assert!(check_profiles(&[], 0, 0).is_ok());
        let why = check_profiles(&[1, 4], 0, 3).unwrap_err();
        assert_eq!(why, "request 1 claims 4 profiles; the payload has 3");
        let why = check_profiles(&[2, 2], 0, 3).unwrap_err();
        assert!(why.contains("claim 4 profiles and it skipped 0, more than the payload's 3"), "{why}");
        assert!(check_profiles(&[1], 3, 3).is_err());
        assert!(check_profiles(&[u32::MAX; 4], u32::MAX, usize::MAX).is_ok(), "no overflow");
    }
}
