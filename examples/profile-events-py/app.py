"""A transform plugin: one tracking event per profile of a campaign payload, in the shape
of the usual "track" APIs of customer-data platforms:

    POST {url}
    {"userId": "<Identity>", "event": "<event>", "messageId": "<targetId>-<Identity>",
     "properties": {...key_values, "targetId": <targetId>, "email": "<Email>"}}

Profiles without an `Identity` are skipped (counted, not failed). The test payload sent when
a template loads (`is_test: true`) gets `"test": true` in each event's properties, so the
endpoint can tell it apart.

Template:

    url: https://track.partner.example/v1/track
    transform:
      type: profile-events
      url: https://track.partner.example/v1/track   # on the template URL's origin
      event: Campaign Sent                          # optional
"""

import json

import hookgate_plugin
from hookgate_plugin import Failure, TransformOutput, json_request


class ProfileEvents(hookgate_plugin.Plugin):
    name = "profile-events"
    version = "0.1.0"

    def transform(self, payload, config):
        config = hookgate_plugin.parse_config(config)
        url = config.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise Failure("bad config: `url` must be the events endpoint's http(s) URL")
        event = config.get("event", "Campaign Sent")
        try:
            campaign = json.loads(payload)
        except ValueError as error:
            raise Failure(f"the payload is not JSON: {error}") from None
        target = campaign.get("targetId")
        shared = campaign.get("key_values") or {}
        requests, skipped = [], 0
        for profile in campaign.get("profiles", []):
            identity = profile.get("Identity") if isinstance(profile, dict) else None
            if identity in (None, ""):
                skipped += 1
                continue
            properties = {**shared, "targetId": target}
            if "Email" in profile:
                properties["email"] = profile["Email"]
            if campaign.get("is_test"):
                properties["test"] = True
            body = {
                "userId": str(identity),
                "event": event,
                "messageId": f"{target}-{identity}",
                "properties": properties,
            }
            requests.append(json_request("POST", url, body, 1))
        return TransformOutput(requests=requests, skipped=skipped)


# componentize-py looks for the name `WitWorld`.
WitWorld = ProfileEvents
