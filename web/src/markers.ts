// Pure state machine deciding when the page logs the recorder's console markers.
//
// The recorder (protocol.md §4.3) starts the pipeline on the console message
// `START_RECORDING` and stops it on `END_RECORDING`. Rules (protocol.md §5):
//   - START once a remote participant is present at connect, or on the first
//     participant that joins afterwards;
//   - END when the last remote participant leaves, or when the room disconnects;
//   - each marker at most once, END never before START, no START after END.
//
// A full reconnect in livekit-client drops every remote participant (one
// ParticipantDisconnected each) before it reports `reconnecting`; while
// reconnecting, "room is empty" is therefore not trusted and is re-evaluated
// on `reconnected`. No DOM and no livekit-client imports here.

export type Marker = 'START_RECORDING' | 'END_RECORDING';

export const START_RECORDING: Marker = 'START_RECORDING';
export const END_RECORDING: Marker = 'END_RECORDING';

export type MarkerEvent =
  /** `room.connect()` resolved; `remoteCount` = remote participants at that moment. */
  | { type: 'connected'; remoteCount: number }
  /** A remote participant joined; `remoteCount` includes it. */
  | { type: 'participantJoined'; remoteCount: number }
  /** A remote participant left; `remoteCount` = remote participants still present. */
  | { type: 'participantLeft'; remoteCount: number }
  /** The SDK lost the connection and is trying to reconnect. */
  | { type: 'reconnecting' }
  /** The SDK reconnected; `remoteCount` = remote participants after reconnecting. */
  | { type: 'reconnected'; remoteCount: number }
  /** The room is gone for good (server closed it, we were removed, connection lost). */
  | { type: 'disconnected' };

export type MarkerPhase = 'idle' | 'waiting' | 'recording' | 'ended';

export class RecordingMarkers {
  private phase: MarkerPhase = 'idle';
  private reconnecting = false;
  private readonly emitted: Marker[] = [];

  /** Feeds one event; returns the marker to log now, or null. */
  handle(ev: MarkerEvent): Marker | null {
    switch (ev.type) {
      case 'connected':
        if (this.phase !== 'idle') return null;
        this.phase = 'waiting';
        return ev.remoteCount > 0 ? this.start() : null;

      case 'participantJoined':
        // Joins reported before `connected` are counted by `connected` itself.
        if (this.phase === 'waiting' && !this.reconnecting && ev.remoteCount > 0) {
          return this.start();
        }
        return null;

      case 'participantLeft':
        if (this.phase === 'recording' && !this.reconnecting && ev.remoteCount <= 0) {
          return this.end();
        }
        return null;

      case 'reconnecting':
        if (this.phase === 'waiting' || this.phase === 'recording') this.reconnecting = true;
        return null;

      case 'reconnected':
        this.reconnecting = false;
        if (this.phase === 'waiting' && ev.remoteCount > 0) return this.start();
        if (this.phase === 'recording' && ev.remoteCount <= 0) return this.end();
        return null;

      case 'disconnected': {
        const wasRecording = this.phase === 'recording';
        this.phase = 'ended';
        this.reconnecting = false;
        return wasRecording ? this.emit(END_RECORDING) : null;
      }
    }
  }

  get state(): MarkerPhase {
    return this.phase;
  }

  get started(): boolean {
    return this.emitted.includes(START_RECORDING);
  }

  get ended(): boolean {
    return this.emitted.includes(END_RECORDING);
  }

  /** Markers emitted so far, in order. */
  get history(): readonly Marker[] {
    return this.emitted;
  }

  private start(): Marker {
    this.phase = 'recording';
    return this.emit(START_RECORDING);
  }

  private end(): Marker {
    this.phase = 'ended';
    return this.emit(END_RECORDING);
  }

  private emit(m: Marker): Marker {
    this.emitted.push(m);
    return m;
  }
}
