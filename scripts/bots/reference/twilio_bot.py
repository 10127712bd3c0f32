#!/usr/bin/env python3
"""Reference bot, Twilio Media Streams dialect (bidirectional stream).

A WebSocket server that the telephony side connects to once per call. It reads
`connected`, `start`, `media`, `dtmf`, `mark`, `stop`; it sends `media`, `mark`,
`clear` and the two voicebot1 extension messages `transfer` and `hangup`.
See ../README.md for the behaviour and the log lines.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import JsonLog, Session, read_loop  # noqa: E402


class TwilioSession(Session):
    dialect = "twilio"

    def __init__(self, ws, args, log):
        super().__init__(ws, args, log)
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.started = False

    # ---- wire
    async def send_json(self, obj: dict) -> None:
        await self.ws.send(json.dumps(obj, separators=(",", ":")))

    async def send_audio(self, data: bytes) -> None:
        await self.send_json(
            {"event": "media", "streamSid": self.stream_sid, "media": {"payload": base64.b64encode(data).decode()}}
        )

    async def send_mark(self, name: str) -> None:
        await self.send_json({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def send_clear(self) -> None:
        await self.send_json({"event": "clear", "streamSid": self.stream_sid})

    async def send_transfer(self, dest: str | None) -> None:
        msg = {"event": "transfer", "streamSid": self.stream_sid, "transfer": {} if dest is None else {"to": dest}}
        await self.send_json(msg)
        self.w("sent", what="transfer", to=dest, message=msg)

    async def send_hangup(self) -> None:
        msg = {"event": "hangup", "streamSid": self.stream_sid}
        await self.send_json(msg)
        self.w("sent", what="hangup", message=msg)

    async def send_garbage(self) -> None:
        sid = self.stream_sid
        items = [
            ("malformed_json", '{"event":"media","streamSid":'),
            ("unknown_event", json.dumps({"event": "frobnicate", "streamSid": sid, "frobnicate": {"x": 1}})),
            (
                "wrong_streamSid",
                json.dumps(
                    {
                        "event": "media",
                        "streamSid": "MZ" + "0" * 32,
                        "media": {"payload": base64.b64encode(b"\xff" * 160).decode()},
                    }
                ),
            ),
            ("bad_base64", json.dumps({"event": "media", "streamSid": sid, "media": {"payload": "@@not*base64!!="}})),
            (
                "odd_sized_audio",
                json.dumps({"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(b"\xff" * 161).decode()}}),
            ),
            ("binary_frame", b"\x00\x01\x02garbage\xff"),
        ]
        for kind, payload in items:
            await self.ws.send(payload)
            self.w("sent", what="garbage", kind=kind, bytes=len(payload))

    async def send_huge(self) -> None:
        # 1.5 MiB of μ-law (about 196 s of near-silence) -> a 2 MiB base64 payload.
        raw = b"\xfe\x7e" * (3 * 1024 * 1024 // 4)
        msg = json.dumps({"event": "media", "streamSid": self.stream_sid, "media": {"payload": base64.b64encode(raw).decode()}})
        await self.ws.send(msg)
        self.w("sent", what="huge", bytes=len(msg), audio_bytes=len(raw))

    # ---- reading
    async def on_text(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError as e:
            self.w("error", where="recv", error=f"bad JSON: {e}", text=text[:200])
            return
        ev = msg.get("event")
        if ev == "media":
            if not self.started:
                self.w("error", where="recv", error="media before start")
            payload = msg.get("media", {}).get("payload", "")
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError) as e:
                self.w("error", where="recv", error=f"bad base64 in media: {e}")
                return
            await self.on_audio(data)
        elif ev == "connected":
            self.w("connected", message=msg)
        elif ev == "start":
            start = msg.get("start", {})
            self.stream_sid = start.get("streamSid") or msg.get("streamSid")
            self.call_sid = start.get("callSid")
            params = start.get("customParameters") or {}
            self.call_id = params.get("call_id") or self.call_sid or self.stream_sid
            fmt = start.get("mediaFormat", {})
            if fmt and (fmt.get("encoding") != "audio/x-mulaw" or int(fmt.get("sampleRate", 8000)) != 8000):
                self.w("error", where="start", error=f"unexpected mediaFormat {fmt}")
            self.started = True
            self.w("start", start=start, streamSid=msg.get("streamSid"), sequenceNumber=msg.get("sequenceNumber"))
            await self.on_start(params)
        elif ev == "dtmf":
            await self.on_dtmf(str(msg.get("dtmf", {}).get("digit", "")))
        elif ev == "mark":
            await self.on_mark(str(msg.get("mark", {}).get("name", "")))
        elif ev == "stop":
            self.w("stop", message=msg)
        else:
            self.w("recv_unknown", message=msg)

    async def on_binary(self, data: bytes) -> None:
        self.w("error", where="recv", error=f"unexpected binary frame of {len(data)} bytes")


def main() -> None:
    p = argparse.ArgumentParser(description="Reference bot: Twilio Media Streams dialect")
    common.add_common_args(p, default_chunk_ms=40)
    args = p.parse_args()
    log = JsonLog(args.log, "twilio")

    async def handler(ws):
        sess = TwilioSession(ws, args, log)
        await read_loop(sess, sess.on_text, sess.on_binary)

    common.main_entry(lambda: common.run_server(args, log, handler))


if __name__ == "__main__":
    main()
