"""Hearth's Python shim: loads /code/<module>.py and calls handler(event, context).

Started as `python3 -u shim.py MODE HANDLER`; see hearth_types::runtime for the protocol.
"""
import importlib
import json
import os
import sys
import time
import traceback

MODE = sys.argv[1] if len(sys.argv) > 1 else "process"
HANDLER = sys.argv[2] if len(sys.argv) > 2 else "handler.handler"
CALL_END = "\x1ehearth-call-end\n"
CODE = os.environ.get("HEARTH_CODE_DIR", "/code")

# Replies go to the real stdout; whatever the handler prints goes to stderr, the logs.
_replies = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr
sys.path.insert(0, CODE)


class Context:
    """What the handler knows about its invocation."""

    def __init__(self, c):
        self.invocation_id = c.get("invocation_id", "")
        self.function_name = c.get("function_name", "")
        self.function_version = c.get("function_version")
        self.deadline_ms = int(c.get("deadline_ms") or 0)
        self.memory_limit_mib = int(c.get("memory_limit_mib") or 0)

    def remaining_ms(self):
        return max(0, self.deadline_ms - int(time.time() * 1000))

    def __repr__(self):
        return f"Context({self.__dict__!r})"


def failure(e):
    # The stack starts at the function's own code, not in this shim or the import machinery.
    tb = e.__traceback__
    while tb and (tb.tb_frame.f_code.co_filename == __file__
                  or "importlib" in tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return {
        "error": {
            "message": f"{type(e).__name__}: {e}",
            "type": type(e).__name__,
            "stack": "".join(traceback.format_exception(type(e), e, tb)),
        }
    }


def load():
    module, _, name = HANDLER.rpartition(".")
    if not module:
        module, name = name, "handler"
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise AttributeError(f"{CODE}/{module}.py has no function {name!r}")
    return fn


def call(fn, event, context):
    try:
        return {"ok": fn(event, Context(context))}
    except BaseException as e:  # a handler's sys.exit() is its error too
        if isinstance(e, KeyboardInterrupt):
            raise
        return failure(e)


def reply(r):
    try:
        line = json.dumps(r)
    except (TypeError, ValueError) as e:
        line = json.dumps(
            {"error": {"message": f"the handler's result is not JSON: {e}", "type": "TypeError"}}
        )
    sys.stderr.flush()
    _replies.write(line + "\n")
    _replies.flush()


def env_context():
    e = os.environ
    return {
        "invocation_id": e.get("HEARTH_INVOCATION_ID", ""),
        "function_name": e.get("HEARTH_FUNCTION", ""),
        "function_version": e.get("HEARTH_VERSION") or None,
        "deadline_ms": e.get("HEARTH_DEADLINE_MS", "0"),
        "memory_limit_mib": e.get("HEARTH_MEMORY_MIB", "0"),
    }


def main():
    try:
        fn, load_error = load(), None
    except BaseException as e:
        fn, load_error = None, failure(e)
    if MODE == "persistent":
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                r = load_error or call(fn, req.get("event"), req.get("context") or {})
            except ValueError as e:
                r = failure(e)
            sys.stdout.flush()
            sys.stderr.write(CALL_END)
            reply(r)
    else:
        raw = sys.stdin.read()
        try:
            event = json.loads(raw) if raw.strip() else None
        except ValueError as e:
            reply(failure(e))
            return
        reply(load_error or call(fn, event, env_context()))


main()
