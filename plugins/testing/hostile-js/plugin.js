// A JavaScript plugin for hookgate's tests, well-behaved or hostile as its config's `mode`
// says: `calm` (the default: adds `x-test-plugin: calm-js`), `loop` (never returns),
// `memory` (allocates until it is stopped), `exception` (throws a TypeError), `count`
// (counts its calls in a global and reports the count in `x-count`, so a test sees whether
// its instance was reused).

import { Failure, parseConfig, plugin } from '../../sdk-js/hookgate-plugin.js';

let calls = 0;

export const { describe, authorize, transform } = plugin({
  name: 'hookgate-test-plugin-js',
  version: '0.1.0',
  authorize(request, config) {
    const { mode = 'calm' } = parseConfig(config);
    switch (mode) {
      case 'calm':
        return [
          { name: 'x-test-plugin', value: 'calm-js' },
          { name: 'x-template', value: request.template },
        ];
      case 'loop':
        for (;;) {}
      case 'memory': {
        const hoard = [];
        for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
      }
      case 'exception': {
        const missing = undefined;
        return [{ name: 'x-never', value: missing.value }];
      }
      case 'count':
        calls += 1;
        return [{ name: 'x-count', value: String(calls) }];
      default:
        throw new Failure(`unknown mode \`${mode}\``);
    }
  },
});
