// Hearth's Node.js shim: requires /code/<module>.js and calls handler(event, context),
// awaiting it when it returns a promise.
//
// Started as `node shim.js MODE HANDLER`; see hearth_types::runtime for the protocol.
'use strict';
const fs = require('fs');
const path = require('path');
const readline = require('readline');

const mode = process.argv[2] || 'process';
const spec = process.argv[3] || 'handler.handler';
const CALL_END = '\x1ehearth-call-end\n';
const CODE = process.env.HEARTH_CODE_DIR || '/code';

// Writes all of `s` to `fd`, waiting out EAGAIN (stdio pipes may be non-blocking).
const pause = new Int32Array(new SharedArrayBuffer(4));
function writeAll(fd, s) {
  let buf = Buffer.from(s);
  while (buf.length > 0) {
    try {
      buf = buf.subarray(fs.writeSync(fd, buf));
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}

// Replies go to fd 1; whatever the handler prints goes to stderr, the logs.
const toLogs = (chunk, encoding, cb) => {
  writeAll(2, typeof chunk === 'string' ? chunk : Buffer.from(chunk));
  const done = typeof encoding === 'function' ? encoding : cb;
  if (done) done();
  return true;
};
process.stdout.write = toLogs;

function failure(e) {
  const err = e instanceof Error ? e : new Error(String(e));
  return {
    error: {
      message: `${err.name}: ${err.message}`,
      type: err.name,
      stack: err.stack || null,
    },
  };
}

function load() {
  const dot = spec.lastIndexOf('.');
  const [mod, name] = dot < 0 ? [spec, 'handler'] : [spec.slice(0, dot), spec.slice(dot + 1)];
  const m = require(path.join(CODE, mod));
  const fn = m[name];
  if (typeof fn !== 'function') {
    throw new TypeError(`${CODE}/${mod}.js does not export a function ${JSON.stringify(name)}`);
  }
  return fn;
}

function context(c) {
  return {
    invocationId: c.invocation_id || '',
    functionName: c.function_name || '',
    functionVersion: c.function_version ?? null,
    deadlineMs: Number(c.deadline_ms || 0),
    memoryLimitMib: Number(c.memory_limit_mib || 0),
    remainingMs() {
      return Math.max(0, this.deadlineMs - Date.now());
    },
  };
}

async function call(fn, event, ctx) {
  try {
    return { ok: await fn(event, context(ctx)) };
  } catch (e) {
    return failure(e);
  }
}

function reply(r) {
  let line;
  try {
    line = JSON.stringify(r);
  } catch (e) {
    line = JSON.stringify({
      error: { message: `the handler's result is not JSON: ${e.message}`, type: 'TypeError' },
    });
  }
  writeAll(1, line + '\n');
}

async function main() {
  let fn = null;
  let loadError = null;
  try {
    fn = load();
  } catch (e) {
    loadError = failure(e);
  }
  if (mode === 'persistent') {
    process.on('uncaughtException', (e) => writeAll(2, `uncaught: ${e && e.stack}\n`));
    process.on('unhandledRejection', (e) => writeAll(2, `unhandled rejection: ${e && e.stack}\n`));
    const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
    for await (const line of rl) {
      if (!line.trim()) continue;
      let r;
      try {
        const req = JSON.parse(line);
        r = loadError || (await call(fn, req.event, req.context || {}));
      } catch (e) {
        r = failure(e);
      }
      writeAll(2, CALL_END);
      reply(r);
    }
  } else {
    const raw = fs.readFileSync(0, 'utf8');
    let event;
    try {
      event = raw.trim() ? JSON.parse(raw) : null;
    } catch (e) {
      reply(failure(e));
      return;
    }
    const e = process.env;
    reply(
      loadError ||
        (await call(fn, event, {
          invocation_id: e.HEARTH_INVOCATION_ID,
          function_name: e.HEARTH_FUNCTION,
          function_version: e.HEARTH_VERSION || null,
          deadline_ms: e.HEARTH_DEADLINE_MS,
          memory_limit_mib: e.HEARTH_MEMORY_MIB,
        })),
    );
    process.exit(0);
  }
}

main();
