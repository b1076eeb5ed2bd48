// livekit-client glue and DOM rendering for the speaker and grid layouts.
// The decisions (who is shown where, when to log the markers) live in the pure
// modules layout.ts and markers.ts; this file only feeds them and applies the result.
//
// Written against livekit-client 1.1.7 (pinned in package.json, see README.md),
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
} from 'livekit-client';
import { type ParticipantInfo, gridLayout, speakerLayout } from './layout';
import { type MarkerEvent, RecordingMarkers } from './markers';
import type { LayoutKind } from './route';

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

type TileSource = 'camera' | 'screen';

interface Tile {
  el: HTMLDivElement;
  video: HTMLVideoElement;
  name: HTMLDivElement;
  placeholder: HTMLDivElement;
  track: RemoteTrack | null;
}

export function errorMessage(e: unknown): string {
  const m = e instanceof Error ? e.message : typeof e === 'string' ? e : '';
  return m && m.trim() !== '' ? m : 'unknown error';
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.className = cls;
  return e;
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
  const tiles = new Map<string, Tile>();
  let order: string[] = [];
  let previousMain: string | null = null;
  let renderQueued = false;
  let closed = false;

  const participantsInJoinOrder = (): RemoteParticipant[] =>
    [...room.participants.values()].sort(
      (a, b) => (a.joinedAt?.getTime() ?? 0) - (b.joinedAt?.getTime() ?? 0),
    );

  const livePublication = (p: RemoteParticipant, source: TileSource): RemoteTrackPublication | undefined => {
    const pub = p.getTrack(source === 'screen' ? Track.Source.ScreenShare : Track.Source.Camera);
    return pub && pub.isSubscribed && !pub.isMuted && pub.track ? pub : undefined;
  };

  // room.participants is keyed by sid; active speakers may include the local participant.
  const activeSpeakerIds = (): string[] => {
    const remote = new Set([...room.participants.values()].map((p) => p.identity));
    return room.activeSpeakers.filter((p: Participant) => remote.has(p.identity)).map((p) => p.identity);
  };

  const makeTile = (): Tile => {
    const tile = el('div', 'tile');
    const video = el('video', 'video');
    video.autoplay = true;
    video.muted = true; // audio is played through the separate <audio> elements
    video.playsInline = true;
    const placeholder = el('div', 'placeholder');
    const name = el('div', 'name');
    tile.append(video, placeholder, name);
    return { el: tile, video, name, placeholder, track: null };
  };

  const dropTile = (key: string) => {
    const t = tiles.get(key);
    if (!t) return;
    t.track?.detach(t.video);
    t.el.remove();
    tiles.delete(key);
  };

  const placeTile = (p: RemoteParticipant, source: TileSource, cls: string, index: number) => {
    const key = `${source}:${p.identity}`;
    let t = tiles.get(key);
    if (!t) {
      t = makeTile();
      tiles.set(key, t);
      stage.append(t.el);
    }
    const pub = livePublication(p, source);
    const track = (pub?.track as RemoteTrack | undefined) ?? null;
    if (t.track !== track) {
      t.track?.detach(t.video);
      t.track = track;
      track?.attach(t.video);
    }
    const label = p.name || p.identity;
    t.name.textContent = source === 'screen' ? `${label} (screen)` : label;
    t.placeholder.textContent = (label.trim()[0] ?? '?').toUpperCase();
    t.el.className = [
      'tile',
      cls,
      source,
      track ? 'has-video' : 'no-video',
      source === 'camera' && p.isSpeaking ? 'speaking' : '',
    ]
      .filter(Boolean)
      .join(' ');
    t.el.style.order = String(index);
    return key;
  };

  const render = () => {
    renderQueued = false;
    if (closed) return;
    const participants = participantsInJoinOrder();
    const byId = new Map(participants.map((p) => [p.identity, p]));
    const speakers = activeSpeakerIds();
    const keep = new Set<string>();

    if (layout === 'grid') {
      const g = gridLayout(
        order,
        participants.map((p) => p.identity),
        speakers,
      );
      order = g.order;
      stage.className = g.gridClass ? `stage grid grid-${g.gridClass}` : 'stage grid';
      g.visible.forEach((id, i) => {
        const p = byId.get(id);
        if (p) keep.add(placeTile(p, 'camera', 'cell', i));
      });
    } else {
      const infos: ParticipantInfo[] = participants.map((p) => ({
        identity: p.identity,
        hasScreenShare: livePublication(p, 'screen') !== undefined,
      }));
      const s = speakerLayout(infos, order, speakers, previousMain);
      order = s.order;
      previousMain = s.main?.identity ?? null;
      const withSidebar = s.main !== null && s.sidebar.length > 0;
      stage.className = `stage speaker${withSidebar ? ' with-sidebar' : ''}`;
      stage.style.setProperty('--side-rows', String(Math.max(4, s.sidebar.length)));
      if (s.main) {
        const p = byId.get(s.main.identity);
        if (p) keep.add(placeTile(p, s.main.source, 'main', 0));
      }
      s.sidebar.forEach((id, i) => {
        const p = byId.get(id);
        if (p) keep.add(placeTile(p, 'camera', 'side', i + 1));
      });
    }
    for (const key of [...tiles.keys()]) if (!keep.has(key)) dropTile(key);
  };

  const scheduleRender = () => {
    if (renderQueued) return;
    renderQueued = true;
    queueMicrotask(render);
  };

  // ---- audio -----------------------------------------------------------
  const audioEls = new Map<RemoteTrack, HTMLMediaElement>();
  const attachAudio = (track: RemoteTrack) => {
    if (audioEls.has(track)) return;
    const a = track.attach();
    a.autoplay = true;
    audio.append(a);
    audioEls.set(track, a);
  };
  const detachAudio = (track: RemoteTrack) => {
    const a = audioEls.get(track);
    if (!a) return;
    track.detach(a);
    a.remove();
    audioEls.delete(track);
  };

  /** Drops audio elements of tracks no remote participant still has. */
  const pruneAudio = () => {
    const live = new Set<RemoteTrack>();
    for (const p of room.participants.values()) {
      for (const pub of p.tracks.values()) if (pub.track) live.add(pub.track);
    }
    for (const track of [...audioEls.keys()]) if (!live.has(track)) detachAudio(track);
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
      for (const key of [...tiles.keys()]) dropTile(key);
      for (const track of [...audioEls.keys()]) detachAudio(track);
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
