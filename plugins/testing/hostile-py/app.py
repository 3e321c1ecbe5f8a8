"""A Python plugin for hookgate's tests, well-behaved or hostile as its config's `mode`
says: `calm` (the default: adds `x-test-plugin: calm-python`), `loop` (never returns),
`memory` (allocates until it is stopped), `exception` (raises an uncaught exception),
`count` (counts its calls in a global and reports the count in `x-count`, so a test sees
whether its instance was reused)."""

import hookgate_plugin
from hookgate_plugin import Header

calls = 0


class Hostile(hookgate_plugin.Plugin):
    name = "hookgate-test-plugin-python"
    version = "0.1.0"

    def authorize(self, request, config):
        global calls
        mode = hookgate_plugin.parse_config(config).get("mode", "calm")
        if mode == "calm":
            return [Header(name="x-test-plugin", value="calm-python"), Header(name="x-template", value=request.template)]
        if mode == "loop":
            n = 0
            while True:
                n += 1
        if mode == "memory":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        if mode == "exception":
            return [Header(name="x-never", value={}["no such key"])]
        if mode == "count":
            calls += 1
            return [Header(name="x-count", value=str(calls))]
        raise hookgate_plugin.Failure(f"unknown mode `{mode}`")


WitWorld = Hostile
