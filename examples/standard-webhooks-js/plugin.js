// Signs each webhook the way the Standard Webhooks spec does
// (https://www.standardwebhooks.com/), like the Rust example `examples/standard-webhooks`:
//
// - `webhook-id`: `msg_` + hookgate's delivery id: unique per request, the same on every
//   attempt of it;
// - `webhook-timestamp`: seconds since the Unix epoch (the host's clock);
// - `webhook-signature`: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), where
//   the key is the base64 after the secret's `whsec_` prefix (the host's HMAC).
//
// Template: `auth: {type: standard-webhooks, secret: "${env:WEBHOOK_SECRET}"}`.

import {
  Failure,
  base64Decode,
  base64Encode,
  concat,
  deliveryId,
  hex,
  host,
  nowSeconds,
  parseConfig,
  plugin,
  utf8,
} from '../../plugins/sdk-js/hookgate-plugin.js';

/** The key of a `whsec_` secret. */
function secretKey(secret) {
  if (typeof secret !== 'string' || !secret.startsWith('whsec_')) {
    throw new Failure('`secret` must start with `whsec_`');
  }
  try {
    return base64Decode(secret.slice('whsec_'.length));
  } catch {
    throw new Failure('`secret` is not `whsec_` followed by base64');
  }
}

/** `prefix` + the delivery id; a request without one (the test payload sent when a template
 * loads) gets an id derived from its body. */
function messageId(prefix, delivery, body) {
  if (delivery !== undefined) return prefix + delivery;
  return prefix + hex(host.hmacSha256(utf8('webhook-id'), body).subarray(0, 12));
}

/** `v1,<base64 signature>` of `{id}.{timestamp}.{body}`. */
function signature(key, id, timestamp, body) {
  return 'v1,' + base64Encode(host.hmacSha256(key, concat(`${id}.${timestamp}.`, body)));
}

export const { describe, authorize, transform } = plugin({
  name: 'standard-webhooks',
  version: '0.1.0',
  authorize(request, config) {
    const { secret, id_prefix: prefix = 'msg_', ...unknown } = parseConfig(config);
    const extra = Object.keys(unknown);
    if (extra.length > 0) {
      throw new Failure(`bad config: unknown field \`${extra[0]}\`, expected \`secret\` or \`id_prefix\``);
    }
    if (secret === undefined) throw new Failure('bad config: missing field `secret`');
    const key = secretKey(secret);
    const id = messageId(prefix, deliveryId(request), request.body);
    const timestamp = String(nowSeconds());
    return [
      { name: 'webhook-id', value: id },
      { name: 'webhook-timestamp', value: timestamp },
      { name: 'webhook-signature', value: signature(key, id, timestamp, request.body) },
    ];
  },
});
