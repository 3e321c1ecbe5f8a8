// {{name}}: a hookgate auth plugin. It signs every webhook so the receiver can check that
// it comes from you and was not changed:
//
// - `x-signature-timestamp`: seconds since the Unix epoch (the host's clock);
// - `x-signature-256`: `sha256=` + hex(HMAC-SHA256(secret, "{timestamp}.{body}")) (the
//   host's HMAC), the secret being the template's `secret`.
//
// Change `authorize` to add the headers your partner expects; see the SDK's documentation
// (`hookgate-plugin.js`) and hookgate's guide to plugins (docs/plugins.md).

import { Failure, concat, hex, host, nowSeconds, parseConfig, plugin, utf8 } from './hookgate-plugin.js';

export const { describe, authorize, transform } = plugin({
  name: '{{name}}',
  version: '0.1.0',
  authorize(request, config) {
    const { secret } = parseConfig(config);
    if (typeof secret !== 'string' || secret === '') {
      throw new Failure('bad config: `secret` must be a non-empty string');
    }
    const timestamp = String(nowSeconds());
    const signature = hex(host.hmacSha256(utf8(secret), concat(`${timestamp}.`, request.body)));
    return [
      { name: 'x-signature-timestamp', value: timestamp },
      { name: 'x-signature-256', value: `sha256=${signature}` },
    ];
  },
});
