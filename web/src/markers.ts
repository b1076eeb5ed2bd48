// Pure state machines deciding when the pages log the recorder's console markers:
// `RecordingMarkers` for the legacy recorder page (below), `EgressMarkers` for
// the egress page (at the end of the file).
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

// ---- egress page ---------------------------------------------------------
//
// The egress page (egress.html, egress/room.ts) follows livekit egress's own
// default template instead (livekit/egress template-default/src/Room.tsx, since
// "Avoid recording room composite before video is decoded", #806): every 100 ms
// it looks at the remote publications and logs START_RECORDING once
//   - a video track has decoded frames (inbound-rtp framesDecoded > 0), or
//   - no video track is published, some track is subscribed, and more than
//     500 ms have passed (audio only; gives video a chance to be published), or
//   - more than 5 s have passed and some track is subscribed (video that does
//     not decode in time is recorded anyway).
// The clock starts when the page begins to connect. END_RECORDING is logged
// when the room disconnects (template-sdk EgressHelper.setRoom:
// RoomEvent.Disconnected -> endRecording), and only then: egress dropped the
// template's "end when the last participant leaves" (#646, "lifecycle should be
// controlled by server"); an empty room ends when the server closes it.

export const EGRESS_POLL_MS = 100;
export const EGRESS_NO_VIDEO_DELAY_MS = 500;
export const EGRESS_FRAME_DECODE_TIMEOUT_MS = 5000;

/** What the egress START rule looks at, sampled every EGRESS_POLL_MS. */
export interface EgressMediaState {
  /** Milliseconds since the page began connecting. */
  elapsedMs: number;
  /** Some remote participant publishes a video track (subscribed or not). */
  hasVideoTracks: boolean;
  /** Some remote track is subscribed. */
  hasSubscribedTracks: boolean;
  /** Some remote video track has decoded at least one frame. */
  hasDecodedFrames: boolean;
}

/** egress's START rule (see above); pure. */
export function egressShouldStart(s: EgressMediaState): boolean {
  if (s.hasDecodedFrames) return true;
  if (!s.hasVideoTracks && s.hasSubscribedTracks && s.elapsedMs > EGRESS_NO_VIDEO_DELAY_MS) return true;
  return s.elapsedMs > EGRESS_FRAME_DECODE_TIMEOUT_MS && s.hasSubscribedTracks;
}

/** Markers of the egress page: START by egressShouldStart, END on disconnect; each once, no START after END. */
export class EgressMarkers {
  private readonly emitted: Marker[] = [];

  /** Feeds one sample; returns START_RECORDING when it is due now, else null. */
  poll(s: EgressMediaState): Marker | null {
    if (!this.waiting || !egressShouldStart(s)) return null;
    return this.emit(START_RECORDING);
  }

  /** The room disconnected for good: END_RECORDING (also before START, as egress does), once. */
  disconnected(): Marker | null {
    return this.ended ? null : this.emit(END_RECORDING);
  }

  /** Still waiting for START (the page keeps sampling while this is true). */
  get waiting(): boolean {
    return this.emitted.length === 0;
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

  private emit(m: Marker): Marker {
    this.emitted.push(m);
    return m;
  }
}
