"""Signs each webhook the way the Standard Webhooks spec does
(https://www.standardwebhooks.com/), like the Rust example `examples/standard-webhooks`:

- `webhook-id`: `msg_` + hookgate's delivery id: unique per request, the same on every
  attempt of it;
- `webhook-timestamp`: seconds since the Unix epoch (the host's clock);
- `webhook-signature`: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), where
  the key is the base64 after the secret's `whsec_` prefix (the host's HMAC).

Template: `auth: {type: standard-webhooks, secret: "${env:WEBHOOK_SECRET}"}`.
"""

import base64
import binascii

import hookgate_plugin
from hookgate_plugin import Failure, Header, host


def secret_key(secret: str) -> bytes:
    """The key of a `whsec_` secret."""
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise Failure("`secret` must start with `whsec_`")
    try:
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    except binascii.Error:
        raise Failure("`secret` is not `whsec_` followed by base64") from None


def message_id(prefix: str, delivery_id, body: bytes) -> str:
    """`prefix` + the delivery id; a request without one (the test payload sent when a
    template loads) gets an id derived from its body."""
    if delivery_id is not None:
        return prefix + delivery_id
    return prefix + host.hmac_sha256(b"webhook-id", body)[:12].hex()


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 signature>` of `{id}.{timestamp}.{body}`."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(host.hmac_sha256(key, content)).decode()


class StandardWebhooks(hookgate_plugin.Plugin):
    name = "standard-webhooks"
    version = "0.1.0"

    def authorize(self, request, config):
        config = hookgate_plugin.parse_config(config)
        unknown = sorted(set(config) - {"secret", "id_prefix"})
        if unknown:
            raise Failure(f"bad config: unknown field `{unknown[0]}`, expected `secret` or `id_prefix`")
        if "secret" not in config:
            raise Failure("bad config: missing field `secret`")
        key = secret_key(config["secret"])
        msg_id = message_id(config.get("id_prefix", "msg_"), hookgate_plugin.delivery_id(request), request.body)
        timestamp = host.now_millis() // 1000
        return [
            Header(name="webhook-id", value=msg_id),
            Header(name="webhook-timestamp", value=str(timestamp)),
            Header(name="webhook-signature", value=signature(key, msg_id, timestamp, request.body)),
        ]


# componentize-py looks for the name `WitWorld`.
WitWorld = StandardWebhooks
