#!/usr/bin/env python3
"""Example cardd plugin: one reader holding a small simulated ETC card.

This is the template a reader vendor copies to put a closed SDK behind cardd. cardd starts
this program as a child process and speaks the protocol `cardd-plugin/1` with it (specified in
drivers/plugin/PROTOCOL.md):

* cardd writes requests to our stdin, one JSON object per line;
* we write responses and unsolicited events to stdout, one JSON object per line;
* anything we print to stderr is our log: cardd forwards it to its own log.

cardd supervises us: if we crash, or leave a request unanswered past its timeout, cardd kills
us, reports our readers gone and starts us again. So the simplest correct plugin handles one
request at a time, answers every request (an error is an answer), never prints anything but
protocol messages on stdout, and exits when stdin reaches end of file.

The file has four parts:

1. protocol plumbing (reading requests, writing responses and events) - keep it;
2. the "SDK": a simulated card and reader - replace it with calls into your SDK;
3. the request handlers - adapt them to your SDK;
4. TEST HOOKS - cardd's own tests use them to pull the card, make it silent, hang or crash
   this plugin, or print garbage. Delete that part (and `--control`) when you copy this file.

Standard library only; Python 3.8 or later.
"""

import argparse
import json
import os
import socket
import sys
import threading
import time
import traceback

# ---------------------------------------------------------------------------------------------
# 1. Protocol plumbing
# ---------------------------------------------------------------------------------------------

#: The protocol version this plugin speaks. cardd offers the versions it speaks in `hello`.
PROTOCOL = "cardd-plugin/1"
PLUGIN_NAME = "example"
PLUGIN_VERSION = "1.0.0"
#: Longest line either side may send (bytes, without the newline). Same as cardd's limit.
MESSAGE_BYTES_MAX = 262144

# stdout carries protocol messages from two threads (requests and card events), so every
# write takes this lock: two messages must never interleave on one line.
_out_lock = threading.Lock()


def send(message):
    """Writes one protocol message (a dict) to stdout as one line."""
    data = json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"
    with _out_lock:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def log(text):
    """Writes one line to our log (stderr). cardd forwards it; never log to stdout."""
    sys.stderr.write("%s: %s\n" % (PLUGIN_NAME, text))
    sys.stderr.flush()


def emit(event, params):
    """Sends an unsolicited event (card_inserted, card_removed, reader_added, reader_removed)."""
    send({"event": event, "params": params})


class PluginError(Exception):
    """An error answer. `code` is one of the protocol's codes: no_card, card_removed, timeout,
    reader_gone, protocol, not_found, busy, unsupported, unsupported_version, bad_request,
    internal. cardd turns it into the matching reader error."""

    def __init__(self, code, message=""):
        Exception.__init__(self, message)
        self.code = code
        self.message = message


def read_requests(stream):
    """Yields each request (a dict) read from `stream`; returns at end of file (cardd closed
    our stdin: time to exit). Lines over MESSAGE_BYTES_MAX are skipped, not buffered."""
    while True:
        line = stream.readline(MESSAGE_BYTES_MAX + 1)
        if not line:
            return
        if len(line) > MESSAGE_BYTES_MAX and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = stream.readline(MESSAGE_BYTES_MAX + 1)
            log("skipped an oversized request line")
            continue
        try:
            request = json.loads(line.decode("utf-8"))
        except ValueError as e:
            log("skipped a request that is not JSON: %s" % e)
            continue
        if isinstance(request, dict):
            yield request


# ---------------------------------------------------------------------------------------------
# 2. The "SDK": a simulated reader and card. Replace this part with your SDK.
# ---------------------------------------------------------------------------------------------

SW_OK = b"\x90\x00"


def sw(value):
    return bytes([value >> 8, value & 0xFF])


def etc_0015():
    """The 43-byte ETC issue-information file 0015 (docs/card-protocol.md)."""
    issuer = "北京".encode("gbk") + b"\x01\x01\x00\x01"  # province (GBK) + issuer code
    card_type = b"\x16"  # stored-value card
    version = b"\x10"  # 3DES keys
    network = b"\x11\x01"  # BCD
    internal = bytes.fromhex("2401000012345678")  # BCD card number
    start = bytes.fromhex("20240101")
    expiry = bytes.fromhex("20340101")
    plate = "京A12345".encode("gbk").ljust(12, b"\x00")
    user_type = b"\x00"
    colour = b"\x00\x00"  # blue
    data = issuer + card_type + version + network + internal + start + expiry + plate
    data += user_type + colour
    assert len(data) == 43
    return data


class EtcCard:
    """A card that answers like cardd's conformance card: SELECT of the MF or ADF 1001,
    READ BINARY of 0015 by SFI, and 6D00 for any other instruction."""

    #: TS=3B, T0=0A (ten historical bytes, no interface bytes), then "CARDD-PLUG".
    ATR = bytes.fromhex("3B0A43415244442D504C5547")
    ADF_NAME = bytes.fromhex("A00000000386980701")

    def __init__(self):
        self.files = {0x15: etc_0015()}
        self.in_adf = False

    def reset(self):
        self.in_adf = False

    def process(self, apdu):
        """One command APDU in, one response (data + SW1 SW2) out."""
        if len(apdu) < 4:
            return sw(0x6700)
        ins, p1, p2 = apdu[1], apdu[2], apdu[3]
        body = apdu[4:]
        if ins == 0xA4:
            return self.select(p1, p2, body)
        if ins == 0xB0:
            return self.read_binary(p1, p2, body)
        return sw(0x6D00)

    def select(self, p1, p2, body):
        if not body or len(body) < 1 + body[0]:
            return sw(0x6700)
        target = body[1 : 1 + body[0]]
        if p1 == 0x00 and target == b"\x3f\x00":
            self.in_adf = False
        elif p1 == 0x00 and target == b"\x10\x01":
            self.in_adf = True
        elif p1 == 0x04 and target == self.ADF_NAME:
            self.in_adf = True
        else:
            return sw(0x6A82)
        return SW_OK

    def read_binary(self, p1, p2, body):
        if not p1 & 0x80:
            return sw(0x6986)  # no current EF: this little card reads by SFI only
        data = self.files.get(p1 & 0x1F) if self.in_adf else None
        if data is None:
            return sw(0x6A82)
        if len(body) > 1:
            return sw(0x6700)
        le = (body[0] or 256) if body else 256
        offset = p2
        if offset > len(data):
            return sw(0x6B00)
        remaining = len(data) - offset
        if le == 256:  # Le = 00: up to the end of the file
            return data[offset:] + SW_OK
        if le > remaining:
            return sw(0x6C00 | remaining)
        return data[offset : offset + le] + SW_OK


class Reader:
    """One reader slot. `card` is None when no card is in it."""

    def __init__(self, reader_id, name):
        self.id = reader_id
        self.name = name
        self.card = EtcCard()
        self.powered = False

    def describe(self):
        """The reader as `list` and `reader_added` describe it."""
        return {
            "id": self.id,
            "name": self.name,
            # `events`: this plugin sends card_inserted / card_removed for the reader.
            "capabilities": {"contact": True, "contactless": False, "events": True},
        }


# Everything below touches reader state from the request thread and (test hooks only) from the
# control thread, so it is guarded by one lock.
_state_lock = threading.Lock()
READERS = {"r1": Reader("r1", "Example plugin reader")}
SESSIONS = {}  # cardd's session number -> reader id


# ---------------------------------------------------------------------------------------------
# 3. Request handlers: params (dict) and timeout_ms in, result (dict) out, or PluginError.
# ---------------------------------------------------------------------------------------------


def session_reader(params):
    reader_id = SESSIONS.get(params.get("session"))
    if reader_id is None:
        raise PluginError("bad_request", "unknown session %r" % params.get("session"))
    reader = READERS.get(reader_id)
    if reader is None:
        raise PluginError("reader_gone", "reader %s was unplugged" % reader_id)
    return reader


def handle_hello(params, timeout_ms):
    if PROTOCOL not in params.get("protocols", []):
        # cardd shows this message in its version-mismatch error: name what we speak.
        raise PluginError("unsupported_version", HELLO_ANSWER_PROTOCOL or PROTOCOL)
    return {
        "protocol": HELLO_ANSWER_PROTOCOL or PROTOCOL,
        "name": PLUGIN_NAME,
        "version": PLUGIN_VERSION,
        # We answer one request at a time: cardd never sends us a second one before the first
        # is answered, so a slow card never makes a queued request look like a hang.
        "max_in_flight": 1,
    }


def handle_list(params, timeout_ms):
    return {"readers": [r.describe() for r in READERS.values()]}


def handle_open(params, timeout_ms):
    reader = READERS.get(params.get("reader"))
    if reader is None:
        raise PluginError("not_found", "no reader %r" % params.get("reader"))
    SESSIONS[params.get("session")] = reader.id
    # The transmission protocol negotiated with the card: t0, t1, contactless or other.
    return {"protocol": "t1"}


def handle_close(params, timeout_ms):
    SESSIONS.pop(params.get("session"), None)
    return {}


def handle_power_on(params, timeout_ms):
    reader = session_reader(params)
    if reader.card is None:
        raise PluginError("no_card", "no card in %s" % reader.id)
    reader.card.reset()
    reader.powered = True
    return {"atr": reader.card.ATR.hex().upper()}


def handle_power_off(params, timeout_ms):
    session_reader(params).powered = False
    return {}


def handle_presence(params, timeout_ms):
    reader = session_reader(params)
    if reader.card is None:
        return {"state": "absent"}
    if reader.powered:
        return {"state": "powered", "atr": reader.card.ATR.hex().upper()}
    return {"state": "present"}


def handle_transmit(params, timeout_ms):
    reader = session_reader(params)
    try:
        apdu = bytes.fromhex(params.get("apdu", ""))
    except ValueError:
        raise PluginError("bad_request", "apdu is not hex")
    if reader.card is None:
        raise PluginError("no_card", "no card in %s" % reader.id)
    if not reader.powered:  # like PC/SC's SCardConnect, power the card on first use
        reader.card.reset()
        reader.powered = True
    hooks_before_transmit(reader, timeout_ms)
    return {"response": reader.card.process(apdu).hex().upper()}


def handle_ping(params, timeout_ms):
    return {}


HANDLERS = {
    "hello": handle_hello,
    "list": handle_list,
    "open": handle_open,
    "close": handle_close,
    "power_on": handle_power_on,
    "power_off": handle_power_off,
    "reset": handle_power_on,
    "presence": handle_presence,
    "transmit": handle_transmit,
    "ping": handle_ping,
}


def handle(request):
    """Answers one request. Every request gets exactly one answer with its id."""
    request_id = request.get("id")
    method = request.get("method")
    params = request.get("params") or {}
    timeout_ms = request.get("timeout_ms", 5000)
    hooks_before_request(method)
    handler = HANDLERS.get(method)
    if handler is None:
        send({"id": request_id, "error": {"code": "bad_request", "message": "unknown method %r" % method}})
        return
    try:
        with _state_lock:
            result = handler(params, timeout_ms)
        send({"id": request_id, "result": result})
    except PluginError as e:
        send({"id": request_id, "error": {"code": e.code, "message": e.message}})
    except Exception as e:  # a bug here must still produce an answer
        log(traceback.format_exc())
        send({"id": request_id, "error": {"code": "internal", "message": repr(e)}})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", help="TEST HOOK: control socket path (cardd's tests)")
    parser.add_argument("--protocol", help="TEST HOOK: pretend to speak this protocol version")
    parser.add_argument("--answer-protocol", help="TEST HOOK: answer hello with this version")
    args = parser.parse_args()
    global PROTOCOL, HELLO_ANSWER_PROTOCOL
    if args.protocol:
        PROTOCOL = args.protocol
    HELLO_ANSWER_PROTOCOL = args.answer_protocol
    if args.control:
        start_test_hooks(args.control)
    log("started (pid %d)" % os.getpid())
    for request in read_requests(sys.stdin.buffer):
        handle(request)
    log("input closed; exiting")


HELLO_ANSWER_PROTOCOL = None

# ---------------------------------------------------------------------------------------------
# 4. TEST HOOKS: cardd's tests drive this plugin through a Unix socket given with --control.
#    Each connection sends one command line and reads "ok" (or "error: ...") once it has taken
#    effect. Delete this part when you copy the file.
#
#    remove               pull the card (sends card_removed)
#    insert               put it back (sends card_inserted)
#    remove_during_next   the next transmit pulls the card and answers card_removed
#    silent_next          the card does not answer the next transmit (a timeout error after
#                         the request's timeout_ms, as a reader SDK would report)
#    hang_next [method]   the whole plugin stops answering at the next request (of `method`)
#    crash_next [method]  the plugin exits at the next request (of `method`)
#    unplug / plug        the reader disappears (reader_removed) / comes back (reader_added)
#    garbage              print a handful of malformed lines on stdout
#    flood                print more malformed lines than cardd tolerates
# ---------------------------------------------------------------------------------------------

HANG_SECONDS = 60  # a hung plugin still ends by itself eventually
SILENT_SECONDS_MAX = 30
CRASH_EXIT_CODE = 70

_hooks = {"remove_during_next": False, "silent_next": False, "hang_next": None, "crash_next": None}


def hooks_before_request(method):
    """Called before every request is handled (outside the state lock)."""
    with _state_lock:
        crash, hang = _hooks["crash_next"], _hooks["hang_next"]
        if hang in ("", method):
            _hooks["hang_next"] = None
    if crash in ("", method):
        log("TEST HOOK: crashing at %s" % method)
        os._exit(CRASH_EXIT_CODE)
    if hang in ("", method):
        log("TEST HOOK: hanging at %s" % method)
        time.sleep(HANG_SECONDS)


def hooks_before_transmit(reader, timeout_ms):
    """Called inside transmit with the state lock held."""
    if _hooks["remove_during_next"]:
        _hooks["remove_during_next"] = False
        reader.card, reader.powered = None, False
        emit("card_removed", {"reader": reader.id})
        raise PluginError("card_removed", "the card left during the command")
    if _hooks["silent_next"]:
        _hooks["silent_next"] = False
        _state_lock.release()  # don't block the control thread while the card is silent
        try:
            time.sleep(min(timeout_ms / 1000.0, SILENT_SECONDS_MAX))
        finally:
            _state_lock.acquire()
        raise PluginError("timeout", "the card did not answer within %d ms" % timeout_ms)


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


def write_garbage(count):
    with _out_lock:
        for i in range(count):
            sys.stdout.buffer.write(GARBAGE_LINES[i % len(GARBAGE_LINES)] + b"\n")
        sys.stdout.buffer.flush()


def control_command(line):
    words = line.split()
    if not words:
        return "error: empty command"
    command, arg = words[0], (words[1] if len(words) > 1 else "")
    reader = READERS.get("r1")
    if command in ("remove", "insert") and reader is None:
        return "error: the reader is unplugged"
    if command == "unplug":
        with _state_lock:
            if READERS.pop("r1", None) is not None:
                emit("reader_removed", {"reader": "r1"})
    elif command == "plug":
        with _state_lock:
            if "r1" not in READERS:
                READERS["r1"] = Reader("r1", "Example plugin reader")
                emit("reader_added", READERS["r1"].describe())
    elif command == "remove":
        with _state_lock:
            if reader.card is not None:
                reader.card, reader.powered = None, False
                emit("card_removed", {"reader": reader.id})
    elif command == "insert":
        with _state_lock:
            if reader.card is None:
                reader.card = EtcCard()
                emit("card_inserted", {"reader": reader.id, "atr": EtcCard.ATR.hex().upper()})
    elif command in ("remove_during_next", "silent_next"):
        with _state_lock:
            _hooks[command] = True
    elif command in ("hang_next", "crash_next"):
        with _state_lock:
            _hooks[command] = arg
    elif command == "garbage":
        write_garbage(len(GARBAGE_LINES))
    elif command == "flood":
        write_garbage(40)
    else:
        return "error: unknown command %r" % command
    return "ok"


def start_test_hooks(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)

    def serve():
        while True:
            connection, _ = server.accept()
            with connection:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = connection.recv(1024)
                    if not chunk:
                        break
                    data += chunk
                answer = control_command(data.decode("utf-8", "replace"))
                connection.sendall(answer.encode("utf-8") + b"\n")

    threading.Thread(target=serve, name="test-hooks", daemon=True).start()


if __name__ == "__main__":
    main()
