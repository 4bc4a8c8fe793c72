"""Protocol plumbing for a cardd plugin (`cardd-plugin/1`, drivers/plugin/PROTOCOL.md).

Keep this file as it is. It reads cardd's requests from stdin, writes answers and events to
stdout (one JSON object per line, flushed, never interleaved), answers `hello` with the
plugin's identity and features, turns exceptions into error answers, and exits when stdin
closes. Your part of the plugin (plugin.py) registers one handler per method.

Standard library only; Python 3.8 or later.
"""

import json
import queue
import sys
import threading
import traceback

#: The protocol version this plugin speaks. cardd offers the versions it speaks in `hello`.
PROTOCOL = "cardd-plugin/1"
#: Longest line either side may send (bytes, without the newline). Same as cardd's limit.
MESSAGE_BYTES_MAX = 262144

# stdout carries protocol messages from several threads (answers and card events), so every
# write takes this lock: two messages must never interleave on one line.
_out_lock = threading.Lock()
_log_name = ["plugin"]


def send(message):
    """Writes one protocol message (a dict) to stdout as one line."""
    write_lines([json.dumps(message, separators=(",", ":")).encode("utf-8")])


def write_lines(lines):
    """Writes raw lines (bytes, without newlines) to stdout under the output lock."""
    with _out_lock:
        for line in lines:
            sys.stdout.buffer.write(line + b"\n")
        sys.stdout.buffer.flush()


def log(text):
    """Writes one line to our log (stderr). cardd forwards it; never log to stdout."""
    sys.stderr.write("%s: %s\n" % (_log_name[0], text))
    sys.stderr.flush()


def emit(event, params):
    """Sends an unsolicited event: card_inserted, card_removed, reader_added, reader_removed.
    Safe from any thread (an SDK callback, for instance)."""
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


class SdkWorker:
    """Runs blocking SDK calls on one worker thread, so that a request is answered within its
    `timeout_ms` even when the SDK call behind it blocks for longer.

    Many vendor SDKs must be called from one thread, and some calls block (a card that does
    not answer, a USB stall). `call(fn, timeout_ms)` hands `fn` to the worker and waits at most
    `timeout_ms`; if the SDK has not returned by then it raises PluginError("timeout") and the
    request is answered, while the worker finishes the stuck call in the background. Later calls
    queue behind it and get their own timeouts: cardd sees timeouts, never a hung plugin.
    """

    def __init__(self):
        self._jobs = queue.Queue()
        threading.Thread(target=self._serve, name="sdk-worker", daemon=True).start()

    def _serve(self):
        while True:
            fn, done, outcome = self._jobs.get()
            try:
                outcome.append((True, fn()))
            except BaseException as e:  # handed to the waiting request
                outcome.append((False, e))
            done.set()

    def call(self, fn, timeout_ms):
        done, outcome = threading.Event(), []
        self._jobs.put((fn, done, outcome))
        if not done.wait(max(timeout_ms, 1) / 1000.0):
            raise PluginError("timeout", "the reader did not answer within %d ms" % timeout_ms)
        ok, value = outcome[0]
        if ok:
            return value
        raise value


class Plugin:
    """The request loop: `hello` is answered here, every other method by a handler registered
    with `handle(method)`. Requests are handled one at a time, in order (`max_in_flight` 1)."""

    def __init__(self, name, version):
        self.name = name
        self.version = version
        #: The version we speak, and (tests only) the one we claim in hello's answer.
        self.protocol = PROTOCOL
        self.answer_protocol = None
        #: Optional parts of the protocol we serve, announced in hello (PROTOCOL.md §4).
        self.features = []
        #: What cardd announced it supports, from its hello.
        self.host_features = []
        self.handlers = {"hello": self._hello}
        #: Called with the method name before each request is handled (test hooks use it).
        self.before_request = []
        _log_name[0] = name

    def handle(self, method):
        """Decorator: registers fn(params, timeout_ms) -> result dict for `method`."""

        def register(fn):
            self.handlers[method] = fn
            return fn

        return register

    def _hello(self, params, timeout_ms):
        if self.protocol not in params.get("protocols", []):
            # cardd shows this message in its version-mismatch error: name what we speak.
            raise PluginError("unsupported_version", self.answer_protocol or self.protocol)
        features = params.get("features")
        self.host_features = [f for f in features if isinstance(f, str)] if isinstance(features, list) else []
        return {
            "protocol": self.answer_protocol or self.protocol,
            "name": self.name,
            "version": self.version,
            # One request at a time: cardd never sends a second one before the first is
            # answered, so a slow card never makes a queued request look like a hang.
            "max_in_flight": 1,
            "features": list(self.features),
        }

    def dispatch(self, request):
        """Answers one request. Every request gets exactly one answer with its id."""
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params") or {}
        timeout_ms = request.get("timeout_ms", 5000)
        for hook in self.before_request:
            hook(method)
        handler = self.handlers.get(method)
        if handler is None:
            error = {"code": "bad_request", "message": "unknown method %r" % method}
            send({"id": request_id, "error": error})
            return
        try:
            result = handler(params, timeout_ms)
            send({"id": request_id, "result": result if result is not None else {}})
        except PluginError as e:
            send({"id": request_id, "error": {"code": e.code, "message": e.message}})
        except Exception as e:  # a bug here must still produce an answer
            log(traceback.format_exc())
            send({"id": request_id, "error": {"code": "internal", "message": repr(e)}})

    def run(self):
        """Serves requests until cardd closes our stdin."""
        for request in read_requests(sys.stdin.buffer):
            self.dispatch(request)
        log("input closed; exiting")
