// Write a hookgate plugin in JavaScript.
//
// A plugin is a WebAssembly component built against the WIT contract
// `hookgate:plugin@0.1.0` (`wit/v0.1.0/plugin.wit`) with componentize-qjs (the QuickJS
// engine and the plugin's code in one component, built with `--stub-wasi --sync`). With
// this module it is one `plugin({...})` call whose result the plugin's module exports:
//
//     import { plugin, host } from './hookgate-plugin.js';
//
//     export const { describe, authorize, transform } = plugin({
//       name: 'stamp',
//       version: '0.1.0',
//       authorize(request, config) {
//         return [{ name: 'x-stamp', value: request.template }];
//       },
//     });
//
// Build it with `npm run build` (see the project's package.json) and check it with
// `hookgate plugin check stamp.wasm` before dropping it into `config/plugins/`.
//
// The sandbox has no files, sockets, environment or clock: `Date.now()` and `console.log`
// trap (the call fails), and `Math.random()` repeats one sequence in every instance. Nor
// are there `TextEncoder`, `atob` or `crypto`: this module has `utf8`, `text` and base64.
// Use `host` instead: `host.nowMillis()` (or `nowSeconds()`), `host.randomBytes(n)`,
// `host.hmacSha256(key, message)`, `host.sign(...)`, `host.cacheGet/cacheSet`,
// `host.fetch(...)`, `host.log(level, message)`. Bytes are `Uint8Array`s.
//
// Errors: throw `new Failure('why')` (or `new Failure('why', { retryable: true })`) to fail
// the call with that reason. Anything else thrown fails it too, as `TypeError: message`
// (an export not wrapped by `plugin` that throws traps instead).
// Either becomes the delivery's failure reason, prefixed with the plugin's name, so it must
// never contain a secret.

import * as host from 'hookgate:plugin/host@0.1.0';

export { host };

/** The header in which hookgate gives each webhook request its delivery id: unique per
 * request and the same on every attempt of it. */
export const DELIVERY_ID_HEADER = 'x-hookgate-delivery-id';

/** Fails the call: `message` becomes the delivery's failure reason (never put a secret in
 * it); `retryable` says whether trying again later may succeed. */
export class Failure extends Error {
  constructor(message, { retryable = false } = {}) {
    super(message);
    this.name = 'Failure';
    this.retryable = retryable;
  }
}

/** The contract's plugin-error for whatever a plugin threw. */
function asPluginError(error) {
  if (error instanceof Failure) {
    return { message: error.message, retryable: error.retryable };
  }
  if (error instanceof Error) {
    return { message: `${error.name}: ${error.message}`, retryable: false };
  }
  return { message: `threw ${String(error)}`, retryable: false };
}

/** Runs an export, turning whatever it throws into the contract's plugin-error. */
function reporting(run) {
  return (...args) => {
    try {
      return run(...args);
    } catch (error) {
      // A thrown error's `payload` is the result's `err`.
      const failure = new Error('plugin error');
      failure.payload = asPluginError(error);
      throw failure;
    }
  };
}

/**
 * The three exports of the contract, from a plugin's `name`, `version` and the functions it
 * implements: `authorize(request, config)` returns headers (`[{name, value}]`),
 * `transform(payload, config)` returns `{requests, skipped}`. `describe` reports the
 * implemented ones as the plugin's capabilities; the others fail as not supported.
 */
export function plugin({ name, version = '0.0.0', authorize, transform }) {
  const capabilities = [];
  if (authorize) capabilities.push('authorize');
  if (transform) capabilities.push('transform');
  return {
    describe: () => ({ name, version, capabilities }),
    authorize: reporting(
      authorize ??
        (() => {
          throw new Failure('this plugin does not authorize requests');
        }),
    ),
    transform: reporting(
      transform ??
        (() => {
          throw new Failure('this plugin does not transform payloads');
        }),
    ),
  };
}

/** Seconds since the Unix epoch, from the host's clock (`host.nowMillis()`). */
export function nowSeconds() {
  return Math.floor(Number(host.nowMillis()) / 1000);
}

/** The template's plugin section (a JSON object), or a `Failure` naming the problem. */
export function parseConfig(config) {
  let value;
  try {
    value = JSON.parse(config);
  } catch (error) {
    throw new Failure(`bad config: ${error.message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Failure('bad config: not a JSON object');
  }
  return value;
}

/** The value of the request's header `name` (any case), if it has it. */
export function header(request, name) {
  const wanted = name.toLowerCase();
  return request.headers.find((h) => h.name.toLowerCase() === wanted)?.value;
}

/** The request's delivery id: unique per request and the same on every attempt, so it suits
 * idempotency keys and message ids. Requests hookgate makes outside a dispatch (the test
 * payload sent when a template loads, `hookgate plugin check`) have none. */
export function deliveryId(request) {
  return header(request, DELIVERY_ID_HEADER);
}

/** A request with a JSON body carrying `profiles` profiles (a transform's output). */
export function jsonRequest(method, url, body, profiles, headers = {}) {
  return {
    method,
    url,
    headers: [
      { name: 'content-type', value: 'application/json' },
      ...Object.entries(headers).map(([name, value]) => ({ name, value })),
    ],
    body: utf8(JSON.stringify(body)),
    profiles,
  };
}

// UTF-8 and base64 in plain JavaScript: the same in every engine componentize builds with.

/** The UTF-8 bytes of a string. */
export function utf8(text) {
  const out = [];
  for (const char of text) {
    const c = char.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return Uint8Array.from(out);
}

/** A string of UTF-8 bytes (invalid sequences become U+FFFD). */
export function text(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    const need = b < 0x80 ? 0 : b >= 0xf0 && b < 0xf8 ? 3 : b >= 0xe0 ? 2 : b >= 0xc2 && b < 0xe0 ? 1 : -1;
    let c = need === 0 ? b : need === 1 ? b & 31 : need === 2 ? b & 15 : b & 7;
    let ok = need >= 0 && i + need < bytes.length + (need === 0 ? 1 : 0);
    for (let k = 1; ok && k <= need; k++) {
      const next = bytes[i + k];
      if ((next & 0xc0) !== 0x80) ok = false;
      else c = (c << 6) | (next & 63);
    }
    if (ok && (c > 0x10ffff || (c >= 0xd800 && c < 0xe000))) ok = false;
    out += ok ? String.fromCodePoint(c) : '\ufffd';
    i += ok ? need + 1 : 1;
  }
  return out;
}

/** The bytes of several `Uint8Array`s (or strings, as UTF-8) one after the other. */
export function concat(...parts) {
  const arrays = parts.map((p) => (typeof p === 'string' ? utf8(p) : p));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Standard base64 (with padding) of bytes. */
export function base64Encode(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    out += BASE64[n >> 18] + BASE64[(n >> 12) & 63];
    out += i + 1 < bytes.length ? BASE64[(n >> 6) & 63] : '=';
    out += i + 2 < bytes.length ? BASE64[n & 63] : '=';
  }
  return out;
}

/** The bytes of standard base64 (padding optional); a `Failure` if it is not base64. */
export function base64Decode(encoded) {
  const digits = encoded.replace(/=+$/, '');
  if (digits.length % 4 === 1 || /[^A-Za-z0-9+/]/.test(digits)) throw new Failure('not base64');
  const out = new Uint8Array(Math.floor((digits.length * 3) / 4));
  let bits = 0;
  let value = 0;
  let at = 0;
  for (const digit of digits) {
    value = (value << 6) | BASE64.indexOf(digit);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[at++] = (value >> bits) & 0xff;
    }
  }
  return out;
}

/** Lowercase hex of bytes. */
export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
