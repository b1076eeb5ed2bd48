// DOM rendering shared by both pages (the legacy recorder page on livekit-client
// 1.1.7, src/room.ts, and the egress page on livekit-client 2.x, src/egress/room.ts):
// tiles for the speaker / single-speaker / grid layouts and the <audio> elements.
// It knows nothing about livekit-client: each page adapts its SDK's participants
// to `ParticipantView` (both SDK generations' tracks have attach()/detach()).
// The decisions (order, grid size, who is the speaker) come from layout.ts.

import { type ParticipantInfo, gridLayout, speakerLayout } from './layout';

/** What both SDK generations' remote tracks offer. */
export interface MediaTrack {
  attach(): HTMLMediaElement;
  attach(element: HTMLMediaElement): HTMLMediaElement;
  detach(element: HTMLMediaElement): unknown;
}

/** One remote participant as the renderer sees it. */
export interface ParticipantView {
  identity: string;
  /** Display name ('' when unset; the identity is shown then). */
  name: string;
  isSpeaking: boolean;
  /** Subscribed, unmuted camera track, or null. */
  camera: MediaTrack | null;
  /** Subscribed, unmuted screen-share video track, or null. */
  screen: MediaTrack | null;
}

/**
 * `speaker`: main tile + sidebar of cameras; `single-speaker`: the main tile only;
 * `grid`: up to 9 camera tiles.
 */
export type StageLayout = 'speaker' | 'single-speaker' | 'grid';

type TileSource = 'camera' | 'screen';

interface Tile {
  el: HTMLDivElement;
  video: HTMLVideoElement;
  name: HTMLDivElement;
  placeholder: HTMLDivElement;
  track: MediaTrack | null;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.className = cls;
  return e;
}

export class Stage {
  private readonly tiles = new Map<string, Tile>();
  private readonly audioEls = new Map<MediaTrack, HTMLMediaElement>();
  private order: string[] = [];
  private previousMain: string | null = null;

  constructor(
    private readonly stage: HTMLElement,
    private readonly audio: HTMLElement,
  ) {}

  /**
   * Lays out `participants` (remote ones, in join order). `activeSpeakers` are
   * identities, loudest first. Keeps the tile order between calls, also across
   * a change of `layout`.
   */
  render(layout: StageLayout, participants: readonly ParticipantView[], activeSpeakers: readonly string[]): void {
    const byId = new Map(participants.map((p) => [p.identity, p]));
    const speakers = activeSpeakers.filter((id) => byId.has(id));
    const keep = new Set<string>();

    if (layout === 'grid') {
      const g = gridLayout(
        this.order,
        participants.map((p) => p.identity),
        speakers,
      );
      this.order = g.order;
      this.stage.className = g.gridClass ? `stage grid grid-${g.gridClass}` : 'stage grid';
      this.stage.style.removeProperty('--side-rows');
      g.visible.forEach((id, i) => {
        const p = byId.get(id);
        if (p) keep.add(this.placeTile(p, 'camera', 'cell', i));
      });
    } else {
      const infos: ParticipantInfo[] = participants.map((p) => ({
        identity: p.identity,
        hasScreenShare: p.screen !== null,
      }));
      const single = layout === 'single-speaker';
      const s = speakerLayout(infos, this.order, speakers, this.previousMain, single ? 0 : undefined);
      this.order = s.order;
      this.previousMain = s.main?.identity ?? null;
      const withSidebar = s.main !== null && s.sidebar.length > 0;
      this.stage.className = single ? 'stage single-speaker' : `stage speaker${withSidebar ? ' with-sidebar' : ''}`;
      if (single) this.stage.style.removeProperty('--side-rows');
      else this.stage.style.setProperty('--side-rows', String(Math.max(4, s.sidebar.length)));
      if (s.main) {
        const p = byId.get(s.main.identity);
        if (p) keep.add(this.placeTile(p, s.main.source, 'main', 0));
      }
      s.sidebar.forEach((id, i) => {
        const p = byId.get(id);
        if (p) keep.add(this.placeTile(p, 'camera', 'side', i + 1));
      });
    }
    for (const key of [...this.tiles.keys()]) if (!keep.has(key)) this.dropTile(key);
  }

  /** Plays an audio track through its own <audio> element (once per track). */
  attachAudio(track: MediaTrack): void {
    if (this.audioEls.has(track)) return;
    const a = track.attach();
    a.autoplay = true;
    this.audio.append(a);
    this.audioEls.set(track, a);
  }

  detachAudio(track: MediaTrack): void {
    const a = this.audioEls.get(track);
    if (!a) return;
    track.detach(a);
    a.remove();
    this.audioEls.delete(track);
  }

  /** Drops the <audio> elements of tracks not in `live`. */
  pruneAudio(live: ReadonlySet<MediaTrack>): void {
    for (const track of [...this.audioEls.keys()]) if (!live.has(track)) this.detachAudio(track);
  }

  /** Removes every tile and audio element. */
  clear(): void {
    for (const key of [...this.tiles.keys()]) this.dropTile(key);
    for (const track of [...this.audioEls.keys()]) this.detachAudio(track);
  }

  private makeTile(): Tile {
    const tile = el('div', 'tile');
    const video = el('video', 'video');
    video.autoplay = true;
    video.muted = true; // audio is played through the separate <audio> elements
    video.playsInline = true;
    const placeholder = el('div', 'placeholder');
    const name = el('div', 'name');
    tile.append(video, placeholder, name);
    return { el: tile, video, name, placeholder, track: null };
  }

  private dropTile(key: string): void {
    const t = this.tiles.get(key);
    if (!t) return;
    t.track?.detach(t.video);
    t.el.remove();
    this.tiles.delete(key);
  }

  private placeTile(p: ParticipantView, source: TileSource, cls: string, index: number): string {
    const key = `${source}:${p.identity}`;
    let t = this.tiles.get(key);
    if (!t) {
      t = this.makeTile();
      this.tiles.set(key, t);
      this.stage.append(t.el);
    }
    const track = source === 'screen' ? p.screen : p.camera;
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
  }
}
