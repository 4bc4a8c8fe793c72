#!/usr/bin/env python3
"""A cardd plugin: puts the readers of a vendor SDK behind cardd (protocol `cardd-plugin/1`).

This is the template for a reader vendor's plugin. It has three parts, in three files:

* plugin.py (this file) - YOUR PART: the handlers that turn cardd's requests into SDK calls.
  Fill in the calls marked "SDK:" with your SDK's, and map its errors onto the protocol's codes
  in `sdk_errors`.
* cardd_plugin.py - the protocol plumbing. Keep it as it is.
* test_hooks.py - OPTIONAL test hooks for the simulated card of sdk_stub.py, used by
  `cardd conformance` and cardd's own tests. Delete the file for a plugin with real readers:
  nothing else changes, and `cardd conformance` then asks a person to move the card instead.

sdk_stub.py is a simulated SDK standing in for yours: with it, this template passes
`cardd conformance --plugin python3 plugin.py` out of the box.

cardd starts the plugin as a child process, writes requests to its stdin and reads answers
and events from its stdout; anything printed on stderr goes to cardd's log. If the plugin
crashes or leaves a request unanswered past its timeout, cardd kills it, reports its readers
gone and starts it again. Standard library only; Python 3.8 or later.

Slow SDK initialisation: cardd allows `hello_timeout_ms` (5 s by default) for the answer to
`hello`, and kills a plugin that takes longer. If your SDK takes longer to start, answer hello
first (the plumbing does, before any handler runs): start the SDK in a thread from `main`, have
`list` return the readers known so far (possibly none), and send `reader_added` for each reader
once the SDK is ready. Or raise `hello_timeout_ms` in cardd's configuration.

Blocking SDK calls: answer every request within its `timeout_ms`. The handlers below make their
SDK calls through `SDK.call(fn, timeout_ms)` (cardd_plugin.SdkWorker): the call runs on one
worker thread, and if it has not returned in time the request is answered `timeout` while the
SDK call finishes in the background.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cardd_plugin  # noqa: E402  (the plumbing; keep)
from cardd_plugin import PluginError, emit, log  # noqa: E402

import sdk_stub as sdk  # noqa: E402  SDK: replace with your SDK

try:  # optional: delete test_hooks.py for real readers
    import test_hooks  # noqa: E402
except ImportError:
    test_hooks = None

#: Your plugin's name and version, shown in cardd's log and status.
PLUGIN = cardd_plugin.Plugin(name="example", version="1.0.0")
#: Runs the SDK's blocking calls on one thread, bounded by each request's timeout.
SDK = cardd_plugin.SdkWorker()

READERS = {}  # the plugin's reader id -> SDK reader
SESSIONS = {}  # cardd's session number -> reader id


def sdk_errors(fn):
    """Calls fn() on the SDK thread and maps the SDK's exceptions onto protocol errors."""

    def mapped():
        try:
            return fn()
        except sdk.NoCard as e:
            raise PluginError("no_card", str(e))
        except sdk.CardRemoved as e:
            raise PluginError("card_removed", str(e))
        except sdk.Timeout as e:
            raise PluginError("timeout", str(e))
        except sdk.ReaderGone as e:
            raise PluginError("reader_gone", str(e))

    return mapped


def describe(reader):
    """A reader as `list` and `reader_added` describe it."""
    return {
        "id": reader.id,
        "name": reader.name,
        # `events`: this plugin sends card_inserted / card_removed for the reader.
        "capabilities": {"contact": True, "contactless": False, "events": True},
    }


def session_reader(params):
    reader_id = SESSIONS.get(params.get("session"))
    if reader_id is None:
        raise PluginError("bad_request", "unknown session %r" % params.get("session"))
    reader = READERS.get(reader_id)
    if reader is None:
        raise PluginError("reader_gone", "reader %s was unplugged" % reader_id)
    return reader


@PLUGIN.handle("list")
def handle_list(params, timeout_ms):
    return {"readers": [describe(r) for r in READERS.values()]}


@PLUGIN.handle("open")
def handle_open(params, timeout_ms):
    reader = READERS.get(params.get("reader"))
    if reader is None:
        raise PluginError("not_found", "no reader %r" % params.get("reader"))
    SESSIONS[params.get("session")] = reader.id
    # The transmission protocol negotiated with the card: t0, t1, contactless or other.
    return {"protocol": "t1"}


@PLUGIN.handle("close")
def handle_close(params, timeout_ms):
    SESSIONS.pop(params.get("session"), None)
    return {}


@PLUGIN.handle("power_on")
@PLUGIN.handle("reset")
def handle_power_on(params, timeout_ms):
    reader = session_reader(params)
    atr = SDK.call(sdk_errors(reader.power_on), timeout_ms)  # SDK: cold reset, returns the ATR
    return {"atr": atr.hex().upper()}


@PLUGIN.handle("power_off")
def handle_power_off(params, timeout_ms):
    reader = session_reader(params)
    SDK.call(sdk_errors(reader.power_off), timeout_ms)  # SDK: power the card off
    return {}


@PLUGIN.handle("presence")
def handle_presence(params, timeout_ms):
    reader = session_reader(params)
    # SDK: is a card there, and is it powered?
    state, atr = SDK.call(sdk_errors(reader.card_state), timeout_ms)
    if state == "powered":
        return {"state": "powered", "atr": atr.hex().upper()}
    return {"state": state}


@PLUGIN.handle("transmit")
def handle_transmit(params, timeout_ms):
    reader = session_reader(params)
    try:
        apdu = bytes.fromhex(params.get("apdu", ""))
    except ValueError:
        raise PluginError("bad_request", "apdu is not hex")
    # SDK: send the APDU as given; return the card's response as given, 61xx/6Cxx included
    # (cardd does the chaining).
    response = SDK.call(sdk_errors(lambda: reader.transmit(apdu, timeout_ms)), timeout_ms)
    return {"response": response.hex().upper()}


@PLUGIN.handle("ping")
def handle_ping(params, timeout_ms):
    return {}  # answer at once; never touch the reader here


def on_card_change(reader_id, atr):
    """SDK callback (any thread): a card arrived or left. Events are safe from any thread."""
    if atr is None:
        emit("card_removed", {"reader": reader_id})
    else:
        emit("card_inserted", {"reader": reader_id, "atr": atr.hex().upper()})


def on_reader_change(reader, attached):
    """SDK callback: a reader was plugged in or unplugged."""
    if attached:
        READERS[reader.id] = reader
        emit("reader_added", describe(reader))
    elif READERS.pop(reader.id, None) is not None:
        emit("reader_removed", {"reader": reader.id})


def main():
    parser = argparse.ArgumentParser(description="a cardd plugin (cardd-plugin/1)")
    if test_hooks is not None:
        test_hooks.add_arguments(parser)
    args = parser.parse_args()
    # SDK: start the SDK and register its callbacks. If this can take longer than cardd's
    # hello_timeout_ms, do it in a thread instead and send reader_added when it is done.
    sdk.on_card_change(on_card_change)
    sdk.on_reader_change(on_reader_change)
    for reader in sdk.init():
        READERS[reader.id] = reader
    if test_hooks is not None:
        test_hooks.install(PLUGIN, SDK, READERS, args)
    log("started (pid %d)" % os.getpid())
    PLUGIN.run()


if __name__ == "__main__":
    main()
