import { describe, expect, it } from 'vitest';
import { END_RECORDING, type MarkerEvent, RecordingMarkers, START_RECORDING } from '../src/markers';

/** Feeds events and returns the markers logged, in order. */
function run(events: MarkerEvent[]): string[] {
  const m = new RecordingMarkers();
  const out: string[] = [];
  for (const ev of events) {
    const marker = m.handle(ev);
    if (marker) out.push(marker);
  }
  expect(m.history).toEqual(out);
  return out;
}

describe('START_RECORDING', () => {
  it('is logged at connect when a participant is already there', () => {
    const m = new RecordingMarkers();
    expect(m.handle({ type: 'connected', remoteCount: 2 })).toBe(START_RECORDING);
    expect(m.started).toBe(true);
    expect(m.state).toBe('recording');
  });

  it('waits for the first participant when the room is empty at connect', () => {
    const m = new RecordingMarkers();
    expect(m.handle({ type: 'connected', remoteCount: 0 })).toBeNull();
    expect(m.state).toBe('waiting');
    expect(m.handle({ type: 'participantJoined', remoteCount: 1 })).toBe(START_RECORDING);
  });

  it('is logged only once', () => {
    expect(
      run([
        { type: 'connected', remoteCount: 1 },
        { type: 'participantJoined', remoteCount: 2 },
        { type: 'participantJoined', remoteCount: 3 },
        { type: 'connected', remoteCount: 3 },
      ]),
    ).toEqual([START_RECORDING]);
  });

  it('ignores joins reported before connect (connect counts them)', () => {
    expect(
      run([
        { type: 'participantJoined', remoteCount: 1 },
        { type: 'connected', remoteCount: 1 },
      ]),
    ).toEqual([START_RECORDING]);
    expect(run([{ type: 'participantJoined', remoteCount: 1 }])).toEqual([]);
  });

  it('is not logged after the room closed', () => {
    expect(
      run([
        { type: 'connected', remoteCount: 0 },
        { type: 'disconnected' },
        { type: 'participantJoined', remoteCount: 1 },
        { type: 'connected', remoteCount: 1 },
      ]),
    ).toEqual([]);
  });

  it('is not logged again when someone joins after END', () => {
    expect(
      run([
        { type: 'connected', remoteCount: 1 },
        { type: 'participantLeft', remoteCount: 0 },
        { type: 'participantJoined', remoteCount: 1 },
      ]),
    ).toEqual([START_RECORDING, END_RECORDING]);
  });
});

describe('END_RECORDING', () => {
  it('is logged when the last participant leaves', () => {
    expect(
      run([
        { type: 'connected', remoteCount: 2 },
        { type: 'participantLeft', remoteCount: 1 },
        { type: 'participantLeft', remoteCount: 0 },
      ]),
    ).toEqual([START_RECORDING, END_RECORDING]);
  });

  it('is not logged while participants remain', () => {
    expect(
      run([
        { type: 'connected', remoteCount: 0 },
        { type: 'participantJoined', remoteCount: 1 },
        { type: 'participantJoined', remoteCount: 2 },
        { type: 'participantLeft', remoteCount: 1 },
      ]),
    ).toEqual([START_RECORDING]);
  });

  it('is logged when the room disconnects', () => {
    expect(
      run([
        { type: 'connected', remoteCount: 3 },
        { type: 'disconnected' },
      ]),
    ).toEqual([START_RECORDING, END_RECORDING]);
  });

  it('is logged only once (last leave, then disconnect)', () => {
    expect(
      run([
        { type: 'connected', remoteCount: 1 },
        { type: 'participantLeft', remoteCount: 0 },
        { type: 'participantLeft', remoteCount: 0 },
        { type: 'disconnected' },
        { type: 'disconnected' },
      ]),
    ).toEqual([START_RECORDING, END_RECORDING]);
  });

  it('is never logged before START', () => {
    expect(run([{ type: 'disconnected' }])).toEqual([]);
    expect(
      run([
        { type: 'connected', remoteCount: 0 },
        { type: 'participantLeft', remoteCount: 0 },
        { type: 'disconnected' },
      ]),
    ).toEqual([]);
    const m = new RecordingMarkers();
    m.handle({ type: 'connected', remoteCount: 0 });
    m.handle({ type: 'disconnected' });
    expect(m.state).toBe('ended');
    expect(m.ended).toBe(false);
  });
});

describe('reconnects', () => {
  it('does not end when a full reconnect drops everybody', () => {
    expect(
      run([
        { type: 'connected', remoteCount: 2 },
        { type: 'reconnecting' },
        { type: 'participantLeft', remoteCount: 1 },
        { type: 'participantLeft', remoteCount: 0 },
        { type: 'participantJoined', remoteCount: 1 },
        { type: 'reconnected', remoteCount: 2 },
      ]),
    ).toEqual([START_RECORDING]);
  });

  it('ends after reconnecting into an empty room', () => {
    expect(
      run([
        { type: 'connected', remoteCount: 1 },
        { type: 'reconnecting' },
        { type: 'participantLeft', remoteCount: 0 },
        { type: 'reconnected', remoteCount: 0 },
      ]),
    ).toEqual([START_RECORDING, END_RECORDING]);
  });

  it('starts after reconnecting into a room with participants', () => {
    expect(
      run([
        { type: 'connected', remoteCount: 0 },
        { type: 'reconnecting' },
        { type: 'participantJoined', remoteCount: 1 },
        { type: 'reconnected', remoteCount: 1 },
      ]),
    ).toEqual([START_RECORDING]);
  });

  it('ends when the reconnect fails', () => {
    expect(
      run([
        { type: 'connected', remoteCount: 1 },
        { type: 'reconnecting' },
        { type: 'participantLeft', remoteCount: 0 },
        { type: 'disconnected' },
      ]),
    ).toEqual([START_RECORDING, END_RECORDING]);
  });
});
