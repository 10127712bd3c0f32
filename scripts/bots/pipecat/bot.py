#!/usr/bin/env python3
"""A real Pipecat bot behind a Twilio-Media-Streams WebSocket, without any AI service.

FastAPI + uvicorn serve the WebSocket (any path: /ws as pipecat's runner uses, /, ...).
Per connection, the way pipecat's own runner does it:
  * accept, then `parse_telephony_websocket` reads the first two messages
    (`connected`, `start`) and gives stream_sid / call_sid / customParameters;
  * `TwilioFrameSerializer` (unmodified; auto_hang_up off, so no Twilio REST call
    and no credentials) inside a `FastAPIWebsocketTransport`;
  * a pipeline  transport.input() -> ToneAndCount -> transport.output().

ToneAndCount:
  (a) counts the caller's InputAudioRawFrames that reach the pipeline, logging the
      first one and the totals (JSON lines, each with the call id);
  (b) at start pushes --tone-ms (1500) of a --tone-hz (1000) sine as OutputAudioRawFrames
      (pipeline audio that reaches the caller through the serializer);
  (c) after --end-after-s (4) seconds pushes EndWorkerFrame: the pipeline ends and the
      transport closes the socket (close 1000), so the call goes on with its next step.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import struct
import sys
import time

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

SAMPLE_RATE = 8000  # pipeline rate, as pipecat's telephony templates use


class JsonLog:
    def __init__(self, path: str):
        self.fd = None
        if path and path != "-":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, event: str, **fields) -> None:
        rec = {
            "mono": round(time.monotonic(), 6),
            "ts": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "bot": "pipecat",
            "event": event,
        }
        rec.update(fields)
        line = (json.dumps(rec, separators=(",", ":"), default=str) + "\n").encode()
        if self.fd is not None:
            os.write(self.fd, line)
        else:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()


class ToneAndCount(FrameProcessor):
    def __init__(self, log: JsonLog, call_id: str, args, **kwargs):
        super().__init__(**kwargs)
        self.log = log
        self.call_id = call_id
        self.args = args
        self.frames = 0
        self.bytes = 0
        self.first_at: float | None = None
        self.t_start: float | None = None
        self.started = False
        self.summary_written = False
        self._task: asyncio.Task | None = None
        self.in_rate = SAMPLE_RATE
        self.out_rate = SAMPLE_RATE

    def w(self, event: str, **fields) -> None:
        self.log.write(event, call=self.call_id, **fields)

    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        self.in_rate = setup.audio_in_sample_rate
        self.out_rate = setup.audio_out_sample_rate

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)

        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            if not self.started:
                self.started = True
                self.t_start = time.monotonic()
                self.w("pipeline_started", audio_in_sample_rate=self.in_rate, audio_out_sample_rate=self.out_rate)
                self._task = self.create_task(self._script(self.out_rate))
            return

        if isinstance(frame, InputAudioRawFrame):
            # The caller's audio: count it here, do not pass it on (nothing uses it).
            self.frames += 1
            self.bytes += len(frame.audio)
            if self.first_at is None:
                self.first_at = time.monotonic()
                self.w(
                    "first_audio",
                    bytes=len(frame.audio),
                    sample_rate=frame.sample_rate,
                    ms_since_start=round((self.first_at - (self.t_start or self.first_at)) * 1000, 1),
                )
            return

        if isinstance(frame, InputDTMFFrame):
            self.w("dtmf", digit=str(frame.button.value))

        if isinstance(frame, (EndFrame, CancelFrame)):
            self.summary(type(frame).__name__)

        await self.push_frame(frame, direction)

    def summary(self, why: str) -> None:
        if self.summary_written:
            return
        self.summary_written = True
        self.w(
            "audio_summary",
            frames=self.frames,
            bytes=self.bytes,
            audio_s=round(self.bytes / 2 / self.in_rate, 2),
            ended_by=why,
        )

    async def _script(self, rate: int):
        # (b) the tone, pushed as fast as a TTS service would, in 100 ms frames.
        n = int(rate * self.args.tone_ms / 1000)
        w = 2 * math.pi * self.args.tone_hz / rate
        pcm = struct.pack(f"<{n}h", *(int(8000 * math.sin(w * i)) for i in range(n)))
        step = rate // 10 * 2
        frames = 0
        for i in range(0, len(pcm), step):
            await self.push_frame(OutputAudioRawFrame(audio=pcm[i : i + step], sample_rate=rate, num_channels=1))
            frames += 1
        self.w("sent", what="tone", hz=self.args.tone_hz, audio_ms=self.args.tone_ms, frames=frames,
               sample_rate=rate)
        # (c) end the pipeline --end-after-s after start: the transport closes the WebSocket.
        await asyncio.sleep(max(0.0, self.args.end_after_s - (time.monotonic() - self.t_start)))
        self.w("end", detail=f"EndWorkerFrame after {self.args.end_after_s} s", frames_so_far=self.frames)
        await self.push_frame(EndWorkerFrame(reason="end-after-s"))


def build_app(args, log: JsonLog) -> FastAPI:
    app = FastAPI()

    async def handle(websocket: WebSocket):
        headers = {k: ("<present>" if k.lower() == "authorization" else v) for k, v in websocket.headers.items()}
        log.write("open", call=None, path=websocket.url.path, query=websocket.url.query, headers=headers,
                  authorization_present="authorization" in websocket.headers)
        await websocket.accept()
        t_open = time.monotonic()
        try:
            transport_type, call_data = await parse_telephony_websocket(websocket)
        except Exception as e:  # noqa: BLE001
            log.write("error", call=None, where="parse_telephony_websocket", error=repr(e))
            return
        body = call_data.get("body", {}) or {}
        call_id = body.get("call_id") or call_data.get("call_id")
        log.write("start", call=call_id, transport_type=transport_type, stream_sid=call_data.get("stream_id"),
                  call_sid=call_data.get("call_id"), custom_parameters=body)
        if transport_type != "twilio":
            log.write("error", call=call_id, where="start", error=f"not a Twilio stream: {transport_type}")
            await websocket.close()
            return

        serializer = TwilioFrameSerializer(
            stream_sid=call_data["stream_id"],
            call_sid=call_data["call_id"],
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
        )
        transport = FastAPIWebsocketTransport(
            websocket=websocket,
            params=FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=serializer,
            ),
        )
        proc = ToneAndCount(log, call_id, args)
        pipeline = Pipeline([transport.input(), proc, transport.output()])
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE, audio_out_sample_rate=SAMPLE_RATE),
        )
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(transport, client):
            log.write("caller_disconnected", call=call_id)
            await runner.cancel()

        await runner.run()
        proc.summary("runner finished")
        log.write("close", call=call_id, client_state=str(websocket.client_state.name),
                  duration_s=round(time.monotonic() - t_open, 3))

    @app.websocket("/")
    async def root(websocket: WebSocket):
        await handle(websocket)

    @app.websocket("/{path:path}")
    async def any_path(websocket: WebSocket, path: str):
        await handle(websocket)

    return app


def main() -> None:
    p = argparse.ArgumentParser(description="Pipecat bot (Twilio serializer, no AI services)")
    p.add_argument("--listen", default="127.0.0.1:8770", help="HOST:PORT")
    p.add_argument("--log", default="-", help="JSON-lines log file ('-' = stdout)")
    p.add_argument("--end-after-s", type=float, default=4.0, help="end the pipeline this long after start (s)")
    p.add_argument("--tone-ms", type=int, default=1500)
    p.add_argument("--tone-hz", type=float, default=1000.0)
    p.add_argument("--pipecat-log-level", default="WARNING", help="loguru level for pipecat's own log (stderr)")
    args = p.parse_args()

    logger.remove()
    logger.add(sys.stderr, level=args.pipecat_log_level)
    log = JsonLog(args.log)
    host, _, port = args.listen.rpartition(":")
    log.write("listening", call=None, listen=args.listen, pid=os.getpid())
    uvicorn.run(build_app(args, log), host=host or "127.0.0.1", port=int(port), log_level="warning")


if __name__ == "__main__":
    main()
