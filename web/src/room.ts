// livekit-client glue of the legacy recorder page (index.html: speaker and grid).
// The decisions (who is shown where, when to log the markers) live in the pure
// modules layout.ts and markers.ts, the DOM in stage.ts (shared with the egress
// page); this file only feeds them.
//
// Written against livekit-client 1.1.7 (pinned in package.json as the npm alias
// `livekit-client-legacy`, see README.md),
// the SDK generation of livekit-server v0.15.2 - v1.1.0 (protocol 7/8). Its API
// differs from 2.x: `room.participants` is keyed by participant *sid*,
// publications are `participant.tracks` / `getTrack(source)`, there is no
// DisconnectReason and no ParticipantNameChanged event, and on a full reconnect
// `Reconnected` is emitted *before* the participants are re-added.

import {
  ConnectionState,
  type Participant,
  type RemoteParticipant,
  type RemoteTrack,
  type RemoteTrackPublication,
  Room,
  RoomEvent,
  Track,
  setLogLevel,
} from 'livekit-client-legacy';
import { type MarkerEvent, RecordingMarkers } from './markers';
import { errorMessage } from './page';
import type { LayoutKind } from './route';
import { type MediaTrack, type ParticipantView, Stage } from './stage';

export interface RoomOptions {
  stage: HTMLElement;
  audio: HTMLElement;
  layout: LayoutKind;
  url: string;
  token: string;
  /** Replaces the page with `<div class="error">{message}</div>`. */
  showError: (message: string) => void;
  /** Replaces the page with a neutral notice (not an error). */
  showNotice: (message: string) => void;
}

export async function runRoom(opts: RoomOptions): Promise<Room | null> {
  setLogLevel('warn');
  const { stage, audio, layout } = opts;
  stage.className = `stage ${layout}`;

  const room = new Room({ adaptiveStream: true, dynacast: true });
  const markers = new RecordingMarkers();
  let connected = false;

  const feed = (ev: MarkerEvent) => {
    const m = markers.handle(ev);
    if (m) console.log(m);
  };
  const remoteCount = () => room.participants.size;

  // ---- rendering -------------------------------------------------------
  const view = new Stage(stage, audio);
  let renderQueued = false;
  let closed = false;

  const participantsInJoinOrder = (): RemoteParticipant[] =>
    [...room.participants.values()].sort(
      (a, b) => (a.joinedAt?.getTime() ?? 0) - (b.joinedAt?.getTime() ?? 0),
    );

  const liveTrack = (p: RemoteParticipant, source: Track.Source): MediaTrack | null => {
    const pub: RemoteTrackPublication | undefined = p.getTrack(source);
    return pub && pub.isSubscribed && !pub.isMuted && pub.track ? pub.track : null;
  };

  const toView = (p: RemoteParticipant): ParticipantView => ({
    identity: p.identity,
    // 1.x has no ParticipantNameChanged; names are re-read on every render.
    name: p.name ?? '',
    isSpeaking: p.isSpeaking,
    camera: liveTrack(p, Track.Source.Camera),
    screen: liveTrack(p, Track.Source.ScreenShare),
  });

  const render = () => {
    renderQueued = false;
    if (closed) return;
    // room.participants is keyed by sid; active speakers may include the local
    // participant (the renderer ignores identities that are not remote).
    const speakers = room.activeSpeakers.map((p: Participant) => p.identity);
    view.render(layout, participantsInJoinOrder().map(toView), speakers);
  };

  const scheduleRender = () => {
    if (renderQueued) return;
    renderQueued = true;
    queueMicrotask(render);
  };

  // ---- audio -----------------------------------------------------------
  const attachAudio = (track: RemoteTrack) => view.attachAudio(track);
  const detachAudio = (track: RemoteTrack) => view.detachAudio(track);

  /** Drops audio elements of tracks no remote participant still has. */
  const pruneAudio = () => {
    const live = new Set<MediaTrack>();
    for (const p of room.participants.values()) {
      for (const pub of p.tracks.values()) if (pub.track) live.add(pub.track);
    }
    view.pruneAudio(live);
  };

  // livekit-client 1.1.x keeps an internal promise (`connectFuture`) while
  // connecting/reconnecting and rejects it when that fails, even when nobody
  // awaits it (connect() throws its own error): an "Uncaught (in promise)" page
  // error. Attach a no-op handler whenever such a promise is created.
  const quietConnectFuture = () => {
    const future = (room as unknown as { connectFuture?: { promise?: Promise<void> } }).connectFuture;
    future?.promise?.catch(() => undefined);
  };

  // ---- events ----------------------------------------------------------
  // 1.1.7 gives no reason with Disconnected; it is either a leave from the
  // server (room deleted, participant removed, ...) or a failed reconnect.
  let reconnecting = false;
  room
    .on(RoomEvent.ConnectionStateChanged, (state: ConnectionState) => {
      if (state === ConnectionState.Connecting || state === ConnectionState.Reconnecting) quietConnectFuture();
    })
    .on(RoomEvent.ParticipantConnected, () => {
      if (connected) feed({ type: 'participantJoined', remoteCount: remoteCount() });
      scheduleRender();
    })
    .on(RoomEvent.ParticipantDisconnected, () => {
      pruneAudio();
      scheduleRender();
      // A full reconnect disconnects every participant synchronously just
      // before emitting Reconnecting; look at the room after that has happened.
      setTimeout(() => {
        if (connected) feed({ type: 'participantLeft', remoteCount: remoteCount() });
      }, 0);
    })
    .on(RoomEvent.Reconnecting, () => {
      reconnecting = true;
      feed({ type: 'reconnecting' });
    })
    .on(RoomEvent.Reconnected, () => {
      reconnecting = false;
      // After a full reconnect livekit-client 1.x emits Reconnected first and
      // re-adds the participants (ParticipantConnected each) synchronously
      // right after; count them once that has happened.
      setTimeout(() => {
        if (connected) feed({ type: 'reconnected', remoteCount: remoteCount() });
      }, 0);
      scheduleRender();
    })
    .on(RoomEvent.TrackSubscribed, (track: RemoteTrack) => {
      if (track.kind === Track.Kind.Audio) attachAudio(track);
      scheduleRender();
    })
    .on(RoomEvent.TrackUnsubscribed, (track: RemoteTrack) => {
      if (track.kind === Track.Kind.Audio) detachAudio(track);
      scheduleRender();
    })
    .on(RoomEvent.TrackPublished, scheduleRender)
    .on(RoomEvent.TrackUnpublished, scheduleRender)
    .on(RoomEvent.TrackMuted, scheduleRender)
    .on(RoomEvent.TrackUnmuted, scheduleRender)
    .on(RoomEvent.ActiveSpeakersChanged, scheduleRender)
    // 1.x has no ParticipantNameChanged; names are re-read on every render.
    .on(RoomEvent.ParticipantMetadataChanged, scheduleRender)
    .on(RoomEvent.AudioPlaybackStatusChanged, () => {
      if (!room.canPlaybackAudio) room.startAudio().catch(() => undefined);
    })
    .on(RoomEvent.Disconnected, () => {
      if (!connected) return; // connect() itself failed; reported below
      connected = false;
      const wasRecording = markers.state === 'recording';
      feed({ type: 'disconnected' });
      closed = true;
      view.clear();
      const why = reconnecting ? 'connection lost, reconnect failed' : 'left by the server';
      reconnecting = false;
      if (wasRecording || markers.ended) opts.showNotice('room closed');
      else opts.showError(`room closed before recording started (${why})`);
    });

  try {
    await room.connect(opts.url, opts.token, { autoSubscribe: true });
  } catch (e) {
    opts.showError(`could not connect: ${errorMessage(e)}`);
    return null;
  }
  connected = true;
  feed({ type: 'connected', remoteCount: remoteCount() });
  // Tracks subscribed during connect already fired TrackSubscribed; this
  // catches anything published but not yet attached.
  for (const p of room.participants.values()) {
    for (const pub of p.tracks.values()) {
      if (pub.track && pub.kind === Track.Kind.Audio) attachAudio(pub.track);
    }
  }
  room.startAudio().catch(() => undefined);
  render();
  return room;
}
