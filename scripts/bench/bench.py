#!/usr/bin/env python3
"""livekit-recorder benchmark; run through scripts/bench.sh (see there for the environment).

Rows, measured in one run on the same machine:
  ours 720p30 / ours 1080p30   the recorder in standalone mode on the demo page
  seed 720p30 / seed 1080p30   a replica of the original pipeline (protocol.md 4.7) with
                               gst-launch-1.0, Xvfb, a private PulseAudio and Chromium (4.5 flags)
  ours/seed <size> heavy       the same on scripts/bench/pages/heavy.html (2000 gradient particles,
                               text, a blurred layer, CSS animations, redrawn every frame)
  ours/seed <size> grid4/grid9 a LiveKit-like room grid (scripts/bench/pages/grid.html) playing 4 / 9
                               looping 720p30 videos with sound, half VP8+Opus WebM and half
                               H.264+AAC MP4, generated with ffmpeg before anything is measured
                               and cached in out/bench-media/
  ours on Xvfb <size> [heavy]   ours forced onto Xvfb (LIVEKIT_RECORDER_X_SERVER=xvfb) instead of
                               Xorg at the frame rate: what the frame-rate display saves (BENCH_ONLY
                               keys xvfb720, xvfb1080-heavy, ...; by default on the demo and heavy)
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
import hashlib
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
import urllib.parse
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
# the production-like page rows (heavy, grid4, grid9) measure a shorter window by default, so that
# the whole bench fits in ~25 min on 2 cores
PAGE_SECONDS = float(os.environ.get("BENCH_PAGE_SECONDS", str(min(20.0, SECONDS))))
# page rows: seconds between 'recording' (ours) / PLAYING (seed) and the measured window, so that
# neither side measures the page's start (media download, decoder set-up)
PAGE_WARMUP = float(os.environ.get("BENCH_PAGE_WARMUP", "3"))
# quiet wait: the machine also counts as quiet when all its CPUs together were busy less than this
# many cores over 5 s (the 1-min load average still carries the previous recording for a minute);
# 0 = only the load average
QUIET_BUSY = float(os.environ.get("BENCH_QUIET_BUSY", "0.25"))
KEEP = os.environ.get("BENCH_KEEP") == "1"
EGRESS_TEST = os.environ.get("BENCH_EGRESS_TEST", "")
EGRESS_N = int(os.environ.get("BENCH_EGRESS_N", "5"))
EGRESS_SECONDS = float(os.environ.get("BENCH_EGRESS_SECONDS", "3"))
EGRESS_CLAIMS = int(os.environ.get("BENCH_EGRESS_CLAIMS", "50"))

PRESETS = {  # name -> (preset, width, height, video kbps)
    "720p30": ("HD_30", 1280, 720, 3000),
    "1080p30": ("FULL_HD_30", 1920, 1080, 4500),
}

PAGES = {  # row suffix -> (path under the served root, what it is); "" = the demo page
    "": ("", "the busy demo page (demo/index.html)"),
    "heavy": ("heavy.html", "scripts/bench/pages/heavy.html: full-screen canvas redrawn every frame with 2000 "
              "radial-gradient particles, links, shadowed and scrolling text, under a blur(18px) layer of 8 "
              "animated blobs, a backdrop-filter card sliding across, a spinning conic gradient and 48 pulsing "
              "boxes (CSS animations); 440 Hz tone"),
    "grid4": ("grid.html?n=4", "scripts/bench/pages/grid.html?n=4: 2x2 CSS grid of looping 720p30 videos with "
              "sound, name labels, a moving active-speaker border"),
    "grid9": ("grid.html?n=9", "scripts/bench/pages/grid.html?n=9: 3x3 grid, as grid4"),
}
PAGES_DIR = REPO / "scripts" / "bench" / "pages"
MEDIA_DIR = REPO / "out" / "bench-media"
MEDIA_SECONDS = 20
MEDIA_KBPS = 2000


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wanted(name):
    return not ONLY or name in ONLY


def row_key(who, res_name, page=""):
    """BENCH_ONLY name of a row: ours720, seed1080, ours720-heavy, seed1080-grid9, ..."""
    return f"{who}{res_name[:-3]}" + (f"-{page}" if page else "")


def grid_tiles(page):
    m = re.fullmatch(r"grid(\d+)", page)
    return int(m.group(1)) if m else 0


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


CPU_GROUPS = [  # (key, column title)
    ("renderer", "Chromium renderer(s)"),
    ("gpu", "Chromium GPU process"),
    ("browser", "Chromium browser"),
    ("chromium", "other Chromium (utility, zygote, ...)"),
    ("x", "X server"),
    ("pulse", "PulseAudio"),
    ("rec", "recorder / gst-launch"),
    ("other", "other"),
]
_CMDLINES = {}  # (pid, start) -> argv


def cmdline(pid, start):
    key = (pid, start)
    if key not in _CMDLINES:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            raw = b""
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        # Chromium's zygote children rewrite their title into one space-separated string
        if len(argv) == 1 and " --" in argv[0]:
            argv = argv[0].split(" ")
        _CMDLINES[key] = argv
    return _CMDLINES[key]


def cpu_group(st, roots):
    """The process group a process's CPU is reported under: by its name, and for Chromium by its
    --type= argument (none = the browser process)."""
    pid, comm = st["pid"], st["comm"]
    if pid in roots:
        return roots[pid]
    if comm in ("Xvfb", "Xorg"):
        return "x"
    if comm in ("pulseaudio", "parec"):
        return "pulse"
    argv = cmdline(pid, st["start"])
    exe = os.path.basename(argv[0]) if argv else ""
    if "chrom" in exe or "chrom" in comm:
        typ = next((a.split("=", 1)[1] for a in argv if a.startswith("--type=")), None)
        if typ is None:
            return "browser" if exe in ("chromium", "chrome") or comm in ("chromium", "chrome") else "chromium"
        return {"renderer": "renderer", "gpu-process": "gpu"}.get(typ, "chromium")
    return "other"


def measure_window(roots_fn, seconds, abort=None, groups=None):
    """Average cores used by the trees under roots_fn() over `seconds`, sampled each 0.5 s; also
    split by cpu_group() (`groups`: pid -> group of a root process, e.g. the recorder -> "rec")."""
    groups = groups or {}
    table = snapshot()
    roots = roots_fn()
    remember(table, roots)
    pids0 = tree(table, roots)
    table0 = table
    group0 = {p: cpu_group(table0[p], groups) for p in pids0}
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
    # by group: ticks at the end minus ticks at the start of the same process; a process gone by
    # the end took its time into its parent's cutime/cstime, so its start ticks are taken from
    # the parent's group (the groups add up to the total)
    by_group = {g: 0 for g, _ in CPU_GROUPS}
    group1 = {p: cpu_group(table[p], groups) for p in pids1}
    for p in pids1:
        by_group[group1[p]] += table[p]["ticks"]
    for p in pids0:
        if p in pids1:
            g = group1[p]
        else:
            parent = table0[p]["ppid"]
            g = group1[parent] if parent in pids1 else group0[p]
        by_group[g] -= table0[p]["ticks"]
    counts, pss_by_group = {}, {}
    for p in pids1:
        counts[group1[p]] = counts.get(group1[p], 0) + 1
        pss_by_group[group1[p]] = pss_by_group.get(group1[p], 0) + pss_bytes([p])
    return {
        "cpu": ours,
        "groups": {g: v / CLK / wall for g, v in by_group.items()},
        "group_procs": counts,
        "other_cpu": max(0.0, (sys1 - sys0) / CLK / wall - ours),
        "wall": wall,
        "procs": max_procs,
        "pss": sum(pss_by_group.values()),
        "pss_groups": pss_by_group,
        "rss": sum(table[p]["rss"] for p in pids1),
        "lost": len(lost),
        "failed": failed,
    }


def busy_cores(seconds):
    """Cores the whole machine used over the next `seconds`."""
    s0, t0 = system_busy_ticks(), time.monotonic()
    time.sleep(seconds)
    return (system_busy_ticks() - s0) / CLK / (time.monotonic() - t0)


def wait_quiet(label, row=None):
    """Waits until the 1-min load average is below QUIET_LOAD or, with QUIET_BUSY > 0, the machine
    used less than QUIET_BUSY cores over 5 s (then the load average is the previous run's echo);
    at most QUIET_MAX s. Returns the load average; row["busy"] = the last 5 s figure."""
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    busy = None
    if load >= QUIET_LOAD:
        log(f"{label}: waiting for the 1-min load average ({load:.2f}) to fall below {QUIET_LOAD}"
            + (f" or the machine to use < {QUIET_BUSY} cores over 5 s" if QUIET_BUSY > 0 else ""))
    while load >= QUIET_LOAD and time.monotonic() - t0 < QUIET_MAX:
        if QUIET_BUSY > 0:
            busy = busy_cores(5)
            if busy < QUIET_BUSY:
                break
        else:
            time.sleep(5)
        load = os.getloadavg()[0]
    waited = time.monotonic() - t0
    if load >= QUIET_LOAD and (busy is None or busy >= QUIET_BUSY):
        log(f"{label}: load still {load:.2f}" + (f", {busy:.2f} cores busy" if busy is not None else "")
            + f" after {waited:.0f} s; measuring anyway")
    if row is not None and busy is not None:
        row["busy"] = busy
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
    missing, gaps, longest = 0, 0, 0.0
    for x, y in zip(pts, pts[1:]):
        d = y - x
        longest = max(longest, d)
        if d > 1.5 / FPS:  # > 50 ms at 30 fps
            gaps += 1
            missing += max(0, round(d * FPS) - 1)
    res["dropped"] = missing
    res["gaps"] = gaps
    res["max_gap"] = longest * 1000 if len(pts) > 1 else None
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
        # loudness of the whole track (the grid pages' video sound, the pages' tones and beeps)
        r = run_quiet(["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-vn", "-af", "volumedetect",
                       "-f", "null", "-"], timeout=300)
        m = re.search(r"mean_volume: (\S+) dB", r.stderr)
        res["mean_db"] = float(m.group(1)) if m else None
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


def run_ours(binary, res_name, url, work, page="", x_server="auto"):
    """One recording by this recorder. x_server="xvfb" is the "ours-xvfb" row: the recorder forced
    onto Xvfb (LIVEKIT_RECORDER_X_SERVER), to show what the frame-rate display saves."""
    preset, w, h, kbps = PRESETS[res_name]
    tag = f"{res_name}-{page}" if page else res_name
    who = "ours" if x_server == "auto" else f"ours-{x_server}"
    seconds = PAGE_SECONDS if page else SECONDS
    out = work / f"{who}-{tag}.mp4"
    run = f"{who}-{tag}"
    if page:
        url = with_run(url, run)
    req = {"url": url, "filepath": str(out), "options": {"preset": preset}}
    env = dict(os.environ)
    env.update({
        "LIVEKIT_RECORDER_CONFIG": "file_output: {local: true}",
        "RECORDING_REQUEST": json.dumps(req),
        # session=debug adds "rewrote the file with its index in front" (the file is finished)
        "RUST_LOG": "livekit_recorder=info,livekit_recorder::session=debug",
        "LIVEKIT_RECORDER_X_SERVER": x_server,
    })
    env.pop("LOG_FORMAT", None)
    env.pop("SERVICE_MODE", None)
    label = "ours" if x_server == "auto" else f"ours on {x_server.capitalize()}"
    row = {"name": f"{label} {res_name}" + (f" {page}" if page else ""), "file": out, "errors": [], "page": page,
           "seconds": seconds}
    row["load"] = wait_quiet(row["name"], row)
    log(f"{row['name']}: recording {url} for {seconds:.0f} s" + (f" (after {PAGE_WARMUP:.0f} s warm-up)" if page else ""))
    t_spawn = time.monotonic()
    wall_spawn = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    p = spawn(row["name"], [str(binary)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = LineReader(p.stderr, work / f"{who}-{tag}.log")
    outr = LineReader(p.stdout)
    try:
        t_rec = err.wait_for(r" recording id=standalone|\"message\":\"recording\"", 90, proc=p)
        if t_rec is None:
            raise RuntimeError(f"the recorder did not start recording (exit {p.poll()}): {err.text()[-500:]}")
        row["start"] = t_rec - t_spawn
        if page:
            time.sleep(PAGE_WARMUP)
        s0 = page_sample(run)
        m = measure_window(lambda: [p.pid], seconds, groups={p.pid: "rec"},
                           abort=lambda: f"the recorder exited early ({p.poll()})" if p.poll() is not None else None)
        row.update(m)
        if page:
            row["pagefig"] = page_figures(s0, page_sample(run))
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
        enc = re.search(r'video encoder encoder="([^"]+)"', err.text())
        if enc:
            row["encoder"] = enc.group(1)
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

    def __init__(self, label, w, h, url, work):  # url: the demo page or a bench page
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
                raise RuntimeError(f"the page ({self.url}) did not start playing in Chromium")
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


def run_seed(res_name, url, work, page=""):
    _, w, h, kbps = PRESETS[res_name]
    tag = f"{res_name}-{page}" if page else res_name
    seconds = PAGE_SECONDS if page else SECONDS
    out = work / f"seed-{tag}.mp4"
    run = f"seed-{tag}"
    if page:
        url = with_run(url, run)
    row = {"name": f"seed {res_name}" + (f" {page}" if page else ""), "file": out, "errors": [], "page": page,
           "seconds": seconds}
    row["load"] = wait_quiet(row["name"], row)
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
        log(f"{row['name']}: recording for {seconds:.0f} s" + (f" (after {PAGE_WARMUP:.0f} s warm-up)" if page else ""))
        gst = spawn(f"{row['name']} gst-launch", ["stdbuf", "-oL", "-eL", "gst-launch-1.0", "-e",
                                                  *pipeline.split()],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    env={**os.environ, "PULSE_RUNTIME_PATH": str(env.dir / "pulse"),
                         "HOME": str(env.dir / "pulse")})
        rd = LineReader(gst.stdout, work / f"seed-{tag}.log")
        t_play = rd.wait_for(r"Setting pipeline to PLAYING", 30, proc=gst)
        if t_play is None:
            raise RuntimeError(f"gst-launch did not play: {rd.text()[-500:]}")
        if page:
            time.sleep(PAGE_WARMUP)
        roots = lambda: env.pids() + [gst.pid]
        s0 = page_sample(run)
        m = measure_window(roots, seconds, groups={gst.pid: "rec"}, abort=lambda: (
            f"gst-launch exited early ({gst.poll()})" if gst.poll() is not None else None))
        row.update(m)
        if page:
            row["pagefig"] = page_figures(s0, page_sample(run))
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
# Encoder settings: ours, as the recorder logs them ("video encoder"); the colour format from the source


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


def report(rows, service, qual, settings, binary, failures, t_start, egress=None, media_info=""):
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
    pages = [pg for pg in PAGES if pg and any(r.get("page") == pg for r in rows)]
    if pages:
        out.append(f"- production-like pages (rows `<who> <size> <page>`), measured window {PAGE_SECONDS:.0f} s per "
                   f"recording (BENCH_PAGE_SECONDS), starting {PAGE_WARMUP:.0f} s after ours logs 'recording' / "
                   f"the seed's gst-launch is PLAYING (BENCH_PAGE_WARMUP; the file holds the warm-up too); every "
                   f"page carries demo-like A/V marks (scripts/bench/pages/av.js: a full-page white flash and a "
                   f"1 kHz beep once a second):")
        for pg in pages:
            out.append(f"  - {pg}: {PAGES[pg][1]}")
        if media_info:
            out.append(f"  - grid media (out/bench-media/, generated by ffmpeg: {MEDIA_SECONDS} s 720p{FPS}, "
                       f"gradients + a wandering testsrc2 + noise, a quiet 200-470 Hz sine per tile; even tiles "
                       f"VP8+Opus WebM, odd H.264+AAC MP4; played muted=false with autoplay, both recorders pass "
                       f"--autoplay-policy=no-user-gesture-required): {media_info}")
    for res_name in PRESETS:
        _, w, h, kbps = PRESETS[res_name]
        if res_name in settings:
            out.append(f"- ours {res_name}: Xorg with the dummy driver, a {w}x{h} mode at {FPS} Hz (Xvfb in the "
                       f"'ours on Xvfb' rows); ximagesrc → queue → videoconvert n-threads=2 → {settings[res_name][1]} → "
                       f"`{settings[res_name][0]}` profile=main → h264parse → mp4mux fragmented (1 s) then faststart "
                       f"rewrite; pulsesrc → audioresample → audioconvert → avenc_aac 128 kbps (x264 settings as the "
                       f"recorder logged them)")
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
    group_cols = [g for g, _ in CPU_GROUPS if g != "other"]
    hdr = ["row", "CPU (cores)", *[f"CPU {title}" for g, title in CPU_GROUPS if g in group_cols],
           "memory PSS (MB)", "fps delivered", "frames got/expected", "dropped (ts gaps)", "gaps > 50 ms",
           "longest gap (ms)", "duplicates (identical)", "page rAF fps", "tile videos: playing, decoded fps min/mean, dropped", "A/V offset (ms)", "A/V drift (ms)", "video kbps",
           "SSIM @ same bitrate", "start (s)", "stop (s)", "note"]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "|".join("---" for _ in hdr) + "|")
    for row in rows:
        a = row.get("analysis") or {}
        who, res_name = row["name"].split()[:2]
        q = None if row.get("page") else (qual.get(res_name) or {}).get(who)
        grp = row.get("groups") or {}
        notes = []
        if row.get("errors"):
            notes.append("FAILED: " + "; ".join(row["errors"]))
        if "load" in row:
            notes.append(f"load before {row['load']:.2f}"
                         + (f" (machine {row['busy']:.2f} cores busy over the 5 s before)" if "busy" in row else ""))
        if row.get("page"):
            notes.append(f"window {row.get('seconds', PAGE_SECONDS):.0f} s after {PAGE_WARMUP:.0f} s warm-up")
        if grp.get("other", 0) > 0.005:
            notes.append(f"other processes in the tree {grp['other']:.2f} cores")
        if row.get("group_procs"):
            notes.append("processes: " + ", ".join(f"{g} {n}" for g, n in sorted(row["group_procs"].items())))
        if row.get("pss_groups"):
            notes.append("PSS MB by group: " + ", ".join(
                f"{g} {v / 1e6:.0f}" for g, v in sorted(row["pss_groups"].items(), key=lambda kv: -kv[1])))
        pf = row.get("pagefig") or {}
        if row.get("page") and not pf:
            notes.append("no figures from the page (it did not post to /bench-stats)")
        if pf:
            notes.append(f"page figures over {pf['span']:.1f} s of its own clock, audio {pf.get('audio')}")
            if pf.get("muted"):
                notes.append(f"{pf['muted']} videos muted (autoplay with sound refused)")
            if pf.get("tile_errors"):
                notes.append("video errors: " + "; ".join(pf["tile_errors"]))
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
            if a.get("mean_db") is not None:
                notes.append(f"audio mean volume {a['mean_db']:.1f} dB")
        if q:
            notes.append(f"SSIM: offline re-encode of a {q['ref_frames']}-frame lossless clip with this row's settings "
                         f"({q['kbps']:.0f} kbps achieved, Y {q['ssim_y']:.4f})")
        if who == "seed":
            notes.append("start not comparable (Xvfb, Pulse, Chromium staged by the bench first)")
            notes.append("stop = SIGINT → gst-launch exit (EOS, faststart moov)")
        else:
            notes.append("start = process start → 'recording' log line (pipeline playing); "
                         "stop = SIGTERM → process exit (Chromium, X server, Pulse stopped; file finished)")
            if row.get("page_at") is not None:
                notes.append(f"log: 'opening page' {row['page_at']:.2f} s after process start")
            if row.get("stop_file") is not None:
                notes.append(f"log: signal → {row['stop_file_what']} {row['stop_file']:.2f} s")
        frames = f"{a['frames']}/{a['expected']}" if a else "—"
        cells = [row["name"], fmt(row.get("cpu"), ".2f"), *[fmt(grp.get(g) if grp else None, ".2f") for g in group_cols],
                 fmt((row.get("pss") or 0) / 1e6 if row.get("pss") else None, ".0f"),
                 fmt(a.get("fps"), ".2f"), frames, fmt(a.get("dropped"), "d"), fmt(a.get("gaps"), "d"),
                 fmt(a.get("max_gap"), ".0f"), fmt(a.get("dups"), "d"), fmt(pf.get("raf_fps"), ".1f"),
                 (f"{pf['playing']}/{pf['tiles']}, {pf['tile_fps_min']:.1f}/{pf['tile_fps_mean']:.1f}, "
                  f"{pf['tile_dropped']}" if pf.get("tiles") else "—"),
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
        cells = ["ours service (idle 10 s; reservations)", fmt(s.get("cpu"), ".3f"), *["—"] * len(group_cols),
                 fmt(s["pss"] / 1e6 if s.get("pss") else None, ".1f"), *["—"] * (len(hdr) - 6 - len(group_cols)),
                 ack, fmt(s.get("stop"), ".2f"), "; ".join(notes)]
        out.append("| " + " | ".join(cells) + " |")
    if egress:
        out.extend(egress_rows(egress, len(hdr) - 4))
    out.append("")
    for res_name in PRESETS:
        ours = [r for r in rows if r["name"].split()[:2] == ["ours", res_name] and r.get("cpu") is not None]
        if not ours:
            continue
        top = max(ours, key=lambda r: r["cpu"])
        each = ", ".join(f"{r.get('page') or 'demo'} {r['cpu']:.2f}" for r in ours)
        n = int(os.cpu_count() / top["cpu"]) if top["cpu"] > 0 else 0
        out.append(f"- capacity {res_name}: {top['cpu']:.2f} cores per recording (max CPU among the ours {res_name} "
                   f"rows of this run, {top['name']}; {each}); this {os.cpu_count()}-core machine fits {n} "
                   f"such recording(s) with no headroom")
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
               "= the video stream's bitrate in the file. CPU by group: the same ticks split by process: Chromium "
               "processes by the --type= of their command line (renderer; gpu-process; none = the browser process; "
               "utility, zygote and the rest = other Chromium), X server = Xvfb or Xorg, PulseAudio = pulseaudio and "
               "parec (ours' audio clock anchor), recorder / gst-launch = our recorder process (capture, encoder, "
               "muxer threads) or the seed's gst-launch-1.0; processes of no group (if any) are in the notes; a "
               "process that ended in the window counts in its parent's group. gaps > 50 ms = consecutive video "
               "timestamps more than 1.5 frames apart; longest gap = the largest step between consecutive video "
               "timestamps (33 ms = none). page rAF fps = requestAnimationFrame callbacks per second the page "
               "itself counted over the window (the heavy page redraws its canvas in each: its real frame rate, "
               "whatever the capture delivers); tile videos = from the grid page's own <video>s "
               "(getVideoPlaybackQuality): playing/total, decoded frames per second of the slowest and the mean "
               "video (30 = full rate), frames Chromium dropped, over the window. On the grid pages the tiles' videos advance at 30 fps, so a duplicate "
               "there means no tile advanced between two captured frames. capacity = cores per recording, the "
               "largest CPU figure among the ours rows of that size (nproc / it = recordings per machine with no "
               "headroom).")
    if failures:
        out.append("")
        out.append("FAILED: " + "; ".join(failures))
    return "\n".join(out) + "\n"


def egress_rows(e, ndash=10):
    dash = ["—"] * ndash  # CPU .. SSIM

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


PAGE_STATS = {}  # run name -> the last figures its page posted
PAGE_STATS_LOCK = threading.Lock()


def page_sample(run):
    with PAGE_STATS_LOCK:
        return PAGE_STATS.get(run)


def page_figures(s0, s1):
    """What the page itself saw between two of its samples: animation frames per second, and for
    pages with <video>s: how many play, decoded frames per second per video, frames Chromium
    dropped, videos muted (autoplay with sound refused), errors."""
    if not s0 or not s1 or s1.get("t", 0) <= s0.get("t", 0):
        return None
    dt = s1["t"] - s0["t"]
    res = {"raf_fps": (s1["rafs"] - s0["rafs"]) / dt, "audio": s1.get("audio"), "span": dt}
    v0, v1 = s0.get("videos") or [], s1.get("videos") or []
    if v1 and len(v0) == len(v1):
        fps = [(b["frames"] - a["frames"]) / dt for a, b in zip(v0, v1)]
        res.update(tiles=len(v1), playing=sum(1 for v in v1 if v["playing"]),
                   muted=sum(1 for v in v1 if v["muted"]), tile_fps_min=min(fps),
                   tile_fps_mean=statistics.mean(fps),
                   tile_dropped=sum(b["dropped"] - a["dropped"] for a, b in zip(v0, v1)),
                   tile_errors=[v["error"] for v in v1 if v.get("error")])
    return res


def with_run(url, run):
    return url + ("&" if "?" in url else "?") + "run=" + urllib.parse.quote(run)


class QuietHandler(SimpleHTTPRequestHandler):
    """Static files, no request log; single byte ranges (Chromium's media player seeks and loops
    with Range requests)."""

    _left = None

    def log_message(self, *a):
        pass

    def end_headers(self):
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def send_head(self):
        self._left = None
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng or "")
        if not m or os.path.isdir(path) or not (m.group(1) or m.group(2)):
            return super().send_head()
        try:
            f = open(path, "rb")
        except OSError:
            return super().send_head()
        size = os.fstat(f.fileno()).st_size
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:
            start, end = max(0, size - int(m.group(2))), size - 1
        if start >= size or end < start:
            f.close()
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        f.seek(start)
        self._left = end - start + 1
        return f

    def do_POST(self):
        """/bench-stats?run=NAME: the bench pages' own figures (scripts/bench/pages/av.js)."""
        u = urllib.parse.urlsplit(self.path)
        run = urllib.parse.parse_qs(u.query).get("run", [""])[0]
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(n, 1 << 20))
        if u.path != "/bench-stats" or not run:
            self.send_error(404)
            return
        try:
            data = json.loads(body)
        except ValueError:
            self.send_error(400)
            return
        with PAGE_STATS_LOCK:
            PAGE_STATS[run] = data
        self.send_response(204)
        self.end_headers()

    def copyfile(self, source, outputfile):
        if self._left is None:
            return super().copyfile(source, outputfile)
        while self._left > 0:
            buf = source.read(min(1 << 16, self._left))
            if not buf:
                break
            outputfile.write(buf)
            self._left -= len(buf)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


# --------------------------------------------------------------------------------------------
# Bench pages and their media


def media_jobs(n):
    """(file name, ffmpeg arguments) of the grid pages' videos: 720p30, MEDIA_SECONDS long, moving
    smooth gradients with a test pattern wandering across and sensor-like noise, a quiet sine tone
    per tile (200-500 Hz: far from the 1 kHz the A/V analysis listens to); even tiles VP8+Opus in
    WebM, odd tiles H.264+AAC in MP4, ~MEDIA_KBPS kbit/s video (webcam-like)."""
    jobs = []
    d = MEDIA_SECONDS
    for i in range(n):
        freq = [220, 247, 262, 294, 330, 349, 392, 415, 466][i % 9]
        graph = (f"[1:v]hue=h={i * 40}[fg];[0:v][fg]overlay=x='(W-w)/2+300*sin(t*{0.6 + 0.13 * i:.2f})':"
                 f"y='(H-h)/2+120*sin(t*{0.9 + 0.11 * i:.2f})':shortest=1,noise=alls=8:allf=t,format=yuv420p[v];"
                 f"[2:a]volume=0.05,aformat=channel_layouts=stereo[a]")
        rate = [f"-b:v", f"{MEDIA_KBPS}k", "-maxrate", f"{MEDIA_KBPS * 5 // 4}k", "-bufsize", f"{MEDIA_KBPS * 2}k",
                "-g", str(3 * FPS), "-threads", "2"]
        if i % 2 == 0:
            ext, codec = "webm", ["-c:v", "libvpx", *rate, "-deadline", "realtime", "-cpu-used", "8",
                                  "-c:a", "libopus", "-b:a", "48k", "-ar", "48000"]
        else:
            ext, codec = "mp4", ["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", *rate,
                                 "-c:a", "aac", "-b:a", "96k", "-ar", "48000", "-movflags", "+faststart"]
        args = ["-f", "lavfi", "-i", f"gradients=s=1280x720:r={FPS}:d={d}:speed=0.03:seed={i + 1}",
                "-f", "lavfi", "-i", f"testsrc2=s=480x360:r={FPS}:d={d}",
                "-f", "lavfi", "-i", f"sine=f={freq}:sample_rate=48000:d={d}",
                "-filter_complex", graph, "-map", "[v]", "-map", "[a]", *codec, "-t", str(d)]
        jobs.append((f"tile{i}.{ext}", args))
    return jobs


def ensure_media(n):
    """The grid pages' videos, generated once into out/bench-media/ (file names carry a hash of
    the ffmpeg arguments, so a change of them regenerates). Returns {tile file name: path}."""
    MEDIA_DIR.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, args in media_jobs(n):
        stem, ext = name.rsplit(".", 1)
        h = hashlib.sha1(json.dumps(args).encode()).hexdigest()[:10]
        path = MEDIA_DIR / f"{stem}-{h}.{ext}"
        if not path.exists():
            log(f"media: generating {path.relative_to(REPO)} ({MEDIA_SECONDS} s of 720p{FPS})")
            tmp = path.with_name(f".{path.name}.part.{ext}")
            t = time.monotonic()
            r = run_quiet(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args, str(tmp)],
                          timeout=900)
            if r.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise RuntimeError(f"ffmpeg could not generate {name}: {r.stderr.strip()[-300:]}")
            tmp.rename(path)
            log(f"media: {name} done in {time.monotonic() - t:.0f} s")
        out[name] = path
    return out


def media_summary(paths):
    """One line on the generated media (codecs, bitrates) for the report."""
    parts = []
    for name, path in sorted(paths.items(), key=lambda kv: int(re.sub(r"\D", "", kv[0]))):
        try:
            info = ffprobe_json(path, "-show_entries", "stream=codec_name:format=bit_rate,duration")
            codecs = "+".join(st["codec_name"] for st in info["streams"])
            parts.append(f"{name} {codecs} {int(info['format']['bit_rate']) / 1000:.0f} kbps")
        except Exception as e:  # reported, not fatal
            parts.append(f"{name} ? ({e})")
    return "; ".join(parts)


def make_site(work, media):
    """The served root: demo/ (index.html = the demo page), scripts/bench/pages/ and media/."""
    site = work / "site"
    site.mkdir()
    for src in (REPO / "demo", PAGES_DIR):
        for f in sorted(src.iterdir()):
            if not (site / f.name).exists():
                (site / f.name).symlink_to(f)
    (site / "media").mkdir()
    for name, path in media.items():
        (site / "media" / name).symlink_to(path)
    return site


def main():
    binary = Path(sys.argv[1]).resolve()
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="lkrec-bench-"))
    # the grid pages' videos: generated (or found cached) before anything is measured
    order = []
    for res_name in PRESETS:
        for page in PAGES:
            order += [(who, res_name, page) for who in ("ours", "xvfb", "seed")
                      if wanted(row_key(who, res_name, page)) and (who != "xvfb" or ONLY or page in ("", "heavy"))]
    tiles = max([grid_tiles(page) for _, _, page in order] or [0])
    media, media_info, media_failed = {}, "", None
    if tiles:
        try:
            media = ensure_media(tiles)
            media_info = media_summary(media)
        except Exception as e:
            log(f"media failed: {e}")
            media_failed = str(e)
    site = make_site(work, media)
    httpd = QuietServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    log(f"serving demo/, scripts/bench/pages/ and media at {url}; work dir {work}; window {SECONDS:.0f} s, "
        f"page rows {PAGE_SECONDS:.0f} s")
    # a private copy: a cargo build in the same checkout must not swap the binary mid-run
    shown = binary
    built = datetime.datetime.fromtimestamp(binary.stat().st_mtime).astimezone().isoformat(timespec="seconds")
    binary = work / "livekit-recorder"
    shutil.copy2(shown, binary)

    rows, failures, qual, settings, service, egress = [], [], {}, {}, None, None
    def guarded(label, fn):
        try:
            return fn()
        except Exception as e:
            log(f"{label} failed: {e}")
            failures.append(f"{label}: {e}")
            return None

    if media_failed:
        failures.append(f"media: {media_failed}")
    try:
        for who, res_name, page in order:
            name = ("ours on Xvfb" if who == "xvfb" else who) + f" {res_name}" + (f" {page}" if page else "")
            page_url = url + PAGES[page][0]
            if grid_tiles(page) and media_failed:
                row = {"name": name, "page": page, "errors": ["no media (see FAILED below)"]}
            elif who == "ours":
                row = guarded(name, lambda: run_ours(binary, res_name, page_url, work, page))
            elif who == "xvfb":
                row = guarded(name, lambda: run_ours(binary, res_name, page_url, work, page, x_server="xvfb"))
            else:
                row = guarded(name, lambda: run_seed(res_name, page_url, work, page))
            if row is None:
                row = {"name": name, "page": page, "errors": ["run failed (see FAILED below)"]}
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
        for res_name in PRESETS:
            logged = next((r["encoder"] for r in rows if r.get("encoder") and r["name"].startswith(f"ours {res_name}")),
                          None)
            if logged:
                settings[res_name] = (logged, our_profile())
        if wanted("quality"):
            for res_name in PRESETS:
                if res_name not in settings:
                    failures.append(f"quality {res_name}: no 'ours {res_name}' row logged its encoder settings")
                    continue
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

    md = report(rows, service, qual, settings, f"{shown}` built {built}", failures, t_start, egress, media_info)
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
