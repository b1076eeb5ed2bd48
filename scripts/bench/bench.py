#!/usr/bin/env python3
"""livekit-recorder benchmark; run through scripts/bench.sh (see there for the environment).

Rows, measured in one run on the same machine:
  ours 720p30 / ours 1080p30   the recorder in standalone mode on the demo page
  seed 720p30 / seed 1080p30   a replica of the original pipeline (protocol.md 4.7) with
                               gst-launch-1.0, Xvfb, a private PulseAudio and Chromium (4.5 flags)
  ours service                 idle daemon (CPU, memory) and reservation ack latency
  ours egress ...              the egress worker (EGRESS_MODE=1) against the livekit-server double
                               of tests/common/egress.rs: idle StartEgress claim latency,
                               StartEgress claim -> response and StartEgress -> ACTIVE over
                               BENCH_EGRESS_N web egresses (tests/egress_bench.rs, an ignored test
                               that scripts/bench.sh builds; its executable is BENCH_EGRESS_TEST)
Encoder quality: a lossless capture of the demo page is re-encoded offline with our x264 settings
(read from src/pipeline/mod.rs at run time) and with the seed's, at the same bitrate; SSIM of each
against the lossless clip.
"""

import datetime
import json
import shutil
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CHROMIUM = "/usr/lib/chromium/chromium"
FPS = 30
BASE57 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

SECONDS = float(os.environ.get("BENCH_SECONDS", "30"))
QUIET_LOAD = float(os.environ.get("BENCH_QUIET_LOAD", "0.6"))
QUIET_MAX = float(os.environ.get("BENCH_QUIET_MAX", "180"))
RESERVATIONS = int(os.environ.get("BENCH_RESERVATIONS", "300"))
QUALITY_SECONDS = float(os.environ.get("BENCH_QUALITY_SECONDS", "10"))
ONLY = {s.strip() for s in os.environ.get("BENCH_ONLY", "").split(",") if s.strip()}
KEEP = os.environ.get("BENCH_KEEP") == "1"
EGRESS_TEST = os.environ.get("BENCH_EGRESS_TEST", "")
EGRESS_N = int(os.environ.get("BENCH_EGRESS_N", "5"))
EGRESS_SECONDS = float(os.environ.get("BENCH_EGRESS_SECONDS", "3"))
EGRESS_CLAIMS = int(os.environ.get("BENCH_EGRESS_CLAIMS", "50"))

PRESETS = {  # name -> (preset, width, height, video kbps)
    "720p30": ("HD_30", 1280, 720, 3000),
    "1080p30": ("FULL_HD_30", 1920, 1080, 4500),
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wanted(name):
    return not ONLY or name in ONLY


# --------------------------------------------------------------------------------------------
# Processes: everything is started in a session (process group) of its own, remembered, and
# stopped by group; every descendant ever seen is remembered by (pid, start time) for the final
# leak check.

STARTED = []  # (name, Popen)
SEEN = {}  # pid -> (starttime, comm)


def spawn(name, args, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.DEVNULL)
    p = subprocess.Popen(args, start_new_session=True, **kw)
    STARTED.append((name, p))
    remember(snapshot(), [p.pid])
    return p


def read_stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    r = s.rfind(")")
    comm = s[s.find("(") + 1 : r]
    f = s[r + 2 :].split()
    return {
        "pid": pid,
        "comm": comm,
        "state": f[0],
        "ppid": int(f[1]),
        "pgrp": int(f[2]),
        # own CPU plus that of reaped children: a helper that exits inside the window moves its
        # time into its parent's cutime/cstime instead of vanishing from the sum
        "ticks": int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]),
        "start": int(f[19]),
        "rss": int(f[21]) * PAGE,
    }


def snapshot():
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = read_stat(int(d))
            if st:
                table[st["pid"]] = st
    return table


def tree(table, roots):
    children = {}
    for st in table.values():
        children.setdefault(st["ppid"], []).append(st["pid"])
    out, todo = set(), [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


def remember(table, roots):
    for pid in tree(table, roots):
        SEEN.setdefault(pid, (table[pid]["start"], table[pid]["comm"]))


def alive(pid, start):
    st = read_stat(pid)
    return st is not None and st["start"] == start and st["state"] != "Z"


def wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p, SEEN[p][0]) for p in pids if p in SEEN):
            return True
        time.sleep(0.05)
    return False


def stop_group(p, sig=signal.SIGTERM, timeout=5.0):
    """Stops p's process group and every descendant of p (some live in groups of their own)."""
    table = snapshot()
    remember(table, [p.pid])
    pids = tree(table, [p.pid])
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    if not wait_gone(pids, 2.0 if p.poll() is not None else 0.1):
        for pid in pids:
            if pid in SEEN and alive(pid, SEEN[pid][0]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        wait_gone(pids, 3.0)


def cleanup_all():
    for name, p in reversed(STARTED):
        if p.poll() is None:
            log(f"cleanup: stopping {name} (pid {p.pid})")
            stop_group(p, timeout=3.0)
    # anything seen in one of our trees that is still there (e.g. a child that left its parent)
    for pid, (start, comm) in SEEN.items():
        if alive(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def leftovers():
    time.sleep(0.5)
    return [f"{comm}({pid})" for pid, (start, comm) in SEEN.items() if alive(pid, start)]


class LineReader:
    """Reads a pipe line by line on a thread, timestamping lines; optional copy to a file."""

    def __init__(self, stream, path=None):
        self.lines = []  # (monotonic, text)
        self.cond = threading.Condition()
        self.path = path
        self.t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.t.start()

    def _run(self, stream):
        out = open(self.path, "a") if self.path else None
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines.append((time.monotonic(), line))
                self.cond.notify_all()
            if out:
                out.write(line + "\n")
                out.flush()
        if out:
            out.close()

    def wait_for(self, pattern, timeout, proc=None):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, line in self.lines:
                    if rx.search(line):
                        return t
                if time.monotonic() >= deadline or (proc is not None and proc.poll() is not None):
                    return None
                self.cond.wait(0.1)

    def text(self):
        with self.cond:
            return "\n".join(l for _, l in self.lines)


# --------------------------------------------------------------------------------------------
# Measuring


def system_busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)


def pss_bytes(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def measure_window(roots_fn, seconds, abort=None):
    """Average cores used by the trees under roots_fn() over `seconds`, sampled each 0.5 s."""
    table = snapshot()
    roots = roots_fn()
    remember(table, roots)
    pids0 = tree(table, roots)
    table0 = table
    t0 = time.monotonic()
    ticks0 = sum(table[p]["ticks"] for p in pids0)
    sys0 = system_busy_ticks()
    max_procs = len(pids0)
    failed = None
    while True:
        now = time.monotonic()
        if now >= t0 + seconds:
            break
        time.sleep(min(0.5, t0 + seconds - now))
        table = snapshot()
        remember(table, roots)
        max_procs = max(max_procs, len(tree(table, roots)))
        if abort:
            failed = abort()
            if failed:
                break
    table = snapshot()
    remember(table, roots)
    pids1 = tree(table, roots)
    t1 = time.monotonic()
    sys1 = system_busy_ticks()
    ticks1 = sum(table[p]["ticks"] for p in pids1)
    # processes that were there at the start and whose parent is gone too: their time is missing
    # from ticks1 (reported, expected to be 0)
    lost = [p for p in pids0 if p not in pids1 and table0[p]["ppid"] not in pids1]
    wall = t1 - t0
    ours = (ticks1 - ticks0) / CLK / wall
    return {
        "cpu": ours,
        "other_cpu": max(0.0, (sys1 - sys0) / CLK / wall - ours),
        "wall": wall,
        "procs": max_procs,
        "pss": pss_bytes(pids1),
        "rss": sum(table[p]["rss"] for p in pids1),
        "lost": len(lost),
        "failed": failed,
    }


def wait_quiet(label):
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    if load >= QUIET_LOAD:
        log(f"{label}: waiting for the 1-min load average ({load:.2f}) to fall below {QUIET_LOAD}")
    while load >= QUIET_LOAD and time.monotonic() - t0 < QUIET_MAX:
        time.sleep(5)
        load = os.getloadavg()[0]
    waited = time.monotonic() - t0
    if load >= QUIET_LOAD:
        log(f"{label}: load still {load:.2f} after {waited:.0f} s; measuring anyway")
    return load


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_display():
    for n in random.sample(range(200, 2000), 200):
        if not os.path.exists(f"/tmp/.X{n}-lock") and not os.path.exists(f"/tmp/.X11-unix/X{n}"):
            return n
    raise RuntimeError("no free X display number")


def run_quiet(args, timeout, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


# --------------------------------------------------------------------------------------------
# File analysis


def ffprobe_json(path, *args):
    r = run_quiet(["ffprobe", "-v", "error", *args, "-of", "json", str(path)], timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"ffprobe failed on {path}: {r.stderr.strip()[:300]}")
    return json.loads(r.stdout)


def analyse(path, work):
    """Frame, A/V and bitrate metrics of a recording."""
    res = {}
    info = ffprobe_json(
        path, "-count_packets",
        "-show_entries", "stream=codec_type,nb_read_packets,duration,start_time,bit_rate:format=duration,bit_rate",
    )
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    a = next((s for s in info["streams"] if s["codec_type"] == "audio"), None)
    vdur = float(v["duration"])
    res["frames"] = int(v["nb_read_packets"])
    res["vdur"] = vdur
    res["expected"] = round(vdur * FPS)
    res["fps"] = res["frames"] / vdur if vdur > 0 else 0.0
    res["vkbps"] = int(v.get("bit_rate", 0)) / 1000
    res["kbps"] = int(info["format"].get("bit_rate", 0)) / 1000
    res["adur"] = float(a["duration"]) if a else 0.0
    res["astart"] = float(a.get("start_time", 0)) if a else 0.0

    # capture gaps: frames missing between consecutive timestamps
    pk = ffprobe_json(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time")
    pts = sorted(float(p["pts_time"]) for p in pk["packets"] if p.get("pts_time") not in (None, "N/A"))
    missing, gaps = 0, 0
    for x, y in zip(pts, pts[1:]):
        d = y - x
        if d > 1.5 / FPS:
            gaps += 1
            missing += max(0, round(d * FPS) - 1)
    res["dropped"] = missing
    res["gaps"] = gaps
    if a:
        ak = ffprobe_json(path, "-select_streams", "a:0", "-show_entries", "packet=pts_time,duration_time")
        apk = [(float(p["pts_time"]), float(p.get("duration_time") or 0)) for p in ak["packets"]
               if p.get("pts_time") not in (None, "N/A")]
        apk.sort()
        agaps = sum(1 for (t, d), (t2, _) in zip(apk, apk[1:]) if d > 0 and t2 - (t + d) > 0.5 * d)
        res["agaps"] = agaps
    else:
        res["agaps"] = None

    # one decode: per-frame luma average (flashes) and near-identical consecutive frames
    yavg = work / (path.stem + ".yavg.txt")
    r = run_quiet(
        ["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "debug", "-i", str(path), "-an",
         "-filter_complex",
         f"[0:v]split[a][b];[a]scale=320:-2,signalstats,metadata=print:key=lavfi.signalstats.YAVG:file={yavg}[va];[b]mpdecimate[vb]",
         "-map", "[va]", "-f", "null", "-", "-map", "[vb]", "-fps_mode", "passthrough", "-f", "null", "-"],
        timeout=600,
    )
    if r.returncode != 0:
        raise RuntimeError(f"ffmpeg video analysis failed: {r.stderr.strip()[-300:]}")
    res["dups"] = len(re.findall(r"Parsed_mpdecimate.*\] .*\bdrop pts:", r.stderr))
    flashes, t, prev = [], None, 0.0
    for line in yavg.read_text().splitlines():
        m = re.search(r"pts_time:(\S+)", line)
        if m:
            t = float(m.group(1))
            continue
        m = re.search(r"YAVG=(\S+)", line)
        if m:
            y = float(m.group(1))
            if y > 150 and prev <= 150 and t is not None:
                flashes.append(t)
            prev = y

    beeps = []
    if a:
        r = run_quiet(
            ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-vn", "-af",
             "bandpass=f=1000:width_type=h:w=200,bandpass=f=1000:width_type=h:w=200,"
             "silencedetect=noise=-30dB:d=0.05", "-f", "null", "-"],
            timeout=300,
        )
        beeps = [float(x) for x in re.findall(r"silence_end: (\S+)", r.stderr)]
    # pair every flash with the nearest unused beep within 250 ms
    pairs, used = [], set()
    for f in flashes:
        best = min(((abs(b - f), i) for i, b in enumerate(beeps) if i not in used), default=None)
        if best and best[0] < 0.25:
            used.add(best[1])
            pairs.append((f, beeps[best[1]] - f))
    res["flashes"], res["beeps"], res["pairs"] = len(flashes), len(beeps), len(pairs)
    if pairs:
        res["offset"] = statistics.mean(o for _, o in pairs) * 1000
        first = [o for f, o in pairs if f < pairs[0][0] + 5]
        last = [o for f, o in pairs if f > pairs[-1][0] - 5]
        res["drift"] = (statistics.mean(last) - statistics.mean(first)) * 1000
        res["offset_spread"] = (max(o for _, o in pairs) - min(o for _, o in pairs)) * 1000
    else:
        res["offset"] = res["drift"] = res["offset_spread"] = None
    return res


# --------------------------------------------------------------------------------------------
# Our recorder, standalone


def run_ours(binary, res_name, url, work):
    preset, w, h, kbps = PRESETS[res_name]
    out = work / f"ours-{res_name}.mp4"
    req = {"url": url, "filepath": str(out), "options": {"preset": preset}}
    env = dict(os.environ)
    env.update({
        "LIVEKIT_RECORDER_CONFIG": "file_output: {local: true}",
        "RECORDING_REQUEST": json.dumps(req),
        # session=debug adds "rewrote the file with its index in front" (the file is finished)
        "RUST_LOG": "livekit_recorder=info,livekit_recorder::session=debug",
    })
    env.pop("LOG_FORMAT", None)
    env.pop("SERVICE_MODE", None)
    row = {"name": f"ours {res_name}", "file": out, "errors": []}
    row["load"] = wait_quiet(row["name"])
    log(f"{row['name']}: recording {url} for {SECONDS:.0f} s")
    t_spawn = time.monotonic()
    wall_spawn = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    p = spawn(row["name"], [str(binary)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = LineReader(p.stderr, work / f"ours-{res_name}.log")
    outr = LineReader(p.stdout)
    try:
        t_rec = err.wait_for(r" recording id=standalone|\"message\":\"recording\"", 90, proc=p)
        if t_rec is None:
            raise RuntimeError(f"the recorder did not start recording (exit {p.poll()}): {err.text()[-500:]}")
        row["start"] = t_rec - t_spawn
        m = measure_window(lambda: [p.pid], SECONDS,
                           abort=lambda: f"the recorder exited early ({p.poll()})" if p.poll() is not None else None)
        row.update(m)
        if m["failed"]:
            raise RuntimeError(m["failed"])
        table = snapshot()
        remember(table, [p.pid])
        kids = tree(table, [p.pid])
        t_term = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            row["errors"].append("no exit within 60 s of SIGTERM")
            raise
        row["stop"] = time.monotonic() - t_term
        err.t.join(5)
        outr.t.join(5)
        # from the log: signal received -> file finished (faststart rewrite done, else "recording ended")
        stamps = {}
        for _, line in err.lines:
            m = re.match(r"(\d{4}-\d\d-\d\dT[\d:.]+)Z", line)
            if not m:
                continue
            t = datetime.datetime.fromisoformat(m.group(1)[:26])
            for key, pat in (("sig", "signal received"), ("file", "rewrote the file"), ("end", "recording ended"),
                             ("page", "opening page")):
                if pat in line and key not in stamps:
                    stamps[key] = t
        if "page" in stamps:
            row["page_at"] = (stamps["page"] - wall_spawn).total_seconds()
        if "sig" in stamps and ("file" in stamps or "end" in stamps):
            row["stop_file"] = (stamps.get("file") or stamps["end"]) - stamps["sig"]
            row["stop_file"] = row["stop_file"].total_seconds()
            row["stop_file_what"] = "index rewritten" if "file" in stamps else "recording ended"
        if not wait_gone(kids, 5):
            row["errors"].append("children outlived the recorder by > 5 s")
        lines = outr.text().strip().splitlines()
        result = json.loads(lines[-1]) if lines else {}
        if p.returncode != 0 or result.get("error"):
            row["errors"].append(f"exit {p.returncode}: {result.get('error', '')}")
    finally:
        if p.poll() is None:
            stop_group(p, timeout=10)
    return row


# --------------------------------------------------------------------------------------------
# The seed pipeline: Xvfb + private PulseAudio + Chromium + gst-launch-1.0


CHROME_FLAGS = [  # protocol.md 4.5
    "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--no-sandbox",
    "--disable-infobars", "--excludeSwitches=enable-automation", "--disable-background-networking",
    "--enable-features=NetworkService,NetworkServiceInProcess", "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows", "--disable-breakpad", "--disable-client-side-phishing-detection",
    "--disable-default-apps", "--disable-dev-shm-usage", "--disable-extensions",
    "--disable-features=site-per-process,TranslateUI,BlinkGenPropertyTrees", "--disable-hang-monitor",
    "--disable-ipc-flooding-protection", "--disable-popup-blocking", "--disable-prompt-on-repost",
    "--disable-renderer-backgrounding", "--disable-sync", "--force-color-profile=srgb", "--metrics-recording-only",
    "--safebrowsing-disable-auto-update", "--password-store=basic", "--use-mock-keychain",
    "--kiosk", "--autoplay-policy=no-user-gesture-required", "--window-position=0,0",
    # and, as for ours: no background traffic, no first-run UI
    "--disable-component-update", "--disable-quic",
]


class SeedEnv:
    """Xvfb, PulseAudio and Chromium on the demo page, as the original set them up."""

    def __init__(self, label, w, h, url, work):
        self.label, self.w, self.h, self.url = label, w, h, url
        self.dir = Path(tempfile.mkdtemp(prefix="env-", dir=work))
        self.procs = []

    def pulse_env(self):
        d = self.dir / "pulse"
        return {**os.environ, "HOME": str(d), "XDG_RUNTIME_DIR": str(d), "PULSE_RUNTIME_PATH": str(d),
                "PULSE_STATE_PATH": str(d / "state"), "XDG_CONFIG_HOME": str(d / "config")}

    def start(self):
        for attempt in range(3):
            self.display = free_display()
            x = spawn(f"{self.label} Xvfb", ["Xvfb", f":{self.display}", "-screen", "0",
                                             f"{self.w}x{self.h}x24", "-ac", "-nolisten", "tcp"])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and x.poll() is None:
                if os.path.exists(f"/tmp/.X11-unix/X{self.display}"):
                    break
                time.sleep(0.05)
            if x.poll() is None and os.path.exists(f"/tmp/.X11-unix/X{self.display}"):
                self.procs.append(x)
                break
            stop_group(x)
        else:
            raise RuntimeError("Xvfb did not start")
        time.sleep(0.2)

        (self.dir / "pulse").mkdir()
        self.socket = self.dir / "pulse" / "native"
        env = self.pulse_env()
        env.pop("PULSE_SERVER", None)
        pa = spawn(f"{self.label} pulseaudio", [
            "pulseaudio", "--daemonize=no", "--system=no", "--exit-idle-time=-1", "--disallow-exit=yes",
            "--use-pid-file=no", "--realtime=no", "--high-priority=no", "--log-target=stderr", "-n",
            f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1",
            "--load=module-null-sink sink_name=recorder rate=44100 channels=2",
            "--load=module-always-sink",
        ], env=env)
        self.procs.append(pa)
        deadline = time.monotonic() + 15
        while True:
            if pa.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("PulseAudio did not start")
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(str(self.socket))
                s.close()
                break
            except OSError:
                time.sleep(0.05)

        cenv = {**os.environ, "DISPLAY": f":{self.display}", "PULSE_SERVER": f"unix:{self.socket}",
                "HOME": str(self.dir / "home")}
        (self.dir / "home").mkdir()
        ch = spawn(f"{self.label} chromium", [
            CHROMIUM, *CHROME_FLAGS, f"--window-size={self.w},{self.h}", f"--display=:{self.display}",
            f"--user-data-dir={self.dir / 'profile'}", self.url,
        ], env=cenv)
        self.procs.append(ch)
        # the page is up once it plays into the sink
        deadline = time.monotonic() + 45
        penv = {**self.pulse_env(), "PULSE_SERVER": f"unix:{self.socket}"}
        while True:
            if ch.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the demo page did not start playing in Chromium")
            r = run_quiet(["pactl", "list", "short", "sink-inputs"], timeout=10, env=penv)
            if r.returncode == 0 and r.stdout.strip():
                break
            time.sleep(0.25)
        time.sleep(1.0)

    def stop(self):
        for p in reversed(self.procs):
            stop_group(p, timeout=5)
        self.procs = []

    def pids(self):
        return [p.pid for p in self.procs]


def seed_video_settings(kbps):
    return f"x264enc bitrate={kbps} speed-preset=veryfast tune=zerolatency"


def run_seed(res_name, url, work):
    _, w, h, kbps = PRESETS[res_name]
    out = work / f"seed-{res_name}.mp4"
    row = {"name": f"seed {res_name}", "file": out, "errors": []}
    row["load"] = wait_quiet(row["name"])
    log(f"{row['name']}: staging Xvfb, PulseAudio, Chromium")
    env = SeedEnv(row["name"], w, h, url, work)
    gst = None
    try:
        env.start()
        pipeline = (
            f"ximagesrc display-name=:{env.display} use-damage=false show-pointer=false ! videoconvert ! "
            f"video/x-raw,framerate={FPS}/1 ! {seed_video_settings(kbps)} ! "
            f"video/x-h264,profile=main,framerate={FPS}/1 ! queue max-size-time=3000000000 ! mux. "
            f"pulsesrc server=unix:{env.socket} device=recorder.monitor ! audioconvert ! "
            f"audio/x-raw,format=S16LE,layout=interleaved,rate=44100,channels=2 ! audioconvert ! "
            f"avenc_aac bitrate=128000 ! queue max-size-time=3000000000 ! mux. "
            f"mp4mux name=mux faststart=true ! filesink location={out} sync=false"
        )
        row["pipeline"] = pipeline
        log(f"{row['name']}: recording for {SECONDS:.0f} s")
        gst = spawn(f"{row['name']} gst-launch", ["stdbuf", "-oL", "-eL", "gst-launch-1.0", "-e",
                                                  *pipeline.split()],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    env={**os.environ, "PULSE_RUNTIME_PATH": str(env.dir / "pulse"),
                         "HOME": str(env.dir / "pulse")})
        rd = LineReader(gst.stdout, work / f"seed-{res_name}.log")
        t_play = rd.wait_for(r"Setting pipeline to PLAYING", 30, proc=gst)
        if t_play is None:
            raise RuntimeError(f"gst-launch did not play: {rd.text()[-500:]}")
        roots = lambda: env.pids() + [gst.pid]
        m = measure_window(roots, SECONDS, abort=lambda: (
            f"gst-launch exited early ({gst.poll()})" if gst.poll() is not None else None))
        row.update(m)
        if m["failed"]:
            raise RuntimeError(m["failed"] + ": " + rd.text()[-300:])
        t_int = time.monotonic()
        gst.send_signal(signal.SIGINT)  # once: gst-launch -e turns it into EOS
        try:
            gst.wait(timeout=60)
        except subprocess.TimeoutExpired:
            row["errors"].append("gst-launch did not finish within 60 s of SIGINT")
        row["stop"] = time.monotonic() - t_int
        rd.t.join(5)
        if gst.returncode != 0:
            row["errors"].append(f"gst-launch exit {gst.returncode}: {rd.text()[-300:]}")
        row["start"] = None
        # what the seed's videoconvert negotiated with x264enc (for the header)
    finally:
        if gst is not None and gst.poll() is None:
            stop_group(gst, timeout=5)
        env.stop()
    return row


# --------------------------------------------------------------------------------------------
# Encoder settings: ours, read from the source


def our_encoder_settings(kbps):
    """x264enc properties of src/pipeline/mod.rs, evaluated for `kbps` and FPS."""
    src = (REPO / "src/pipeline/mod.rs").read_text()
    m = re.search(r"let\s+(\w+)\s*=\s*make\(\s*\"x264enc\"", src)
    if not m:
        raise RuntimeError("no x264enc in src/pipeline/mod.rs")
    var = m.group(1)
    props = []
    for m in re.finditer(rf"\b{var}\s*\.\s*set_property(_from_str)?\(\s*\"([\w-]+)\"\s*,\s*(.+?)\s*\)\s*;", src, re.S):
        name, expr = m.group(2), m.group(3).strip()
        if expr.startswith('"') and expr.endswith('"'):
            val = expr[1:-1]
        elif expr in ("true", "false"):
            val = expr
        else:
            e = expr.replace("o.video_bitrate", str(kbps)).replace("o.framerate", str(FPS))
            e = re.sub(r"\bas\s+\w+", "", e)
            e = re.sub(r"(\d+)(u32|i32|u64|i64|usize)\b", r"\1", e)
            e = e.replace("&", "")
            if not re.fullmatch(r"[\d\s\*\+\-/()]+", e):
                raise RuntimeError(f"cannot evaluate x264enc {name} = {expr}")
            val = str(int(eval(e)))  # digits and operators only
        props.append(f"{name}={val}")
    if not any(p.startswith("bitrate=") for p in props):
        raise RuntimeError("no x264enc bitrate in src/pipeline/mod.rs")
    return "x264enc " + " ".join(props)


def our_profile():
    src = (REPO / "src/pipeline/mod.rs").read_text()
    fmt = re.search(r"\"video_format\".*?field\(\s*\"format\"\s*,\s*\"(\w+)\"", src, re.S)
    return fmt.group(1) if fmt else "?"


# --------------------------------------------------------------------------------------------
# Encoder quality


def quality(res_name, url, work, ours_enc):
    _, w, h, kbps = PRESETS[res_name]
    ref = work / f"ref-{res_name}.mkv"
    env = SeedEnv(f"lossless {res_name}", w, h, url, work)
    log(f"quality {res_name}: lossless capture of {QUALITY_SECONDS:.0f} s")
    try:
        env.start()
        pipeline = (
            f"ximagesrc display-name=:{env.display} use-damage=false show-pointer=false ! "
            f"video/x-raw,framerate={FPS}/1 ! queue ! videoconvert ! video/x-raw,format=I420 ! "
            f"x264enc speed-preset=ultrafast pass=quant quantizer=0 qp-min=0 qp-max=0 ! "
            f"h264parse ! matroskamux ! filesink location={ref}"
        )
        g = spawn("lossless gst-launch", ["gst-launch-1.0", "-e", *pipeline.split()])
        time.sleep(QUALITY_SECONDS)
        g.send_signal(signal.SIGINT)
        try:
            g.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop_group(g)
            raise RuntimeError("lossless capture did not finish")
        if g.returncode != 0:
            raise RuntimeError(f"lossless capture failed ({g.returncode})")
    finally:
        env.stop()
    out = {}
    nref = int(ffprobe_json(ref, "-count_packets", "-select_streams", "v:0",
                            "-show_entries", "stream=nb_read_packets")["streams"][0]["nb_read_packets"])
    for who, enc in (("ours", ours_enc), ("seed", seed_video_settings(kbps))):
        dst = work / f"q-{who}-{res_name}.mp4"
        log(f"quality {res_name}: encoding the lossless clip with {who}'s settings")
        pipeline = (
            f"filesrc location={ref} ! matroskademux ! h264parse ! avdec_h264 ! videoconvert ! "
            f"video/x-raw,format=I420 ! {enc} ! video/x-h264,profile=main ! h264parse ! "
            f"mp4mux ! filesink location={dst}"
        )
        r = run_quiet(["gst-launch-1.0", "-q", "-e", *pipeline.split()], timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"offline encode ({who}) failed: {(r.stdout + r.stderr)[-300:]}")
        r = run_quiet(
            ["ffmpeg", "-hide_banner", "-nostats", "-i", str(dst), "-i", str(ref), "-lavfi",
             f"[0:v]setpts=N/({FPS}*TB)[a];[1:v]setpts=N/({FPS}*TB)[b];[a][b]ssim", "-f", "null", "-"],
            timeout=600,
        )
        m = re.search(r"SSIM Y:([\d.]+).*All:([\d.]+)", r.stderr)
        if not m:
            raise RuntimeError(f"ssim failed ({who}): {r.stderr[-300:]}")
        info = ffprobe_json(dst, "-count_packets", "-select_streams", "v:0",
                            "-show_entries", "stream=nb_read_packets,bit_rate,profile")["streams"][0]
        out[who] = {"ssim": float(m.group(2)), "ssim_y": float(m.group(1)),
                    "kbps": int(info.get("bit_rate", 0)) / 1000, "frames": int(info["nb_read_packets"]),
                    "ref_frames": nref}
    return out


# --------------------------------------------------------------------------------------------
# Service mode: idle daemon and reservation ack latency


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_str(field, s):
    b = s.encode() if isinstance(s, str) else s
    return bytes([(field << 3) | 2]) + varint(len(b)) + b


def pb_int(field, n):
    return bytes([(field << 3) | 0]) + varint(n)


def pb_read(buf):
    """Top-level fields of a protobuf message: {field: value} (length-delimited as bytes)."""
    i, out = 0, {}
    while i < len(buf):
        key, i = _rv(buf, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _rv(buf, i)
        elif wt == 2:
            n, i = _rv(buf, i)
            v, i = buf[i : i + n], i + n
        else:
            raise ValueError(f"wire type {wt}")
        out[f] = v
    return out


def _rv(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def guid(prefix):
    return prefix + "".join(random.choice(BASE57) for _ in range(12))


def health(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            return r.read().decode().strip()
    except OSError:
        return None


def run_service(binary, work):
    import redis

    row = {"name": "ours service", "errors": []}
    rport, hport = free_port(), free_port()
    rs = spawn("redis-server", ["redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
                                "--appendonly", "no", "--dir", str(work)])
    rec = None
    try:
        r = redis.Redis(host="127.0.0.1", port=rport, socket_timeout=5)
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or rs.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
        row["load"] = wait_quiet(row["name"])
        cfg = (f'redis: {{address: "127.0.0.1:{rport}"}}\nhealth_port: {hport}\nreservation_timeout: 1\n'
               f"file_output: {{local: true, work_dir: {json.dumps(str(work))}}}\n")
        env = {**os.environ, "SERVICE_MODE": "1", "LIVEKIT_RECORDER_CONFIG": cfg,
               "RUST_LOG": "livekit_recorder=info"}
        env.pop("RECORDING_REQUEST", None)
        env.pop("LOG_FORMAT", None)
        log("service: starting the daemon")
        rec = spawn("ours service", [str(binary)], env=env, cwd=str(work),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        err = LineReader(rec.stderr, work / "service.log")
        LineReader(rec.stdout)
        deadline = time.monotonic() + 30
        while health(hport) != "available":
            if rec.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not become available: {err.text()[-400:]}")
            time.sleep(0.05)
        time.sleep(2)
        log("service: idle for 10 s")
        m = measure_window(lambda: [rec.pid], 10)
        row["cpu"] = m["cpu"]
        row["other_cpu"] = m["other_cpu"]
        row["rss"] = m["rss"]
        row["pss"] = m["pss"]
        row["procs"] = m["procs"]

        log(f"service: {RESERVATIONS} reservations")
        ps = r.pubsub()
        lat, timeouts, race, bad = [], 0, 0, 0
        t_all = time.monotonic()
        for i in range(RESERVATIONS):
            deadline = time.monotonic() + 10
            first = True
            while True:
                st = health(hport)
                if st == "available":
                    if r.pubsub_numsub("RESERVE_RECORDER")[0][1] >= 1:
                        break
                    if first:
                        race += 1  # 'available' said before the reservation channel is heard
                first = False
                if time.monotonic() > deadline or rec.poll() is not None:
                    raise RuntimeError(f"service not available again (health {st!r}) after reservation {i}")
                time.sleep(0.002)
            rid = guid("RR_")
            chan = f"RECORDING_RESPONSE_{rid}"
            ps.subscribe(chan)
            while True:  # the subscription is active once confirmed
                msg = ps.get_message(timeout=3)
                if msg and msg["type"] == "subscribe":
                    break
                if msg is None:
                    raise RuntimeError("redis subscribe not confirmed")
            payload = pb_str(1, rid) + pb_int(2, int(time.time() * 1000))
            t0 = time.perf_counter()
            r.publish("RESERVE_RECORDER", payload)
            got = None
            while time.perf_counter() - t0 < 3:
                msg = ps.get_message(timeout=max(0.0, 3 - (time.perf_counter() - t0)))
                if msg and msg["type"] == "message":
                    got = time.perf_counter()
                    break
            if got is None:
                timeouts += 1
                ps.unsubscribe(chan)
                continue
            lat.append((got - t0) * 1000)
            # release it: a Start the recorder refuses (bad file name) makes it available at once
            rpc = guid("RPC_")
            start = pb_str(1, "http://127.0.0.1:9/") + pb_str(4, "bad.avi")
            r.publish(f"RECORDING_REQUEST_{rid}", pb_str(1, rpc) + pb_str(2, start))
            t1 = time.perf_counter()
            answered = False
            while time.perf_counter() - t1 < 3:
                msg = ps.get_message(timeout=max(0.0, 3 - (time.perf_counter() - t1)))
                if msg and msg["type"] == "message":
                    resp = pb_read(msg["data"])
                    if resp.get(1, b"").decode() == rpc:
                        answered = True
                        if not resp.get(2):
                            bad += 1  # the bad Start was accepted?
                        break
            if not answered:
                bad += 1
            ps.unsubscribe(chan)
        row["res_wall"] = time.monotonic() - t_all
        ps.close()
        row["lat"] = lat
        row["timeouts"], row["race"], row["bad"] = timeouts, race, bad
        st = read_stat(rec.pid)
        row["rss_after"] = st["rss"] if st else None
        t_term = time.monotonic()
        rec.send_signal(signal.SIGTERM)
        try:
            rec.wait(timeout=30)
            row["stop"] = time.monotonic() - t_term
        except subprocess.TimeoutExpired:
            row["errors"].append("service did not exit within 30 s of SIGTERM")
        if timeouts:
            row["errors"].append(f"{timeouts} reservations not acknowledged within 3 s")
        if bad:
            row["errors"].append(f"{bad} bad Starts not refused")
    finally:
        if rec is not None and rec.poll() is None:
            stop_group(rec, timeout=10)
        stop_group(rs, timeout=5)
    return row


# --------------------------------------------------------------------------------------------
# Egress worker: tests/egress_bench.rs does the work (worker, redis-server, the livekit-server
# double, a static page on loopback) and prints its samples on one EGRESS_BENCH_JSON line.


def run_egress(work):
    row = {"name": "ours egress", "errors": []}
    if not EGRESS_TEST or not os.access(EGRESS_TEST, os.X_OK):
        raise RuntimeError(f"no egress bench executable (BENCH_EGRESS_TEST={EGRESS_TEST!r}); "
                           "run through scripts/bench.sh, which builds it")
    row["exe"] = EGRESS_TEST
    row["load"] = wait_quiet(row["name"])
    log(f"egress: {EGRESS_CLAIMS} idle claims, then {EGRESS_N} web egresses of {EGRESS_SECONDS:.0f} s")
    env = {**os.environ, "BENCH_EGRESS_N": str(EGRESS_N), "BENCH_EGRESS_SECONDS": str(EGRESS_SECONDS),
           "BENCH_EGRESS_CLAIMS": str(EGRESS_CLAIMS)}
    for k in ("LIVEKIT_RECORDER_CONFIG", "RECORDING_REQUEST", "SERVICE_MODE", "EGRESS_MODE", "RUST_LOG"):
        env.pop(k, None)
    with open(work / "egress-bench.stderr", "w") as errf:
        p = spawn("egress bench", [EGRESS_TEST, "--ignored", "--exact", "egress_worker_latency",
                                   "--nocapture", "--test-threads=1"],
                  env=env, cwd=str(work), stdout=subprocess.PIPE, stderr=errf)
        out = LineReader(p.stdout, work / "egress-bench.log")
        deadline = time.monotonic() + 120 + 90 * EGRESS_N
        try:
            while p.poll() is None:
                if time.monotonic() > deadline:
                    row["errors"].append("did not finish in time")
                    break
                remember(snapshot(), [p.pid])  # for the leak check: worker, Chromium, Xvfb, ...
                time.sleep(1.0)
        finally:
            if p.poll() is None:
                stop_group(p, timeout=10)
    out.t.join(5)
    text = out.text()
    line = next((l for l in text.splitlines() if l.startswith("EGRESS_BENCH_JSON ")), None)
    if p.returncode != 0 or line is None:
        tail = (work / "egress-bench.stderr").read_text(errors="replace")[-300:]
        row["errors"].append(f"exit {p.returncode}: {(text[-600:] + tail).strip()}")
        return row
    row.update(json.loads(line.split(" ", 1)[1]))
    return row


# --------------------------------------------------------------------------------------------
# Report


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def fmt(v, spec, none="—"):
    return none if v is None else format(v, spec)


def report(rows, service, qual, settings, binary, failures, t_start, egress=None):
    cpu_model = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    out = []
    out.append("# livekit-recorder benchmark")
    out.append("")
    out.append(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}; "
               f"nproc: {os.cpu_count()}; CPU: {cpu_model}; bench took {(time.monotonic() - t_start) / 60:.1f} min")
    out.append(f"- ours: `{binary} ({'debug' if '/debug/' in str(binary) else 'release?'} build of the Rust code; "
               "GStreamer, x264, Chromium, Xvfb, PulseAudio are the system's release builds) "
               f"on the busy demo page (demo/index.html), measured window {SECONDS:.0f} s per recording, "
               "rows interleaved ours/seed")
    for res_name in PRESETS:
        _, w, h, kbps = PRESETS[res_name]
        if res_name in settings:
            out.append(f"- ours {res_name}: ximagesrc → queue → videoconvert n-threads=2 → {settings[res_name][1]} → "
                       f"`{settings[res_name][0]}` profile=main → h264parse → mp4mux fragmented (1 s) then faststart "
                       f"rewrite; pulsesrc → audioresample → audioconvert → avenc_aac 128 kbps (settings read from "
                       f"src/pipeline/mod.rs at run time)")
        out.append(f"- seed {res_name}: gst-launch-1.0 ximagesrc → videoconvert → `{seed_video_settings(kbps)}` "
                   f"profile=main → mp4mux faststart=true; pulsesrc → audioconvert → S16LE 44.1 kHz → avenc_aac "
                   f"128 kbps (protocol.md §4.7; avenc_aac replaces faac, which does not exist here; videoconvert "
                   f"negotiates I420 with x264enc, as ours converts to); Xvfb "
                   f"{w}x{h}x24, private PulseAudio, Chromium with the §4.5 flags")
    if egress:
        out.append(f"- ours egress: the worker (EGRESS_MODE=1; `{egress.get('exe', '?')}`, i.e. the "
                   f"`livekit-recorder` cargo built for tests/egress_bench.rs, same profile as above) on a private "
                   f"redis-server, driven by the livekit-server double of tests/common/egress.rs (psrpc, "
                   f"StartEgress selection as livekit-server: an idle worker claims with affinity 0.5, the best "
                   f"claim is taken 500 ms after the first), web egresses of a static local page to local MP4 "
                   f"files (H264_720P_30 preset), one at a time, all on loopback")
    out.append("")
    hdr = ["row", "CPU (cores)", "memory PSS (MB)", "fps delivered", "frames got/expected", "dropped (ts gaps)",
           "duplicates (identical)", "A/V offset (ms)", "A/V drift (ms)", "video kbps", "SSIM @ same bitrate",
           "start (s)", "stop (s)", "note"]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "|".join("---" for _ in hdr) + "|")
    for row in rows:
        a = row.get("analysis") or {}
        who, res_name = row["name"].split()
        q = (qual.get(res_name) or {}).get(who)
        notes = []
        if row.get("errors"):
            notes.append("FAILED: " + "; ".join(row["errors"]))
        if "load" in row:
            notes.append(f"load before {row['load']:.2f}")
        if row.get("other_cpu") is not None and row["other_cpu"] > 0.05:
            notes.append(f"other processes used {row['other_cpu']:.2f} cores during the window")
        if row.get("procs"):
            notes.append(f"{row['procs']} processes in the tree")
        if row.get("lost"):
            notes.append(f"{row['lost']} processes vanished unreaped during the window (CPU undercounted)")
        if a:
            notes.append(f"audio {a['adur']:.2f} s for video {a['vdur']:.2f} s, first audio at {a['astart'] * 1000:.0f} ms, "
                         f"{a['agaps']} audio gaps")
            notes.append(f"A/V from {a['pairs']} flash/beep pairs ({a['flashes']} flashes, {a['beeps']} beeps), "
                         f"spread {fmt(a.get('offset_spread'), '.0f')} ms")
            notes.append(f"file {a['kbps']:.0f} kbps total")
        if q:
            notes.append(f"SSIM: offline re-encode of a {q['ref_frames']}-frame lossless clip with this row's settings "
                         f"({q['kbps']:.0f} kbps achieved, Y {q['ssim_y']:.4f})")
        if who == "seed":
            notes.append("start not comparable (Xvfb, Pulse, Chromium staged by the bench first)")
            notes.append("stop = SIGINT → gst-launch exit (EOS, faststart moov)")
        else:
            notes.append("start = process start → 'recording' log line (pipeline playing); "
                         "stop = SIGTERM → process exit (Chromium, Xvfb, Pulse stopped; file finished)")
            if row.get("page_at") is not None:
                notes.append(f"log: 'opening page' {row['page_at']:.2f} s after process start")
            if row.get("stop_file") is not None:
                notes.append(f"log: signal → {row['stop_file_what']} {row['stop_file']:.2f} s")
        frames = f"{a['frames']}/{a['expected']}" if a else "—"
        cells = [row["name"], fmt(row.get("cpu"), ".2f"), fmt((row.get("pss") or 0) / 1e6 if row.get("pss") else None, ".0f"),
                 fmt(a.get("fps"), ".2f"), frames, fmt(a.get("dropped"), "d"), fmt(a.get("dups"), "d"),
                 fmt(a.get("offset"), "+.0f"), fmt(a.get("drift"), "+.0f"), fmt(a.get("vkbps"), ".0f"),
                 fmt(q["ssim"] if q else None, ".4f"), fmt(row.get("start"), ".2f"), fmt(row.get("stop"), ".2f"),
                 "; ".join(notes)]
        out.append("| " + " | ".join(cells) + " |")
    if service:
        s = service
        notes = []
        if s.get("errors"):
            notes.append("FAILED: " + "; ".join(s["errors"]))
        if "load" in s:
            notes.append(f"load before {s['load']:.2f}")
        if s.get("rss") is not None:
            notes.append(f"idle daemon: RSS {s['rss'] / 1e6:.1f} MB, PSS {s['pss'] / 1e6:.1f} MB, "
                         f"{s['cpu'] * 100:.2f} % of a core over 10 s, {s.get('procs')} process(es)")
        if s.get("rss_after"):
            notes.append(f"RSS after the reservations {s['rss_after'] / 1e6:.1f} MB")
        lat = s.get("lat") or []
        if lat:
            notes.append(f"reservation ack = PUBLISH RESERVE_RECORDER → first message on RECORDING_RESPONSE_<id>, "
                         f"{len(lat)} acks, {s.get('timeouts', 0)} not acked within 3 s; each released by a refused "
                         f"Start (bad.avi); {s.get('race', 0)} times /health said 'available' before the recorder "
                         f"was subscribed to RESERVE_RECORDER (the bench waited for PUBSUB NUMSUB ≥ 1)")
            notes.append(f"{len(lat)} reserve/release cycles took {s['res_wall']:.1f} s")
        if s.get("stop") is not None:
            notes.append(f"SIGTERM → exit {s['stop']:.2f} s")
        ack = (f"ack p50 {pct(lat, .5):.2f} / p99 {pct(lat, .99):.2f} / max {max(lat):.2f} ms" if lat else "—")
        cells = ["ours service (idle 10 s; reservations)", fmt(s.get("cpu"), ".3f"),
                 fmt(s["pss"] / 1e6 if s.get("pss") else None, ".1f"), "—", "—", "—", "—", "—", "—", "—", "—",
                 ack, fmt(s.get("stop"), ".2f"), "; ".join(notes)]
        out.append("| " + " | ".join(cells) + " |")
    if egress:
        out.extend(egress_rows(egress))
    out.append("")
    out.append("Columns: CPU = utime+stime (+ reaped children) of every process the recording runs (recorder or "
               "gst-launch, Xvfb, PulseAudio, parec, Chromium and its helpers, found by parent links although they "
               "sit in process groups of their own; Chromium's crashpad handlers detach to init and are not counted) "
               "over the window, in cores; PSS at the end of the window. fps delivered = video packets / video "
               "duration; expected = duration × 30. dropped = frames missing from gaps in the video timestamps "
               "(capture fell behind); duplicates = frames ffmpeg's mpdecimate (defaults) finds near-identical to "
               "the previous one (the page changes every rendered frame, so a duplicate is the same page frame "
               "captured twice, i.e. Chromium rendered slower than 30 fps). A/V offset = mean(beep onset − flash "
               "onset), positive = audio late; flash onset = first frame with YAVG > 150 (flash ≈ 225, page ≈ 60-85), "
               "beep onset = end of silence after two 1 kHz band-passes (-30 dB); the video side is quantised to "
               "33 ms frames and includes Chromium's render latency, so a few tens of ms either way is the "
               "measurement's resolution; drift = mean offset of the last 5 s minus that of the first 5 s. video kbps "
               "= the video stream's bitrate in the file.")
    if failures:
        out.append("")
        out.append("FAILED: " + "; ".join(failures))
    return "\n".join(out) + "\n"


def egress_rows(e):
    dash = ["—"] * 10  # CPU .. SSIM

    def figs(xs, unit, label):
        if not xs:
            return "—"
        xs = [x / unit for x in xs]
        return f"p50 {pct(xs, .5):.2f} / p95 {pct(xs, .95):.2f} / max {max(xs):.2f} {label}"

    def line(name, start, stop, notes):
        return "| " + " | ".join([name, *dash, start, stop, "; ".join(notes)]) + " |"

    common = []
    if e.get("errors"):
        common.append("FAILED: " + "; ".join(e["errors"]))
    if "load" in e:
        common.append(f"load before {e['load']:.2f}")
    s = e.get("samples") or {}
    if not s:
        return [line("ours egress", "—", "—", common)]
    n = e.get("n", 0)
    idle = s.get("idle_claim_ms") or []
    stop = s.get("stop_to_complete_ms") or []
    out = [
        line(f"ours egress idle ({len(idle)} StartEgress claims)", f"claim {figs(idle, 1, 'ms')}", "—",
             common + [f"StartEgress publish → the idle worker's ClaimRequest arrival; each request released by a "
                       f"ClaimResponse naming another server (no recording); the worker logged "
                       f"ready within {e.get('ready_ms', 0):.0f} ms of its spawn (log polled every 50 ms)"]),
        line(f"ours egress StartEgress claim → response (N={n})", figs(s.get("claim_to_response_ms"), 1, "ms"), "—",
             common + [f"ClaimRequest arrival → StartEgress Response arrival, including the node's 500 ms selection "
                       f"wait for a 0.5 claim; of which choice (ClaimResponse) → Response "
                       f"{figs(s.get('choice_to_response_ms'), 1, 'ms')} (validate, subscribe StopEgress/"
                       f"UpdateStream, IOInfo.CreateEgress answered, session spawned); publish → ClaimRequest "
                       f"{figs(s.get('claim_ms'), 1, 'ms')}; publish → Response "
                       f"{figs(s.get('start_response_ms'), 1, 'ms')}; {s.get('retries', 0)} retries"]),
        line(f"ours egress StartEgress → ACTIVE (N={n})", figs(s.get("start_to_active_ms"), 1000, "s"),
             f"p50 {pct(stop, .5) / 1000:.2f} / max {max(stop) / 1000:.2f}" if stop else "—",
             common + [f"StartEgress publish → IOInfo UpdateEgress(ACTIVE) arrival at the node (Xvfb, PulseAudio, "
                       f"Chromium, page load, pipeline playing); stop = StopEgress publish → the COMPLETE update's "
                       f"arrival (file finished); {e.get('record_seconds', 0):.0f} s recorded per egress after ACTIVE"]),
    ]
    return out


# --------------------------------------------------------------------------------------------


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def main():
    binary = Path(sys.argv[1]).resolve()
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="lkrec-bench-"))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(REPO / "demo")))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    log(f"serving demo/ at {url}; work dir {work}; window {SECONDS:.0f} s")
    # a private copy: a cargo build in the same checkout must not swap the binary mid-run
    shown = binary
    built = datetime.datetime.fromtimestamp(binary.stat().st_mtime).astimezone().isoformat(timespec="seconds")
    binary = work / "livekit-recorder"
    shutil.copy2(shown, binary)

    rows, failures, qual, settings, service, egress = [], [], {}, {}, None, None
    for res_name in PRESETS:
        kbps = PRESETS[res_name][3]
        try:
            settings[res_name] = (our_encoder_settings(kbps), our_profile())
        except Exception as e:  # documented fallback
            settings[res_name] = (f"x264enc bitrate={kbps} speed-preset=veryfast tune=zerolatency key-int-max={2 * FPS}"
                                  f" (could not read src/pipeline/mod.rs: {e}; documented settings used)", "I420")

    def guarded(label, fn):
        try:
            return fn()
        except Exception as e:
            log(f"{label} failed: {e}")
            failures.append(f"{label}: {e}")
            return None

    try:
        order = []
        for res_name in PRESETS:
            order += [("ours", res_name), ("seed", res_name)]
        for who, res_name in order:
            key = f"{who}{res_name[:-3]}"
            if not wanted(key):
                continue
            if who == "ours":
                row = guarded(f"ours {res_name}", lambda: run_ours(binary, res_name, url, work))
            else:
                row = guarded(f"seed {res_name}", lambda: run_seed(res_name, url, work))
            if row is None:
                row = {"name": f"{who} {res_name}", "errors": ["run failed (see FAILED below)"]}
            elif row.get("errors"):
                failures.append(f"{row['name']}: " + "; ".join(row["errors"]))
            if row.get("file") and Path(row["file"]).exists():
                log(f"{row['name']}: analysing {row['file'].name}")
                row["analysis"] = guarded(f"{row['name']} analysis", lambda: analyse(row["file"], work))
            elif "file" in row:
                failures.append(f"{row['name']}: no output file")
            rows.append(row)
        if wanted("service"):
            service = guarded("service", lambda: run_service(binary, work))
            if service and service.get("errors"):
                failures.append("service: " + "; ".join(service["errors"]))
        if wanted("egress"):
            egress = guarded("egress", lambda: run_egress(work))
            if egress and egress.get("errors"):
                failures.append("egress: " + "; ".join(egress["errors"]))
        if wanted("quality"):
            for res_name in PRESETS:
                q = guarded(f"quality {res_name}", lambda: quality(res_name, url, work, settings[res_name][0]))
                if q:
                    qual[res_name] = q
    except KeyboardInterrupt:
        failures.append("interrupted")
    finally:
        cleanup_all()
        httpd.shutdown()
        left = leftovers()
        log(f"leak check: {len(SEEN)} processes seen in our trees, {len(left)} still running")
        if left:
            failures.append("processes left behind: " + ", ".join(left))

    md = report(rows, service, qual, settings, f"{shown}` built {built}", failures, t_start, egress)
    print(md, end="")
    (REPO / "out").mkdir(exist_ok=True)
    (REPO / "out" / "bench.md").write_text(md)
    if KEEP:
        log(f"kept {work}")
    else:
        subprocess.run(["rm", "-rf", str(work)])
    log(f"written out/bench.md; {'FAILED' if failures else 'ok'}")
    return 1 if failures else 0


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, _on_signal)
    sys.exit(main())
