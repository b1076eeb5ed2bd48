// A/V sync marks for the bench pages, as demo/index.html draws them: once a second (page clock)
// the whole page turns white for 100 ms (a full-screen layer above everything) and a 1 kHz beep
// starts, scheduled through the audio clock for the moment that page second is heard. The bench
// pairs flash onsets (frame luma > 150) with beep onsets to measure the A/V offset.
// Options: window.AV_TONE = gain of a steady 440 Hz tone (0 = none).
// With ?run=NAME in the page's URL, it also POSTs its own figures to /bench-stats?run=NAME once a
// second (same origin: the bench's loopback server): animation frames run, and per <video> whether
// it plays, frames decoded and dropped (getVideoPlaybackQuality), whether it is muted.
(function () {
  const t0 = performance.now();
  const flash = document.createElement('div');
  flash.style.cssText = 'position:fixed;inset:0;background:#fff;z-index:2147483647;display:none;' +
    'pointer-events:none';
  document.documentElement.appendChild(flash);
  let shown = false, rafs = 0;
  function tick(now) {
    rafs++;
    const on = (((now - t0) / 1000) % 1) < 0.1;
    if (on !== shown) { flash.style.display = on ? 'block' : 'none'; shown = on; }
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);

  const ac = new AudioContext();
  const toneGain = window.AV_TONE || 0;
  if (toneGain > 0) {
    const tone = ac.createOscillator(); const g = ac.createGain();
    tone.frequency.value = 440; g.gain.value = toneGain;
    tone.connect(g).connect(ac.destination); tone.start();
  }
  const beep = ac.createOscillator(); const beepGain = ac.createGain();
  beep.frequency.value = 1000; beepGain.gain.value = 0;
  beep.connect(beepGain).connect(ac.destination); beep.start();
  let next = 1;
  setInterval(() => {
    if (ac.state !== 'running') return;
    const ts = ac.getOutputTimestamp();
    const pageNow = (performance.now() - t0) / 1000;
    if (next <= pageNow) next = Math.floor(pageNow) + 1;
    if (next - pageNow < 0.5) {
      const at = ts.contextTime + (t0 / 1000 + next - ts.performanceTime / 1000);
      beepGain.gain.setValueAtTime(0.5, at);
      beepGain.gain.setValueAtTime(0, at + 0.1);
      next += 1;
    }
  }, 100);
  if (ac.state !== 'running') {
    // Autoplay blocked (a browser without --autoplay-policy=no-user-gesture-required).
    addEventListener('click', () => ac.resume(), { once: true });
  }
  window.benchAudio = ac;

  const run = new URLSearchParams(location.search).get('run');
  if (run) {
    setInterval(() => {
      const videos = Array.from(document.querySelectorAll('video')).map((v) => {
        const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
        return { playing: !v.paused && !v.ended && v.readyState >= 3 && !v.error, muted: v.muted,
                 frames: q.totalVideoFrames || 0, dropped: q.droppedVideoFrames || 0,
                 t: v.currentTime, error: v.error ? String(v.error.message || v.error.code) : null };
      });
      const body = JSON.stringify({ t: performance.now() / 1000, rafs, audio: ac.state, videos });
      fetch(`/bench-stats?run=${encodeURIComponent(run)}`, { method: 'POST', body, keepalive: true })
        .catch(() => {});
    }, 1000);
  }
})();
