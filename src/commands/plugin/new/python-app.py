"""{{name}}: a hookgate auth plugin. It signs every webhook so the receiver can check that
it comes from you and was not changed:

- `x-signature-timestamp`: seconds since the Unix epoch (the host's clock);
- `x-signature-256`: `sha256=` + hex(HMAC-SHA256(secret, "{timestamp}.{body}")) (the host's
  HMAC), the secret being the template's `secret`.

Change `authorize` to add the headers your partner expects; see the SDK's documentation
(`hookgate_plugin.py`) and hookgate's guide to plugins (docs/plugins.md).
"""

import hookgate_plugin
from hookgate_plugin import Failure, Header, host


class Signer(hookgate_plugin.Plugin):
    name = "{{name}}"
    version = "0.1.0"

    def authorize(self, request, config):
        secret = hookgate_plugin.parse_config(config).get("secret")
        if not isinstance(secret, str) or not secret:
            raise Failure("bad config: `secret` must be a non-empty string")
        timestamp = str(host.now_millis() // 1000)
        signature = host.hmac_sha256(secret.encode(), f"{timestamp}.".encode() + request.body).hex()
        return [
            Header(name="x-signature-timestamp", value=timestamp),
            Header(name="x-signature-256", value=f"sha256={signature}"),
        ]


# componentize-py looks for the name `WitWorld`.
WitWorld = Signer
