#!/usr/bin/env python3
"""Self-test of the talk bot without voicebot1: a fake Twilio telephony side.

Starts bot.py on a free loopback port, places calls as voicebot1 would (connected, start, 20 ms
mu-law media in real time, dtmf, marks answered when the queued audio has been "played", clear
honoured, stop then close after a transfer or hangup), records what the caller hears, and checks:

  - the greeting, as heard by the caller, is recognised as containing "voicebot one" / "agent";
  - "I want to talk to an agent" -> transfer within 2 s of the word's end; "goodbye" -> hangup;
    DTMF 0 -> transfer; DTMF 4 2 -> "you pressed four two" read back;
  - caller speech during the greeting -> `clear` within 200 ms of the speech onset (several
    onsets and voices), and the bot's own measurement agrees;
  - a silent line with noise: no false barge-in, "Are you still there?" after 10 s, transfer
    after another 10 s;
  - no error in the bot's log.

Then prints recognition accuracy per demo phrase and voice (speech.py bench) unless --no-bench.

  python selftest.py [--no-bench] [--keep DIR]
Exit status 0 when every check passed.
"""

import argparse
import asyncio
import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import speech  # noqa: E402

FRAME_S = speech.FRAME_MS / 1000.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class FakeCall:
    """voicebot1's side of one call, in the Twilio dialect."""

    def __init__(self, name, url, caller_pcm, dtmf=(), max_s=30.0, delay=0.0):
        self.name = name
        self.delay = delay            # seconds to wait before calling
        self.url = url
        self.caller = speech.encode(caller_pcm, "ulaw")
        self.dtmf = sorted(dtmf)
        self.max_s = max_s
        self.call_id = "%s-%s" % (name, secrets.token_hex(3))
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.events = []              # (t, event dict) received from the bot
        self.queue = []               # bytes or ("mark", name)
        self.heard = bytearray()      # what the caller hears, one 160-byte frame per tick
        self.ticks = []               # monotonic time (rel. t0) of each tick
        self.late_max = 0.0           # how late this fake caller itself sent a frame, at worst
        self.marks_answered = []      # (t, name, how)
        self.clears = []
        self.action = None            # (t, event)
        self.done = asyncio.Event()
        self.errors = []

    def t(self):
        return time.monotonic() - self.t0

    async def run(self):
        from websockets.asyncio.client import connect
        await asyncio.sleep(self.delay)
        async with connect(self.url, max_size=2 ** 22) as ws:
            self.ws = ws
            await ws.send(json.dumps({"event": "connected", "protocol": "Call",
                                      "version": "1.0.0"}))
            await ws.send(json.dumps({
                "event": "start", "sequenceNumber": "1", "streamSid": self.stream_sid,
                "start": {"accountSid": "AC" + secrets.token_hex(16),
                          "streamSid": self.stream_sid, "callSid": "CA" + secrets.token_hex(16),
                          "tracks": ["inbound"],
                          "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                          "channels": 1},
                          "customParameters": {"bot": "talk", "call_id": self.call_id,
                                               "caller_number": "100", "caller_name": "selftest",
                                               "exten": "800"}}}))
            self.t0 = time.monotonic()
            self.epoch0 = time.time()
            self.seq = 1
            recv = asyncio.ensure_future(self.receive())
            try:
                await self.tick_loop()
            finally:
                recv.cancel()

    async def send(self, msg):
        self.seq += 1
        msg["sequenceNumber"] = str(self.seq)
        await self.ws.send(json.dumps(msg))

    async def receive(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                now = self.t()
                ev = msg.get("event")
                self.events.append((now, msg))
                if msg.get("streamSid") != self.stream_sid:
                    self.errors.append("wrong streamSid in %s" % ev)
                if ev == "media":
                    self.queue.append(base64.b64decode(msg["media"]["payload"]))
                elif ev == "mark":
                    self.queue.append(("mark", msg["mark"]["name"]))
                elif ev == "clear":
                    self.clears.append(now)
                    pending = [q for q in self.queue if isinstance(q, tuple)]
                    self.queue = []
                    for _, name in pending:
                        await self.answer_mark(name, "cleared")
                elif ev in ("transfer", "hangup"):
                    if self.action is None:
                        self.action = (now, msg)
                        self.done.set()
        except Exception as exc:  # noqa: BLE001
            if self.action is None:
                self.errors.append("receive: %r" % exc)
            self.done.set()

    async def answer_mark(self, name, how):
        self.marks_answered.append((self.t(), name, how))
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def tick_loop(self):
        n_frames = len(self.caller) // speech.FRAME
        k = 0
        dtmf = list(self.dtmf)
        buf = b""
        while True:
            # frame k of the caller holds stream time [k*20, k*20+20) ms: send it when complete
            due = self.t0 + (k + 1) * FRAME_S
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.late_max = max(self.late_max, time.monotonic() - due)
            if self.done.is_set() or (k + 1) * FRAME_S > self.max_s:
                break
            payload = (self.caller[k * speech.FRAME:(k + 1) * speech.FRAME] if k < n_frames
                       else bytes([0xFF]) * speech.FRAME)
            await self.send({"event": "media", "streamSid": self.stream_sid,
                             "media": {"track": "inbound", "chunk": str(k + 1),
                                       "timestamp": str(k * speech.FRAME_MS),
                                       "payload": base64.b64encode(payload).decode()}})
            while dtmf and dtmf[0][0] <= (k + 1) * FRAME_S:
                _, digit = dtmf.pop(0)
                await self.send({"event": "dtmf", "streamSid": self.stream_sid,
                                 "dtmf": {"track": "inbound_track", "digit": digit}})
            # play 20 ms of the bot's queue to the caller
            while len(buf) < speech.FRAME and self.queue:
                head = self.queue[0]
                if isinstance(head, tuple):
                    if buf:
                        break
                    self.queue.pop(0)
                    await self.answer_mark(head[1], "played")
                    continue
                buf += self.queue.pop(0)
            frame, buf = buf[:speech.FRAME], buf[speech.FRAME:]
            self.heard += frame + bytes([0xFF]) * (speech.FRAME - len(frame))
            self.ticks.append(self.t())
            while not buf and self.queue and isinstance(self.queue[0], tuple):
                await self.answer_mark(self.queue.pop(0)[1], "played")
            k += 1
        # the call leaves the bot: stop, then close 1000 (as voicebot1 does)
        try:
            await self.send({"event": "stop", "streamSid": self.stream_sid,
                             "stop": {"accountSid": "AC0", "callSid": "CA0"}})
            await asyncio.sleep(0.05)
            await self.ws.close(1000)
        except Exception:  # noqa: BLE001
            pass

    def heard_pcm(self, t_from=0.0, t_to=None):
        pcm = speech.decode(bytes(self.heard), "ulaw")
        a = int(t_from * speech.RATE)
        b = len(pcm) if t_to is None else int(t_to * speech.RATE)
        return pcm[a:b]

    def write_pcap(self, path, caller=("127.0.0.1", 6000), bot=("127.0.0.1", 6002)):
        """Both directions as RTP (mu-law), as a capture at the caller would hold them: what the
        caller sent (caller -> bot) and what it heard (bot -> caller), at the tick times."""
        pk = []
        for k, t in enumerate(self.ticks):
            sent = (self.caller[k * speech.FRAME:(k + 1) * speech.FRAME]
                    if (k + 1) * speech.FRAME <= len(self.caller) else bytes([0xFF]) * speech.FRAME)
            pk.append((self.epoch0 + t, caller, bot,
                       speech.rtp_packet(sent, k, k * speech.FRAME, 0x11110000, 0)))
            pk.append((self.epoch0 + t + 0.0001, bot, caller,
                       speech.rtp_packet(bytes(self.heard[k * speech.FRAME:(k + 1) * speech.FRAME]),
                                         k, k * speech.FRAME, 0x22220000, 0)))
        speech.write_pcap(path, pk)

    def said_times(self):
        """(t, mark name) of marks the bot's audio reached."""
        return [(t, n) for t, n, how in self.marks_answered if how == "played"]


class Checks:
    def __init__(self):
        self.results = []

    def check(self, name, ok, detail=""):
        self.results.append((name, bool(ok), detail))
        print("%s  %s%s" % ("PASS" if ok else "FAIL", name, ("  (%s)" % detail) if detail else ""),
              flush=True)

    @property
    def failed(self):
        return [r for r in self.results if not r[1]]


def cli_energy(python, pcap, *args):
    out = subprocess.run([python, os.path.join(HERE, "speech.py"), "energy", pcap, "--json"] +
                         list(args), stdout=subprocess.PIPE, check=True).stdout
    res = json.loads(out)
    st = res["streams"][0]
    return {"t0": res["t0"], "onset": st.get("onset"), "stop": st.get("stop")}


def bot_log(path):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                recs.append(json.loads(line))
    return recs


async def run_calls(url, calls):
    await asyncio.gather(*(c.run() for c in calls), return_exceptions=False)


def phrase_audio(script, length, voice, noise=None, speed=150):
    pcm, info = speech.build_caller_audio(script, length, voice=voice, speed=speed, noise_db=noise)
    return pcm, info


def main():
    ap = argparse.ArgumentParser(description="talk bot self-test (no voicebot1 needed)")
    ap.add_argument("--no-bench", action="store_true", help="skip the recognition benchmark")
    ap.add_argument("--bench-voices", default="en-us+klatt4,en-us+klatt,en-us+adam,en-us,en-us+m3")
    ap.add_argument("--keep", help="keep the bot log and heard audio in this directory")
    ap.add_argument("--python", default=sys.executable)
    a = ap.parse_args()
    speech.check_tools()
    work = a.keep or tempfile.mkdtemp(prefix="talk-selftest-")
    os.makedirs(work, exist_ok=True)
    log_path = os.path.join(work, "bot.jsonl")
    if os.path.exists(log_path):
        os.unlink(log_path)
    port = free_port()
    url = "ws://127.0.0.1:%d" % port
    t = time.perf_counter()
    bot = subprocess.Popen([a.python, os.path.join(HERE, "bot.py"), "--listen",
                            "127.0.0.1:%d" % port, "--log", log_path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for _ in range(200):
        if os.path.exists(log_path) and '"listening"' in open(log_path).read():
            break
        if bot.poll() is not None:
            print(bot.stdout.read().decode(errors="replace"))
            raise SystemExit("bot exited at start-up")
        time.sleep(0.05)
    boot_s = time.perf_counter() - t
    checks = Checks()
    voice = speech.DEFAULT_CALLER_VOICE
    try:
        calls = {}
        # functional scenarios
        pcm, info = phrase_audio([(6.0, "I want to talk to an agent")], 14, voice)
        calls["agent"] = (FakeCall("agent", url, pcm, max_s=14), info)
        pcm, info = phrase_audio([(9.0, "goodbye")], 14, voice)
        calls["goodbye"] = (FakeCall("goodbye", url, pcm, max_s=14), info)
        pcm, info = phrase_audio([], 14, voice)
        calls["dtmf0"] = (FakeCall("dtmf0", url, pcm, dtmf=[(9.0, "0")], max_s=14), info)
        calls["dtmf42"] = (FakeCall("dtmf42", url, pcm, dtmf=[(9.0, "4"), (9.4, "2")],
                                    max_s=14), info)
        pcm, info = phrase_audio([(9.0, "hello is anyone there")], 16, voice)
        calls["other"] = (FakeCall("other", url, pcm, max_s=16), info)
        pcm, info = phrase_audio([], 36, voice, noise=-50)
        calls["silence"] = (FakeCall("silence", url, pcm, max_s=36), info)
        # barge-in during the greeting: several onsets and voices
        barge = [(1.5, "I would like to speak to an operator", voice),
                 (2.0, "operator", "en-us+klatt"), (2.7, "agent please", "en-us+adam"),
                 (3.3, "goodbye", voice), (4.1, "can i talk to a person please", "en-us+klatt2")]
        for i, (at, text, v) in enumerate(barge):
            pcm, info = phrase_audio([(at, text)], at + 8, v, noise=-60 if i % 2 else None)
            calls["barge%d" % i] = (FakeCall("barge%d" % i, url, pcm, max_s=at + 8, delay=17.0),
                                    info)
        print("placing %d calls to %s (bot up in %.2f s): 6 at once, 5 barge-in calls 17 s later"
              % (len(calls), url, boot_s), flush=True)
        t = time.perf_counter()
        asyncio.run(run_calls(url, [c for c, _ in calls.values()]))
        print("calls done in %.1f s" % (time.perf_counter() - t), flush=True)
        time.sleep(0.5)
    finally:
        bot.terminate()
        try:
            bot.wait(5)
        except subprocess.TimeoutExpired:
            bot.kill()
    log = bot_log(log_path)
    by_call = {}
    for r in log:
        by_call.setdefault(r.get("call_id"), []).append(r)

    def blog(call):
        return by_call.get(call.call_id, [])

    late = max(c.late_max for c, _ in calls.values())
    print("fake callers ran at worst %.0f ms late; load average %s on %d CPUs" % (
        late * 1000, " ".join("%.1f" % x for x in os.getloadavg()), os.cpu_count() or 0))
    if late > 0.1:
        print("WARNING: this machine is overloaded: the fake telephony side itself fell behind "
              "real time, so the timing checks below measure the machine, not the bot")
    for name, (c, _) in calls.items():
        if c.errors:
            checks.check("%s: telephony side saw no protocol error" % name, False,
                         "; ".join(c.errors))
        if a.keep:
            speech.write_wav(os.path.join(work, "%s-heard.wav" % name), c.heard_pcm())

    # greeting as heard by the caller
    c = calls["dtmf0"][0]
    first_mark = next((t for t, n, how in c.marks_answered if n == "p1"), None)
    greet = c.heard_pcm(0, first_mark)
    finals, _ = speech.recognize_pcm(greet)
    heard = " ".join(f["text"] for f in finals)
    checks.check("greeting heard by the caller is recognised with 'voicebot one' and 'agent'",
                 "voicebot one" in heard and "agent" in heard.split(), heard)

    # agent -> transfer within 2 s of the word's end
    c, info = calls["agent"]
    word_end = info[0]["speech_end"]
    ok = c.action is not None and c.action[1]["event"] == "transfer" \
        and "transfer" not in c.action[1]
    lag = (c.action[0] - word_end) if c.action else None
    heard_rec = [r for r in blog(c) if r["event"] == "heard" and "lag_ms" in r]
    checks.check("'I want to talk to an agent' -> transfer (no 'to')", ok,
                 "action %s" % (c.action[1] if c.action else None))
    checks.check("transfer within 2 s of the word's end", lag is not None and lag <= 2.0,
                 "word end %.2f s, transfer at %.2f s: %.2f s; recognised %s ms after the word" % (
                     word_end, c.action[0], lag,
                     heard_rec[0]["lag_ms"] if heard_rec else "?") if lag is not None else "")

    c, info = calls["goodbye"]
    ok = c.action is not None and c.action[1]["event"] == "hangup"
    checks.check("'goodbye' -> hangup", ok, "%.2f s after the word" % (
        c.action[0] - info[0]["speech_end"]) if ok else str(c.action))

    c, _ = calls["dtmf0"]
    ok = c.action is not None and c.action[1]["event"] == "transfer"
    checks.check("DTMF 0 -> transfer", ok, "%.2f s after the digit" % (c.action[0] - 9.0)
                 if ok else str(c.action))

    c, _ = calls["dtmf42"]
    said = [r["text"] for r in blog(c) if r["event"] == "said"]
    readback = c.heard_pcm(9.4)
    finals, _ = speech.recognize_pcm(readback)
    heard = " ".join(f["text"] for f in finals)
    checks.check("DTMF 4 2 -> 'You pressed four two.' said and heard", "You pressed four two."
                 in said and "pressed four two" in heard, "heard: %s" % heard)

    c, _ = calls["other"]
    said = [r["text"] for r in blog(c) if r["event"] == "said"]
    checks.check("other speech -> no action, 'Sorry, I did not understand'",
                 c.action is None and speech.NOT_UNDERSTOOD in said, "; ".join(
                     r.get("text", "") for r in blog(c) if r["event"] == "heard"))

    c, _ = calls["silence"]
    recs = blog(c)
    said = [(r["t"], r["text"]) for r in recs if r["event"] == "said"]
    acts = [r for r in recs if r["event"] == "action"]
    false = [r for r in recs if r["event"] in ("barge_in", "heard")]
    checks.check("silent line with -50 dBFS noise: no barge-in, nothing heard", not false,
                 str(false[:2]))
    ok = (len(said) >= 3 and said[1][1] == speech.STILL_THERE and acts
          and acts[0]["reason"] == "silence")
    greet_end = next((t for t, n, how in c.marks_answered if n == "p1"), 0.0)
    still_mark = next((t for t, n, how in c.marks_answered if n == "p2"), 0.0)
    checks.check("silence: 'Are you still there?' after 10 s, transfer after another 10 s", ok,
                 "greeting ended %.1f s, asked at %.1f s, transfer at %.1f s" % (
                     greet_end, said[1][0] / 1000.0 if len(said) > 1 else -1,
                     c.action[0] if c.action else -1) if ok else str(said))
    if ok:
        checks.check("silence timings are 10 s each (+-0.5 s)",
                     abs(said[1][0] / 1000.0 - greet_end - 10) < 0.5 and
                     abs(said[2][0] / 1000.0 - still_mark - 10) < 0.5,
                     "%.2f s and %.2f s" % (said[1][0] / 1000.0 - greet_end,
                                            said[2][0] / 1000.0 - still_mark))

    # barge-in
    figures = []
    cli_figures = []
    for i, (at, text, v) in enumerate(barge):
        c, info = calls["barge%d" % i]
        onset = info[0]["speech_start"]
        clear = next((t for t in c.clears if t >= onset - 0.2), None)
        # the moment the caller's received audio goes quiet (energy, as CI measures it)
        en = [(k * FRAME_S, speech.dbfs(c.heard_pcm(k * FRAME_S, (k + 1) * FRAME_S)))
              for k in range(len(c.heard) // speech.FRAME)]
        quiet = speech.stop_after(en, onset)  # hold 0.3 s, as `speech.py energy`
        b = [r for r in blog(c) if r["event"] == "barge_in"]
        bot_lat = b[0].get("latency_ms") if b else None
        # the same measured on a capture with speech.py's command line, as CI will do
        pcap = os.path.join(work, "barge%d.pcap" % i)
        c.write_pcap(pcap)
        cli_onset = cli_energy(a.python, pcap, "--src-port", "6000", "--onset-after", "0.5")
        cli_stop = (cli_energy(a.python, pcap, "--dst-port", "6000", "--stop-after",
                               str(cli_onset["onset"]))["stop"] if cli_onset["onset"] is not None
                    else None)
        cli_figures.append((text, cli_onset["onset"], cli_stop, cli_onset["t0"]))
        figures.append((text, v, onset, clear, quiet, bot_lat, c.action))
        lat = (clear - onset) * 1000 if clear is not None else None
        checks.check("barge-in at %.2f s (%s, %r): clear within 200 ms of onset" % (onset, v, text),
                     lat is not None and lat <= 200,
                     "clear %s ms after onset; bot measured %s ms; caller's audio quiet %s ms "
                     "after onset; then %s" % (
                         "%.0f" % lat if lat is not None else "-", bot_lat,
                         "%.0f" % ((quiet - onset) * 1000) if quiet is not None else "-",
                         c.action[1]["event"] if c.action else "no action"))
        expect = "hangup" if "goodbye" in text else "transfer"
        checks.check("barge-in %d: %r -> %s" % (i, text, expect),
                     c.action is not None and c.action[1]["event"] == expect,
                     str(c.action[1] if c.action else None))

    for (text, onset, stop, _), (_, v, true_onset, *_rest) in zip(cli_figures, figures):
        lat = (stop - onset) * 1000 if onset is not None and stop is not None else None
        checks.check("capture of %r: `speech.py energy` finds the onset (%s s vs %.2f s) and the "
                     "bot's audio quiet within 200 ms" % (text, onset, true_onset),
                     lat is not None and lat <= 200 and abs(onset - true_onset) <= 0.06,
                     "quiet %s ms after the onset" % ("%.0f" % lat if lat is not None else "-"))
    c = calls["barge0"][0]
    out = subprocess.run([a.python, os.path.join(HERE, "speech.py"), "recognize",
                          os.path.join(work, "barge0.pcap"), "--json"],
                         stdout=subprocess.PIPE, check=True).stdout
    rec = {s_["stream"]: " / ".join(p["text"] for p in s_["phrases"])
           for s_ in json.loads(out)["streams"]}
    sent = rec.get("127.0.0.1:6000 > 127.0.0.1:6002", "")
    got = rec.get("127.0.0.1:6002 > 127.0.0.1:6000", "")
    checks.check("`speech.py recognize` on the capture: caller said 'operator', caller heard "
                 "'hello' and 'transferring'", "operator" in sent.split() and
                 "hello" in got and "transferring" in got,
                 "sent: %s | heard: %s" % (sent, got))

    errors = [r for r in log if r["event"] == "error"]
    checks.check("no error in the bot log", not errors, json.dumps(errors[:2])[:600])
    ends = [r for r in log if r["event"] == "end"]
    cpu = sum(r["asr_cpu_s"] for r in ends)
    audio = sum(r["audio_s"] for r in ends)
    asr = [r for r in log if r["event"] == "asr"]
    ready = next((r for r in log if r["event"] == "ready"), {})
    print("\nbot: start-up: prompts synthesised in %.3f s, %s recognition processes ready in "
          "%.3f s; per call, decoder ready in %s ms" % (
              ready.get("tts_s", -1), ready.get("workers"), ready.get("asr_workers_s", -1),
              sorted(r["decoder_ms"] for r in asr)))
    print("bot: recognition CPU %.3f s per second of caller audio (%.0f s over %d calls at once)"
          % (cpu / max(audio, 1e-9), audio, len(ends)))
    first = {}
    for r in log:
        if r["event"] == "heard" and r.get("lag_ms") is not None:
            first.setdefault(r["call_id"], r["lag_ms"])
    lags = sorted(first.values())
    if lags:
        print("bot: keyword recognised %s ms after the word's end (first 'heard' with a keyword "
              "per call)" % sorted(lags))
    print("barge-in (onset -> clear at the caller / bot's own figure / caller's audio quiet):")
    for text, v, onset, clear, quiet, bot_lat, _ in figures:
        print("  %-14s %-40r onset %.2f s: clear +%s ms, bot %s ms, quiet +%s ms" % (
            v, text, onset, "%.0f" % ((clear - onset) * 1000) if clear is not None else "-",
            bot_lat, "%.0f" % ((quiet - onset) * 1000) if quiet is not None else "-"))

    if not a.no_bench:
        print("\nrecognition of the demo phrases through G.711 mu-law (what the bot gets), "
              "5 speeds x 2 pitches per voice:", flush=True)
        t = time.perf_counter()
        speech.new_decoder()
        start_s = time.perf_counter() - t
        table, fig = speech.bench(voices=a.bench_voices.split(","))
        speech.print_bench(table, fig, start_s)
    n_fail = len(checks.failed)
    print("\n%d passed, %d failed" % (len(checks.results) - n_fail, n_fail))
    print("log: %s" % log_path)
    sys.exit(1 if n_fail else 0)


if __name__ == "__main__":
    main()
