"""Shared parts of the two reference bots (twilio_bot.py, asterisk_bot.py).

Everything here is written from the public protocol docs only: Twilio's
"Media Streams - WebSocket Messages" page and Asterisk's chan_websocket
(channels/chan_websocket.c, chan_websocket_doc.xml), plus the two extension
messages (transfer, hangup) of voicebot1's contract.

A bot is a WebSocket SERVER (websockets' asyncio API); the telephony side
(Twilio, Asterisk, voicebot1) is the client and opens one connection per call.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import http
import itertools
import json
import math
import os
import sys
import time
import urllib.parse

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

# --------------------------------------------------------------------------
# JSON-lines log
# --------------------------------------------------------------------------


class JsonLog:
    """One JSON object per line, each with a monotonic timestamp.

    Lines are written with a single os.write on an O_APPEND descriptor so that
    several bot processes may share a file without interleaving lines.
    """

    def __init__(self, path: str | None, bot: str):
        self.bot = bot
        self.fd = None
        if path and path != "-":
            d = os.path.dirname(os.path.abspath(path))
            os.makedirs(d, exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.stdout = path in (None, "-")

    def write(self, event: str, **fields) -> None:
        rec = {
            "mono": round(time.monotonic(), 6),
            "ts": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "bot": self.bot,
            "event": event,
        }
        rec.update(fields)
        line = (json.dumps(rec, separators=(",", ":"), default=str) + "\n").encode()
        if self.fd is not None:
            os.write(self.fd, line)
        if self.stdout:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()


# --------------------------------------------------------------------------
# G.711 (ITU-T) and tones
# --------------------------------------------------------------------------

_BIAS = 0x84


def _lin2ulaw(s: int) -> int:
    # CCITT G.711 on the top 14 bits (as Sun's g711.c and CPython's audioop)
    pcm = s >> 2
    if pcm < 0:
        pcm = -pcm
        mask = 0x7F
    else:
        mask = 0xFF
    if pcm > 8159:
        pcm = 8159
    pcm += 0x21
    seg = 0
    for end in (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF):
        if pcm <= end:
            break
        seg += 1
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask


def _ulaw2lin(u: int) -> int:
    u = ~u & 0xFF
    sign = u & 0x80
    exp = (u >> 4) & 0x07
    mant = u & 0x0F
    s = ((mant << 3) + _BIAS) << exp
    s -= _BIAS
    return -s if sign else s


def _lin2alaw(s: int) -> int:
    # 16-bit input; A-law works on the top 13 bits.
    if s >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        s = -s - 1
    s >>= 3
    if s > 0xFFF:
        s = 0xFFF
    if s < 32:
        aval = s >> 1
    else:
        seg = s.bit_length() - 5  # 32..63 -> 1, 64..127 -> 2, ...
        aval = (seg << 4) | ((s >> seg) & 0x0F)
    return (aval ^ mask) & 0xFF


def _alaw2lin(a: int) -> int:
    a ^= 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t += 0x108
        t <<= seg - 1
    return t if (a & 0x80) else -t


_ULAW_ENC = bytes(_lin2ulaw(v - 32768) for v in range(65536))
_ALAW_ENC = bytes(_lin2alaw(v - 32768) for v in range(65536))
ULAW_DEC = [_ulaw2lin(b) for b in range(256)]
ALAW_DEC = [_alaw2lin(b) for b in range(256)]


def encode(samples, codec: str) -> bytes:
    """16-bit linear samples (ints) -> bytes in `codec` (ulaw, alaw, slin*)."""
    if codec == "ulaw":
        return bytes(_ULAW_ENC[s + 32768] for s in samples)
    if codec == "alaw":
        return bytes(_ALAW_ENC[s + 32768] for s in samples)
    if codec.startswith("slin"):
        return b"".join(int(s).to_bytes(2, "little", signed=True) for s in samples)
    raise ValueError(f"unsupported codec {codec}")


def decode(data: bytes, codec: str) -> list[int]:
    if codec == "ulaw":
        return [ULAW_DEC[b] for b in data]
    if codec == "alaw":
        return [ALAW_DEC[b] for b in data]
    if codec.startswith("slin"):
        n = len(data) // 2
        return [int.from_bytes(data[2 * i : 2 * i + 2], "little", signed=True) for i in range(n)]
    raise ValueError(f"unsupported codec {codec}")


def format_info(fmt: str) -> tuple[str, int]:
    """Asterisk format name -> (codec, sample rate). slin = 8 kHz, slinNN = NN kHz."""
    fmt = fmt.lower()
    if fmt in ("ulaw", "alaw"):
        return fmt, 8000
    if fmt == "slin":
        return "slin", 8000
    if fmt.startswith("slin") and fmt[4:].isdigit():
        return "slin", int(fmt[4:]) * 1000
    raise ValueError(f"unsupported format {fmt}")


def tone(freq: float, seconds: float, rate: int, codec: str, amplitude: int = 8000) -> bytes:
    n = int(round(seconds * rate))
    w = 2 * math.pi * freq / rate
    return encode([int(round(amplitude * math.sin(w * i))) for i in range(n)], codec)


def bytes_per_second(codec: str, rate: int) -> int:
    return rate * (2 if codec.startswith("slin") else 1)


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------

ACTIONS = ("transfer", "hangup", "close", "refused_transfer", "crash", "none")
FAULTS = (
    "never_read",
    "flood",
    "garbage",
    "silent",
    "reject_401",
    "reject_404",
    "reject_500",
    "slow_accept",
    "huge",
    "none",
)
# DTMF digit -> action (see README)
DTMF_ACTIONS = {
    "1": ("transfer", "sales"),
    "2": ("hangup", None),
    "3": ("transfer", None),
    "4": ("close", None),
    "5": ("transfer", "nowhere"),
    "6": ("clear", None),
    "7": ("long_tone", None),
    "8": ("crash", None),
}


def add_common_args(p: argparse.ArgumentParser, default_chunk_ms: int) -> None:
    p.add_argument("--listen", default="127.0.0.1:8765", help="HOST:PORT to listen on")
    p.add_argument("--log", default="-", help="JSON-lines log file ('-' = stdout)")
    p.add_argument("--token", metavar="FILE", help="require 'Authorization: Bearer <contents of FILE>' (401 otherwise)")
    p.add_argument("--no-echo", action="store_true", help="do not echo the caller's audio after the tone")
    p.add_argument(
        "--chunk-ms",
        type=int,
        default=default_chunk_ms,
        help=f"tone sent in messages of this many ms, as fast as possible; 0 = the whole tone in one message (default {default_chunk_ms})",
    )
    p.add_argument("--tone-ms", type=int, default=1500, help="length of the greeting tone (default 1500)")
    p.add_argument("--tone-hz", type=float, default=1000.0, help="frequency of the tones (default 1000)")
    p.add_argument("--long-tone-ms", type=int, default=10000, help="length of the DTMF-7 tone (default 10000)")
    p.add_argument("--action", default=None, help="default action: " + "|".join(ACTIONS) + "|transfer_to:NAME")
    p.add_argument("--after-ms", type=int, default=None, help="default delay of the action from start (ms)")
    p.add_argument("--fault", default=None, help="default fault mode: " + "|".join(FAULTS))
    p.add_argument("--slow-accept-ms", type=int, default=3000, help="delay of the upgrade answer for fault=slow_accept")
    p.add_argument("--hold-s", type=float, default=60.0, help="how long never_read/silent last before the bot aborts TCP")
    p.add_argument("--ping-interval", type=float, default=20.0, help="server keepalive pings (s); 0 = none")
    p.add_argument("--max-size", type=int, default=1 << 20, help="largest message accepted (bytes)")


def parse_listen(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host or "127.0.0.1", int(port)


def query_params(path: str) -> dict[str, str]:
    q = urllib.parse.urlsplit(path).query
    return {k: v[-1] for k, v in urllib.parse.parse_qs(q, keep_blank_values=True).items()}


def cli_params(args) -> dict[str, str]:
    d = {}
    if args.action:
        d["action"] = args.action
    if args.after_ms is not None:
        d["after_ms"] = str(args.after_ms)
    if args.fault:
        d["fault"] = args.fault
    return d


def headers_for_log(h: Headers) -> tuple[dict, bool]:
    out: dict[str, str] = {}
    present = False
    for k, v in h.raw_items():
        if k.lower() == "authorization":
            present = True
            v = "<present>"
        out[k] = v if k not in out else out[k] + ", " + v
    return out, present


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------

_conn_counter = itertools.count(1)


def make_process_request(args, log: JsonLog):
    token = None
    if args.token:
        with open(args.token) as f:
            token = f.read().strip()

    async def process_request(conn: ServerConnection, request):
        conn.vb_conn = next(_conn_counter)
        conn.vb_opened = time.monotonic()
        headers, auth_present = headers_for_log(request.headers)
        log.write(
            "open",
            conn=conn.vb_conn,
            call=None,
            path=request.path,
            remote=str(conn.remote_address),
            headers=headers,
            authorization_present=auth_present,
        )
        params = dict(cli_params(args))
        params.update(query_params(request.path))
        fault = params.get("fault", "none")
        if token is not None:
            if request.headers.get("Authorization", "") != f"Bearer {token}":
                log.write("rejected", conn=conn.vb_conn, call=None, status=401, reason="bad or missing bearer token")
                r = conn.respond(http.HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
                r.headers["WWW-Authenticate"] = 'Bearer realm="bot"'
                return r
        if fault.startswith("reject_"):
            status = int(fault.split("_", 1)[1])
            log.write("rejected", conn=conn.vb_conn, call=None, status=status, reason="fault " + fault)
            r = conn.respond(http.HTTPStatus(status), f"{http.HTTPStatus(status).phrase}\n")
            if status == 401:
                r.headers["WWW-Authenticate"] = 'Bearer realm="bot"'
            return r
        if fault == "slow_accept":
            ms = int(params.get("slow_accept_ms", args.slow_accept_ms))
            log.write("slow_accept", conn=conn.vb_conn, call=None, delay_ms=ms)
            await asyncio.sleep(ms / 1000)
            log.write("slow_accept_done", conn=conn.vb_conn, call=None)
        return None

    return process_request


def select_subprotocol(conn, offered):
    # Asterisk's websocket_client.conf may offer e.g. "media"; accept whatever is
    # offered first (a bot that does not care about subprotocols), or none.
    return offered[0] if offered else None


async def run_server(args, log: JsonLog, handler) -> None:
    host, port = parse_listen(args.listen)
    ping = args.ping_interval or None
    # The tone of slow_accept must not be cut by the server's own open timeout.
    open_timeout = max(10.0, args.slow_accept_ms / 1000 + 10)
    async with serve(
        handler,
        host,
        port,
        process_request=make_process_request(args, log),
        select_subprotocol=select_subprotocol,
        ping_interval=ping,
        ping_timeout=ping,
        open_timeout=open_timeout,
        max_size=args.max_size,
        max_queue=16,
    ) as server:
        log.write("listening", conn=None, call=None, listen=f"{host}:{port}", pid=os.getpid())
        await server.serve_forever()


def main_entry(coro_factory):
    try:
        asyncio.run(coro_factory())
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------
# The per-call behaviour, common to both dialects
# --------------------------------------------------------------------------


class Session:
    """One call. Subclasses implement the wire format."""

    dialect = "?"

    def __init__(self, ws: ServerConnection, args, log: JsonLog):
        self.ws = ws
        self.args = args
        self.log = log
        self.conn = getattr(ws, "vb_conn", None)
        self.call_id: str | None = None
        self.params: dict[str, str] = {}
        self.codec = "ulaw"
        self.fmt_name = "ulaw"
        self.rate = 8000
        self.frame_bytes = 160
        self.ptime = 20
        self.t_start: float | None = None
        self.frames_in = 0
        self.bytes_in = 0
        self.first_frame_at: float | None = None
        self.echo_enabled = False
        self.echo_frames = 0
        self.echo_bytes = 0
        self.pending_marks: dict[str, float] = {}  # mark name -> sent at
        self.speaking: set[str] = set()  # marks of tones still playing (no echo meanwhile)
        self.tasks: list[asyncio.Task] = []
        self.action_done = False
        self.fault = "none"
        self.ended_by: str | None = None
        self.reading = True
        self.mark_seq = 0

    # ---- logging
    def w(self, event: str, **fields) -> None:
        self.log.write(event, conn=self.conn, call=self.call_id, **fields)

    def since_start_ms(self) -> float | None:
        return None if self.t_start is None else round((time.monotonic() - self.t_start) * 1000, 1)

    def spawn(self, coro) -> asyncio.Task:
        t = asyncio.create_task(self._guard(coro))
        self.tasks.append(t)
        return t

    async def _guard(self, coro):
        try:
            await coro
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a test bot logs everything
            self.w("error", where="task", error=repr(e))

    # ---- wire (dialect-specific)
    async def send_audio(self, data: bytes) -> None:
        raise NotImplementedError

    async def send_echo(self, data: bytes) -> None:
        await self.send_audio(data)

    async def send_mark(self, name: str) -> None:
        raise NotImplementedError

    async def send_clear(self) -> None:
        raise NotImplementedError

    async def send_transfer(self, dest: str | None) -> None:
        raise NotImplementedError

    async def send_hangup(self) -> None:
        raise NotImplementedError

    async def send_garbage(self) -> None:
        raise NotImplementedError

    async def send_huge(self) -> None:
        raise NotImplementedError

    def clear_answers_marks(self) -> bool:
        """Twilio answers the marks a clear dropped; Asterisk's FLUSH_MEDIA drops them."""
        return True

    # ---- start of the call
    async def on_start(self, params: dict[str, str]) -> None:
        self.t_start = time.monotonic()
        merged = dict(cli_params(self.args))
        merged.update(query_params(self.ws.request.path))
        merged.update({k: str(v) for k, v in (params or {}).items()})
        self.params = merged
        self.fault = merged.get("fault", "none") or "none"
        if self.fault not in FAULTS:
            self.w("error", where="start", error=f"unknown fault {self.fault!r}, ignored")
            self.fault = "none"

        if self.fault == "garbage":
            await self.send_garbage()
        if self.fault == "huge":
            await self.send_huge()
        if self.fault == "flood":
            self.spawn(self.flood())
            return
        if self.fault == "silent":
            # Stop reading now, before another frame (a ping) can be processed.
            if self.ws.keepalive_task is not None:
                self.ws.keepalive_task.cancel()
            self.ws.transport.pause_reading()
            self.reading = False  # the read loop runs go_silent instead of reading
            self.hold = self.go_silent
            return

        self.spawn(self.greeting())
        action = merged.get("action", "none") or "none"
        if action != "none":
            after = merged.get("after_ms")
            if after not in (None, ""):
                self.spawn(self.action_after(action, int(after)))
            else:
                self.deferred_action = action  # runs once the greeting tone has played
        if self.fault == "never_read":
            self.reading = False  # the read loop runs never_read_hold instead of reading
            self.hold = self.never_read_hold

    deferred_action: str | None = None

    async def action_after(self, action: str, ms: int) -> None:
        await asyncio.sleep(ms / 1000)
        await self.do_action(action, source=f"after_ms={ms}")

    # ---- tones
    async def play_tone(self, ms: int, mark: str, what: str) -> None:
        data = tone(self.args.tone_hz, ms / 1000, self.rate, self.codec)
        chunk = self.chunk_bytes()
        t0 = time.monotonic()
        n = 0
        if chunk <= 0 or chunk >= len(data):
            await self.send_audio(data)
            n = 1
        else:
            for i in range(0, len(data), chunk):
                await self.send_audio(data[i : i + chunk])
                n += 1
        elapsed = round((time.monotonic() - t0) * 1000, 1)
        self.speaking.add(mark)
        self.pending_marks[mark] = time.monotonic()
        await self.send_mark(mark)
        self.w(
            "sent",
            what=what,
            hz=self.args.tone_hz,
            audio_ms=ms,
            bytes=len(data),
            messages=n,
            send_elapsed_ms=elapsed,
            format=self.fmt_name,
            mark=mark,
        )

    def chunk_bytes(self) -> int:
        if self.args.chunk_ms <= 0:
            return 0
        frames = max(1, round(self.args.chunk_ms / self.ptime))
        return frames * self.frame_bytes

    async def greeting(self) -> None:
        await self.play_tone(self.args.tone_ms, "tone-done", "tone")
        # If the mark never comes back, do not wait for ever before echoing.
        await asyncio.sleep(self.args.tone_ms / 1000 + 3.0)
        if "tone-done" in self.pending_marks and self.reading:
            self.w("error", where="mark", error="mark tone-done not answered within tone length + 3 s")
            self.speaking.discard("tone-done")
            self.after_greeting()

    def after_greeting(self) -> None:
        if not self.args.no_echo and not self.echo_enabled:
            self.echo_enabled = True
            self.w("echo_on")
        if self.deferred_action and not self.action_done:
            a = self.deferred_action
            self.deferred_action = None
            self.spawn(self.do_action(a, source="after tone"))

    # ---- events from the telephony side
    async def on_audio(self, data: bytes) -> None:
        self.frames_in += 1
        self.bytes_in += len(data)
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()
            self.w("first_audio", bytes=len(data), ms_since_start=self.since_start_ms())
        if self.echo_enabled and not self.speaking and self.fault != "flood":
            self.echo_frames += 1
            self.echo_bytes += len(data)
            await self.send_echo(data)

    async def on_mark(self, name: str) -> None:
        sent = self.pending_marks.pop(name, None)
        self.w(
            "mark",
            name=name,
            ms_after_sent=None if sent is None else round((time.monotonic() - sent) * 1000, 1),
            expected=sent is not None,
        )
        self.speaking.discard(name)
        if name == "tone-done":
            self.after_greeting()

    async def on_dtmf(self, digit: str) -> None:
        act = DTMF_ACTIONS.get(digit)
        self.w("dtmf", digit=digit, action=None if act is None else (act[0] + (f":{act[1]}" if act[1] else "")))
        if act is None:
            return
        kind, arg = act
        if kind == "transfer":
            await self.do_action("transfer" if arg is None else f"transfer_to:{arg}", source=f"dtmf {digit}")
        elif kind == "clear":
            await self.do_clear()
        elif kind == "long_tone":
            self.spawn(self.play_tone(self.args.long_tone_ms, self.next_long_mark(), "long_tone"))
        else:
            await self.do_action(kind, source=f"dtmf {digit}")

    def next_long_mark(self) -> str:
        self.mark_seq += 1
        return "long-tone-done" if self.mark_seq == 1 else f"long-tone-done-{self.mark_seq}"

    async def do_clear(self) -> None:
        await self.send_clear()
        dropped = sorted(self.speaking)
        self.w("sent", what="clear", pending_marks=dropped)
        # The audio queued before is gone: the bot is no longer "speaking".
        self.speaking.clear()
        if not self.clear_answers_marks():
            for m in dropped:
                self.pending_marks.pop(m, None)
        if "tone-done" in dropped:
            self.after_greeting()

    # ---- actions
    async def do_action(self, action: str, source: str) -> None:
        self.w("action", action=action, source=source)
        if action in ("transfer", "hangup", "close", "crash"):
            self.action_done = True
        if action == "transfer":
            await self.send_transfer(None)
        elif action.startswith("transfer_to:"):
            self.action_done = True
            await self.send_transfer(action.split(":", 1)[1])
        elif action == "refused_transfer":
            await self.send_transfer("nowhere")
        elif action == "hangup":
            await self.send_hangup()
        elif action == "close":
            self.ended_by = "bot close 1000"
            self.w("sent", what="close", code=1000, reason="bot done")
            await self.ws.close(1000, "bot done")
        elif action == "crash":
            self.crash()
        elif action == "none":
            pass
        else:
            self.w("error", where="action", error=f"unknown action {action!r}")

    def crash(self) -> None:
        self.ended_by = "bot crash (TCP closed without a close frame)"
        self.w("sent", what="crash", detail="TCP connection aborted without a WebSocket close frame")
        self.ws.transport.abort()

    # ---- faults
    async def flood(self) -> None:
        """Audio as fast as the socket takes it, for ever (no XOFF honoured)."""
        chunk = tone(self.args.tone_hz, 1.0, self.rate, self.codec)  # 1 s per message
        sent = 0
        msgs = 0
        t0 = time.monotonic()
        self.w("fault", fault="flood", detail="sending 1 s audio messages as fast as possible")
        try:
            while True:
                await self.send_audio(chunk)
                sent += len(chunk)
                msgs += 1
                # flood this connection, not the process: let the other calls run
                await asyncio.sleep(0)
        finally:
            self.w(
                "sent",
                what="flood",
                bytes=sent,
                messages=msgs,
                audio_s=round(sent / bytes_per_second(self.codec, self.rate), 1),
                elapsed_s=round(time.monotonic() - t0, 2),
            )

    async def go_silent(self) -> None:
        """Reading stopped in on_start (so no pong is ever sent); write nothing; keep TCP open."""
        hold = float(self.params.get("hold_s", self.args.hold_s))
        self.w("fault", fault="silent", detail=f"not reading (no pongs), not writing, TCP open for {hold} s")
        await asyncio.sleep(hold)
        self.w("fault_end", fault="silent", detail="aborting TCP")
        self.ended_by = "bot abort after silent hold"
        self.ws.transport.abort()

    async def never_read_hold(self) -> None:
        hold = float(self.params.get("hold_s", self.args.hold_s))
        self.w("fault", fault="never_read", detail=f"not reading any more messages for {hold} s")
        await asyncio.sleep(hold)
        self.w("fault_end", fault="never_read", detail="aborting TCP")
        self.ended_by = "bot abort after never_read hold"
        self.ws.transport.abort()

    # ---- end
    def finish(self) -> None:
        for t in self.tasks:
            t.cancel()
        ws = self.ws
        rcvd = ws.protocol.close_rcvd
        sent = ws.protocol.close_sent
        self.w(
            "audio_summary",
            frames=self.frames_in,
            bytes=self.bytes_in,
            audio_s=round(self.bytes_in / bytes_per_second(self.codec, self.rate), 2),
            echoed_frames=self.echo_frames,
            echoed_bytes=self.echo_bytes,
            unanswered_marks=sorted(self.pending_marks),
        )
        self.w(
            "close",
            code=None if rcvd is None else rcvd.code,
            reason=None if rcvd is None else rcvd.reason,
            sent_code=None if sent is None else sent.code,
            sent_reason=None if sent is None else sent.reason,
            close_frame_received=rcvd is not None,
            ended_by=self.ended_by or ("peer" if rcvd is not None else "connection lost"),
            duration_s=round(time.monotonic() - getattr(ws, "vb_opened", time.monotonic()), 3),
        )


async def read_loop(sess: Session, on_text, on_binary) -> None:
    """Dispatch messages until the connection ends or the bot stops reading."""
    ws = sess.ws
    try:
        while True:
            if not sess.reading:
                await sess.hold()
                return
            msg = await ws.recv()
            try:
                if isinstance(msg, str):
                    await on_text(msg)
                else:
                    await on_binary(msg)
            except ConnectionClosed:
                # A send of ours failed: the peer has closed. What it sent before its close
                # frame (twilio's `stop` after the last `media`) is still to be read.
                continue
    except ConnectionClosed:
        pass
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001
        sess.w("error", where="read", error=repr(e))
    finally:
        # let in-flight sends finish their logging
        await asyncio.sleep(0)
        sess.finish()
