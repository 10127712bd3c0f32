#!/usr/bin/env python3
"""Self-test of the test bots, without voicebot1.

Fake telephony clients speak each dialect as the public docs describe it:
  twilio:   connected, start (customParameters), media every 20 ms, dtmf, stop, close 1000;
            the bot's media is queued and "played" in real time, a mark is answered
            once the audio before it has played, clear drops the queue and answers
            the marks it held (Twilio's documented behaviour).
  asterisk: MEDIA_START (JSON, or plain text), binary frames every 20 ms, DTMF_END,
            close 1000; the bot's binary audio is cut into optimal_frame_size frames
            (a partial frame is dropped, as chan_websocket does without buffering),
            played one frame per 20 ms, MARK_MEDIA answered by MEDIA_MARK_PROCESSED
            in queue order, FLUSH_MEDIA drops the queue and its marks, MEDIA_XOFF at
            900 frames, MEDIA_XON under 800, messages dropped at 1000, ERROR for a
            command that is not JSON (all as channels/chan_websocket.c does).
Both fakes also play voicebot1's part for the extension messages: on a transfer to a
known name or a hangup the call leaves the bot (twilio: stop + close 1000; asterisk:
close 1000); a transfer to "nowhere" is refused and the call stays.

Run it with the reference venv's python (it needs `websockets`):
  PY=$(scripts/bots/install.sh reference | tail -1)
  PCPY=$(scripts/bots/install.sh pipecat | tail -1)
  $PY scripts/bots/selftest.py --pipecat-python "$PCPY"
or simply scripts/bots/selftest.sh. Last line: "N passed, N failed".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

import common  # noqa: E402  (G.711 tables, checked against CPython's audioop)

REFUSED = {"nowhere"}

# --------------------------------------------------------------------------
# audio analysis
# --------------------------------------------------------------------------


def tone_windows(samples: list[int], rate: int, freq: float, win_ms: int = 20, thresh: float = 0.4, min_rms: float = 300.0):
    """Indices of the win_ms windows where `freq` dominates (Goertzel power / energy)."""
    n = rate * win_ms // 1000
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    out = []
    for w in range(len(samples) // n):
        s1 = s2 = 0.0
        energy = 0.0
        for x in samples[w * n : (w + 1) * n]:
            s0 = x + coeff * s1 - s2
            s2, s1 = s1, s0
            energy += x * x
        if energy <= 0 or math.sqrt(energy / n) < min_rms:
            continue
        power = s1 * s1 + s2 * s2 - coeff * s1 * s2
        if power / (n * energy / 2) > thresh:
            out.append(w)
    return out


def tone_ms(samples, rate, freq, after_ms=0.0, before_ms=None):
    ws = tone_windows(samples, rate, freq)
    return 20 * sum(1 for w in ws if w * 20 >= after_ms and (before_ms is None or w * 20 < before_ms))


def first_tone_ms(samples, rate, freq):
    ws = tone_windows(samples, rate, freq)
    return None if not ws else ws[0] * 20


# --------------------------------------------------------------------------
# fake telephony
# --------------------------------------------------------------------------


class FakeCall:
    """One call. Subclasses speak a dialect."""

    def __init__(self, url, *, call_id, params=None, dtmf=(), duration_s=4.0, caller_hz=440.0,
                 headers=None, subprotocols=None, ping_at_s=None, max_queue_s=60.0):
        self.url = url
        self.call_id = call_id
        self.params = {"call_id": call_id, **(params or {})}
        self.dtmf = sorted(dtmf)  # [(ms, digit)]
        self.duration_s = duration_s
        self.caller_hz = caller_hz
        self.headers = headers or {}
        self.subprotocols = subprotocols
        self.ping_at_s = ping_at_s
        self.max_queue_s = max_queue_s
        # results
        self.events: list[tuple[float, str, object]] = []  # (ms since start, kind, data)
        self.ext: list[tuple[float, dict | str]] = []
        self.played = bytearray()
        self.marks_answered: list[tuple[float, str, str]] = []  # (ms, name, why)
        self.garbage: list[str] = []
        self.msg_sizes: list[int] = []
        self.audio_rcvd = 0
        self.audio_dropped = 0
        self.first_audio_ms = None
        self.last_tone_msg_ms = None
        self.pong_ms = None
        self.ping_sent = False
        self.close_code = None
        self.close_reason = None
        self.close_frame = None
        self.closed_ms = None
        self.left = False
        self.error = None
        self.connect_ms = None
        self.subprotocol = None
        self.stay_open_until_close = False

    # ---- helpers
    def now(self) -> float:
        return round((time.monotonic() - self.t0) * 1000, 1)

    def ev(self, kind, data=None):
        self.events.append((self.now(), kind, data))

    async def run(self):
        t_conn = time.monotonic()
        self.t0 = t_conn
        self.ws = await connect(
            self.url,
            additional_headers=self.headers,
            subprotocols=self.subprotocols,
            max_size=None,
            ping_interval=None,
            open_timeout=15,
            compression=None,
            close_timeout=3,
        )
        self.connect_ms = round((time.monotonic() - t_conn) * 1000, 1)
        self.subprotocol = self.ws.subprotocol
        self.t0 = time.monotonic()
        self.closed = asyncio.Event()
        await self.send_start()
        tasks = [asyncio.create_task(self.receiver()), asyncio.create_task(self.player())]
        sender = asyncio.create_task(self.sender())
        if self.ping_at_s is not None:
            tasks.append(asyncio.create_task(self.pinger()))
        closed_wait = asyncio.create_task(self.closed.wait())
        await asyncio.wait([sender, closed_wait], return_when=asyncio.FIRST_COMPLETED)
        closed_wait.cancel()
        if not self.closed.is_set():
            await self.leave("end of call")
        try:
            await asyncio.wait_for(self.closed.wait(), 6)
        except asyncio.TimeoutError:
            self.ev("close_timeout")
            self.ws.transport.abort()
        for t in tasks + [sender]:
            t.cancel()
        await asyncio.gather(*tasks, sender, return_exceptions=True)

    async def pinger(self):
        await asyncio.sleep(self.ping_at_s)
        t = time.monotonic()
        self.ping_sent = True
        waiter = await self.ws.ping()
        await waiter
        self.pong_ms = round((time.monotonic() - t) * 1000, 1)

    async def leave(self, why):
        """The call leaves the bot (hung up, transferred): as the telephony side would."""
        if self.left:
            return
        self.left = True
        self.ev("leave", why)
        try:
            await self.send_stop()
            await self.ws.close(1000)
        except ConnectionClosed:
            pass

    async def sender(self):
        i = 0
        w = 2 * math.pi * self.caller_hz / self.rate
        n = self.rate // 50
        dtmf = list(self.dtmf)
        while True:
            target = self.t0 + i * 0.020
            if target - self.t0 >= self.duration_s:
                return
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while dtmf and dtmf[0][0] <= i * 20:
                _, d = dtmf.pop(0)
                await self.send_dtmf(d)
                self.ev("dtmf_sent", d)
            samples = [int(6000 * math.sin(w * (i * n + k))) for k in range(n)] if self.caller_hz else [0] * n
            try:
                await self.send_audio(common.encode(samples, self.codec), i)
            except ConnectionClosed:
                return
            i += 1

    async def receiver(self):
        try:
            async for msg in self.ws:
                self.msg_sizes.append(len(msg))
                if isinstance(msg, str):
                    await self.on_text(msg)
                else:
                    await self.on_binary(msg)
        except ConnectionClosed:
            pass
        finally:
            rcvd = self.ws.protocol.close_rcvd
            self.close_frame = rcvd is not None
            self.close_code = None if rcvd is None else rcvd.code
            self.close_reason = None if rcvd is None else rcvd.reason
            self.closed_ms = self.now()
            self.closed.set()

    def queue_audio_ms(self) -> float:
        return 1000 * self.queued_bytes() / (self.rate * self.sample_bytes)

    def note_audio(self, n: int):
        self.audio_rcvd += n
        if self.first_audio_ms is None:
            self.first_audio_ms = self.now()


class FakeTwilio(FakeCall):
    codec = "ulaw"
    rate = 8000
    sample_bytes = 1

    def __init__(self, url, **kw):
        super().__init__(url, **kw)
        self.sid = "MZ" + os.urandom(16).hex()
        self.call_sid = "CA" + os.urandom(16).hex()
        self.acct = "AC" + os.urandom(16).hex()
        self.seq = 0
        self.queue: list = []  # bytearray or ("mark", name)

    def next_seq(self) -> str:
        self.seq += 1
        return str(self.seq)

    async def send_json(self, obj):
        await self.ws.send(json.dumps(obj))

    async def send_start(self):
        await self.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send_json({
            "event": "start",
            "sequenceNumber": self.next_seq(),
            "start": {
                "accountSid": self.acct,
                "streamSid": self.sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {k: str(v) for k, v in self.params.items()},
            },
            "streamSid": self.sid,
        })

    async def send_audio(self, data, i):
        await self.send_json({
            "event": "media",
            "sequenceNumber": self.next_seq(),
            "streamSid": self.sid,
            "media": {"track": "inbound", "chunk": str(i + 1), "timestamp": str(i * 20),
                      "payload": base64.b64encode(data).decode()},
        })

    async def send_dtmf(self, d):
        await self.send_json({"event": "dtmf", "streamSid": self.sid, "sequenceNumber": self.next_seq(),
                              "dtmf": {"track": "inbound_track", "digit": d}})

    async def send_stop(self):
        await self.send_json({"event": "stop", "streamSid": self.sid, "sequenceNumber": self.next_seq(),
                              "stop": {"accountSid": self.acct, "callSid": self.call_sid}})

    async def answer_mark(self, name, why):
        self.marks_answered.append((self.now(), name, why))
        try:
            await self.send_json({"event": "mark", "streamSid": self.sid, "sequenceNumber": self.next_seq(),
                                  "mark": {"name": name}})
        except ConnectionClosed:
            pass

    def queued_bytes(self):
        return sum(len(x) for x in self.queue if isinstance(x, bytearray))

    async def on_text(self, text):
        try:
            msg = json.loads(text)
        except ValueError:
            self.garbage.append("malformed_json")
            return
        if not isinstance(msg, dict):
            self.garbage.append("not_an_object")
            return
        ev = msg.get("event")
        if ev in ("media", "mark", "clear", "transfer", "hangup") and msg.get("streamSid") != self.sid:
            self.garbage.append("wrong_streamSid")
            return
        if ev == "media":
            try:
                data = base64.b64decode(msg["media"]["payload"], validate=True)
            except Exception:  # noqa: BLE001
                self.garbage.append("bad_base64")
                return
            if len(data) % 160:
                self.garbage.append("odd_sized_audio")
            self.note_audio(len(data))
            self.last_tone_msg_ms = self.now()
            if self.queue_audio_ms() > self.max_queue_s * 1000:
                self.audio_dropped += len(data)
                return
            if self.queue and isinstance(self.queue[-1], bytearray):
                self.queue[-1].extend(data)
            else:
                self.queue.append(bytearray(data))
        elif ev == "mark":
            name = msg.get("mark", {}).get("name")
            self.ev("mark_rcvd", name)
            self.queue.append(("mark", name))
        elif ev == "clear":
            self.ev("clear", None)
            marks = [x[1] for x in self.queue if isinstance(x, tuple)]
            self.queue.clear()
            for m in marks:
                await self.answer_mark(m, "clear")
        elif ev in ("transfer", "hangup"):
            self.ext.append((self.now(), msg))
            to = msg.get("transfer", {}).get("to") if ev == "transfer" else None
            if ev == "transfer" and to in REFUSED:
                self.ev("refused", to)
            else:
                asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(self.leave(ev)))
        else:
            self.garbage.append("unknown_event")
            self.ev("unknown", msg)

    async def on_binary(self, data):
        self.garbage.append("binary_frame")

    async def player(self):
        i = 0
        while True:
            i += 1
            delay = self.t0 + i * 0.020 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            need = 160
            out = bytearray()
            while self.queue and need:
                head = self.queue[0]
                if isinstance(head, tuple):
                    self.queue.pop(0)
                    await self.answer_mark(head[1], "played")
                    continue
                take = head[:need]
                del head[:need]
                out.extend(take)
                need -= len(take)
                if not head:
                    self.queue.pop(0)
            out.extend(b"\xff" * need)
            self.played.extend(out)


class FakeAsterisk(FakeCall):
    def __init__(self, url, *, fmt="ulaw", plain=False, **kw):
        super().__init__(url, **kw)
        self.fmt = fmt
        self.codec, self.rate = common.format_info(fmt)
        self.sample_bytes = 2 if self.codec == "slin" else 1
        self.frame = self.rate // 50 * self.sample_bytes
        self.plain = plain
        self.channel_id = f"{time.time():.6f}".replace(".", "")[-10:] + "." + os.urandom(2).hex()
        self.queue: list = []  # bytes frames or ("mark", id)
        self.frames_queued = 0
        self.xoff = False
        self.commands: list[tuple[float, str, dict]] = []
        self.partial_frames = 0
        self.bin_sizes: list[int] = []

    async def send_event(self, ev: str, **fields):
        if self.plain:
            if ev == "MEDIA_MARK_PROCESSED":
                text = f"{ev} {fields.get('correlation_id', '')}".strip()
            else:
                text = " ".join([ev] + [f"{k}:{v}" for k, v in fields.items() if k != "channel_variables"])
        else:
            text = json.dumps({"event": ev, **fields}, separators=(",", ":"))
        try:
            await self.ws.send(text)
        except ConnectionClosed:
            pass

    async def send_start(self):
        fields = {
            "connection_id": os.urandom(16).hex(),
            "channel": f"WebSocket/voicebot1-{self.call_id}",
            "channel_id": self.channel_id,
            "format": self.fmt,
            "optimal_frame_size": self.frame,
            "ptime": 20,
        }
        if not self.plain:
            fields["channel_variables"] = {k: str(v) for k, v in self.params.items()}
        await self.send_event("MEDIA_START", **fields)

    async def send_audio(self, data, i):
        await self.ws.send(data)

    async def send_dtmf(self, d):
        if self.plain:
            await self.ws.send(f"DTMF_END digit:{d} channel_id:{self.channel_id}")
        else:
            await self.send_event("DTMF_END", channel_id=self.channel_id, digit=d)

    async def send_stop(self):
        pass  # Asterisk just closes the socket

    def queued_bytes(self):
        return self.frames_queued * self.frame

    async def on_text(self, text):
        if len(text.encode()) == 0:
            self.garbage.append("empty_text")
            return
        if len(text.encode()) > 128:
            self.garbage.append("too_long_text")
            return
        text = text.strip()
        if self.plain:
            cmd, _, arg = text.partition(" ")
            obj = {"command": cmd}
            if arg:
                obj["arg"] = arg
        else:
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError
            except ValueError:
                self.garbage.append("malformed_json")
                await self.send_event("ERROR", channel_id=self.channel_id, error_text="Unable to parse JSON command")
                return
            cmd = obj.get("command")
        self.commands.append((self.now(), cmd, obj))
        if cmd == "MARK_MEDIA":
            cid = obj.get("correlation_id") if not self.plain else obj.get("arg", "")
            self.ev("mark_rcvd", cid)
            self.queue.append(("mark", cid))
        elif cmd == "FLUSH_MEDIA":
            self.ev("clear", None)
            self.queue.clear()
            self.frames_queued = 0
        elif cmd in ("HANGUP", "TRANSFER"):
            self.ext.append((self.now(), text))
            dest = obj.get("destination") if not self.plain else obj.get("arg")
            if cmd == "TRANSFER" and dest in REFUSED:
                self.ev("refused", dest)
            else:
                asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(self.leave(cmd)))
        elif cmd in ("ANSWER", "START_MEDIA_BUFFERING", "STOP_MEDIA_BUFFERING", "REPORT_QUEUE_DRAINED",
                     "GET_STATUS", "PAUSE_MEDIA", "CONTINUE_MEDIA", "SET_MEDIA_DIRECTION"):
            pass
        else:
            self.garbage.append("unknown_command" if cmd else "json_without_command")

    async def on_binary(self, data):
        self.bin_sizes.append(len(data))
        self.note_audio(len(data))
        self.last_tone_msg_ms = self.now()
        if self.frames_queued >= 1000:
            self.audio_dropped += len(data)
            return
        whole = len(data) // self.frame
        if len(data) % self.frame:
            self.partial_frames += 1
            if len(data) < self.frame or len(data) % self.frame:
                self.garbage.append("odd_sized_audio")
        for k in range(whole):
            self.queue.append(data[k * self.frame : (k + 1) * self.frame])
            self.frames_queued += 1
            if not self.xoff and self.frames_queued >= 900:
                self.xoff = True
                self.ev("xoff")
                await self.send_event("MEDIA_XOFF", channel_id=self.channel_id)

    async def player(self):
        i = 0
        silence = common.encode([0] * (self.rate // 50), self.codec)
        while True:
            i += 1
            delay = self.t0 + i * 0.020 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.xoff and self.frames_queued < 800:
                self.xoff = False
                self.ev("xon")
                await self.send_event("MEDIA_XON", channel_id=self.channel_id)
            while self.queue and isinstance(self.queue[0], tuple):
                m = self.queue.pop(0)
                self.marks_answered.append((self.now(), m[1], "played"))
                await self.send_event("MEDIA_MARK_PROCESSED", channel_id=self.channel_id, correlation_id=m[1])
            if self.queue:
                self.played.extend(self.queue.pop(0))
                self.frames_queued -= 1
            else:
                self.played.extend(silence)


def played_samples(call: FakeCall) -> list[int]:
    return common.decode(bytes(call.played), call.codec)


# --------------------------------------------------------------------------
# bots and their logs
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bot:
    def __init__(self, name, argv, port, log, timeout=60):
        self.name = name
        self.port = port
        self.log = log
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(log + ".stderr", "w"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}; see {log}.stderr")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{name} did not listen on {port} within {timeout} s")

    def url(self, path="/"):
        return f"ws://127.0.0.1:{self.port}{path}"

    def lines(self, call=None):
        out = []
        try:
            with open(self.log) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if call is None or rec.get("call") == call:
                        out.append(rec)
        except FileNotFoundError:
            pass
        return out

    async def wait_line(self, call, event, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.lines(call):
                if r["event"] == event:
                    return r
            await asyncio.sleep(0.1)
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures: list[str] = []

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS {name}" + (f"  ({detail})" if detail else ""), flush=True)
        else:
            self.failed += 1
            self.failures.append(name)
            print(f"FAIL {name}  {detail}", flush=True)


def ext_kinds(call):
    """Extension messages as comparable tuples."""
    out = []
    for _, m in call.ext:
        if isinstance(m, dict):
            if m["event"] == "transfer":
                out.append(("transfer", m.get("transfer", {}).get("to")))
            else:
                out.append(("hangup", None))
        else:
            cmd, _, arg = m.partition(" ")
            if m.startswith("{"):
                o = json.loads(m)
                out.append((o["command"].lower(), o.get("destination")))
            else:
                out.append((cmd.lower(), arg or None))
    return out


def ext_ms(call):
    return call.ext[0][0] if call.ext else None


async def run_calls(calls, limit=6):
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            try:
                await c.run()
            except Exception as e:  # noqa: BLE001
                c.error = e

    await asyncio.gather(*(one(c) for c in calls))


def common_checks(R, bot, call, tag, *, tone=True, echo=True, mark=True):
    if call.error:
        R.check(f"{tag}: call ran", False, repr(call.error))
        return
    s = played_samples(call)
    if tone:
        ms = tone_ms(s, call.rate, 1000)
        R.check(f"{tag}: greeting tone played (~1500 ms of 1000 Hz)", 1300 <= ms <= 1700, f"{ms} ms")
        first = call.first_audio_ms
        R.check(f"{tag}: tone arrives at once", first is not None and first < 500, f"first audio {first} ms after start")
    if mark:
        names = [n for _, n, _ in call.marks_answered]
        R.check(f"{tag}: mark tone-done sent and answered", "tone-done" in names, f"answered {names}")
        rec = [r for r in bot.lines(call.call_id) if r["event"] == "mark" and r.get("name") == "tone-done"]
        R.check(f"{tag}: bot logged the answered mark", bool(rec) and rec[0].get("expected") is True)
    if echo:
        ms = tone_ms(s, call.rate, 440, after_ms=1600)
        R.check(f"{tag}: caller audio echoed after the tone", ms >= 800, f"{ms} ms of 440 Hz")


def log_checks(R, bot, call, tag, *, frames_min=100, close_code=1000):
    lines = bot.lines(call.call_id)
    ev = [r["event"] for r in lines]
    summ = [r for r in lines if r["event"] == "audio_summary"]
    first = [r for r in lines if r["event"] == "first_audio"]
    close = [r for r in lines if r["event"] == "close"]
    R.check(f"{tag}: log has start, first_audio, audio_summary, close with the call id",
            all(e in ev for e in ("first_audio", "audio_summary", "close")) and ("start" in ev or "media_start" in ev), str(ev[:12]))
    if summ:
        R.check(f"{tag}: log counts the caller's frames", summ[0]["frames"] >= frames_min, f"{summ[0]['frames']} frames, {summ[0]['bytes']} bytes")
    if first:
        R.check(f"{tag}: first_audio logged once", len(first) == 1)
    if close and close_code is not None:
        R.check(f"{tag}: close logged with code {close_code}", close[0]["code"] == close_code, str(close[0]))
    for r in lines:
        if "mono" not in r:
            R.check(f"{tag}: every line has a monotonic timestamp", False, str(r))
            break


# --------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------


async def dialect_suite(R, bot, dialect, Fake, extra=None):
    extra = extra or {}
    cid = lambda s: f"{dialect}-{s}-{os.urandom(3).hex()}"  # noqa: E731
    mk = lambda name, **kw: Fake(bot.url("/bot?src=selftest"), call_id=cid(name), **{**extra, **kw})  # noqa: E731
    calls = {
        "basic": mk("basic", ping_at_s=1.0, subprotocols=["media"] if dialect == "asterisk" else None),
        "d1": mk("d1", dtmf=[(1800, "1")], duration_s=4),
        "d2": mk("d2", dtmf=[(1800, "2")], duration_s=4),
        "d3": mk("d3", dtmf=[(1800, "3")], duration_s=4),
        "d4": mk("d4", dtmf=[(1800, "4")], duration_s=4),
        "d5": mk("d5", dtmf=[(1800, "5")], duration_s=4.5),
        "d76": mk("d76", dtmf=[(2000, "7"), (3000, "6")], duration_s=5),
        "d8": mk("d8", dtmf=[(1800, "8")], duration_s=4),
        "a_hangup": mk("ahangup", params={"action": "hangup", "after_ms": "800"}, duration_s=4),
        "a_transfer_to": mk("atransferto", params={"action": "transfer_to:support"}, duration_s=4),
        "a_transfer": mk("atransfer", params={"action": "transfer", "after_ms": "300"}, duration_s=3),
        "a_close": mk("aclose", params={"action": "close", "after_ms": "500"}, duration_s=3),
        "a_refused": mk("arefused", params={"action": "refused_transfer", "after_ms": "300"}, duration_s=3.5),
        "f_garbage": mk("fgarbage", params={"fault": "garbage"}, duration_s=3.5),
        "f_huge": mk("fhuge", params={"fault": "huge"}, duration_s=2),
        "f_flood": mk("fflood", params={"fault": "flood"}, duration_s=2, max_queue_s=60),
        "f_silent": mk("fsilent", params={"fault": "silent", "hold_s": "4"}, duration_s=7, ping_at_s=0.5),
    }
    # the faults (flood above all) load the CPU: run them after the timing-sensitive calls
    await run_calls([c for k, c in calls.items() if not k.startswith("f_")])
    await run_calls([c for k, c in calls.items() if k.startswith("f_")])
    await asyncio.sleep(0.5)
    t = dialect

    c = calls["basic"]
    common_checks(R, bot, c, f"{t} basic")
    log_checks(R, bot, c, f"{t} basic", frames_min=150)
    R.check(f"{t} basic: ping answered (bot alive)", c.pong_ms is not None and c.pong_ms < 1000, f"pong after {c.pong_ms} ms")
    R.check(f"{t} basic: no extension message", not c.ext, str(c.ext))
    R.check(f"{t} basic: no garbage", not c.garbage, str(c.garbage))
    opened = [r for r in bot.lines() if r["event"] == "open" and r.get("path") == "/bot?src=selftest"]
    R.check(f"{t} basic: open logged with path and headers", bool(opened) and "headers" in opened[0] and opened[0]["authorization_present"] is False)
    if dialect == "asterisk":
        R.check(f"{t} basic: subprotocol 'media' accepted", c.subprotocol == "media", str(c.subprotocol))
        bad = [n for n in c.bin_sizes if n % c.frame]
        R.check(f"{t} basic: bot audio in whole frames of optimal_frame_size", not bad and bool(c.bin_sizes), f"sizes {sorted(set(c.bin_sizes))[:5]}")
    ms_send = c.last_tone_msg_ms
    tone_msgs = [r for r in bot.lines(c.call_id) if r["event"] == "sent" and r.get("what") == "tone"]
    R.check(f"{t} basic: tone sent faster than real time", bool(tone_msgs) and tone_msgs[0]["send_elapsed_ms"] < 500,
            f"{tone_msgs[0]['send_elapsed_ms'] if tone_msgs else None} ms to send 1500 ms")

    def want(name, kinds, lo, hi):
        c = calls[name]
        k = ext_kinds(c)
        ms = ext_ms(c)
        R.check(f"{t} {name}: {kinds}", k == kinds, f"got {k} {c.ext[:1]}")
        if ms is not None:
            R.check(f"{t} {name}: sent at {lo}-{hi} ms", lo <= ms <= hi, f"{ms} ms")
        R.check(f"{t} {name}: call left the bot, close 1000 logged by the bot",
                (bot_close(bot, c) or {}).get("code") == 1000, str(bot_close(bot, c)))

    if dialect == "twilio":
        T = lambda to: [("transfer", to)]  # noqa: E731
        H = [("hangup", None)]
    else:
        T = lambda to: [("transfer", to)]  # noqa: E731
        H = [("hangup", None)]
    want("d1", T("sales"), 1800, 2300)
    want("d2", H, 1800, 2300)
    want("d3", T(None), 1800, 2300)
    want("a_hangup", H, 700, 1300)
    want("a_transfer_to", T("support"), 1500, 2600)
    want("a_transfer", T(None), 250, 800)
    if dialect == "twilio":
        m = calls["d1"].ext[0][1]
        R.check("twilio d1: message exactly as the contract", m == {"event": "transfer", "streamSid": calls["d1"].sid, "transfer": {"to": "sales"}}, str(m))
        m = calls["d2"].ext[0][1]
        R.check("twilio d2: message exactly as the contract", m == {"event": "hangup", "streamSid": calls["d2"].sid}, str(m))
    else:
        if not extra.get("plain"):
            R.check("asterisk d1: message exactly as the contract", json.loads(calls["d1"].ext[0][1]) == {"command": "TRANSFER", "destination": "sales"}, calls["d1"].ext[0][1])
            R.check("asterisk d2: message exactly as the contract", json.loads(calls["d2"].ext[0][1]) == {"command": "HANGUP"}, calls["d2"].ext[0][1])

    for name, lo, hi in (("d4", 1800, 2400), ("a_close", 400, 1000)):
        c = calls[name]
        R.check(f"{t} {name}: bot closed normally (1000) at {lo}-{hi} ms",
                c.close_frame and c.close_code == 1000 and not c.left and c.closed_ms is not None and lo <= c.closed_ms <= hi,
                f"code {c.close_code} frame {c.close_frame} at {c.closed_ms} ms, left={c.left}")

    for name in ("d5", "a_refused"):
        c = calls[name]
        k = ext_kinds(c)
        R.check(f"{t} {name}: transfer to 'nowhere' sent", k == [("transfer", "nowhere")], str(k))
        ms = ext_ms(c) or 0
        s = played_samples(c)
        echo = tone_ms(s, c.rate, 440, after_ms=max(ms, 1700) + 200)
        R.check(f"{t} {name}: bot stays after the refusal (echo goes on)", echo >= 500, f"{echo} ms of 440 Hz after the refusal")
        R.check(f"{t} {name}: the caller, not the bot, ended the call", c.left and (bot_close(bot, c) or {}).get("code") == 1000)

    c = calls["d76"]
    clears = [e for e in c.events if e[1] == "clear"]
    R.check(f"{t} d76: clear/FLUSH_MEDIA sent on 6", bool(clears) and clears[0][0] >= 3000, str(clears))
    s = played_samples(c)
    long_ms = tone_ms(s, c.rate, 1000, after_ms=1900)
    R.check(f"{t} d76: the long tone played until the clear only", 700 <= long_ms <= 1400, f"{long_ms} ms of 1000 Hz after 1.9 s")
    lt = [r for r in bot.lines(c.call_id) if r["event"] == "sent" and r.get("what") == "long_tone"]
    R.check(f"{t} d76: 10 s long tone sent on 7", bool(lt) and lt[0]["audio_ms"] == 10000)
    mk_ans = [n for _, n, why in c.marks_answered if n.startswith("long-tone-done")]
    if dialect == "twilio":
        R.check("twilio d76: the cleared mark was answered (Twilio answers marks at clear)", bool(mk_ans), str(c.marks_answered))
    else:
        R.check("asterisk d76: the flushed mark was not answered (FLUSH_MEDIA drops it)", not mk_ans, str(c.marks_answered))
    echo = tone_ms(s, c.rate, 440, after_ms=3300)
    R.check(f"{t} d76: echo resumes after the clear", echo >= 800, f"{echo} ms")

    c = calls["d8"]
    R.check(f"{t} d8: crash = TCP closed without a close frame", c.close_frame is False and not c.left,
            f"close frame {c.close_frame}, code {c.close_code}, left={c.left}")

    c = calls["f_garbage"]
    want_g = ({"malformed_json", "unknown_event", "wrong_streamSid", "bad_base64", "odd_sized_audio", "binary_frame"}
              if dialect == "twilio" else
              {"malformed_json", "unknown_command", "json_without_command", "empty_text", "too_long_text", "odd_sized_audio"})
    if extra.get("plain"):
        want_g.discard("malformed_json")  # plain text: '{...' is just an unknown command
    R.check(f"{t} garbage: one of each kind received", want_g <= set(c.garbage), f"got {sorted(set(c.garbage))}")
    common_checks(R, bot, c, f"{t} garbage: then behaves", echo=True)

    c = calls["f_huge"]
    R.check(f"{t} huge: one message >= 2 MiB", max(c.msg_sizes or [0]) >= 2 * 1024 * 1024, f"largest {max(c.msg_sizes or [0])} bytes")

    c = calls["f_flood"]
    secs = c.audio_rcvd / (c.rate * c.sample_bytes)
    R.check(f"{t} flood: far more audio than real time", secs >= 30, f"{secs:.0f} s of audio in {c.duration_s} s")

    c = calls["f_silent"]
    R.check(f"{t} silent: ping not answered", c.ping_sent and c.pong_ms is None, f"pong {c.pong_ms}")
    R.check(f"{t} silent: nothing sent by the bot", c.audio_rcvd == 0 and not c.ext, f"{c.audio_rcvd} audio bytes")
    R.check(f"{t} silent: TCP kept open for the hold time, then dropped without close frame",
            c.closed_ms is not None and c.closed_ms >= 3500 and c.close_frame is False, f"closed at {c.closed_ms} ms, frame {c.close_frame}")


def bot_close(bot, call):
    for r in bot.lines(call.call_id):
        if r["event"] == "close":
            return r
    return None


async def never_read_test(R, bot, dialect, Fake):
    """The bot stops reading: our writes must stall (TCP back-pressure)."""
    c = Fake(bot.url("/"), call_id=f"{dialect}-nr-{os.urandom(3).hex()}", params={"fault": "never_read", "hold_s": "6"})
    c.t0 = time.monotonic()
    c.ws = await connect(c.url, max_size=None, ping_interval=None, compression=None, close_timeout=1)
    c.t0 = time.monotonic()
    await c.send_start()
    await asyncio.sleep(0.3)
    blob = b"\x7f" * 65536
    sent = 0
    stalled_at = None
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 20:
            if dialect == "twilio":
                fut = c.ws.send(json.dumps({"event": "media", "streamSid": c.sid, "media": {"payload": base64.b64encode(blob).decode()}}))
            else:
                fut = c.ws.send(blob)
            try:
                await asyncio.wait_for(fut, 1.5)
            except asyncio.TimeoutError:
                stalled_at = sent
                break
            sent += len(blob)
    except ConnectionClosed:
        pass
    R.check(f"{dialect} never_read: writes to the bot stall", stalled_at is not None, f"stalled after {sent / 1e6:.1f} MB")
    rec = await bot.wait_line(c.call_id, "fault", 3)
    R.check(f"{dialect} never_read: logged", rec is not None and rec.get("fault") == "never_read")
    c.ws.transport.abort()


async def reject_tests(R, bot, dialect):
    for status in (401, 404, 500):
        try:
            ws = await connect(bot.url(f"/?fault=reject_{status}"), open_timeout=5)
            await ws.close()
            R.check(f"{dialect} reject_{status}", False, "handshake succeeded")
        except InvalidStatus as e:
            R.check(f"{dialect} reject_{status}: HTTP {status} on the upgrade", e.response.status_code == status, str(e.response.status_code))
    # slow_accept, then a normal call
    Fake = FakeTwilio if dialect == "twilio" else FakeAsterisk
    c = Fake(bot.url("/?fault=slow_accept&slow_accept_ms=1500"), call_id=f"{dialect}-slow-{os.urandom(3).hex()}", duration_s=2.5)
    try:
        await c.run()
    except Exception as e:  # noqa: BLE001
        c.error = e
    R.check(f"{dialect} slow_accept: upgrade answered after ~1500 ms", c.connect_ms is not None and 1400 <= c.connect_ms <= 3000, f"{c.connect_ms} ms")
    common_checks(R, bot, c, f"{dialect} slow_accept: then a normal call", echo=False)


async def token_tests(R, bot, token):
    for hdr, what in (({}, "no header"), ({"Authorization": "Bearer wrong"}, "wrong token")):
        try:
            ws = await connect(bot.url("/"), additional_headers=hdr, open_timeout=5)
            await ws.close()
            R.check(f"token: {what} refused", False, "accepted")
        except InvalidStatus as e:
            R.check(f"token: {what} -> 401", e.response.status_code == 401, str(e.response.status_code))
    c = FakeTwilio(bot.url("/"), call_id=f"token-{os.urandom(3).hex()}", headers={"Authorization": f"Bearer {token}"}, duration_s=3)
    await run_calls([c])
    common_checks(R, bot, c, "token: right token accepted", echo=False)
    opened = [r for r in bot.lines() if r["event"] == "open" and r.get("authorization_present")]
    R.check("token: log says the header is present", bool(opened))
    with open(bot.log) as f:
        R.check("token: the token's value is not in the log", token not in f.read())
    # the bot was started with --action hangup --after-ms 2200: CLI defaults apply
    R.check("token bot: CLI --action hangup --after-ms 2200 applies", ext_kinds(c) == [("hangup", None)] and 2100 <= (ext_ms(c) or 0) <= 2700,
            f"{ext_kinds(c)} at {ext_ms(c)} ms")


async def formats_test(R, bot):
    calls = [FakeAsterisk(bot.url("/"), call_id=f"fmt-{f}-{os.urandom(3).hex()}", fmt=f, duration_s=3.5) for f in ("alaw", "slin16", "slin")]
    await run_calls(calls)
    for c in calls:
        common_checks(R, bot, c, f"asterisk {c.fmt}")
        bad = [n for n in c.bin_sizes if n % c.frame]
        R.check(f"asterisk {c.fmt}: frames of {c.frame} bytes", not bad and bool(c.bin_sizes), f"sizes {sorted(set(c.bin_sizes))[:4]}")
        ms = [r for r in bot.lines(c.call_id) if r["event"] == "media_start"]
        R.check(f"asterisk {c.fmt}: MEDIA_START logged with its parameters", bool(ms) and ms[0]["message"].get("format") == c.fmt)


async def one_message_test(R, bot, dialect):
    Fake = FakeTwilio if dialect == "twilio" else FakeAsterisk
    c = Fake(bot.url("/"), call_id=f"{dialect}-onemsg-{os.urandom(3).hex()}", duration_s=3)
    await run_calls([c])
    common_checks(R, bot, c, f"{dialect} --chunk-ms 0", echo=False)
    big = max(c.msg_sizes or [0])
    R.check(f"{dialect} --chunk-ms 0: the whole tone in one message", big >= 12000, f"largest {big} bytes")


async def pipecat_test(R, bot, end_after):
    c = FakeTwilio(bot.url("/ws"), call_id=f"pipecat-{os.urandom(3).hex()}", params={"from_number": "+15550100", "to_number": "100"},
                   duration_s=end_after + 5)
    await run_calls([c])
    await asyncio.sleep(0.5)
    if c.error:
        R.check("pipecat: call ran", False, repr(c.error))
        return
    lines = bot.lines(c.call_id)
    ev = [r["event"] for r in lines]
    first = [r for r in lines if r["event"] == "first_audio"]
    summ = [r for r in lines if r["event"] == "audio_summary"]
    R.check("pipecat: start parsed by pipecat's runner utils (stream_sid, call_sid)",
            any(r["event"] == "start" and r.get("stream_sid") == c.sid and r.get("call_sid") == c.call_sid for r in lines), str(ev))
    R.check("pipecat: caller audio reaches the pipeline (first_audio logged)", bool(first), str(first[:1]))
    R.check("pipecat: totals logged", bool(summ) and summ[0]["frames"] >= 150, str(summ[:1]))
    s = played_samples(c)
    ms = tone_ms(s, c.rate, 1000)
    R.check("pipecat: tone from the pipeline reaches the caller", 1200 <= ms <= 1700, f"{ms} ms of 1000 Hz, first at {first_tone_ms(s, c.rate, 1000)} ms")
    R.check("pipecat: the bot closed the socket (1000) after --end-after-s",
            c.close_frame and c.close_code == 1000 and not c.left and end_after * 1000 - 200 <= (c.closed_ms or 0) <= end_after * 1000 + 2500,
            f"code {c.close_code} at {c.closed_ms} ms, left={c.left}")
    R.check("pipecat: no Twilio REST hang-up, no garbage", not c.garbage and not c.ext, f"{c.garbage} {c.ext}")


# --------------------------------------------------------------------------


async def amain(args) -> int:
    R = Results()
    tmp = tempfile.mkdtemp(prefix="bots-selftest-")
    print(f"logs in {tmp}", flush=True)
    ref = os.path.join(HERE, "reference")
    py = args.python
    bots: list[Bot] = []

    def start(name, script, *extra):
        port = free_port()
        log = os.path.join(tmp, f"{name}.jsonl")
        argv = [py, os.path.join(ref, script), "--listen", f"127.0.0.1:{port}", "--log", log, *extra]
        b = Bot(name, argv, port, log)
        bots.append(b)
        return b

    try:
        want = set(args.only.split(",")) if args.only else {"twilio", "asterisk", "pipecat"}
        if "twilio" in want:
            tw = start("twilio", "twilio_bot.py")
            await dialect_suite(R, tw, "twilio", FakeTwilio)
            await never_read_test(R, tw, "twilio", FakeTwilio)
            await reject_tests(R, tw, "twilio")
            tokfile = os.path.join(tmp, "token")
            token = "s3cr3t-" + os.urandom(8).hex()
            with open(tokfile, "w") as f:
                f.write(token + "\n")
            tk = start("twilio-token", "twilio_bot.py", "--token", tokfile, "--action", "hangup", "--after-ms", "2200")
            await token_tests(R, tk, token)
            one = start("twilio-onemsg", "twilio_bot.py", "--chunk-ms", "0")
            await one_message_test(R, one, "twilio")
        if "asterisk" in want:
            ast = start("asterisk", "asterisk_bot.py")
            await dialect_suite(R, ast, "asterisk", FakeAsterisk)
            await never_read_test(R, ast, "asterisk", FakeAsterisk)
            await reject_tests(R, ast, "asterisk")
            await formats_test(R, ast)
            pt = start("asterisk-plain", "asterisk_bot.py", "--plain-text")
            await plain_suite(R, pt)
            one = start("asterisk-onemsg", "asterisk_bot.py", "--chunk-ms", "0")
            await one_message_test(R, one, "asterisk")
            rj = start("asterisk-reject", "asterisk_bot.py", "--fault", "reject_404")
            try:
                ws = await connect(rj.url("/"), open_timeout=5)
                await ws.close()
                R.check("asterisk --fault reject_404 (option)", False, "accepted")
            except InvalidStatus as e:
                R.check("asterisk --fault reject_404 (option): HTTP 404", e.response.status_code == 404)
        if "pipecat" in want:
            if not args.pipecat_python:
                R.check("pipecat: --pipecat-python given", False, "skipped: no pipecat venv")
            else:
                port = free_port()
                log = os.path.join(tmp, "pipecat.jsonl")
                argv = [args.pipecat_python, os.path.join(HERE, "pipecat", "bot.py"), "--listen", f"127.0.0.1:{port}",
                        "--log", log, "--end-after-s", str(args.end_after_s)]
                pc = Bot("pipecat", argv, port, log, timeout=120)
                bots.append(pc)
                await pipecat_test(R, pc, args.end_after_s)
    finally:
        for b in bots:
            b.stop()
    print(f"{R.passed} passed, {R.failed} failed", flush=True)
    return 0 if R.failed == 0 else 1


async def plain_suite(R, bot):
    mk = lambda name, **kw: FakeAsterisk(bot.url("/"), call_id=name + os.urandom(3).hex(), plain=True, **kw)  # noqa: E731
    calls = [mk("plain-basic", duration_s=3.5), mk("plain-d1", dtmf=[(1800, "1")]), mk("plain-d2", dtmf=[(1800, "2")]),
             mk("plain-d3", dtmf=[(1800, "3")])]
    await run_calls(calls)
    await asyncio.sleep(0.3)
    b, d1, d2, d3 = calls
    # plain-text MEDIA_START has no channel_variables: the bot's call id is the channel_id
    for c in calls:
        c.call_id = c.channel_id
    common_checks(R, bot, b, "asterisk plain-text")
    cmds = [(cmd, o.get("arg")) for _, cmd, o in b.commands]
    R.check("asterisk plain-text: MARK_MEDIA tone-done in plain text", ("MARK_MEDIA", "tone-done") in cmds, str(cmds))
    R.check("asterisk plain-text: DTMF 1 -> 'TRANSFER sales'", [m for _, m in d1.ext] == ["TRANSFER sales"], str(d1.ext))
    R.check("asterisk plain-text: DTMF 2 -> 'HANGUP'", [m for _, m in d2.ext] == ["HANGUP"], str(d2.ext))
    R.check("asterisk plain-text: DTMF 3 -> 'TRANSFER'", [m for _, m in d3.ext] == ["TRANSFER"], str(d3.ext))
    ms = [r for r in bot.lines(b.call_id) if r["event"] == "media_start"]
    R.check("asterisk plain-text: MEDIA_START parsed", bool(ms) and ms[0]["form"] == "plain-text" and ms[0]["message"].get("optimal_frame_size") == 160, str(ms[:1]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", default=sys.executable, help="python of the reference venv (default: this one)")
    p.add_argument("--pipecat-python", default=None, help="python of the pipecat venv (pipecat test skipped/failed without)")
    p.add_argument("--only", default=None, help="comma list of twilio,asterisk,pipecat")
    p.add_argument("--end-after-s", type=float, default=4.0)
    args = p.parse_args()
    sys.exit(asyncio.run(amain(args)))


if __name__ == "__main__":
    main()
