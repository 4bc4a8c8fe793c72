#!/usr/bin/env python3
"""How existing teller software integrates with cardd: a 圈存 (load) of a recharge record.

Standard library only. The steps every integration needs:

1. log in (auth.login) and send the token as `Authorization: Bearer ...`;
2. choose an idempotency key for the operation and SAVE IT (fsync) BEFORE sending the start:
   if the program, the network or the PC dies after sending, the saved key lets the next run
   re-send the very same start, and cardd answers with the same run instead of loading again;
3. start the flow (flows.start), follow it (flows.events long-poll), answer its question
   (flows.answer) -- here the 卡内余额：…是否圈存？ confirmation;
4. retry safely: on a timeout or a dropped connection, re-send the same request with the same
   key; never invent a new key for an operation that may have started;
5. read the outcome (flows.get) and only then forget the key.

Run it against the daemon on its embedded default (`cargo xtask demo`):

    python3 clients/teller-example/teller_example.py --user teller --password teller123 \\
        --record R20240615000001 --reader sim:etc

`--simulate-lost-answer` throws the first answer to flows.start away, as a timeout would, to
show that the retry finds the same run and the card is loaded once.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

CALL_TIMEOUT_S = 40
RETRIES_MAX = 5
POLL_WAIT_MS = 20000


class CarddError(Exception):
    """An error answered by cardd: code, message and what to do next."""

    def __init__(self, error):
        data = error.get("data") or {}
        self.code = error.get("code")
        self.name = data.get("error", "")
        self.action = data.get("action", "")
        super().__init__("%s (%s %s) %s" % (error.get("message"), self.name, self.code, self.action))


class Cardd:
    def __init__(self, url):
        self.url = url
        self.token = None
        self.next_id = 1

    def call(self, method, params, retries=RETRIES_MAX):
        """One JSON-RPC call; transport failures are retried with the SAME request."""
        body = json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                           "params": params}).encode("utf-8")
        self.next_id += 1
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        for attempt in range(retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_S) as response:
                    reply = json.load(response)
                break
            except urllib.error.HTTPError as e:
                reply = json.load(e)
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == retries:
                    raise
                print("  (no answer: %s; retrying the same request)" % e, file=sys.stderr)
                time.sleep(min(2 ** attempt, 10))
        if "error" in reply:
            raise CarddError(reply["error"])
        return reply["result"]


def load_state(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def save_state(path, state):
    """Written durably before anything is sent: the key must survive a crash."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def follow(cardd, run_id, yes):
    since = 0
    while True:
        polled = cardd.call("flows.events", {"run_id": run_id, "since": since, "wait_ms": POLL_WAIT_MS})
        since = polled["next_since"]
        for event in polled["events"]:
            if event["kind"] == "progress":
                print("  " + event["message"])
        if polled["state"] == "waiting":
            prompt = polled["prompt"]
            if yes:
                print(prompt["message"] + " -> 确定")
                answer = True
            else:
                answer = input(prompt["message"] + " [y/n] ").strip().lower() in ("y", "yes")
            cardd.call("flows.answer", {"run_id": run_id, "prompt_id": prompt["prompt_id"], "answer": answer})
        elif polled["state"] != "running":
            return cardd.call("flows.get", {"run_id": run_id})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7420/")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", default=os.environ.get("CARDD_PASSWORD"))
    parser.add_argument("--record", required=True, help="the recharge record to load (充值记录编号)")
    parser.add_argument("--reader", default="sim:etc")
    parser.add_argument("--state", default="teller-example-state.json",
                        help="where the idempotency key is kept between runs")
    parser.add_argument("--yes", action="store_true", help="confirm without asking")
    parser.add_argument("--simulate-lost-answer", action="store_true")
    args = parser.parse_args()
    if not args.password:
        parser.error("give --password or set CARDD_PASSWORD")

    cardd = Cardd(args.url)
    cardd.token = cardd.call("auth.login", {"username": args.user, "password": args.password})["token"]

    state = load_state(args.state)
    pending = state.get(args.record)
    if pending:
        key = pending["idempotency_key"]
        print("resuming the earlier operation with key " + key)
    else:
        key = str(uuid.uuid4())
        state[args.record] = {"idempotency_key": key, "started_at": time.time()}
        save_state(args.state, state)  # durable BEFORE the request is sent
        print("new operation, key " + key)

    start = {"flow": "etc.load", "params": {"record_id": args.record},
             "idempotency_key": key, "reader_id": args.reader}
    if args.simulate_lost_answer:
        cardd.call("flows.start", start)
        print("  (the answer to flows.start was lost; sending the same start again)")
    run = cardd.call("flows.start", start)
    outcome = run if run["state"] not in ("running", "waiting") else follow(cardd, run["run_id"], args.yes)

    if outcome["state"] == "succeeded":
        result = outcome["result"]
        print(result.get("message", "done"))
        for field in ("balance_before", "amount", "balance_after"):
            if field in result:
                print("  %s: %s" % (field, result[field]))
        del state[args.record]
        save_state(args.state, state)
        return 0
    failure = outcome.get("failure") or {}
    print("failed: " + failure.get("message", outcome["state"]), file=sys.stderr)
    # A failed run is finished: a new attempt needs a new key (the next run makes one).
    del state[args.record]
    save_state(args.state, state)
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CarddError as e:
        print("cardd refused: %s" % e, file=sys.stderr)
        sys.exit(2)
