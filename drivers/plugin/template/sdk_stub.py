"""A simulated reader SDK: one reader holding a small ETC card.

This file stands in for your vendor's SDK. Replace it (and the calls plugin.py makes into it)
with your SDK's module, DLL wrapper or whatever your readers need. Its shape is that of a
typical SDK: a list of readers, power on/off, one APDU in and one response out, exceptions for
errors, and callbacks for card and reader changes.

The "simulation controls" at the end exist only because this reader is simulated: the test
hooks (test_hooks.py) use them to pull the card, make it silent and so on. A real SDK has no
such thing, and a plugin for real readers does not announce the test_hooks feature.
"""

import time

# ---- what an SDK reports --------------------------------------------------------------------


class SdkError(Exception):
    """Base of the SDK's errors."""


class NoCard(SdkError):
    """No card in the reader."""


class CardRemoved(SdkError):
    """The card left during the command."""


class Timeout(SdkError):
    """The card did not answer in time."""


class ReaderGone(SdkError):
    """The reader was unplugged."""


SW_OK = b"\x90\x00"
#: Longest a silent card keeps a command waiting (seconds).
SILENT_SECONDS_MAX = 30


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
            return self.select(p1, body)
        if ins == 0xB0:
            return self.read_binary(p1, p2, body)
        return sw(0x6D00)

    def select(self, p1, body):
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


# ---- the SDK's API ----------------------------------------------------------------------------

_card_listeners = []
_reader_listeners = []


def on_card_change(callback):
    """Registers callback(reader_id, atr_or_None): a card arrived (with its ATR) or left."""
    _card_listeners.append(callback)


def on_reader_change(callback):
    """Registers callback(reader, attached): a reader was plugged in or unplugged."""
    _reader_listeners.append(callback)


class Reader:
    """One reader slot of the simulated SDK."""

    def __init__(self, reader_id, name):
        self.id = reader_id
        self.name = name
        self.card = EtcCard()
        self.powered = False
        self.attached = True
        self._next_fault = None  # simulation only

    def card_state(self):
        """("absent", None), ("present", None) or ("powered", atr)."""
        self._check_attached()
        if self.card is None:
            return "absent", None
        if self.powered:
            return "powered", self.card.ATR
        return "present", None

    def power_on(self):
        """Cold reset; returns the ATR."""
        self._check_attached()
        if self.card is None:
            raise NoCard("no card in %s" % self.id)
        self.card.reset()
        self.powered = True
        return self.card.ATR

    def power_off(self):
        self.powered = False

    def transmit(self, apdu, timeout_ms):
        """One command APDU in, the card's response (data + SW1 SW2) out."""
        self._check_attached()
        if self.card is None:
            raise NoCard("no card in %s" % self.id)
        if not self.powered:  # like PC/SC's SCardConnect, power the card on first use
            self.power_on()
        fault, self._next_fault = self._next_fault, None
        if fault == "remove":
            self.pull_card()
            raise CardRemoved("the card left during the command")
        if fault == "silent":
            time.sleep(min(timeout_ms / 1000.0, SILENT_SECONDS_MAX))
            raise Timeout("the card did not answer within %d ms" % timeout_ms)
        return self.card.process(apdu)

    def _check_attached(self):
        if not self.attached:
            raise ReaderGone("reader %s was unplugged" % self.id)

    # ---- simulation controls: only a simulated reader has these (see test_hooks.py) ----

    def pull_card(self):
        if self.card is not None:
            self.card, self.powered = None, False
            for callback in _card_listeners:
                callback(self.id, None)

    def put_card(self):
        if self.card is None:
            self.card = EtcCard()
            for callback in _card_listeners:
                callback(self.id, EtcCard.ATR)

    def fail_next_transmit(self, kind):
        """kind: "remove" (the card leaves during the next command) or "silent"."""
        self._next_fault = kind

    def unplug(self):
        if self.attached:
            self.attached = False
            for callback in _reader_listeners:
                callback(self, False)

    def plug(self):
        if not self.attached:
            self.attached, self.card, self.powered = True, EtcCard(), False
            for callback in _reader_listeners:
                callback(self, True)


READERS = {}


def init():
    """Starts the SDK; returns its readers. A real SDK may take seconds here (see plugin.py)."""
    if not READERS:
        READERS["r1"] = Reader("r1", "Example plugin reader")
    return list(READERS.values())
