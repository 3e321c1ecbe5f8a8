"""Write a hookgate plugin in Python.

A plugin is a WebAssembly component built against the WIT contract
`hookgate:plugin@0.1.0` (`wit/v0.1.0/plugin.wit`) with componentize-py. With this module it
is a subclass of `Plugin` that overrides `authorize` (an auth plugin) or `transform` (a
transform plugin), named `WitWorld` in the app module, which is the name componentize-py
looks for:

    import hookgate_plugin
    from hookgate_plugin import Header, host

    class Stamp(hookgate_plugin.Plugin):
        name = "stamp"
        version = "0.1.0"

        def authorize(self, request, config):
            return [Header(name="x-stamp", value=request.template)]

    WitWorld = Stamp

Build it with
`componentize-py -d wit/v0.1.0 -w plugin componentize app -o stamp.wasm` and check it with
`hookgate plugin check stamp.wasm` before dropping it into `config/plugins/`.

The sandbox has no files, sockets, environment or clock: `time.time()`, `random`, `os`
and `print` do not work (they trap, or return what they returned at build time). Use
`host` instead: `host.now_millis()`, `host.random_bytes(n)`, `host.hmac_sha256(key, msg)`,
`host.sign(...)`, `host.cache_get/cache_set`, `host.fetch(...)`, `host.log(...)`.

Errors: raise `Failure("why")` (or `Failure("why", retryable=True)`) to fail the call with
that reason. Any other exception fails it too, as `ExceptionType: message`. Either becomes
the delivery's failure reason, prefixed with the plugin's name, so it must never contain a
secret.
"""

import json
from typing import Any, Callable, Dict, List, Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.host import FetchRequest, FetchResponse, LogLevel, SigningAlg
from wit_world.imports.types import (
    Header,
    OutgoingRequest,
    PluginError,
    PluginInfo,
    Request,
    TransformOutput,
)

__all__ = [
    "DELIVERY_ID_HEADER",
    "Failure",
    "FetchRequest",
    "FetchResponse",
    "Header",
    "LogLevel",
    "OutgoingRequest",
    "Plugin",
    "PluginInfo",
    "Request",
    "SigningAlg",
    "TransformOutput",
    "delivery_id",
    "header",
    "host",
    "json_request",
    "parse_config",
]

#: The header in which hookgate gives each webhook request its delivery id: unique per
#: request and the same on every attempt of it.
DELIVERY_ID_HEADER = "x-hookgate-delivery-id"


class Failure(Exception):
    """Fails the call: `message` becomes the delivery's failure reason (never put a secret
    in it); `retryable` says whether trying again later may succeed."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


def _as_plugin_error(error: BaseException) -> PluginError:
    if isinstance(error, Failure):
        return PluginError(message=error.message, retryable=error.retryable)
    if isinstance(error, Err) and isinstance(error.value, PluginError):
        return error.value
    return PluginError(message=f"{type(error).__name__}: {error}", retryable=False)


def _reporting(export: Callable) -> Callable:
    """Turns every exception an export raises into the contract's plugin-error."""

    def call(self, *args):
        try:
            return export(self, *args)
        except Exception as error:
            raise Err(_as_plugin_error(error)) from None

    call.__hookgate_export__ = True
    call.__name__ = export.__name__
    call.__doc__ = export.__doc__
    return call


class Plugin(wit_world.WitWorld):
    """A hookgate plugin. Override `authorize`, `transform` or both; `describe` reports the
    ones overridden as the plugin's capabilities."""

    #: A short name, for logs (the file name is what templates use).
    name: str = "plugin"
    #: The plugin's own version.
    version: str = "0.0.0"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for export in ("authorize", "transform"):
            function = cls.__dict__.get(export)
            if function is not None and not getattr(function, "__hookgate_export__", False):
                setattr(cls, export, _reporting(function))

    def describe(self) -> PluginInfo:
        capabilities = [
            export
            for export in ("authorize", "transform")
            if getattr(type(self), export) is not getattr(Plugin, export)
        ]
        return PluginInfo(name=self.name, version=self.version, capabilities=capabilities)

    def authorize(self, request: OutgoingRequest, config: str) -> List[Header]:
        """Headers to add to a webhook request. `config` is the template's plugin section
        as JSON (see `parse_config`)."""
        raise Failure("this plugin does not authorize requests")

    def transform(self, payload: bytes, config: str) -> TransformOutput:
        """The requests to send for a campaign payload (JSON). For the test payload sent
        when a template loads (`is_test: true`), return requests without side effects."""
        raise Failure("this plugin does not transform payloads")


# The defaults fail as the contract says, too.
Plugin.authorize = _reporting(Plugin.authorize)
Plugin.transform = _reporting(Plugin.transform)


def parse_config(config: str) -> Dict[str, Any]:
    """The template's plugin section (a JSON object), or a `Failure` naming the problem."""
    try:
        value = json.loads(config)
    except ValueError as error:
        raise Failure(f"bad config: {error}") from None
    if not isinstance(value, dict):
        raise Failure("bad config: not a JSON object")
    return value


def header(request: OutgoingRequest, name: str) -> Optional[str]:
    """The value of the request's header `name` (any case), if it has it."""
    wanted = name.lower()
    return next((h.value for h in request.headers if h.name.lower() == wanted), None)


def delivery_id(request: OutgoingRequest) -> Optional[str]:
    """The request's delivery id: unique per request and the same on every attempt, so it
    suits idempotency keys and message ids. Requests hookgate makes outside a dispatch
    (the test payload sent when a template loads, `hookgate plugin check`) have none."""
    return header(request, DELIVERY_ID_HEADER)


def json_request(method: str, url: str, body: Any, profiles: int, headers: Optional[Dict[str, str]] = None) -> Request:
    """A request with a JSON body carrying `profiles` profiles (a transform's output)."""
    all_headers = [Header(name="content-type", value="application/json")]
    all_headers += [Header(name=k, value=v) for k, v in (headers or {}).items()]
    return Request(
        method=method,
        url=url,
        headers=all_headers,
        body=json.dumps(body, separators=(",", ":")).encode(),
        profiles=profiles,
    )
