import { describe, expect, it } from 'vitest';
import {
  EGRESS_FRAME_DECODE_TIMEOUT_MS,
  EGRESS_NO_VIDEO_DELAY_MS,
  END_RECORDING,
  EgressMarkers,
  type EgressMediaState,
  START_RECORDING,
  egressShouldStart,
} from '../src/markers';

const none: EgressMediaState = { elapsedMs: 0, hasVideoTracks: false, hasSubscribedTracks: false, hasDecodedFrames: false };
const at = (elapsedMs: number, s: Partial<EgressMediaState> = {}): EgressMediaState => ({ ...none, elapsedMs, ...s });

describe('egressShouldStart (egress template-default rule)', () => {
  it('starts as soon as a video track has decoded frames', () => {
    expect(egressShouldStart(at(0, { hasVideoTracks: true, hasSubscribedTracks: true, hasDecodedFrames: true }))).toBe(
      true,
    );
    expect(egressShouldStart(at(120, { hasVideoTracks: true, hasSubscribedTracks: true, hasDecodedFrames: true }))).toBe(
      true,
    );
  });

  it('waits while nothing is subscribed, however long', () => {
    expect(egressShouldStart(at(0))).toBe(false);
    expect(egressShouldStart(at(60_000))).toBe(false);
    // a published video that is not subscribed yet is not enough either
    expect(egressShouldStart(at(60_000, { hasVideoTracks: true }))).toBe(false);
  });

  it('starts audio-only rooms after 500 ms', () => {
    const audio = { hasSubscribedTracks: true };
    expect(egressShouldStart(at(100, audio))).toBe(false);
    expect(egressShouldStart(at(EGRESS_NO_VIDEO_DELAY_MS, audio))).toBe(false);
    expect(egressShouldStart(at(EGRESS_NO_VIDEO_DELAY_MS + 1, audio))).toBe(true);
  });

  it('waits up to 5 s for video frames, then starts anyway', () => {
    const video = { hasVideoTracks: true, hasSubscribedTracks: true };
    expect(egressShouldStart(at(600, video))).toBe(false);
    expect(egressShouldStart(at(EGRESS_FRAME_DECODE_TIMEOUT_MS, video))).toBe(false);
    expect(egressShouldStart(at(EGRESS_FRAME_DECODE_TIMEOUT_MS + 1, video))).toBe(true);
  });
});

describe('EgressMarkers', () => {
  it('logs START once, on the first sample that qualifies', () => {
    const m = new EgressMarkers();
    expect(m.poll(at(100))).toBeNull();
    expect(m.waiting).toBe(true);
    expect(m.poll(at(200, { hasVideoTracks: true, hasSubscribedTracks: true, hasDecodedFrames: true }))).toBe(
      START_RECORDING,
    );
    expect(m.waiting).toBe(false);
    expect(m.poll(at(300, { hasVideoTracks: true, hasSubscribedTracks: true, hasDecodedFrames: true }))).toBeNull();
    expect(m.history).toEqual([START_RECORDING]);
  });

  it('logs END on disconnect, once', () => {
    const m = new EgressMarkers();
    m.poll(at(600, { hasSubscribedTracks: true }));
    expect(m.disconnected()).toBe(END_RECORDING);
    expect(m.disconnected()).toBeNull();
    expect(m.history).toEqual([START_RECORDING, END_RECORDING]);
    expect(m.started && m.ended).toBe(true);
  });

  it('logs END on disconnect also before START (as egress does), and no START after it', () => {
    const m = new EgressMarkers();
    expect(m.poll(at(100))).toBeNull();
    expect(m.disconnected()).toBe(END_RECORDING);
    expect(m.waiting).toBe(false);
    expect(m.poll(at(200, { hasVideoTracks: true, hasSubscribedTracks: true, hasDecodedFrames: true }))).toBeNull();
    expect(m.history).toEqual([END_RECORDING]);
    expect(m.started).toBe(false);
  });
});
