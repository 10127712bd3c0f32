#!/usr/bin/env python3
"""Reference bot, Asterisk chan_websocket dialect.

A WebSocket server that the telephony side (Asterisk's chan_websocket in client
mode, websocket_client.conf; or voicebot1) connects to once per call.

Asterisk -> bot: BINARY frames of raw audio in the session's format; TEXT
events, JSON ({"event":"MEDIA_START",...}) or legacy plain text
("MEDIA_START connection_id:... format:ulaw ..."): MEDIA_START, DTMF_END,
MEDIA_XOFF, MEDIA_XON, MEDIA_BUFFERING_COMPLETED, MEDIA_MARK_PROCESSED,
QUEUE_DRAINED, STATUS, ERROR. The caller hanging up closes the socket.

Bot -> Asterisk: BINARY audio; TEXT commands of at most 128 bytes, JSON
({"command":"MARK_MEDIA","correlation_id":"x"}) by default or plain text
("MARK_MEDIA x") with --plain-text; plus voicebot1's extension TRANSFER.
See ../README.md for the behaviour and the log lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import JsonLog, Session, read_loop  # noqa: E402

MAX_COMMAND = 128  # chan_websocket ignores longer TEXT messages


def parse_plain(text: str) -> dict:
    """'MEDIA_START connection_id:x channel:y format:ulaw optimal_frame_size:160 ptime:20'
    -> {"event": "MEDIA_START", "connection_id": "x", ...}.
    'MEDIA_MARK_PROCESSED tone-done' -> {"event": ..., "correlation_id": "tone-done"}."""
    parts = text.split()
    if not parts:
        return {"event": ""}
    out: dict = {"event": parts[0]}
    rest = parts[1:]
    if out["event"] in ("MEDIA_MARK_PROCESSED", "MEDIA_BUFFERING_COMPLETED"):
        out["correlation_id"] = " ".join(rest)
        return out
    if out["event"] == "ERROR" and "error_text:" in text:
        head, _, err = text.partition("error_text:")
        out["error_text"] = err
        rest = head.split()[1:]
    for tok in rest:
        k, sep, v = tok.partition(":")
        if sep:
            out[k] = int(v) if v.isdigit() and k in ("optimal_frame_size", "ptime", "queue_length") else v
    return out


class AsteriskSession(Session):
    dialect = "asterisk"

    def __init__(self, ws, args, log):
        super().__init__(ws, args, log)
        self.plain = args.plain_text
        self.started = False
        self.xoff = False
        self.xon = asyncio.Event()
        self.xon.set()

    def clear_answers_marks(self) -> bool:
        # chan_websocket's FLUSH_MEDIA empties the frame queue, the queued
        # MARK_MEDIA events included: no MEDIA_MARK_PROCESSED comes for them.
        return False

    # ---- wire
    async def command(self, name: str, **fields) -> str:
        if self.plain:
            arg = fields.get("correlation_id") or fields.get("destination") or ""
            text = f"{name} {arg}".strip()
        else:
            text = json.dumps({"command": name, **fields}, separators=(",", ":"))
        if len(text.encode()) > MAX_COMMAND:
            self.w("error", where="send", error=f"command longer than {MAX_COMMAND} bytes: {text[:60]}...")
        await self.ws.send(text)
        return text

    async def send_audio(self, data: bytes) -> None:
        # A polite bot stops sending while Asterisk's queue is over its XOFF level.
        if self.fault != "flood" and not self.xon.is_set():
            await self.xon.wait()
        await self.ws.send(data)

    async def send_echo(self, data: bytes) -> None:
        if self.xoff:
            return  # never block the reader; drop the echo frame instead
        await self.ws.send(data)

    async def send_mark(self, name: str) -> None:
        await self.command("MARK_MEDIA", correlation_id=name)

    async def send_clear(self) -> None:
        await self.command("FLUSH_MEDIA")

    async def send_transfer(self, dest: str | None) -> None:
        text = await (self.command("TRANSFER") if dest is None else self.command("TRANSFER", destination=dest))
        self.w("sent", what="transfer", to=dest, message=text)

    async def send_hangup(self) -> None:
        text = await self.command("HANGUP")
        self.w("sent", what="hangup", message=text)

    async def send_garbage(self) -> None:
        items = [
            ("malformed_json", '{"command":"MARK_MEDIA",'),
            ("unknown_command", json.dumps({"command": "FROBNICATE"}) if not self.plain else "FROBNICATE"),
            ("json_without_command", json.dumps({"cmd": "HANGUP"})),
            ("empty_text", ""),
            ("too_long_text", json.dumps({"command": "MARK_MEDIA", "correlation_id": "x" * 200})),
            ("odd_sized_audio", b"\xff" * (self.frame_bytes + 1) if self.codec != "slin" else b"\x00" * (self.frame_bytes + 1)),
        ]
        for kind, payload in items:
            await self.ws.send(payload)
            self.w("sent", what="garbage", kind=kind, bytes=len(payload))

    async def send_huge(self) -> None:
        raw = (b"\xfe\x7e" if self.codec in ("ulaw", "alaw") else b"\x01\x00") * (1024 * 1024)  # 2 MiB
        await self.ws.send(raw)
        self.w("sent", what="huge", bytes=len(raw))

    # ---- reading
    async def on_text(self, text: str) -> None:
        if text.lstrip().startswith("{"):
            try:
                msg = json.loads(text)
            except ValueError as e:
                self.w("error", where="recv", error=f"bad JSON: {e}", text=text[:200])
                return
            form = "json"
        else:
            msg = parse_plain(text)
            form = "plain-text"
        ev = msg.get("event")
        if ev == "MEDIA_START":
            await self.on_media_start(msg, form)
        elif ev == "DTMF_END":
            await self.on_dtmf(str(msg.get("digit", "")))
        elif ev == "MEDIA_MARK_PROCESSED":
            await self.on_mark(str(msg.get("correlation_id", "")))
        elif ev == "MEDIA_XOFF":
            self.xoff = True
            self.xon.clear()
            self.w("recv", message=msg)
        elif ev == "MEDIA_XON":
            self.xoff = False
            self.xon.set()
            self.w("recv", message=msg)
        elif ev in ("MEDIA_BUFFERING_COMPLETED", "QUEUE_DRAINED", "STATUS", "ERROR"):
            self.w("recv", message=msg)
        else:
            self.w("recv_unknown", message=msg, text=text[:200])

    async def on_media_start(self, msg: dict, form: str) -> None:
        fmt = str(msg.get("format", "ulaw"))
        try:
            self.codec, self.rate = common.format_info(fmt)
        except ValueError as e:
            self.w("error", where="MEDIA_START", error=str(e))
            self.codec, self.rate = "ulaw", 8000
        self.fmt_name = fmt
        self.ptime = int(msg.get("ptime", 20) or 20)
        bps = common.bytes_per_second(self.codec, self.rate)
        self.frame_bytes = int(msg.get("optimal_frame_size", 0) or bps * self.ptime // 1000)
        params = msg.get("channel_variables") or {}
        self.call_id = params.get("call_id") or msg.get("channel_id") or msg.get("connection_id")
        self.started = True
        if (form == "plain-text") != self.plain:
            # Real Asterisk uses one format both ways; voicebot1 may accept either.
            self.w(
                "warning",
                where="MEDIA_START",
                error=f"MEDIA_START came as {form} but the bot sends commands as {'plain-text' if self.plain else 'json'}",
            )
        self.w("media_start", form=form, message=msg)
        await self.on_start(params)

    async def on_binary(self, data: bytes) -> None:
        if not self.started:
            self.w("error", where="recv", error="audio before MEDIA_START")
        await self.on_audio(data)


def main() -> None:
    p = argparse.ArgumentParser(description="Reference bot: Asterisk chan_websocket dialect")
    common.add_common_args(p, default_chunk_ms=20)
    p.add_argument("--plain-text", action="store_true", help="send commands in the legacy plain-text form")
    args = p.parse_args()
    log = JsonLog(args.log, "asterisk")

    async def handler(ws):
        sess = AsteriskSession(ws, args, log)
        await read_loop(sess, sess.on_text, sess.on_binary)

    common.main_entry(lambda: common.run_server(args, log, handler))


if __name__ == "__main__":
    main()
