// livekit-client 2.x glue of the egress page (egress.html): the form livekit
// egress uses for room composite recordings, for livekit-server v1.5.1+.
// Rendering is shared with the legacy page (../stage.ts); the marker rule and
// the layout/metadata parsing are pure (../markers.ts, ./params.ts).
//
// Follows livekit egress's default template (template-default/src/Room.tsx and
// template-sdk/src/index.ts):
//   - START_RECORDING by egress's rule (EgressMarkers: decoded video frames, or
//     audio only after 500 ms, or anything subscribed after 5 s), sampled every 100 ms;
//   - END_RECORDING when the room disconnects;
//   - the layout follows the local (recorder) participant's metadata
//     `{"layout":"<name>"}`, set at join or later by livekit-server's UpdateLayout;
//   - a grid shows the speaker layout while somebody shares a screen.

import {
  DisconnectReason,
  ParticipantEvent,
  type Participant,
  type RemoteParticipant,
  type RemoteTrack,
  type RemoteTrackPublication,
  Room,
  RoomEvent,
  Track,
  setLogLevel,
} from 'livekit-client';
import { EGRESS_POLL_MS, type EgressMediaState, EgressMarkers } from '../markers';
import { errorMessage } from '../page';
import { type MediaTrack, type ParticipantView, Stage } from '../stage';
import { type EgressLayout, LayoutFollower, effectiveLayout, layoutName } from './params';

export interface EgressRoomOptions {
  stage: HTMLElement;
  audio: HTMLElement;
  /** The layout from the page address. */
  layout: EgressLayout;
  url: string;
  token: string;
  /** Called whenever the layout changes (the page restyles <body>). */
  onLayout: (layout: EgressLayout) => void;
  /** Replaces the page with `<div class="error">{message}</div>`. */
  showError: (message: string) => void;
  /** Replaces the page with a neutral notice (not an error). */
  showNotice: (message: string) => void;
}

/** Logs why a layout name was not used as such (the recorder keeps the page console). */
export function warnUnknownLayout(l: EgressLayout, from: string): void {
  if (!l.known) console.warn(`unknown layout "${l.requested}" (${from}), using ${layoutName(l)}`);
}

export async function runEgressRoom(opts: EgressRoomOptions): Promise<Room | null> {
  setLogLevel('warn');
  const { stage, audio } = opts;
  const layout = new LayoutFollower(opts.layout);

  const room = new Room({ adaptiveStream: true, dynacast: true });
  const markers = new EgressMarkers();
  const view = new Stage(stage, audio);
  let connected = false;
  let closed = false;

  // ---- rendering -------------------------------------------------------
  let renderQueued = false;

  const participantsInJoinOrder = (): RemoteParticipant[] =>
    [...room.remoteParticipants.values()].sort(
      (a, b) => (a.joinedAt?.getTime() ?? 0) - (b.joinedAt?.getTime() ?? 0),
    );

  const liveTrack = (p: RemoteParticipant, source: Track.Source): MediaTrack | null => {
    const pub: RemoteTrackPublication | undefined = p.getTrackPublication(source);
    return pub && pub.isSubscribed && !pub.isMuted && pub.track ? pub.track : null;
  };

  const toView = (p: RemoteParticipant): ParticipantView => ({
    identity: p.identity,
    name: p.name ?? '',
    isSpeaking: p.isSpeaking,
    camera: liveTrack(p, Track.Source.Camera),
    screen: liveTrack(p, Track.Source.ScreenShare),
  });

  const render = () => {
    renderQueued = false;
    if (closed) return;
    const participants = participantsInJoinOrder().map(toView);
    const kind = effectiveLayout(
      layout.current.kind,
      participants.some((p) => p.screen !== null),
    );
    view.render(
      kind,
      participants,
      room.activeSpeakers.map((p: Participant) => p.identity),
    );
  };

  const scheduleRender = () => {
    if (renderQueued) return;
    renderQueued = true;
    queueMicrotask(render);
  };

  // ---- layout updates (UpdateLayout -> local participant metadata) -----
  const onLocalMetadata = () => {
    const next = layout.update(room.localParticipant.metadata);
    if (next === null) return;
    warnUnknownLayout(next, 'metadata');
    console.log(`layout ${layoutName(next)}`);
    opts.onLayout(next);
    scheduleRender();
  };
  room.localParticipant.on(ParticipantEvent.ParticipantMetadataChanged, onLocalMetadata);

  // ---- audio -----------------------------------------------------------
  /** Drops audio elements of tracks no remote participant still has. */
  const pruneAudio = () => {
    const live = new Set<MediaTrack>();
    for (const p of room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) if (pub.track) live.add(pub.track);
    }
    view.pruneAudio(live);
  };

  // ---- START_RECORDING sampling -----------------------------------------
  const t0 = performance.now();
  let sampling = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  const stopSampling = () => {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
  };

  const mediaState = async (): Promise<EgressMediaState> => {
    let hasVideoTracks = false;
    let hasSubscribedTracks = false;
    let hasDecodedFrames = false;
    for (const p of [...room.remoteParticipants.values()]) {
      for (const pub of [...p.trackPublications.values()]) {
        if (pub.isSubscribed) hasSubscribedTracks = true;
        if (pub.kind !== Track.Kind.Video) continue;
        hasVideoTracks = true;
        const track = pub.videoTrack;
        if (!track || hasDecodedFrames) continue;
        const stats = await track.getRTCStatsReport().catch(() => undefined);
        stats?.forEach((s: { type?: string; framesDecoded?: number }) => {
          if (s.type === 'inbound-rtp' && (s.framesDecoded ?? 0) > 0) hasDecodedFrames = true;
        });
      }
    }
    return { elapsedMs: performance.now() - t0, hasVideoTracks, hasSubscribedTracks, hasDecodedFrames };
  };

  const sample = async () => {
    if (sampling || !markers.waiting) return;
    sampling = true;
    try {
      const m = markers.poll(await mediaState());
      if (m) {
        console.log(m);
        stopSampling();
      }
    } catch (e) {
      console.warn(`could not sample the room: ${errorMessage(e)}`);
    } finally {
      sampling = false;
    }
  };

  // ---- events ----------------------------------------------------------
  room
    .on(RoomEvent.ParticipantConnected, scheduleRender)
    .on(RoomEvent.ParticipantDisconnected, () => {
      pruneAudio();
      scheduleRender();
    })
    .on(RoomEvent.TrackSubscribed, (track: RemoteTrack) => {
      if (track.kind === Track.Kind.Audio) view.attachAudio(track);
      scheduleRender();
    })
    .on(RoomEvent.TrackUnsubscribed, (track: RemoteTrack) => {
      if (track.kind === Track.Kind.Audio) view.detachAudio(track);
      scheduleRender();
    })
    .on(RoomEvent.TrackPublished, scheduleRender)
    .on(RoomEvent.TrackUnpublished, scheduleRender)
    .on(RoomEvent.TrackMuted, scheduleRender)
    .on(RoomEvent.TrackUnmuted, scheduleRender)
    .on(RoomEvent.ActiveSpeakersChanged, scheduleRender)
    .on(RoomEvent.ParticipantNameChanged, scheduleRender)
    .on(RoomEvent.Reconnected, scheduleRender)
    .on(RoomEvent.AudioPlaybackStatusChanged, () => {
      if (!room.canPlaybackAudio) room.startAudio().catch(() => undefined);
    })
    .on(RoomEvent.Disconnected, (reason?: DisconnectReason) => {
      if (!connected) return; // connect() itself failed; reported below
      connected = false;
      closed = true;
      stopSampling();
      const m = markers.disconnected();
      if (m) console.log(m);
      view.clear();
      const why = reason === undefined ? '' : ` (${DisconnectReason[reason] ?? reason})`;
      opts.showNotice(`room closed${why}`);
    });

  timer = setInterval(() => void sample(), EGRESS_POLL_MS);
  try {
    await room.connect(opts.url, opts.token, { autoSubscribe: true });
  } catch (e) {
    stopSampling();
    opts.showError(`could not connect: ${errorMessage(e)}`);
    return null;
  }
  connected = true;
  // The metadata the recorder joined with (an UpdateLayout before the page
  // connected); changes during connect() were already handled by the event.
  onLocalMetadata();
  // Tracks subscribed during connect already fired TrackSubscribed; this
  // catches anything published but not yet attached.
  for (const p of room.remoteParticipants.values()) {
    for (const pub of p.trackPublications.values()) {
      if (pub.track && pub.kind === Track.Kind.Audio) view.attachAudio(pub.track);
    }
  }
  room.startAudio().catch(() => undefined);
  render();
  return room;
}
