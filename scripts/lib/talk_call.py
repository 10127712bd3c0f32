#!/usr/bin/env python3
"""talk_call.py -- one call to the talk bot, told as a timeline, and judged.

Run with the talk bot's venv python (scripts/bots/install.sh talk): it uses
scripts/bots/talk/speech.py, as a module and as the command the issue names.

  talk_call.py --capture CAP.pcap --caller-sip 5070 --caller-media 6000 \
               --bot-log BOT.jsonl --vb1-log VOICEBOT1.log [--script CALLER.json] \
               [--killed-at EPOCH] [--check agent|goodbye|dtmf|barge-in|bot-killed ...] [--json OUT]

Inputs, all of ONE call:
  CAP.pcap      tcpdump -i lo of the caller's SIP port and RTP port (both directions).
  BOT.jsonl     the talk bot's log lines of this call (its `start` record has `epoch`).
  VOICEBOT1.log voicebot1's log lines of this call (RFC 3339 UTC timestamps).
  CALLER.json   what `speech.py caller-pcap` printed for the caller's audio (the phrases'
                speech_start / speech_end, seconds into the pcap SIPp plays).
  EPOCH         when the bot's process group was SIGKILLed (date +%s.%N), for bot-killed.

The clock: everything is put on the machine's wall clock (tcpdump's capture times, voicebot1's log
timestamps, the bot's `epoch` + `t`), and printed as seconds since the caller's INVITE. A word's end
"at the caller" is the capture time of the caller's RTP packet holding that point of its audio
(the phrase's speech_end in the caller's pcap) plus the rest of that packet: when SIPp sent it.

Checks (each prints one "check ...: PASS|FAIL ..." line; exit status 1 when any fails):
  agent      voicebot1 logs "transferring" within --transfer-limit (2 s) of the end of the
             caller's phrase ending in "agent", the bot heard "agent", the destination is bridged.
  goodbye    the caller receives a BYE within --hangup-limit (3 s) of the end of "goodbye".
  dtmf       a DTMF 0 the caller sent leads to "transferring" within --transfer-limit.
  barge-in   the bot's audio at the caller stops within --barge-limit (0.2 s) of the caller's speech
             onset: speech.py energy, onset on --src-port, stop on --dst-port, on the capture; the
             bot's audio must have been sounding when the caller started (else the moment fell in
             a pause of the prompt and proves nothing: FAIL, not a pass).
  bot-killed the bot's death (SIGKILL at EPOCH) sends the caller to the destination: voicebot1
             logs the bot's failure and "transferring", and the destination is bridged.
  softphone  the caller was pjsip.conf's "softphone" (scripts/sipp/uac-softphone.xml): registered
             with its password, its INVITE to 3308489 challenged and answered, the bot's stream
             names exten 3308489 and from=softphone, and the greeting was heard at its end.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TALK = os.path.join(os.path.dirname(HERE), "bots", "talk")
SPEECH = os.path.join(TALK, "speech.py")
sys.path.insert(0, TALK)
import speech  # noqa: E402


# ------------------------------------------------------------------------------------ inputs

def vb1_events(path):
    """[(epoch, 'call ID: text')] from voicebot1's log (INFO/WARN lines about a call)."""
    out = []
    pat = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z \[(\w+)\] (.*)$")
    for line in open(path, errors="replace"):
        m = pat.match(line.rstrip("\n"))
        if not m or m.group(3) not in ("INFO", "WARN", "ERROR"):
            continue
        base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        frac = float("0" + m.group(2)) if m.group(2) else 0.0
        out.append((base + frac, m.group(3), m.group(4)))
    return out


def bot_events(path):
    """[(epoch, record)] of the bot's log, put on the wall clock by its start record's epoch."""
    recs = []
    for line in open(path, errors="replace"):
        try:
            recs.append(json.loads(line))
        except ValueError:
            continue
    epoch = None
    out = []
    for r in recs:
        if r.get("event") == "start" and r.get("epoch") is not None:
            epoch = float(r["epoch"])
        if epoch is not None and r.get("t") is not None:
            out.append((epoch + float(r["t"]) / 1000.0, r))
    return out, recs, epoch


def sip_messages(cap, sip_port):
    """[(epoch, 'sent'|'received', first line, cseq method)] of the caller's SIP."""
    out = []
    for linktype, t, frame in speech._iter_pcap(cap):
        ip = speech._ip_payload(linktype, frame)
        if ip is None:
            continue
        u = speech._udp(*ip)
        if u is None:
            continue
        _src, sport, _dst, dport, payload = u
        if sip_port not in (sport, dport) or not payload[:3].isalpha():
            continue
        text = payload.decode("latin-1", "replace")
        first = text.split("\r\n", 1)[0]
        m = re.search(r"^CSeq:\s*\d+\s+(\w+)", text, re.M | re.I)
        out.append((t, "sent" if sport == sip_port else "received", first,
                    m.group(1) if m else ""))
    return out


def run_speech(args):
    """Runs speech.py with ARGS; returns (the command as a person would type it, stdout)."""
    cmd = [sys.executable, SPEECH] + [str(a) for a in args]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shown = "speech.py " + " ".join(str(a) for a in args)
    if res.returncode != 0:
        raise SystemExit("%s failed: %s" % (shown, res.stderr.strip()[-400:]))
    return shown, res.stdout


# ------------------------------------------------------------------------------------ analysis

class Call:
    def __init__(self, a):
        self.a = a
        self.t0_cap, self.streams = speech.read_pcap_streams(a.capture)
        self.sip = sip_messages(a.capture, a.caller_sip)
        self.vb1 = vb1_events(a.vb1_log)
        self.bot, self.bot_recs, self.bot_epoch = bot_events(a.bot_log)
        self.script = json.load(open(a.script)) if a.script else {"phrases": []}
        sent = speech.select_streams(self.streams, src_port=a.caller_media)
        heard = speech.select_streams(self.streams, dst_port=a.caller_media)
        self.sent = sent[0] if sent else None
        self.heard = heard[0] if heard else None
        invites = [m for m in self.sip if m[1] == "sent" and m[2].startswith("INVITE")]
        self.zero = invites[0][0] if invites else self.t0_cap
        self.timeline = []          # (epoch, who, text)
        self.results = []           # (name, ok, text)
        self.measures = {}

    def rel(self, epoch):
        return epoch - self.zero

    def add(self, epoch, who, text):
        if epoch is not None:
            self.timeline.append((epoch, who, text))

    # -- the caller's own audio, placed at the moments SIPp sent it
    def caller_audio_epoch(self, pos_s):
        """Wall-clock time at which the caller's audio position POS_S (seconds into the pcap
        SIPp plays) was sent: the capture time of the packet holding it, plus the rest of it."""
        if self.sent is None:
            return None
        pk = self.sent.audio_packets()
        if not pk:
            return None
        idx = int(pos_s * 1000 // speech.FRAME_MS)
        seq0 = pk[0][2]
        for t, _pt, seq, _ts, _ssrc, _p in pk:
            if ((seq - seq0) & 0xFFFF) == idx:
                return t + (pos_s - idx * speech.FRAME_MS / 1000.0)
        # not found (the pcap ended, a packet lost): from the first packet's time
        return pk[0][0] + pos_s

    def vb1_find(self, needle, after=None):
        for t, _lvl, text in self.vb1:
            if needle in text and (after is None or t >= after):
                return t, text
        return None, None

    def build(self):
        a = self.a
        # SIP as the caller saw it
        invites = 0
        for t, d, first, method in self.sip:
            if d == "sent" and first.startswith("INVITE"):
                exten = first.split()[1].split("@")[0].replace("sip:", "")
                invites += 1
                self.add(t, "caller", "INVITE %s%s" % (exten, {
                    "3308488": " (its SIP header X-VB1-Bot names the bot)",
                    "3308489": " (the softphone's number: the dialplan names bot talk)"}.get(
                        exten, "") if invites == 1 else " again, with its password"))
            elif d == "sent" and first.startswith("REGISTER"):
                self.add(t, "caller", "REGISTER")
            elif d == "received" and first.startswith("SIP/2.0 401"):
                self.add(t, "caller", "401 to its %s: Asterisk asks for the password" % method)
            elif d == "received" and first.startswith("SIP/2.0 200") and method == "REGISTER":
                self.add(t, "caller", "200 OK to its REGISTER")
            elif d == "received" and first.startswith("SIP/2.0 200") and method == "INVITE":
                self.add(t, "caller", "200 OK: the call is answered")
            elif d == "sent" and first.startswith("BYE"):
                self.add(t, "caller", "hangs up (BYE)")
            elif d == "received" and first.startswith("BYE"):
                self.add(t, "caller", "is hung up (BYE from Asterisk)")
        # voicebot1
        keep = ("inbound from", "connected in", "caller and media bridged", "asked for",
                "asked to hang up", "transferring", "destination ringing", "bridged",
                "ended (", "closed", "lost", "failed", "refused")
        for t, lvl, text in self.vb1:
            body = re.sub(r"^call [^ ]+: ", "", text)
            if any(k in text for k in keep) and "bot media ended" not in text:
                self.add(t, "voicebot1", body if lvl == "INFO" else "%s: %s" % (lvl, body))
        # the bot
        for t, r in self.bot:
            ev = r.get("event")
            if ev == "said":
                self.add(t, "bot", 'says "%s" (prompt %s, %.2f s of audio)'
                         % (r.get("text"), r.get("prompt"), r.get("seconds", 0)))
            elif ev == "heard":
                extra = ""
                if r.get("word_end_t") is not None:
                    extra = " (keyword's end %.3f s on this clock, decided %s ms after it)" % (
                        self.rel(self.bot_epoch + r["word_end_t"] / 1000.0), r.get("lag_ms"))
                self.add(t, "bot", 'heard "%s"%s%s' % (r.get("text"), "" if r.get("final")
                                                       else " (partial)", extra))
            elif ev == "barge_in":
                if r.get("cause") == "speech":
                    self.add(t, "bot", "barge-in: the caller spoke, prompt cleared (%s ms after "
                             "the onset, the bot's own figure)" % r.get("latency_ms"))
                else:
                    self.add(t, "bot", "barge-in by DTMF: prompt cleared")
            elif ev == "dtmf":
                self.add(t, "bot", "DTMF %s" % r.get("digit"))
            elif ev == "action":
                self.add(t, "bot", "%s (%s)" % (r.get("action"), r.get("reason")))
            elif ev == "stop":
                self.add(t, "bot", "stream stopped by voicebot1")
            elif ev == "error":
                self.add(t, "bot", "error: %s" % r.get("error"))
        # the caller's speech and keys
        for ph in self.script.get("phrases", []):
            if ph.get("speech_start") is None:
                continue
            s = self.caller_audio_epoch(ph["speech_start"])
            e = self.caller_audio_epoch(ph["speech_end"])
            self.add(s, "caller", 'says "%s" (until %.3f s)' % (ph["text"], self.rel(e)))
        if self.sent is not None:
            for t, d in self.sent.dtmf:
                self.add(t, "caller", "presses %s (RFC 4733)" % d)
        if a.killed_at:
            self.add(a.killed_at, "script", "SIGKILL to the bot's processes")
        # what the caller heard, recognised
        self.heard_phrases = []
        if self.heard is not None:
            shown, out = run_speech(["recognize", a.capture, "--dst-port", a.caller_media,
                                     "--json"])
            self.recognize_cmd = shown
            res = json.loads(out)
            bridged, _ = self.vb1_find("caller and destination bridged")
            for st in res["streams"]:
                for ph in st["phrases"]:
                    t = res["t0"] + ph["start"]
                    if bridged is not None and t >= bridged:
                        continue          # the destination's recorded prompt: not the bot
                    self.heard_phrases.append((t, res["t0"] + ph["end"], ph["text"]))
                    self.add(t, "caller", 'hears "%s" (until %.3f s; recognised in its capture)'
                             % (ph["text"], self.rel(res["t0"] + ph["end"])))
            if bridged is not None:
                en = speech.packet_energy(self.heard, 0.0)
                on = speech.onset_after(en, bridged)
                if on is not None:
                    self.add(on, "caller", "hears the destination (its recorded prompt)")
        if any(r.get("event") == "barge_in" and r.get("cause") == "speech" for _, r in self.bot):
            m = self.measure_barge_in()
            if m and m["onset"] is not None and m["stop"] is not None:
                self.add(self.t0_cap + m["onset"], "caller", "starts speaking (speech onset in "
                         "what it sent: speech.py energy --onset-after)")
                self.add(self.t0_cap + m["stop"], "caller", "the bot's audio stops at the caller, "
                         "%.0f ms after the onset (speech.py energy --stop-after)%s"
                         % ((m["stop"] - m["onset"]) * 1000, self.pause_note(m)))
        self.timeline.sort(key=lambda x: x[0])

    @staticmethod
    def pause_note(m):
        p = m.get("predicted")
        if not p or p["loud"] is None or p["natural_stop"] is None:
            return ""
        if p["natural_stop"] - m["onset"] <= 0.2:
            return "; the prompt would have paused by itself %.0f ms after the onset" % (
                (p["natural_stop"] - m["onset"]) * 1000)
        if p["loud"] - m["onset"] > 0.0005:
            return "; the prompt was in a pause until %.0f ms after the onset" % (
                (p["loud"] - m["onset"]) * 1000)
        return ""

    def print_timeline(self, out=sys.stdout):
        print("timeline (seconds since the caller's INVITE; every source on the machine's wall "
              "clock):", file=out)
        for t, who, text in self.timeline:
            print("  %7.3f  %-9s  %s" % (self.rel(t), who, text), file=out)

    # -- checks
    def result(self, name, ok, text):
        self.results.append((name, ok, text))

    def phrase_end(self, word):
        for ph in self.script.get("phrases", []):
            if word in ph["text"].lower() and ph.get("speech_end") is not None:
                return self.caller_audio_epoch(ph["speech_end"]), ph
        return None, None

    def heard_by_bot(self, word):
        for t, r in self.bot:
            if r.get("event") == "heard" and word in (r.get("text") or "").split():
                return t, r
        return None, None

    def check_transfer_after(self, name, start, what, limit):
        t_tr, line = self.vb1_find("transferring to", after=start - 1.0)
        t_br, _ = self.vb1_find("caller and destination bridged", after=start - 1.0)
        if t_tr is None:
            self.result(name, False, "voicebot1 never logged \"transferring to\" after %s" % what)
            return
        d = t_tr - start
        self.measures[name + "_transfer_s"] = round(d, 3)
        txt = "voicebot1 \"transferring\" %.3f s after %s (limit %.1f s)" % (d, what, limit)
        if t_br is not None:
            self.measures[name + "_bridged_s"] = round(t_br - start, 3)
            txt += "; caller and destination bridged %.3f s after it" % (t_br - start)
        else:
            txt += "; the destination was NEVER bridged"
        self.result(name, d <= limit and t_br is not None, txt)

    def check_agent(self):
        end, ph = self.phrase_end("agent")
        if end is None:
            self.result("agent", False, "no caller phrase with \"agent\" in the script")
            return
        t_h, r = self.heard_by_bot("agent")
        if r is None:
            self.result("agent", False, "the bot never heard \"agent\" (its heard lines: %s)" % [
                x.get("text") for _, x in self.bot if x.get("event") == "heard"])
            return
        if r.get("word_end_t") is not None:
            bot_end = self.bot_epoch + r["word_end_t"] / 1000.0
            self.measures["agent_word_end_bot_minus_caller_ms"] = round((bot_end - end) * 1000)
        self.check_transfer_after("agent", end, "the end of \"%s\" at the caller (%.3f s)"
                                  % (ph["text"], self.rel(end)), self.a.transfer_limit)

    def check_goodbye(self):
        end, ph = self.phrase_end("goodbye")
        if end is None:
            self.result("goodbye", False, "no caller phrase with \"goodbye\" in the script")
            return
        t_h, r = self.heard_by_bot("goodbye")
        byes = [t for t, d, first, _m in self.sip if d == "received" and first.startswith("BYE")]
        tr, _ = self.vb1_find("transferring to")
        if r is None or not byes:
            self.result("goodbye", False, "bot heard goodbye: %s; BYE received by the caller: %s"
                        % (r is not None, bool(byes)))
            return
        d = byes[0] - end
        self.measures["goodbye_bye_s"] = round(d, 3)
        self.result("goodbye", d <= self.a.hangup_limit and tr is None,
                    "the caller received Asterisk's BYE %.3f s after the end of \"goodbye\" at the "
                    "caller (limit %.1f s)%s" % (d, self.a.hangup_limit,
                                                  "; but voicebot1 transferred" if tr else ""))

    def check_dtmf(self):
        zeros = [t for t, d in (self.sent.dtmf if self.sent else []) if d == "0"]
        if not zeros:
            self.result("dtmf", False, "the caller's capture holds no DTMF 0")
            return
        self.check_transfer_after("dtmf", zeros[0], "the caller's DTMF 0 (its first RFC 4733 "
                                  "packet, %.3f s)" % self.rel(zeros[0]), self.a.transfer_limit)

    def measure_barge_in(self):
        """The caller's speech onset and the stop of the bot's audio at the caller, with the two
        speech.py energy commands that measured them; None when there is nothing to measure."""
        if hasattr(self, "_barge"):
            return self._barge
        a = self.a
        self._barge = None
        ph = next((p for p in self.script.get("phrases", []) if p.get("speech_start") is not None),
                  None)
        if ph is None or self.sent is None or self.heard is None:
            return None
        # onset searched from 0.3 s before the phrase's scripted start, on the capture's clock
        after = self.caller_audio_epoch(max(0.0, ph["speech_start"] - 0.3)) - self.t0_cap
        c1, o1 = run_speech(["energy", a.capture, "--src-port", a.caller_media, "--onset-after",
                             "%.3f" % after])
        onset = float(o1.split()[0]) if o1.split() and o1.split()[0] != "none" else None
        m = {"cmd_onset": c1, "onset": onset, "cmd_stop": None, "stop": None, "predicted": None}
        if onset is not None:
            c2, o2 = run_speech(["energy", a.capture, "--dst-port", a.caller_media,
                                 "--stop-after", "%.3f" % onset])
            m["cmd_stop"] = c2
            m["stop"] = float(o2.split()[0]) if o2.split() and o2.split()[0] != "none" else None
            m["predicted"] = self.predicted(onset)
        self._barge = m
        return m

    def predicted(self, onset):
        """The prompt playing at ONSET (s since the capture's first packet) as it would have gone
        on at the caller had nobody spoken: it is synthesised again as the bot makes it
        (espeak-ng, its voice and speed) and lined up on the caller's capture by its first loud
        packet. -> {prompt, loud: the first time >= ONSET it would have been loud (-40 dBFS),
        natural_stop: when the --stop-after rule (0.3 s hold) would have found it quiet by itself}
        or None. A stop measured just before the prompt's own pause proves nothing; one measured
        in a short pause proves only that the audio did not come back."""
        said = [(t, r) for t, r in self.bot if r.get("event") == "said"
                and t - self.t0_cap <= onset]
        if not said:
            return None
        t_said, r = said[-1]
        pcm = speech.encode(speech.synth(r["text"], voice=self.a.bot_voice,
                                         speed=self.a.bot_speed, trim=True), "ulaw")
        own = [(i * speech.FRAME_MS / 1000.0,
                speech.dbfs(speech.ULAW_DECODE[np.frombuffer(pcm[i * speech.FRAME:
                                                                 (i + 1) * speech.FRAME],
                                                             dtype=np.uint8)]))
               for i in range(len(pcm) // speech.FRAME)]
        at_caller = speech.onset_after(speech.packet_energy(self.heard, self.t0_cap),
                                       t_said - self.t0_cap)
        first_own = speech.onset_after(own, 0.0)
        if at_caller is None or first_own is None:
            return None
        shift = at_caller - first_own
        loud = next((t + shift for t, e in own if t + shift + speech.FRAME_MS / 1000.0 > onset
                     and e > -40.0), None)
        stop = speech.stop_after(own, onset - shift)
        return {"prompt": r["text"], "loud": None if loud is None else max(loud, onset),
                "natural_stop": None if stop is None else stop + shift}

    def check_barge_in(self):
        a = self.a
        m = self.measure_barge_in()
        if m is None:
            self.result("barge-in", False, "no caller phrase, or no RTP both ways in the capture")
            return
        print("  $ %s\n    -> %s (the caller's speech onset, s since the capture's first packet)"
              % (m["cmd_onset"], m["onset"]))
        if m["onset"] is None:
            self.result("barge-in", False, "no speech onset in what the caller sent")
            return
        print("  $ %s\n    -> %s (the bot's audio quiet at the caller)" % (m["cmd_stop"], m["stop"]))
        if m["stop"] is None:
            self.result("barge-in", False, "the bot's audio never went quiet at the caller")
            return
        d = m["stop"] - m["onset"]
        self.measures["barge_in_onset_s"] = round(self.rel(self.t0_cap + m["onset"]), 3)
        self.measures["barge_in_s"] = round(d, 3)
        brec = next((r for _, r in self.bot if r.get("event") == "barge_in"), None)
        self.measures["barge_in_bot_latency_ms"] = brec.get("latency_ms") if brec else None
        extra = "; the bot's own latency_ms %s" % (brec.get("latency_ms") if brec else "(none)")
        p = m["predicted"]
        if p is None or p["natural_stop"] is None or p["loud"] is None:
            self.result("barge-in", False, "the prompt playing at the onset could not be lined "
                        "up on the capture: the %.0f ms measured is not judged" % (d * 1000))
            return
        nat, gap = p["natural_stop"] - m["onset"], p["loud"] - m["onset"]
        self.measures["barge_in_natural_stop_s"] = round(nat, 3)
        if nat <= a.barge_limit:
            self.result("barge-in", False, "the %.0f ms measured proves nothing: the prompt would "
                        "have gone quiet by itself %.0f ms after the onset (a pause of \"%s\"); "
                        "move the caller's phrase" % (d * 1000, nat * 1000, p["prompt"]))
            return
        # in a short pause of the prompt at the onset, the stop is only known to be before the
        # prompt would have sounded again: that is the figure judged then
        judged = max(d, gap)
        self.measures["barge_in_judged_s"] = round(judged, 3)
        self.result("barge-in", judged <= a.barge_limit,
                    "the bot's audio stopped at the caller %.0f ms after the caller's speech onset "
                    "(limit %.0f ms; %s; without the barge-in it would have sounded on for "
                    "%.0f ms)%s" % (judged * 1000, a.barge_limit * 1000,
                                    "the prompt was sounding at the onset" if gap <= 0.0005 else
                                    "measured %.0f ms, but the prompt was in a pause until %.0f "
                                    "ms after the onset" % (d * 1000, gap * 1000),
                                    nat * 1000, extra))

    def check_bot_killed(self):
        a = self.a
        if not a.killed_at:
            self.result("bot-killed", False, "no --killed-at")
            return
        lines = [x for x in self.vb1 if x[0] >= a.killed_at - 0.5 and "bot talk" in x[2]
                 and "transferring" in x[2]]
        if not lines:
            self.result("bot-killed", False, "voicebot1 logged no failure of bot talk ending in "
                        "\"transferring\" after the kill")
            return
        self.measures["bot_killed_noticed_s"] = round(lines[0][0] - a.killed_at, 3)
        self.check_transfer_after("bot-killed", a.killed_at, "the SIGKILL (voicebot1: \"%s\")"
                                  % re.sub(r"^call [^ ]+: ", "", lines[0][2]), a.transfer_limit)

    def check_softphone(self):
        start = next((r for _, r in self.bot if r.get("event") == "start"), None)
        params = (start or {}).get("params") or {}
        regs = [m for m in self.sip if m[1] == "received" and m[2].startswith("SIP/2.0 200")
                and m[3] == "REGISTER"]
        challenged = any(m[1] == "received" and m[2].startswith("SIP/2.0 401") and
                         m[3] == "INVITE" for m in self.sip)
        greeting = next((p for p in self.heard_phrases if "voicebot" in p[2].split()
                         or "hello" in p[2].split()), None)
        ok = (bool(regs) and challenged and params.get("exten") == "3308489"
              and params.get("from") == "softphone" and greeting is not None)
        self.result("softphone", ok, "registered with its password: %s; its INVITE challenged "
                    "and answered: %s; the bot's stream names exten %s, from=%s; the softphone "
                    "heard the greeting: %s" % (
                        "yes" if regs else "NO", "yes" if challenged else "NO",
                        params.get("exten"), params.get("from"),
                        '"%s"' % greeting[2] if greeting else "NO"))

    def summary(self, out=sys.stdout):
        greeting = [p for p in self.heard_phrases
                    if any(w in p[2].split() for w in ("hello", "voicebot", "talking"))]
        if greeting:
            print("the greeting as heard at the caller's end: \"%s\"" % greeting[0][2], file=out)
        heard = [r.get("text") for _, r in self.bot if r.get("event") == "heard"]
        if heard:
            print("what the bot heard: %s" % "; ".join('"%s"' % h for h in heard), file=out)
        br, line = self.vb1_find("caller and destination bridged")
        if br is not None:
            print("the destination: %s" % re.sub(r"^call [^ ]+: ", "", line), file=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--capture", required=True)
    ap.add_argument("--caller-sip", type=int, default=5070)
    ap.add_argument("--caller-media", type=int, default=6000)
    ap.add_argument("--bot-log", required=True)
    ap.add_argument("--vb1-log", required=True)
    ap.add_argument("--script", help="what speech.py caller-pcap printed")
    ap.add_argument("--killed-at", type=float, default=None)
    ap.add_argument("--check", action="append", default=[],
                    choices=("agent", "goodbye", "dtmf", "barge-in", "bot-killed", "softphone"))
    ap.add_argument("--transfer-limit", type=float, default=2.0)
    ap.add_argument("--hangup-limit", type=float, default=3.0)
    ap.add_argument("--barge-limit", type=float, default=0.2)
    ap.add_argument("--bot-voice", default=speech.DEFAULT_BOT_VOICE,
                    help="the bot's espeak-ng voice (bot.py --voice), to rebuild its prompts")
    ap.add_argument("--bot-speed", type=int, default=165, help="the bot's words per minute")
    ap.add_argument("--no-timeline", action="store_true")
    ap.add_argument("--summary", action="store_true", help="the greeting heard, the bot's ears")
    ap.add_argument("--json", help="write the measures here")
    a = ap.parse_args()
    call = Call(a)
    call.build()
    if not a.no_timeline:
        call.print_timeline()
    if a.summary:
        call.summary()
    for name in a.check:
        getattr(call, "check_" + name.replace("-", "_"))()
    for name, ok, text in call.results:
        print("check %s: %s  %s" % (name, "PASS" if ok else "FAIL", text))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"measures": call.measures,
                       "results": [[n, ok, t] for n, ok, t in call.results]}, f)
    sys.exit(0 if all(ok for _, ok, _ in call.results) else 1)


if __name__ == "__main__":
    main()
