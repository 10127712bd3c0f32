#!/usr/bin/env python3
"""talk: a voice bot a person can talk to, behind voicebot1 (Twilio Media Streams dialect).

A WebSocket server; voicebot1 connects once per call. The bot greets the caller (espeak-ng,
8 kHz mu-law, sent faster than real time, then a mark), listens all the time (barge-in: caller
speech during a prompt stops it with `clear`), recognises "agent" / "operator" / "person"
(-> "Transferring you now." then the transfer extension) and "goodbye" (-> "Goodbye." then the
hangup extension) with pocketsphinx on a tiny language model, takes DTMF (0 -> transfer, other
digits are read back), and after 10 s of silence asks again, after 20 s transfers.

  python bot.py --listen 127.0.0.1:8765 --log /tmp/talk.jsonl

One JSON line per event in the log: said, heard, dtmf, barge_in, action, stop (and start,
error), each with the call id and `t`, monotonic ms since the stream's start event.
"""

import argparse
import asyncio
import base64
import collections
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speech  # noqa: E402

SILENCE_TIMEOUT_S = 10.0
DIGIT_TIMEOUT_S = 1.5
ACTION_CLOSE_S = 10.0      # after transfer/hangup, close the socket if voicebot1 has not


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1) if path else None
        self.lock = threading.Lock()

    def write(self, rec):
        line = json.dumps(rec, separators=(",", ":"))
        with self.lock:
            if self.f:
                self.f.write(line + "\n")
            else:
                print(line, flush=True)


class Tts:
    """espeak-ng -> mu-law, cached per text; fixed prompts made at start-up."""

    def __init__(self, voice, speed):
        self.voice = voice
        self.speed = speed
        self.cache = {}
        self.lock = threading.Lock()

    def ulaw(self, text):
        with self.lock:
            hit = self.cache.get(text)
        if hit is not None:
            return hit
        data = speech.encode(speech.synth(text, voice=self.voice, speed=self.speed, trim=True),
                             "ulaw")
        with self.lock:
            if len(self.cache) < 256:
                self.cache[text] = data
        return data


def asr_worker(conn):
    """A recognition process: one Recognizer (own decoder, reused across calls) per call.
    pocketsphinx holds the GIL while it decodes (end_utt: up to ~0.7 s on a long utterance),
    so decoding lives out of the WebSocket process altogether."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(5)        # decoding is throughput work: the WebSocket loop (barge-in) goes first
    except OSError:
        pass
    pool = speech.DecoderPool()
    pool.put(pool.get())                       # build the model files, warm one decoder
    conn.send(("ready", None, None))
    recs = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        kind, cid, data = msg
        try:
            if kind == "audio":
                rec = recs.get(cid)
                if rec is None:
                    continue
                events = [e for e in rec.feed(np.frombuffer(data, dtype=np.int16))
                          if e["type"] in ("partial", "final")]
                if events:
                    conn.send(("events", cid, events))
            elif kind == "open":
                t = time.perf_counter()
                dec = pool.get()
                recs[cid] = speech.Recognizer(decoder=dec)
                conn.send(("opened", cid, round((time.perf_counter() - t) * 1000.0, 1)))
            elif kind == "close":
                rec = recs.pop(cid, None)
                if rec is None:
                    continue
                events = [e for e in rec.flush() if e["type"] in ("partial", "final")]
                pool.put(rec.dec)
                conn.send(("closed", cid, {"events": events, "cpu_s": rec.cpu}))
            elif kind == "quit":
                return
        except Exception as exc:                 # noqa: BLE001 - reported to the bot's log
            conn.send(("error", cid, "%r\n%s" % (exc, traceback.format_exc())))


class AsrWorker:
    def __init__(self, ctx, pool, index):
        self.pool = pool
        self.index = index
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=asr_worker, args=(child,), daemon=True,
                                name="talk-asr-%d" % index)
        self.proc.start()
        child.close()
        self.calls = 0
        self.out = queue.Queue()
        self.ready = threading.Event()
        threading.Thread(target=self._sender, daemon=True).start()
        threading.Thread(target=self._reader, daemon=True).start()

    def send(self, msg):
        self.out.put(msg)                        # never blocks the event loop

    def _sender(self):
        while True:
            msg = self.out.get()
            try:
                self.conn.send(msg)
            except (OSError, ValueError):
                return

    def _reader(self):
        while True:
            try:
                kind, cid, data = self.conn.recv()
            except (EOFError, OSError):
                self.pool.worker_died(self)
                return
            if kind == "ready":
                self.ready.set()
            else:
                self.pool.dispatch(kind, cid, data)


class AsrPool:
    """Worker processes for recognition; each call is served by the least busy one."""

    def __init__(self, loop, log, n):
        import multiprocessing
        self.loop = loop
        self.log = log
        self.ctx = multiprocessing.get_context("spawn")
        self.calls = {}                           # call key -> (Call, AsrWorker)
        self.workers = [AsrWorker(self.ctx, self, i) for i in range(n)]
        self.seq = 0

    def wait_ready(self, timeout=30.0):
        return all(w.ready.wait(timeout) for w in self.workers)

    def open(self, call):
        self.seq += 1
        key = self.seq
        w = min((w for w in self.workers if w.proc.is_alive()), key=lambda w: w.calls,
                default=None)
        if w is None:
            w = self.workers[0] = AsrWorker(self.ctx, self, 0)
        w.calls += 1
        self.calls[key] = (call, w)
        w.send(("open", key, None))
        return key

    def feed(self, key, pcm):
        entry = self.calls.get(key)
        if entry:
            entry[1].send(("audio", key, np.asarray(pcm, dtype=np.int16).tobytes()))

    def close(self, key):
        entry = self.calls.get(key)
        if entry:
            entry[1].send(("close", key, None))

    def dispatch(self, kind, key, data):
        try:
            self.loop.call_soon_threadsafe(self._dispatch, kind, key, data)
        except RuntimeError:                      # the loop is gone: the bot is exiting
            pass

    def _dispatch(self, kind, key, data):
        entry = self.calls.get(key)
        if entry is None:
            return
        call, w = entry
        if kind == "events":
            for ev in data:
                call.on_recognised(ev)
        elif kind == "opened":
            call.log("asr", decoder_ms=data, worker=w.index)
        elif kind == "closed":
            for ev in data["events"]:
                call.on_recognised(ev)
            call.rec_cpu = data["cpu_s"]
            w.calls -= 1
            del self.calls[key]
            call.asr_closed.set()
        elif kind == "error":
            call.log("error", error="recognizer: %s" % data)

    def worker_died(self, w):
        def gone():
            self.log.write({"event": "error", "error": "recognition worker %d exited (%s)" % (
                w.index, w.proc.exitcode)})
            for key, (call, cw) in list(self.calls.items()):
                if cw is w:
                    del self.calls[key]
                    call.asr_closed.set()
        try:
            self.loop.call_soon_threadsafe(gone)
        except RuntimeError:
            pass

    def shutdown(self):
        for w in self.workers:
            w.send(("quit", None, None))


class Prompt:
    def __init__(self, pid, text, interruptible, then):
        self.id = pid
        self.mark = "p%d" % self.id
        self.text = text
        self.interruptible = interruptible
        self.then = then
        self.task = None
        self.cleared = False
        self.done = False
        self.seconds = 0.0
        self.timeout = None


class Call:
    def __init__(self, bot, ws):
        self.bot = bot
        self.ws = ws
        self.loop = asyncio.get_running_loop()
        self.t0 = time.monotonic()
        self.stream_sid = None
        self.call_id = None
        self.samples = 0                    # caller audio received (8 kHz samples)
        self.pending = np.zeros(0, dtype=np.int16)
        # monotonic s at which each 20 ms caller frame was complete (the last 2 minutes)
        self.frame_arrival = collections.deque(maxlen=6000)
        self.frames = 0
        self.live_offset = None             # min over frames of (arrival t - frame end), ms
        self.detector = speech.SpeechDetector()
        self.prompt = None
        self.prompt_seq = 0                 # marks are p1 (the greeting), p2, ...
        self.acting = False                 # a transfer/hangup is under way: no more dialogue
        self.caller_speaking = False
        self.onset_pending = None           # onset of speech not yet followed by a final result
        self.silence_task = None
        self.no_input = 0
        self.digits = ""
        self.digit_task = None
        self.close_task = None
        self.asr_key = None
        self.asr_closed = asyncio.Event()
        self.rec_cpu = 0.0
        self.closed = False
        self.tasks = set()

    # -- time and logging
    def t(self, mono=None):
        return round(((time.monotonic() if mono is None else mono) - self.t0) * 1000.0, 1)

    def live_t(self, stream_ms):
        """Bot-clock ms (`t`) at which the caller's stream position `stream_ms` was live: the
        stream position plus the smallest (arrival - end of frame) seen in this call, i.e. as if
        that frame had arrived as promptly as the promptest one. A frame that arrives late (the
        sender or this loop falling behind) thus counts as late, not as live on arrival."""
        if self.live_offset is None:
            return None
        return round(stream_ms + self.live_offset, 1)

    def arrival_t(self, stream_ms):
        """Bot-clock ms at which the frame holding `stream_ms` arrived, less the rest of it."""
        if not self.frame_arrival:
            return None
        first = self.frames - len(self.frame_arrival)
        idx = min(max(int(stream_ms // speech.FRAME_MS), first), self.frames - 1)
        frame_end_ms = (idx + 1) * speech.FRAME_MS
        return round(self.t(self.frame_arrival[idx - first]) - (frame_end_ms - stream_ms), 1)

    def log(self, event, **kw):
        rec = {"t": self.t(), "call_id": self.call_id, "event": event}
        rec.update(kw)
        self.bot.log.write(rec)

    def spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task):
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log("error", error=repr(exc),
                     traceback="".join(traceback.format_exception(exc)))

    async def send(self, msg):
        if self.closed:
            return
        try:
            await self.ws.send(json.dumps(msg, separators=(",", ":")))
        except Exception:
            self.closed = True

    # -- the connection
    async def run(self):
        try:
            async for raw in self.ws:
                if isinstance(raw, bytes):
                    continue
                try:
                    msg = json.loads(raw)
                except ValueError:
                    self.log("error", error="not JSON: %r" % raw[:100])
                    continue
                ev = msg.get("event")
                if ev == "media":
                    self.on_media(msg)
                elif ev == "start":
                    self.on_start(msg)
                elif ev == "mark":
                    self.on_mark(msg)
                elif ev == "dtmf":
                    self.on_dtmf(msg)
                elif ev == "stop":
                    self.log("stop", audio_s=round(self.samples / speech.RATE, 2))
                    break
        except Exception as exc:     # noqa: BLE001 - the connection's end is logged, not raised
            import websockets
            if not isinstance(exc, websockets.ConnectionClosed):
                self.log("error", error=repr(exc), traceback=traceback.format_exc())
            else:
                self.log("closed", code=getattr(exc.rcvd, "code", None) if exc.rcvd else None)
        finally:
            await self.finish()

    async def finish(self):
        self.closed = True
        for task in list(self.tasks):
            task.cancel()
        if self.asr_key is not None:
            self.bot.asr.close(self.asr_key)
            try:
                await asyncio.wait_for(self.asr_closed.wait(), 5.0)
            except asyncio.TimeoutError:
                self.log("error", error="recognizer did not close in 5 s")
        self.log("end", asr_cpu_s=round(self.rec_cpu, 3),
                 audio_s=round(self.samples / speech.RATE, 2),
                 asr_cpu_per_audio_s=round(self.rec_cpu / max(self.samples / speech.RATE, 1e-3),
                                           4))

    def on_start(self, msg):
        start = msg.get("start") or {}
        self.t0 = time.monotonic()
        epoch = time.time()                # the wall clock at t = 0, to line the log up with others
        self.stream_sid = msg.get("streamSid") or start.get("streamSid")
        params = start.get("customParameters") or {}
        self.call_id = params.get("call_id") or start.get("callSid")
        fmt = (start.get("mediaFormat") or {}).get("encoding", "audio/x-mulaw")
        self.asr_key = self.bot.asr.open(self)
        self.log("start", stream_sid=self.stream_sid, call_sid=start.get("callSid"),
                 params=params, encoding=fmt, epoch=round(epoch, 6))
        self.speak(speech.GREETING)

    # -- caller audio: barge-in detection here, recognition in the worker thread
    def on_media(self, msg):
        if self.stream_sid is None:
            return
        media = msg.get("media") or {}
        if media.get("track") not in (None, "inbound", "inbound_track"):
            return
        try:
            pcm = speech.decode(base64.b64decode(media.get("payload", "")), "ulaw")
        except Exception:
            self.log("error", error="bad media payload")
            return
        now = time.monotonic()
        self.samples += len(pcm)
        self.bot.asr.feed(self.asr_key, pcm)
        self.pending = np.concatenate([self.pending, pcm]) if len(self.pending) else pcm
        while len(self.pending) >= speech.FRAME:
            frame, self.pending = self.pending[:speech.FRAME], self.pending[speech.FRAME:]
            self.frame_arrival.append(now)
            self.frames += 1
            offset = (now - self.t0) * 1000.0 - self.frames * speech.FRAME_MS
            if self.live_offset is None or offset < self.live_offset:
                self.live_offset = offset
            _speech, event, idx = self.detector.process(frame)
            if event == "onset":
                self.on_onset(idx * speech.FRAME_MS, now)
            elif event == "offset":
                self.caller_speaking = False

    def on_onset(self, onset_ms, detected_mono):
        self.caller_speaking = True
        self.no_input = 0
        self.cancel_silence()
        p = self.prompt
        if p is not None and p.interruptible and not p.done and not p.cleared and not self.acting:
            self.clear_prompt()
            clear_t = self.t()
            onset_t = self.live_t(onset_ms)
            arrived_t = self.arrival_t(onset_ms)
            self.log("barge_in", cause="speech", prompt=p.text[:40], onset_ms=onset_ms,
                     onset_t=onset_t, detect_t=self.t(detected_mono), clear_t=clear_t,
                     latency_ms=round(clear_t - onset_t, 1) if onset_t is not None else None,
                     after_arrival_ms=round(clear_t - arrived_t, 1) if arrived_t is not None
                     else None)
            self.onset_pending = p
        else:
            self.onset_pending = None

    def on_recognised(self, ev):
        if self.closed:
            return
        words = [w["word"] for w in ev["words"]] or ev["text"].split()
        intent, word = speech.find_intent(words)
        final = ev["type"] == "final"
        if not final and (intent is None or self.acting):
            return                  # partials are logged only when they make the bot act
        rec = {"text": ev["text"], "final": final,
               "words": [[w["word"], w["end_ms"]] for w in ev["words"]]}
        if word is not None:
            w = next(x for x in ev["words"] if x["word"] == word) if ev["words"] else None
            if w is not None:
                rec["word_end_ms"] = w["end_ms"]
                live = self.live_t(w["end_ms"])
                rec["word_end_t"] = live
                rec["lag_ms"] = round(self.t() - live, 1) if live is not None else None
        elif ev["words"]:
            rec["end_ms"] = ev["words"][-1]["end_ms"]
        self.log("heard", **rec)
        if self.acting:
            return
        if intent == "transfer":
            self.act("transfer", "speech:%s" % word)
        elif intent == "hangup":
            self.act("hangup", "speech:%s" % word)
        elif final:
            interrupted = self.onset_pending
            self.onset_pending = None
            if ev["text"] or interrupted is not None:
                self.speak(speech.NOT_UNDERSTOOD)
            elif self.prompt is None or self.prompt.done or self.prompt.cleared:
                self.start_silence()

    # -- DTMF
    def on_dtmf(self, msg):
        digit = str((msg.get("dtmf") or {}).get("digit", ""))
        self.log("dtmf", digit=digit)
        if self.acting or not digit:
            return
        self.no_input = 0
        self.cancel_silence()
        p = self.prompt
        if p is not None and p.interruptible and not p.done and not p.cleared:
            self.clear_prompt()
            self.log("barge_in", cause="dtmf", prompt=p.text[:40], clear_t=self.t())
        if digit == "0":
            self.cancel_digits()
            self.act("transfer", "dtmf:0")
            return
        if digit == "#":
            self.cancel_digits()
            self.read_back()
            return
        self.digits += digit
        self.cancel_digits(keep=True)
        self.digit_task = self.spawn(self._digit_timer())

    async def _digit_timer(self):
        await asyncio.sleep(DIGIT_TIMEOUT_S)
        self.digit_task = None
        self.read_back()

    def read_back(self):
        if not self.digits:
            return
        names = {"*": "star", "#": "hash"}
        spoken = " ".join(names.get(d, speech.DIGIT_WORDS[int(d)] if d.isdigit() else d)
                          for d in self.digits)
        self.digits = ""
        self.speak("You pressed %s." % spoken)

    def cancel_digits(self, keep=False):
        if self.digit_task is not None:
            self.digit_task.cancel()
            self.digit_task = None
        if not keep:
            self.digits = ""

    # -- silence
    def start_silence(self):
        self.cancel_silence()
        if not self.acting and not self.closed:
            self.silence_task = self.spawn(self._silence_timer())

    def cancel_silence(self):
        if self.silence_task is not None:
            self.silence_task.cancel()
            self.silence_task = None

    async def _silence_timer(self):
        await asyncio.sleep(SILENCE_TIMEOUT_S)
        self.silence_task = None
        if self.caller_speaking or self.acting or self.digits:
            return
        self.no_input += 1
        if self.no_input == 1:
            self.speak(speech.STILL_THERE)
        else:
            self.act("transfer", "silence")

    # -- speaking
    def speak(self, text, interruptible=True, then=None):
        """Queue TEXT: media faster than real time, then a mark; `then` runs when the mark
        comes back (the audio was played)."""
        if self.prompt is not None and not self.prompt.done and not self.prompt.cleared:
            self.clear_prompt()
        self.cancel_silence()
        self.prompt_seq += 1
        p = Prompt(self.prompt_seq, text, interruptible, then)
        self.prompt = p
        p.task = self.spawn(self._send_prompt(p))
        return p

    async def _send_prompt(self, p):
        data = await asyncio.to_thread(self.bot.tts.ulaw, p.text)
        if p.cleared or self.closed:
            return
        p.seconds = len(data) / speech.RATE
        self.log("said", text=p.text, prompt=p.id, seconds=round(p.seconds, 2))
        chunk = int(self.bot.chunk_ms * speech.RATE / 1000)
        start = time.monotonic()
        sent = 0
        for off in range(0, len(data), chunk):
            if p.cleared or self.closed:
                return
            await self.send({"event": "media", "streamSid": self.stream_sid,
                             "media": {"payload": base64.b64encode(
                                 data[off:off + chunk]).decode("ascii")}})
            sent += min(chunk, len(data) - off)
            # pace at `pace` x real time, with the first `lead` seconds sent at once
            due = start + max(0.0, sent / speech.RATE - self.bot.lead_s) / self.bot.pace
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if p.cleared or self.closed:
            return
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": p.mark}})
        # if the mark never comes back, go on anyway once the audio must have been played
        p.timeout = self.spawn(self._mark_timeout(p, start + p.seconds + 3.0 - time.monotonic()))

    async def _mark_timeout(self, p, delay):
        await asyncio.sleep(max(0.0, delay))
        if not p.done and not p.cleared:
            self.log("error", error="mark %s not returned" % p.mark)
            self.prompt_done(p)

    def on_mark(self, msg):
        name = (msg.get("mark") or {}).get("name")
        p = self.prompt
        if p is None or name != p.mark or p.cleared or p.done:
            return
        self.prompt_done(p)

    def prompt_done(self, p):
        p.done = True
        if p.timeout is not None:
            p.timeout.cancel()
        if p.then is not None:
            p.then()
        elif not self.caller_speaking and not self.digits:
            self.start_silence()

    def clear_prompt(self):
        p = self.prompt
        if p is None:
            return
        p.cleared = True
        if p.task is not None:
            p.task.cancel()
        if p.timeout is not None:
            p.timeout.cancel()
        self.spawn(self.send({"event": "clear", "streamSid": self.stream_sid}))

    # -- actions
    def act(self, action, reason):
        if self.acting:
            return
        self.acting = True
        self.cancel_silence()
        self.cancel_digits()
        text = speech.TRANSFERRING if action == "transfer" else speech.GOODBYE
        self.speak(text, interruptible=False,
                   then=lambda: self.spawn(self._do_action(action, reason)))

    async def _do_action(self, action, reason):
        msg = {"event": action, "streamSid": self.stream_sid}
        await self.send(msg)
        self.log("action", action=action, reason=reason)
        self.close_task = self.spawn(self._close_later())

    async def _close_later(self):
        await asyncio.sleep(ACTION_CLOSE_S)
        self.log("error", error="no stop %.0f s after the action: closing" % ACTION_CLOSE_S)
        await self.ws.close(1000)


class Bot:
    def __init__(self, args):
        self.log = Log(args.log)
        self.tts = Tts(args.voice, args.speed)
        self.asr = None
        self.workers = args.workers
        self.pace = args.pace
        self.lead_s = args.lead
        self.chunk_ms = args.chunk_ms

    def warm_up(self):
        t = time.perf_counter()
        speech.check_tools()
        for text in (speech.GREETING, speech.TRANSFERRING, speech.GOODBYE, speech.STILL_THERE,
                     speech.NOT_UNDERSTOOD):
            self.tts.ulaw(text)
        tts_s = time.perf_counter() - t
        t = time.perf_counter()
        self.asr = AsrPool(asyncio.get_running_loop(), self.log, self.workers)
        if not self.asr.wait_ready():
            raise SystemExit("recognition workers did not start")
        dec_s = time.perf_counter() - t
        self.log.write({"event": "ready", "pid": os.getpid(), "tts_s": round(tts_s, 3),
                        "asr_workers_s": round(dec_s, 3), "workers": self.workers,
                        "voice": self.tts.voice})

    async def handler(self, ws):
        await Call(self, ws).run()


async def serve(args):
    from websockets.asyncio.server import serve as ws_serve
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    bot = Bot(args)
    bot.warm_up()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or
                                                      stop.set_result(None))
    try:
        async with ws_serve(bot.handler, host or "127.0.0.1", int(port), max_size=2 ** 20,
                            ping_interval=None):
            bot.log.write({"event": "listening", "listen": args.listen})
            await stop
    finally:
        bot.asr.shutdown()
        bot.log.write({"event": "exit"})


def main():
    ap = argparse.ArgumentParser(description="talk bot: Twilio Media Streams WebSocket server")
    ap.add_argument("--listen", default="127.0.0.1:8765", help="HOST:PORT (default %(default)s)")
    ap.add_argument("--log", default=None, help="JSON-lines log file (default: stdout)")
    ap.add_argument("--voice", default=speech.DEFAULT_BOT_VOICE, help="espeak-ng voice")
    ap.add_argument("--speed", type=int, default=165, help="espeak-ng words per minute")
    ap.add_argument("--pace", type=float, default=2.0,
                    help="audio is sent this many times faster than real time (default 2)")
    ap.add_argument("--lead", type=float, default=0.2,
                    help="seconds of audio sent at once before pacing starts (default 0.2)")
    ap.add_argument("--chunk-ms", type=int, default=20, help="audio per media message")
    ap.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                    help="recognition processes (default: CPUs, at most 4)")
    args = ap.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
