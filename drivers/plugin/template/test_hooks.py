"""OPTIONAL test hooks (feature `test_hooks`, drivers/plugin/PROTOCOL.md §12).

With this file present the plugin announces the feature `test_hooks` in `hello` and serves the
`test.*` methods, over its ordinary stdin and stdout, for the simulated card of sdk_stub.py:
`cardd conformance` uses them to pull the card, pull it during a command and make it silent,
and cardd's own tests to hang, crash or confuse the plugin. cardd never sends them in normal
operation.

Delete this file for a plugin with real readers. Nothing else changes: the plugin then no longer
announces the feature, and `cardd conformance` asks a person to move the card instead.
"""

import os
import time

import sdk_stub
from cardd_plugin import MESSAGE_BYTES_MAX, PluginError, log, write_lines

FEATURE = "test_hooks"
HANG_SECONDS = 60  # a hung plugin still ends by itself eventually
CRASH_EXIT_CODE = 70

GARBAGE_LINES = [
    b"this is not json",
    b"\xff\xfe\x00 not utf-8",
    b"[1, 2, 3]",
    b'{"id": 999999999, "result": {}}',
    b'{"id": "not a number", "result": {}}',
    b'{"event": "no_such_event", "params": {}}',
    b'{"event": "card_inserted", "params": {"reader": "no-such-reader"}}',
    b'{"neither": "id nor event"}',
    b"[" * 5000 + b"]" * 5000,
    b"x" * (MESSAGE_BYTES_MAX + 4096),
]
GARBAGE_LINES_MAX = 1000


def add_arguments(parser):
    parser.add_argument("--protocol", help="TEST HOOK: pretend to speak this protocol version")
    parser.add_argument("--answer-protocol", help="TEST HOOK: answer hello with this version")


def install(plugin, worker, readers, args):
    """Announces the feature and registers the test.* methods on `plugin`."""
    if args.protocol:
        plugin.protocol = args.protocol
    plugin.answer_protocol = args.answer_protocol
    plugin.features.append(FEATURE)
    faults = {"hang": None, "crash": None}

    def simulated(params):
        reader = sdk_stub.READERS.get(params.get("reader"))
        if reader is None:
            raise PluginError("not_found", "no simulated reader %r" % params.get("reader"))
        return reader

    def on_reader(action):
        # Runs on the SDK thread, like every SDK call; the events it causes are sent before
        # the answer, so cardd has seen them when the hook returns.
        def hook(params, timeout_ms):
            reader = simulated(params)
            worker.call(lambda: action(reader), timeout_ms)
            return {}

        return hook

    plugin.handlers["test.remove_card"] = on_reader(lambda r: r.pull_card())
    plugin.handlers["test.insert_card"] = on_reader(lambda r: r.put_card())
    plugin.handlers["test.remove_during_next"] = on_reader(lambda r: r.fail_next_transmit("remove"))
    plugin.handlers["test.silence_next"] = on_reader(lambda r: r.fail_next_transmit("silent"))
    plugin.handlers["test.remove_reader"] = on_reader(lambda r: r.unplug())
    plugin.handlers["test.add_reader"] = on_reader(lambda r: r.plug())

    def fault(kind):
        def hook(params, timeout_ms):
            method = params.get("method") or ""
            faults[kind] = method
            return {}

        return hook

    plugin.handlers["test.hang_next"] = fault("hang")
    plugin.handlers["test.crash_next"] = fault("crash")

    def garbage(params, timeout_ms):
        count = params.get("lines", len(GARBAGE_LINES))
        if not isinstance(count, int) or not 0 <= count <= GARBAGE_LINES_MAX:
            raise PluginError("bad_request", "lines must be 0 to %d" % GARBAGE_LINES_MAX)
        write_lines([GARBAGE_LINES[i % len(GARBAGE_LINES)] for i in range(count)])
        return {}

    plugin.handlers["test.garbage"] = garbage

    def before_request(method):
        if faults["crash"] in ("", method):
            log("TEST HOOK: crashing at %s" % method)
            os._exit(CRASH_EXIT_CODE)
        if faults["hang"] in ("", method):
            faults["hang"] = None
            log("TEST HOOK: hanging at %s" % method)
            time.sleep(HANG_SECONDS)

    plugin.before_request.append(before_request)
