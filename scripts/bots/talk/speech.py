#!/usr/bin/env python3
"""Offline speech tools for voicebot1's talk bot: TTS, G.711, RTP pcaps, recognition.

Command line (run with the talk bot's venv python; needs the Debian packages espeak-ng and sox):

  speech.py say TEXT --voice V --out FILE.wav          espeak-ng + sox -> 8 kHz mono 16-bit WAV
  speech.py caller-pcap --out F.pcap --script "3.0:I want to talk to an agent" [--length S]
                                                       a pcap SIPp replays with play_pcap_audio
  speech.py recognize FILE.pcap|FILE.wav [--port P]    what pocketsphinx hears, with times
  speech.py energy FILE.pcap --port P [--onset-after T | --stop-after T]
                                                       per-packet dBFS, onset / stop times
  speech.py bench                                      recognition accuracy of the demo phrases
                                                       over espeak voices and speeds

Everything here is importable too: synth(), ulaw/alaw codecs, Recognizer, SpeechDetector,
read_pcap_streams(), write_rtp_pcap().

Times printed by `recognize` and `energy` for a pcap are seconds since the FIRST PACKET OF THE
CAPTURE FILE (any packet), so two streams of one capture (what a caller sent, what it received)
share one time base; `--json` also gives that packet's epoch time (t0).
"""

import argparse
import collections
import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave

import numpy as np

RATE = 8000            # telephone sample rate
FRAME = 160            # samples per 20 ms packet at 8 kHz
FRAME_MS = 20

# --------------------------------------------------------------------------------------------
# G.711 (ITU-T G.711 as in the classic Sun g711.c), vectorised with numpy lookup tables


def _ulaw_to_linear(u):
    u = ~u & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return (0x84 - t) if (u & 0x80) else (t - 0x84)


def _alaw_to_linear(a):
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


_SEG_END = (0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF)
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _seg(val, table):
    for i, end in enumerate(table):
        if val <= end:
            return i
    return len(table)


def _linear_to_ulaw(pcm):
    pcm >>= 2                       # 14-bit
    if pcm < 0:
        pcm = -pcm
        mask = 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, 8159) + (0x84 >> 2)
    seg = _seg(pcm, (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask


def _linear_to_alaw(pcm):
    pcm >>= 3                       # 13-bit
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = _seg(pcm, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= ((pcm >> 1) if seg < 2 else (pcm >> seg)) & 0x0F
    return aval ^ mask


ULAW_DECODE = np.array([_ulaw_to_linear(i) for i in range(256)], dtype=np.int16)
ALAW_DECODE = np.array([_alaw_to_linear(i) for i in range(256)], dtype=np.int16)
_ENCODE = {}
_ENCODE_LOCK = threading.Lock()
SILENCE_BYTE = {"ulaw": 0xFF, "alaw": 0xD5}
PAYLOAD_TYPE = {"ulaw": 0, "alaw": 8}


def _encode_table(codec):
    with _ENCODE_LOCK:
        table = _ENCODE.get(codec)
        if table is None:
            f = _linear_to_ulaw if codec == "ulaw" else _linear_to_alaw
            table = np.array([f(v) for v in range(-32768, 32768)], dtype=np.uint8)
            _ENCODE[codec] = table
        return table


def encode(pcm, codec="ulaw"):
    """int16 samples -> G.711 bytes."""
    pcm = np.asarray(pcm, dtype=np.int16)
    return _encode_table(codec)[pcm.astype(np.int32) + 32768].tobytes()


def decode(data, codec="ulaw"):
    """G.711 bytes -> int16 samples."""
    table = ULAW_DECODE if codec == "ulaw" else ALAW_DECODE
    return table[np.frombuffer(data, dtype=np.uint8)]


def dbfs(pcm):
    """RMS level of int16 samples in dB relative to a full-scale square wave (-96 for zeros)."""
    x = np.asarray(pcm, dtype=np.float64)
    if x.size == 0:
        return -96.0
    rms = math.sqrt(float(np.mean(x * x)))
    return 20 * math.log10(max(rms, 0.5) / 32768.0)


# --------------------------------------------------------------------------------------------
# Text to speech: espeak-ng, resampled by sox

DEFAULT_BOT_VOICE = "en-us+klatt"
DEFAULT_CALLER_VOICE = "en-us+klatt4"


def check_tools():
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise SystemExit("missing %s: apt-get install espeak-ng sox" % " and ".join(missing))


def synth(text, voice=DEFAULT_BOT_VOICE, speed=160, pitch=None, rate=RATE, peak_db=-3.0,
          trim=False):
    """Speak TEXT with espeak-ng; returns int16 mono samples at RATE, peak-normalised; with
    trim=True without espeak's leading and trailing silence (20 ms / 100 ms kept)."""
    espeak = ["espeak-ng", "-v", voice, "-s", str(int(speed)), "--stdout"]
    if pitch is not None:
        espeak += ["-p", str(int(pitch))]
    espeak += ["--", text]
    sox = ["sox", "-V1", "-D", "-t", "wav", "-", "-t", "raw", "-r", str(rate),
           "-e", "signed-integer", "-b", "16", "-c", "1", "-"]     # -D: no dither, same output
    p1 = subprocess.Popen(espeak, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p2 = subprocess.run(sox, stdin=p1.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            check=False)
    finally:
        p1.stdout.close()
        err1 = p1.stderr.read()
        p1.stderr.close()
        p1.wait()
    if p1.returncode != 0 or p2.returncode != 0:
        raise RuntimeError("tts failed: espeak-ng %s %s / sox %s %s" % (
            p1.returncode, err1.decode(errors="replace").strip(), p2.returncode,
            p2.stderr.decode(errors="replace").strip()))
    pcm = np.frombuffer(p2.stdout, dtype="<i2").astype(np.float64)
    peak = float(np.max(np.abs(pcm))) if pcm.size else 0.0
    if peak > 0 and peak_db is not None:
        pcm *= (32767.0 * 10 ** (peak_db / 20.0)) / peak
    pcm = np.clip(np.round(pcm), -32768, 32767).astype(np.int16)
    if trim:
        b = speech_bounds(pcm, threshold_db=-50.0, rate=rate)
        if b:
            pcm = pcm[max(0, int((b[0] - 0.02) * rate)):int((b[1] + 0.1) * rate)]
    return pcm


def speech_bounds(pcm, threshold_db=-45.0, rate=RATE):
    """(first, last) second of 10 ms blocks louder than threshold_db, or None."""
    n = rate // 100
    loud = [i for i in range(0, len(pcm) // n) if dbfs(pcm[i * n:(i + 1) * n]) > threshold_db]
    if not loud:
        return None
    return loud[0] / 100.0, (loud[-1] + 1) / 100.0


def write_wav(path, pcm, rate=RATE):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


def read_wav(path):
    """-> int16 samples at 8 kHz mono (other formats are converted with sox)."""
    with wave.open(path, "rb") as w:
        if w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getframerate() == RATE:
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    out = subprocess.run(["sox", "-V1", path, "-t", "raw", "-r", str(RATE), "-e", "signed-integer",
                          "-b", "16", "-c", "1", "-"], stdout=subprocess.PIPE, check=True).stdout
    return np.frombuffer(out, dtype="<i2").astype(np.int16)


# --------------------------------------------------------------------------------------------
# The bot's vocabulary and its tiny language model

GREETING = ("Hello, you are talking to voicebot one. Say agent, or press zero, to talk to a "
            "person. Say goodbye to hang up.")
TRANSFERRING = "Transferring you now."
GOODBYE = "Goodbye."
STILL_THERE = "Are you still there? Say agent to talk to a person."
NOT_UNDERSTOOD = ("Sorry, I did not understand. Say agent to talk to a person, or goodbye to "
                  "hang up.")

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

TRANSFER_WORDS = ("agent", "operator", "person", "representative")
HANGUP_WORDS = ("goodbye",)

# What the bot says and what callers are expected to say: the language model's sentences.
CORPUS = [
    GREETING, TRANSFERRING, GOODBYE, STILL_THERE, NOT_UNDERSTOOD,
    "you pressed zero one two three four five six seven eight nine",
    "i want to talk to an agent",
    "i want to talk to a person",
    "i would like to speak to an operator",
    "can i talk to a person please",
    "let me talk to a representative",
    "agent", "agent please", "operator", "operator please", "person", "a person please",
    "goodbye", "okay goodbye", "thank you goodbye", "bye bye", "goodbye thank you",
    "one two three", "four two", "yes", "no", "hello", "hello is anyone there",
    "yes i am still here", "no thank you",
    # everyday requests, so that "with my" is not heard as "goodbye"
    "i need help with my order", "help me with my card please", "i have a question about my phone",
    "i have a problem with my account", "i would like to check my order",
]

# ~100 common words so that other speech is heard as something else than a keyword.
FILLERS = """a about after again all also am an and any are as ask at back be because been
both but by call came can come could day did do does done down each even first for from get give
go going good got had has have he hear help her here him his how i i'm if in into is it its just
know last let like look make man many may me more most much must my need new no not now number of
off oh okay on only or other our out over please right said same say see she should so some still
take tell than thank thanks that the their them then there these they thing think this those time
to today too try two up us use very wait want was way we well were what when where which who why
will with work would yeah year yes you your account order money card phone check problem
question sorry um uh""".split()

EXTRA_PRONUNCIATIONS = {"voicebot": "V OY S B AA T"}


def normalise_words(text):
    out = []
    for w in text.lower().replace("-", " ").split():
        w = "".join(c for c in w if c.isalnum() or c == "'")
        if w.isdigit():
            out.extend(DIGIT_WORDS[int(d)] for d in w)
        elif w:
            out.append(w)
    return out


_MODEL_LOCK = threading.Lock()
_MODEL_FILES = None


def model_files():
    """Build (once per process) the tiny LM and the cut dictionary; returns (hmm, lm, dict)."""
    global _MODEL_FILES
    with _MODEL_LOCK:
        if _MODEL_FILES:
            return _MODEL_FILES
        from pocketsphinx import get_model_path
        from pocketsphinx.lm import ArpaBoLM
        sentences = [" ".join(normalise_words(s)) for s in CORPUS]
        vocab = set(w for s in sentences for w in s.split()) | set(FILLERS)
        text = "\n".join(sentences + FILLERS) + "\n"
        key = hashlib.sha1((text + repr(sorted(EXTRA_PRONUNCIATIONS.items())) +
                            get_model_path()).encode()).hexdigest()[:12]
        cache = os.path.join(tempfile.gettempdir(), "voicebot1-talk-%s-%d" % (key, os.getuid()))
        lm_path = os.path.join(cache, "talk.lm")
        dict_path = os.path.join(cache, "talk.dict")
        if not (os.path.exists(lm_path) and os.path.exists(dict_path)):
            os.makedirs(cache, exist_ok=True)
            lm = ArpaBoLM(text=text, add_start=True)
            lm.compute()
            tmp = lm_path + ".%d" % os.getpid()
            with open(tmp, "w") as f:
                lm.write(f)
            os.replace(tmp, lm_path)
            found = set()
            lines = []
            with open(get_model_path("en-us/cmudict-en-us.dict")) as f:
                for line in f:
                    word = line.split(" ", 1)[0]
                    base = word.split("(", 1)[0]
                    if base in vocab:
                        lines.append(line.rstrip("\n"))
                        found.add(base)
            for w, pron in EXTRA_PRONUNCIATIONS.items():
                if w in vocab and w not in found:
                    lines.append("%s %s" % (w, pron))
                    found.add(w)
            missing = vocab - found
            if missing:
                raise RuntimeError("no pronunciation for: %s" % " ".join(sorted(missing)))
            tmp = dict_path + ".%d" % os.getpid()
            with open(tmp, "w") as f:
                f.write("\n".join(lines) + "\n")
            os.replace(tmp, dict_path)
        _MODEL_FILES = (get_model_path("en-us/en-us"), lm_path, dict_path)
        return _MODEL_FILES


# Cepstral mean of G.711 speech upsampled to 16 kHz (espeak-ng voices, measured): the decoder
# starts each call from it instead of the model's wide-band default (40,3,-1,0,...), which the
# live CMN otherwise needs most of a first utterance to move away from.
PHONE_CMN = os.environ.get("TALK_CMN", "46,17,-26,26,-26,9,-11,-5,-3,-3,3,-1,1")


def reset_cmn(decoder, cmn=None):
    cmn = PHONE_CMN if cmn is None else cmn
    if cmn:
        decoder.set_cmn(cmn)


def new_decoder(general=False):
    """A pocketsphinx decoder on the tiny LM (or the general US-English LM with general=True)."""
    from pocketsphinx import Decoder
    if general:
        d = Decoder(samprate=16000, loglevel="FATAL")
    else:
        hmm, lm, dic = model_files()
        d = Decoder(hmm=hmm, lm=lm, dict=dic, samprate=16000, loglevel="FATAL")
    reset_cmn(d)
    return d


class DecoderPool:
    """Decoders are not thread-safe and take ~50 ms to build: one per call, reused afterwards."""

    def __init__(self, general=False):
        self.general = general
        self.free = []
        self.lock = threading.Lock()
        self.created = 0

    def get(self):
        with self.lock:
            if self.free:
                d = self.free.pop()
                reset_cmn(d)
                return d
            self.created += 1
        return new_decoder(self.general)

    def put(self, decoder):
        try:
            decoder.end_utt()
        except Exception:
            pass
        with self.lock:
            self.free.append(decoder)


# --------------------------------------------------------------------------------------------
# 8 -> 16 kHz upsampling (the model is a 16 kHz one; native 8 kHz decoding does not work)

def _halfband(taps=31):
    n = np.arange(taps) - (taps - 1) / 2.0
    h = np.sinc(n / 2.0) * np.kaiser(taps, 6.0)
    return h / h.sum() * 2.0


DITHER = float(os.environ.get("TALK_DITHER", "8"))


class Upsampler:
    """Streaming 2x interpolator: zero stuffing plus a windowed-sinc low-pass at 4 kHz, plus
    `dither` LSB (rms) of seeded white noise so that digital silence is not all zeros."""

    def __init__(self, dither=None):
        self.h = _halfband()
        self.tail = np.zeros(len(self.h) - 1)
        self.dither = DITHER if dither is None else dither
        self.rng = np.random.default_rng(12345)

    def process(self, pcm8):
        x = np.zeros(2 * len(pcm8))
        x[0::2] = pcm8
        buf = np.concatenate([self.tail, x])
        y = np.convolve(buf, self.h, mode="valid")
        self.tail = buf[-(len(self.h) - 1):]
        if self.dither:
            y = y + self.rng.standard_normal(len(y)) * self.dither
        return np.clip(np.round(y), -32768, 32767).astype("<i2")


# --------------------------------------------------------------------------------------------
# Speech detection on 20 ms frames: energy over an adaptive noise floor AND WebRTC's VAD

class SpeechDetector:
    """Per-frame speech decision for barge-in and for cutting utterances.

    A frame is speech when it is at least `snr_db` over the tracked noise floor, louder than
    `min_db`, and WebRTC's VAD (shipped in pocketsphinx) calls it speech. Speech starts (onset)
    when `onset_frames` of the last `window` frames are speech; the onset time is the first
    speech frame of those. It ends after `hang_frames` frames without speech.
    """

    def __init__(self, min_db=-50.0, snr_db=12.0, onset_frames=3, window=4, hang_frames=20,
                 vad_mode=2):
        from pocketsphinx import Vad
        self.vad = Vad(mode=vad_mode, sample_rate=RATE, frame_length=FRAME_MS / 1000.0)
        self.min_db = min_db
        self.snr_db = snr_db
        self.onset_frames = onset_frames
        self.window = window
        self.hang_frames = hang_frames
        self.floor = None
        self.recent = collections.deque(maxlen=window)   # (frame index, is_speech)
        self.in_speech = False
        self.quiet_run = 0
        self.n = 0
        self.last_db = -96.0

    def process(self, frame):
        """frame: 160 int16 samples. Returns (is_speech, event, event_frame_index) where event is
        None, "onset" (event frame = first speech frame) or "offset" (first quiet frame)."""
        idx = self.n
        self.n += 1
        e = dbfs(frame)
        self.last_db = e
        if self.floor is None:
            self.floor = min(e, -45.0)
        loud = e > max(self.min_db, self.floor + self.snr_db)
        speech = loud and self.vad.is_speech(np.asarray(frame, dtype="<i2").tobytes())
        # noise floor: follows quieter frames at once, creeps up 0.1 dB a frame (5 dB/s)
        if e < self.floor:
            self.floor = e
        elif not speech:
            self.floor += min(e - self.floor, 0.1)
        self.recent.append((idx, speech))
        event = None
        event_idx = None
        if not self.in_speech:
            hits = [i for i, s in self.recent if s]
            if len(hits) >= self.onset_frames:
                self.in_speech = True
                self.quiet_run = 0
                event, event_idx = "onset", hits[0]
        else:
            if speech:
                self.quiet_run = 0
            else:
                self.quiet_run += 1
                if self.quiet_run >= self.hang_frames:
                    self.in_speech = False
                    self.recent.clear()
                    event, event_idx = "offset", idx - self.hang_frames + 1
        return speech, event, event_idx


# --------------------------------------------------------------------------------------------
# Streaming recognizer: cuts utterances with SpeechDetector, decodes them with pocketsphinx

def _clean_word(w):
    if w.startswith("<") or w.startswith("[") or w in ("<s>", "</s>"):
        return None
    return w.split("(", 1)[0]


class Recognizer:
    """Feed 8 kHz int16 audio (any length); get events back, in stream milliseconds.

    Events (dicts):
      {"type": "onset", "ms": T}                       speech started at T
      {"type": "partial", "text": ..., "ms": T}        hypothesis so far, T = audio fed so far
      {"type": "final", "text": ..., "words": [{"word","start_ms","end_ms"}], "start_ms", "end_ms"}
    """

    PREROLL_FRAMES = int(os.environ.get("TALK_PREROLL", "8"))  # frames before the onset decision
    TAIL_FRAMES = int(os.environ.get("TALK_TAIL", "8"))      # quiet frames fed after speech
    PARTIAL_EVERY = 3         # frames (60 ms) between partial hypotheses
    MAX_UTT_FRAMES = 1000     # 20 s

    def __init__(self, decoder=None, detector=None, partials=True):
        self.dec = decoder if decoder is not None else new_decoder()
        self.det = detector if detector is not None else SpeechDetector()
        self.up = Upsampler()
        self.partials = partials
        self.pending = np.zeros(0, dtype=np.int16)
        self.pre = collections.deque(maxlen=self.PREROLL_FRAMES)   # (frame idx, 16 kHz bytes)
        self.quiet = []           # quiet frames inside an utterance past TAIL_FRAMES, held back
        self.in_utt = False
        self.utt_start_frame = 0
        self.utt_frames = 0
        self.since_partial = 0
        self.last_partial = ""
        self.frames = 0
        self.cpu = 0.0

    def feed(self, pcm8):
        t = time.thread_time()
        self.pending = np.concatenate([self.pending, np.asarray(pcm8, dtype=np.int16)])
        events = []
        while len(self.pending) >= FRAME:
            frame, self.pending = self.pending[:FRAME], self.pending[FRAME:]
            events.extend(self._frame(frame))
        self.cpu += time.thread_time() - t
        return events

    def _frame(self, frame):
        idx = self.frames
        self.frames += 1
        pcm16 = self.up.process(frame).tobytes()
        speech, event, ev_idx = self.det.process(frame)
        out = []
        if not self.in_utt:
            self.pre.append((idx, pcm16))
            if event == "onset":
                out.append({"type": "onset", "ms": ev_idx * FRAME_MS})
                self.in_utt = True
                self.utt_start_frame = self.pre[0][0]
                self.utt_frames = 0
                self.since_partial = 0
                self.last_partial = ""
                self.quiet = []
                self.quiet_run = 0
                self.dec.start_utt()
                for _, buf in self.pre:
                    self.dec.process_raw(buf, False, False)
                    self.utt_frames += 1
                self.pre.clear()
            return out
        # after TAIL_FRAMES quiet frames, hold quiet audio back: fed if speech resumes (a pause
        # inside the utterance), dropped if the utterance ends (the decoder hears no long
        # stretches of line noise, where it would insert words)
        if speech:
            self.quiet_run = 0
        else:
            self.quiet_run += 1
        if speech and self.quiet:
            for buf in self.quiet:
                self.dec.process_raw(buf, False, False)
            self.quiet = []
        if self.quiet_run > self.TAIL_FRAMES:
            self.quiet.append(pcm16)
        else:
            self.dec.process_raw(pcm16, False, False)
        self.utt_frames += 1
        self.since_partial += 1
        if event == "offset" or self.utt_frames >= self.MAX_UTT_FRAMES:
            out.append(self._end())
        elif self.partials and self.since_partial >= self.PARTIAL_EVERY:
            self.since_partial = 0
            hyp = self.dec.hyp()
            text = hyp.hypstr if hyp is not None else ""
            if text and text != self.last_partial:
                self.last_partial = text
                out.append({"type": "partial", "text": text, "ms": self.frames * FRAME_MS,
                            "words": self._words()})
        return out

    def _words(self):
        base = self.utt_start_frame * FRAME_MS
        words = []
        try:
            for s in self.dec.seg():
                w = _clean_word(s.word)
                if w:
                    words.append({"word": w, "start_ms": base + s.start_frame * 10,
                                  "end_ms": base + (s.end_frame + 1) * 10})
        except Exception:
            pass
        return words

    def _end(self):
        self.dec.end_utt()
        self.in_utt = False
        hyp = self.dec.hyp()
        words = self._words()
        return {"type": "final", "text": " ".join(w["word"] for w in words) if words else
                (hyp.hypstr if hyp is not None else ""),
                "words": words, "start_ms": self.utt_start_frame * FRAME_MS,
                "end_ms": self.frames * FRAME_MS}

    def flush(self):
        """End of stream: finish an utterance in progress."""
        t = time.thread_time()
        out = []
        if len(self.pending):
            out.extend(self.feed(np.concatenate(
                [self.pending, np.zeros(FRAME - len(self.pending), dtype=np.int16)])))
            self.pending = np.zeros(0, dtype=np.int16)
        if self.in_utt:
            out.append(self._end())
        self.cpu += time.thread_time() - t
        return out


def recognize_pcm(pcm8, decoder=None, partials=False):
    """Whole-signal convenience: the final utterances of 8 kHz int16 audio."""
    r = Recognizer(decoder=decoder, partials=partials)
    events = r.feed(pcm8) + r.flush()
    return [e for e in events if e["type"] == "final"], r


def find_intent(words):
    """-> ("transfer"|"hangup", word) for the first keyword in a word list, else (None, None)."""
    for w in words:
        if w in TRANSFER_WORDS:
            return "transfer", w
        if w in HANGUP_WORDS:
            return "hangup", w
    return None, None


# --------------------------------------------------------------------------------------------
# pcap writing: Ethernet / IPv4 / UDP / RTP, the layout SIPp's play_pcap_audio reads

def _ip_checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip4(addr):
    return bytes(int(p) for p in addr.split("."))


def rtp_packet(payload, seq, ts, ssrc, pt, marker=False):
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload


def write_pcap(path, packets):
    """Classic pcap, Ethernet link type: packets = [(epoch time, (src ip, port), (dst ip, port),
    udp payload)], written in the order given."""
    src_mac = bytes.fromhex("020000000001")
    dst_mac = bytes.fromhex("020000000002")
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, (t, src, dst, rtp) in enumerate(packets):
            ulen = 8 + len(rtp)
            pseudo = _ip4(src[0]) + _ip4(dst[0]) + struct.pack("!BBH", 0, 17, ulen)
            udp_nock = struct.pack("!HHHH", src[1], dst[1], ulen, 0) + rtp
            ck = _ip_checksum(pseudo + udp_nock) or 0xFFFF
            udp = struct.pack("!HHHH", src[1], dst[1], ulen, ck) + rtp
            iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0xB8, 20 + ulen, (i + 1) & 0xFFFF, 0x4000, 64,
                              17, 0, _ip4(src[0]), _ip4(dst[0]))
            iph = iph[:10] + struct.pack("!H", _ip_checksum(iph)) + iph[12:]
            frame = (dst_mac + src_mac + b"\x08\x00" if src[0] != dst[0] or src[1] < dst[1]
                     else src_mac + dst_mac + b"\x08\x00") + iph + udp
            usec_total = int(round(t * 1e6))
            f.write(struct.pack("<IIII", usec_total // 1000000, usec_total % 1000000, len(frame),
                                len(frame)))
            f.write(frame)


def write_rtp_pcap(path, payloads, codec="alaw", src=("127.0.0.1", 6000), dst=("127.0.0.1", 6002),
                   start_time=1700000000.0, ssrc=0x7A1B0C01, seq0=1000, ts0=160000, ptime_ms=20):
    """Write G.711 payloads (one bytes per packet) as one RTP stream, a packet every ptime_ms:
    Ethernet / IPv4 / UDP / RTP, the layout SIPp's play_pcap_audio reads."""
    pt = PAYLOAD_TYPE[codec]
    samples = ptime_ms * RATE // 1000
    write_pcap(path, [(start_time + i * ptime_ms / 1000.0, src, dst,
                       rtp_packet(p, seq0 + i, ts0 + i * samples, ssrc, pt, marker=(i == 0)))
                      for i, p in enumerate(payloads)])


def build_caller_audio(script, length_s, voice=DEFAULT_CALLER_VOICE, speed=150, noise_db=None,
                       seed=1):
    """Mix phrases [(offset_s, text)] into `length_s` seconds of 8 kHz audio.
    Returns (int16 samples, [info per phrase])."""
    n = int(round(length_s * RATE))
    n -= n % FRAME
    mix = np.zeros(n, dtype=np.float64)
    if noise_db is not None:
        rng = np.random.default_rng(seed)
        mix += rng.standard_normal(n) * 32768.0 * 10 ** (noise_db / 20.0)
    info = []
    for offset, text in script:
        pcm = synth(text, voice=voice, speed=speed)
        start = int(round(offset * RATE))
        if start >= n:
            raise ValueError("phrase at %.2f s is past the end (%.2f s)" % (offset, length_s))
        seg = pcm[:max(0, n - start)].astype(np.float64)
        mix[start:start + len(seg)] += seg
        b = speech_bounds(pcm)
        info.append({"at": offset, "text": text,
                     "speech_start": round(offset + b[0], 3) if b else None,
                     "speech_end": round(offset + b[1], 3) if b else None,
                     "truncated": len(seg) < len(pcm)})
    return np.clip(np.round(mix), -32768, 32767).astype(np.int16), info


# --------------------------------------------------------------------------------------------
# pcap reading: classic pcap (µs / ns) and pcapng; Ethernet, Linux cooked v1/v2, null, raw IP

def _iter_pcap(path):
    """Yields (linktype, epoch seconds, frame bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        yield from _iter_pcapng(data)
        return
    for endian in ("<", ">"):
        m = struct.unpack(endian + "I", magic)[0]
        if m in (0xA1B2C3D4, 0xA1B23C4D):
            break
    else:
        raise ValueError("%s: not a pcap file" % path)
    scale = 1e-6 if m == 0xA1B2C3D4 else 1e-9
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[off:off + 16])
        off += 16
        yield linktype, sec + frac * scale, data[off:off + incl]
        off += incl


def _iter_pcapng(data):
    off = 0
    endian = "<"
    ifaces = []
    while off + 12 <= len(data):
        btype = struct.unpack(endian + "I", data[off:off + 4])[0]
        if btype == 0x0A0D0D0A:
            bom = data[off + 8:off + 12]
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            ifaces = []
        blen = struct.unpack(endian + "I", data[off + 4:off + 8])[0]
        body = data[off + 8:off + blen - 4]
        if btype == 1:                                   # interface description
            linktype = struct.unpack(endian + "H", body[:2])[0]
            tsres = 1e-6
            opt = 8
            while opt + 4 <= len(body):
                code, olen = struct.unpack(endian + "HH", body[opt:opt + 4])
                if code == 0:
                    break
                if code == 9 and olen >= 1:
                    v = body[opt + 4]
                    tsres = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
                opt += 4 + olen + (-olen % 4)
            ifaces.append((linktype, tsres))
        elif btype == 6:                                 # enhanced packet
            iface, hi, lo, caplen, _ = struct.unpack(endian + "IIIII", body[:20])
            linktype, tsres = ifaces[iface] if iface < len(ifaces) else (1, 1e-6)
            yield linktype, ((hi << 32) | lo) * tsres, body[20:20 + caplen]
        elif btype == 3:                                 # simple packet
            linktype, _ = ifaces[0] if ifaces else (1, 1e-6)
            yield linktype, 0.0, body[4:]
        if blen < 12:
            break
        off += blen


def _ip_payload(linktype, frame):
    """-> (ethertype-ish 4|6, ip packet) or None."""
    if linktype == 1:                                   # Ethernet (+ 802.1Q tags)
        off, etype = 14, struct.unpack("!H", frame[12:14])[0]
        while etype in (0x8100, 0x88A8) and len(frame) >= off + 4:
            etype = struct.unpack("!H", frame[off + 2:off + 4])[0]
            off += 4
    elif linktype == 113:                               # Linux cooked v1
        off, etype = 16, struct.unpack("!H", frame[14:16])[0]
    elif linktype == 276:                               # Linux cooked v2
        off, etype = 20, struct.unpack("!H", frame[0:2])[0]
    elif linktype in (0, 108):                          # BSD null / loopback
        fam = struct.unpack("<I" if linktype == 0 else "!I", frame[:4])[0]
        if fam > 0xFFFF:
            fam = struct.unpack(">I" if linktype == 0 else "<I", frame[:4])[0]
        off, etype = 4, 0x0800 if fam == 2 else 0x86DD
    elif linktype in (101, 12, 14, 228, 229):           # raw IP
        off = 0
        etype = 0x0800 if frame and frame[0] >> 4 == 4 else 0x86DD
    else:
        return None
    if etype == 0x0800:
        return 4, frame[off:]
    if etype == 0x86DD:
        return 6, frame[off:]
    return None


def _udp(ipver, pkt):
    """-> (src, sport, dst, dport, payload) or None."""
    if ipver == 4:
        if len(pkt) < 20 or pkt[9] != 17:
            return None
        ihl = (pkt[0] & 0x0F) * 4
        if struct.unpack("!H", pkt[6:8])[0] & 0x1FFF:      # not the first fragment
            return None
        total = struct.unpack("!H", pkt[2:4])[0]
        src = ".".join(str(b) for b in pkt[12:16])
        dst = ".".join(str(b) for b in pkt[16:20])
        udp = pkt[ihl:total] if total >= ihl else pkt[ihl:]
    else:
        if len(pkt) < 40 or pkt[6] != 17:
            return None
        import ipaddress
        src = str(ipaddress.IPv6Address(pkt[8:24]))
        dst = str(ipaddress.IPv6Address(pkt[24:40]))
        udp = pkt[40:]
    if len(udp) < 8:
        return None
    sport, dport, ulen = struct.unpack("!HHH", udp[:6])
    return src, sport, dst, dport, udp[8:ulen] if ulen >= 8 else udp[8:]


def _rtp(payload):
    """-> (pt, marker, seq, ts, ssrc, audio) or None when it does not look like RTP."""
    if len(payload) < 12 or payload[0] >> 6 != 2:
        return None
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", payload[:12])
    off = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(payload) < off + 4:
            return None
        off += 4 + 4 * struct.unpack("!H", payload[off + 2:off + 4])[0]
    end = len(payload)
    if b0 & 0x20 and end > off:
        end -= payload[-1]
    if off > end:
        return None
    pt = b1 & 0x7F
    if 72 <= pt <= 76:                                  # RTCP
        return None
    return pt, bool(b1 & 0x80), seq, ts, ssrc, payload[off:end]


class RtpStream:
    def __init__(self, key):
        self.key = key          # (src, sport, dst, dport)
        self.packets = []       # (t, pt, seq, ts, ssrc, payload)
        self.dtmf = []          # (t, digit)

    @property
    def name(self):
        return "%s:%d > %s:%d" % self.key

    def audio_packets(self):
        return [p for p in self.packets if p[1] in (0, 8)]

    def codec(self, forced=None):
        if forced:
            return forced
        pts = [p[1] for p in self.audio_packets()]
        return "alaw" if pts and pts.count(8) > pts.count(0) else "ulaw"

    def signal(self, t0, codec=None):
        """Continuous 8 kHz audio of the stream: (start time rel. t0, int16 samples). Packets
        are placed by RTP timestamp, re-anchored on capture time at an SSRC change or a jump."""
        pk = self.audio_packets()
        if not pk:
            return 0.0, np.zeros(0, dtype=np.int16)
        codec = self.codec(codec)
        start = pk[0][0] - t0
        placed = []
        anchor = None
        for t, _pt, _seq, ts, ssrc, payload in pk:
            arrival = int(round((t - t0 - start) * RATE))
            if anchor is not None and anchor[2] == ssrc:
                pos = anchor[0] + ((ts - anchor[1]) & 0xFFFFFFFF)
                if pos >= 1 << 31:
                    pos -= 1 << 32
                if abs(pos - arrival) > RATE // 2:
                    anchor = None
            if anchor is None or anchor[2] != ssrc:
                anchor = (arrival, ts, ssrc)
                pos = arrival
            placed.append((pos, payload))
        end = max(p + len(b) for p, b in placed)
        lo = min(0, min(p for p, _ in placed))
        out = np.zeros(end - lo, dtype=np.int16)
        table = ULAW_DECODE if codec == "ulaw" else ALAW_DECODE
        for pos, payload in placed:
            out[pos - lo:pos - lo + len(payload)] = table[np.frombuffer(payload, dtype=np.uint8)]
        return start + lo / RATE, out


DTMF_EVENTS = "0123456789*#ABCD"


def read_pcap_streams(path):
    """-> (t0 epoch of the first packet, {key: RtpStream}) for every RTP-looking UDP flow."""
    t0 = None
    streams = {}
    last_dtmf = {}
    for linktype, t, frame in _iter_pcap(path):
        if t0 is None:
            t0 = t
        ip = _ip_payload(linktype, frame)
        if ip is None:
            continue
        u = _udp(*ip)
        if u is None:
            continue
        src, sport, dst, dport, payload = u
        r = _rtp(payload)
        if r is None:
            continue
        pt, _marker, seq, ts, ssrc, body = r
        key = (src, sport, dst, dport)
        st = streams.get(key)
        if st is None:
            st = streams[key] = RtpStream(key)
        if pt in (0, 8):
            st.packets.append((t, pt, seq, ts, ssrc, body))
        elif len(body) == 4 and body[0] < 16:           # RFC 4733 telephone-event
            if body[1] & 0x80 and last_dtmf.get(key) != (ssrc, ts):
                last_dtmf[key] = (ssrc, ts)
                st.dtmf.append((t, DTMF_EVENTS[body[0]]))
        else:
            st.packets.append((t, pt, seq, ts, ssrc, body))
    return (t0 or 0.0), streams


def select_streams(streams, port=None, src_port=None, dst_port=None):
    out = []
    for key, st in sorted(streams.items(), key=lambda kv: kv[1].packets[0][0] if kv[1].packets
                          else 0):
        if not st.audio_packets():
            continue
        if port is not None and port not in (key[1], key[3]):
            continue
        if src_port is not None and key[1] != src_port:
            continue
        if dst_port is not None and key[3] != dst_port:
            continue
        out.append(st)
    return out


# --------------------------------------------------------------------------------------------
# energy over time, onset / stop helpers

def packet_energy(stream, t0, codec=None):
    """[(t rel. t0, dBFS)] one entry per audio packet, by capture time."""
    codec = stream.codec(codec)
    table = ULAW_DECODE if codec == "ulaw" else ALAW_DECODE
    return [(t - t0, dbfs(table[np.frombuffer(p, dtype=np.uint8)]))
            for t, _pt, _s, _ts, _ss, p in stream.audio_packets()]


def onset_after(energy, after, threshold_db=-40.0, min_loud_s=0.04):
    """First packet time >= after from which the stream stays louder than threshold for
    min_loud_s (packets within the run must be contiguous, <= 60 ms apart)."""
    run_start = None
    prev_t = None
    for t, e in energy:
        if t < after:
            continue
        if e > threshold_db and (run_start is None or prev_t is None or t - prev_t <= 0.06):
            if run_start is None:
                run_start = t
            if t + FRAME_MS / 1000.0 - run_start >= min_loud_s - 1e-9:
                return run_start
        else:
            run_start = t if e > threshold_db else None
        prev_t = t
    return None


def stop_after(energy, after, threshold_db=-40.0, hold_s=0.3):
    """First time >= after when the stream goes quiet (below threshold, or no packets) and stays
    quiet for hold_s: the start of that quiet stretch."""
    quiet_start = None
    prev_t = None
    for t, e in energy:
        if t < after:
            prev_t = t
            continue
        if prev_t is not None and t - prev_t > 0.06:           # a gap: no audio is quiet
            gap_start = max(prev_t + FRAME_MS / 1000.0, after)
            if quiet_start is None:
                quiet_start = gap_start
            if t - quiet_start >= hold_s:
                return quiet_start
        if e <= threshold_db:
            if quiet_start is None:
                quiet_start = t
            if t + FRAME_MS / 1000.0 - quiet_start >= hold_s - 1e-9:
                return quiet_start
        else:
            quiet_start = None
        prev_t = t
    if quiet_start is not None:
        return quiet_start
    if prev_t is not None and prev_t >= after:
        return prev_t + FRAME_MS / 1000.0                      # the stream ended
    return None


# --------------------------------------------------------------------------------------------
# command line

def _parse_script(items):
    script = []
    for item in items:
        at, sep, text = item.partition(":")
        if not sep or not text.strip():
            raise SystemExit("--script wants SECONDS:TEXT, got %r" % item)
        script.append((float(at), text.strip()))
    return script


def cmd_say(a):
    check_tools()
    pcm = synth(a.text, voice=a.voice, speed=a.speed, pitch=a.pitch)
    write_wav(a.out, pcm)
    b = speech_bounds(pcm)
    print(json.dumps({"out": a.out, "seconds": round(len(pcm) / RATE, 3),
                      "speech": [round(x, 3) for x in b] if b else None}))


def cmd_caller_pcap(a):
    check_tools()
    script = _parse_script(a.script)
    length = a.length
    if length is None:
        length = max([at for at, _ in script] + [0]) + 8.0
    pcm, info = build_caller_audio(script, length, voice=a.voice, speed=a.speed, noise_db=a.noise)
    payload = encode(pcm, a.codec)
    if a.noise is None:       # true digital silence: the codec's own silence byte
        silent = np.abs(pcm.astype(np.int32)) < 8
        buf = np.frombuffer(payload, dtype=np.uint8).copy()
        buf[silent] = SILENCE_BYTE[a.codec]
        payload = buf.tobytes()
    packets = [payload[i:i + FRAME] for i in range(0, len(payload), FRAME)]
    src = a.src.rsplit(":", 1)
    dst = a.dst.rsplit(":", 1)
    write_rtp_pcap(a.out, packets, codec=a.codec, src=(src[0], int(src[1])),
                   dst=(dst[0], int(dst[1])), start_time=a.start_time)
    if a.wav:
        write_wav(a.wav, decode(payload, a.codec))
    print(json.dumps({"out": a.out, "codec": a.codec, "packets": len(packets),
                      "seconds": len(packets) * FRAME_MS / 1000.0, "voice": a.voice,
                      "phrases": info}))


def _load_signals(a):
    """-> (t0, [(name, start_s, pcm, stream or None)])"""
    if a.file.lower().endswith(".wav"):
        return 0.0, [(a.file, 0.0, read_wav(a.file), None)]
    t0, streams = read_pcap_streams(a.file)
    sel = select_streams(streams, a.port, a.src_port, a.dst_port)
    out = []
    for st in sel:
        start, pcm = st.signal(t0, a.codec)
        out.append((st.name, start, pcm, st))
    return t0, out


def cmd_recognize(a):
    t0, signals = _load_signals(a)
    if not signals:
        raise SystemExit("no RTP audio stream matches in %s" % a.file)
    result = {"file": a.file, "t0": t0, "streams": []}
    for name, start, pcm, st in signals:
        finals, rec = recognize_pcm(pcm, decoder=new_decoder(a.general) if a.general else None)
        phrases = []
        for f in finals:
            if not f["text"]:
                continue
            phrases.append({"start": round(start + (f["words"][0]["start_ms"] if f["words"]
                                                    else f["start_ms"]) / 1000.0, 3),
                            "end": round(start + (f["words"][-1]["end_ms"] if f["words"]
                                                  else f["end_ms"]) / 1000.0, 3),
                            "text": f["text"],
                            "words": [{"word": w["word"],
                                       "start": round(start + w["start_ms"] / 1000.0, 3),
                                       "end": round(start + w["end_ms"] / 1000.0, 3)}
                                      for w in f["words"]]})
        entry = {"stream": name, "start": round(start, 3),
                 "seconds": round(len(pcm) / RATE, 3), "phrases": phrases,
                 "cpu_s": round(rec.cpu, 3)}
        if st is not None:
            entry["codec"] = st.codec(a.codec)
            entry["dtmf"] = [{"t": round(t - t0, 3), "digit": d} for t, d in st.dtmf]
        result["streams"].append(entry)
    if a.json:
        print(json.dumps(result))
        return
    for s in result["streams"]:
        print("# %s (%s s from %.3f s)" % (s["stream"], s["seconds"], s["start"]))
        for p in s["phrases"]:
            print("%8.3f %8.3f  %s" % (p["start"], p["end"], p["text"]))
        for d in s.get("dtmf", []):
            print("%8.3f           dtmf %s" % (d["t"], d["digit"]))


def cmd_energy(a):
    t0, streams = read_pcap_streams(a.file)
    sel = select_streams(streams, a.port, a.src_port, a.dst_port)
    if not sel:
        raise SystemExit("no RTP audio stream matches in %s" % a.file)
    result = {"file": a.file, "t0": t0, "streams": []}
    for st in sel:
        en = packet_energy(st, t0, a.codec)
        entry = {"stream": st.name, "packets": len(en)}
        if a.onset_after is not None:
            v = onset_after(en, a.onset_after, a.threshold, a.min_loud)
            entry["onset"] = None if v is None else round(v, 3)
        if a.stop_after is not None:
            v = stop_after(en, a.stop_after, a.threshold, a.hold)
            entry["stop"] = None if v is None else round(v, 3)
        if a.onset_after is None and a.stop_after is None:
            entry["energy"] = [[round(t, 3), round(e, 1)] for t, e in en]
        result["streams"].append(entry)
    if a.json:
        print(json.dumps(result))
        return
    for s in result["streams"]:
        if "energy" in s:
            print("# %s" % s["stream"])
            for t, e in s["energy"]:
                print("%8.3f %6.1f" % (t, e))
            continue
        parts = []
        for k in ("onset", "stop"):
            if k in s:
                parts.append("%s %s" % (k, "none" if s[k] is None else "%.3f" % s[k]))
        if len(result["streams"]) == 1:
            print("\n".join(p.split(" ")[1] for p in parts))
        else:
            print("%s  %s" % (s["stream"], "  ".join(parts)))


# -- bench: recognition accuracy per phrase and voice

BENCH_PHRASES = [
    ("I want to talk to an agent", "agent"),
    ("agent", "agent"),
    ("operator", "operator"),
    ("I would like to speak to a person", "person"),
    ("goodbye", "goodbye"),
    ("one two three", "one two three"),
    ("hello is anyone there", None),       # must NOT yield a keyword
    ("what time is it", None),
    ("can you help me with my account", None),
    ("yes please", None),
]
BENCH_VOICES = ["en-us", "en-us+m3", "en-us+f3", "en-us+m7", "en", "en-gb-x-rp", "en-us+klatt4"]


def run_stream(sig, decoder=None, partials=True):
    """Feed 8 kHz audio 20 ms at a time, as the bot does. Returns (events, Recognizer, decision)
    where decision is the first (intent, word, kind, decided_ms, word_end_ms) the bot would act
    on (a keyword in a partial or final hypothesis), or None."""
    r = Recognizer(decoder=decoder, partials=partials)
    events = []
    decision = None
    for k in range(0, len(sig), FRAME):
        for ev in r.feed(sig[k:k + FRAME]):
            events.append(ev)
            if decision is None and ev["type"] in ("partial", "final"):
                words = [w["word"] for w in ev["words"]] or ev["text"].split()
                intent, word = find_intent(words)
                if intent:
                    end = next((w["end_ms"] for w in ev["words"] if w["word"] == word), None)
                    decided = ev["ms"] if ev["type"] == "partial" else (k + FRAME) * 1000 // RATE
                    decision = (intent, word, ev["type"], decided, end)
    events.extend(r.flush())
    return events, r, decision


def bench(voices=BENCH_VOICES, phrases=BENCH_PHRASES, speeds=(130, 145, 160, 175, 190),
          pitches=(40, 60), codec="ulaw", noise_db=None, general=False, log=None, cmn=None):
    """Each phrase x voice, spoken at len(speeds) x len(pitches) variants, through G.711 and
    streamed 20 ms at a time through the bot's recognizer. A phrase with a keyword counts as
    recognised when the bot's decision (first keyword in a partial or final hypothesis) is the
    right action; "one two three" when the final transcript holds it; a phrase without keyword
    when no keyword is ever hypothesised. Returns ({voice: {phrase: (hits, n)}}, figures)."""
    check_tools()
    dec = new_decoder(general)
    rng = np.random.default_rng(7)
    table = {}
    audio_s = 0.0
    cpu_s = 0.0
    lat = []
    kinds = collections.Counter()
    for voice in voices:
        row = table.setdefault(voice, {})
        for text, expect in phrases:
            hits = n = 0
            want = find_intent(expect.split())[0] if expect else None
            for speed in speeds:
                for pitch in pitches:
                    pcm = synth(text, voice=voice, speed=speed, pitch=pitch)
                    sig = np.concatenate([np.zeros(4000), pcm, np.zeros(8000)])
                    if noise_db is not None:
                        sig = sig + rng.standard_normal(len(sig)) * 32768 * 10 ** (noise_db / 20)
                    sig = np.clip(np.round(sig), -32768, 32767).astype(np.int16)
                    sig = decode(encode(sig, codec), codec)
                    reset_cmn(dec, cmn)
                    events, rec, decision = run_stream(sig, decoder=dec)
                    audio_s += len(sig) / RATE
                    cpu_s += rec.cpu
                    heard = " ".join(e["text"] for e in events if e["type"] == "final")
                    if want:
                        ok = decision is not None and decision[0] == want
                    elif expect:
                        ok = (" %s " % expect) in (" %s " % heard)
                    else:
                        ok = decision is None
                    if decision is not None and ok and decision[4] is not None:
                        lat.append(decision[3] - decision[4])
                        kinds[decision[2]] += 1
                    hits += ok
                    n += 1
                    if log:
                        log("%-14s %-36s s=%d p=%d %s heard: %s%s" % (
                            voice, text, speed, pitch, "ok  " if ok else "MISS", heard,
                            "  [decided %s %r on a %s, %s ms after the word]" % (
                                decision[0], decision[1], decision[2],
                                decision[3] - decision[4] if decision[4] is not None else "?")
                            if decision else ""))
            row[text] = (hits, n)
    return table, {"audio_s": audio_s, "cpu_s": cpu_s, "decision_lag_ms": sorted(lat),
                   "decided_on": dict(kinds)}


def cmd_bench(a):
    voices = a.voices.split(",") if a.voices else BENCH_VOICES
    t = time.perf_counter()
    dec = new_decoder(a.general)
    start_s = time.perf_counter() - t
    del dec
    table, fig = bench(voices=voices, codec=a.codec, noise_db=a.noise, general=a.general,
                       speeds=[int(s) for s in a.speeds.split(",")],
                       pitches=[int(p) for p in a.pitches.split(",")],
                       log=(lambda s: print(s, file=sys.stderr)) if a.verbose else None)
    if a.json:
        print(json.dumps({"table": {v: {p: list(h) for p, h in r.items()} for v, r in
                                    table.items()}, "decoder_start_s": start_s, **fig}))
        return
    print_bench(table, fig, start_s)


def print_bench(table, fig, start_s=None, out=sys.stdout):
    phrases = list(next(iter(table.values())).keys())
    w = max(len(v) for v in table) + 2
    print("%-*s" % (w, "voice") + "".join("%-9s" % ("p%d" % (i + 1)) for i in
                                          range(len(phrases))) + "all", file=out)
    for voice, row in table.items():
        hs = [row[p] for p in phrases]
        tot = sum(h for h, _ in hs), sum(n for _, n in hs)
        print("%-*s" % (w, voice) + "".join("%-9s" % ("%d/%d" % h) for h in hs) +
              "%d%%" % round(100 * tot[0] / tot[1]), file=out)
    for i, p in enumerate(phrases):
        print("  p%d = %r" % (i + 1, p), file=out)
    print("CPU %.3f s per second of audio (%.0f s of audio)%s" % (
        fig["cpu_s"] / max(fig["audio_s"], 1e-9), fig["audio_s"],
        "" if start_s is None else "; decoder start %.3f s" % start_s), file=out)
    lag = fig.get("decision_lag_ms") or []
    if lag:
        q = lambda f: lag[min(len(lag) - 1, int(f * len(lag)))]  # noqa: E731
        print("keyword decided %d/%d/%d ms (median/p90/max) after the word's end; on %s" % (
            q(0.5), q(0.9), lag[-1], ", ".join("%s %d" % kv for kv in
                                               sorted(fig["decided_on"].items()))), file=out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("say", help="TEXT -> 8 kHz mono 16-bit WAV")
    p.add_argument("text")
    p.add_argument("--voice", default=DEFAULT_CALLER_VOICE)
    p.add_argument("--speed", type=int, default=150, help="espeak-ng words per minute")
    p.add_argument("--pitch", type=int, default=None, help="espeak-ng pitch 0-99")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_say)

    p = sub.add_parser("caller-pcap", help="a caller's RTP stream for SIPp play_pcap_audio")
    p.add_argument("--out", required=True)
    p.add_argument("--codec", choices=("alaw", "ulaw"), default="alaw")
    p.add_argument("--script", action="append", default=[],
                   help="SECONDS:TEXT, the phrase spoken from that offset (repeatable)")
    p.add_argument("--length", type=float, default=None,
                   help="total seconds (default: last phrase offset + 8)")
    p.add_argument("--voice", default=DEFAULT_CALLER_VOICE)
    p.add_argument("--speed", type=int, default=150)
    p.add_argument("--noise", type=float, default=None,
                   help="comfort noise level in dBFS (default: digital silence)")
    p.add_argument("--src", default="127.0.0.1:6000")
    p.add_argument("--dst", default="127.0.0.1:6002")
    p.add_argument("--start-time", type=float, default=1700000000.0,
                   help="epoch time of the first packet")
    p.add_argument("--wav", help="also write the decoded audio as WAV")
    p.set_defaults(fn=cmd_caller_pcap)

    for name, fn, hlp in (("recognize", cmd_recognize, "phrases heard in an RTP capture"),
                          ("energy", cmd_energy, "per-packet energy, onset / stop times")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("file")
        p.add_argument("--port", type=int, help="streams from or to this UDP port")
        p.add_argument("--src-port", type=int, help="only streams sent from this port")
        p.add_argument("--dst-port", type=int, help="only streams sent to this port")
        p.add_argument("--codec", choices=("alaw", "ulaw"), default=None,
                       help="default: from the RTP payload type")
        p.add_argument("--json", action="store_true")
        p.set_defaults(fn=fn)
        if name == "recognize":
            p.add_argument("--general", action="store_true",
                           help="use pocketsphinx's general US-English LM instead")
        else:
            p.add_argument("--onset-after", type=float, default=None, metavar="T",
                           help="first time >= T when the stream becomes loud")
            p.add_argument("--stop-after", type=float, default=None, metavar="T",
                           help="first time >= T when the stream goes (and stays) quiet")
            p.add_argument("--threshold", type=float, default=-40.0,
                           help="loud/quiet boundary in dBFS (default -40)")
            p.add_argument("--min-loud", type=float, default=0.04,
                           help="seconds a stream must stay loud for an onset (default 0.04)")
            p.add_argument("--hold", type=float, default=0.3,
                           help="seconds a stream must stay quiet for a stop (default 0.3)")

    p = sub.add_parser("bench", help="recognition accuracy of the demo phrases per voice")
    p.add_argument("--voices", help="comma-separated espeak-ng voices")
    p.add_argument("--speeds", default="130,145,160,175,190")
    p.add_argument("--pitches", default="40,60")
    p.add_argument("--codec", choices=("alaw", "ulaw"), default="ulaw")
    p.add_argument("--noise", type=float, default=None, help="white noise in dBFS")
    p.add_argument("--general", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(fn=cmd_bench)

    a = ap.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
