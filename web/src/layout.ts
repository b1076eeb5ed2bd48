// Pure layout logic for the built-in templates: tile order, grid size and the
// speaker choice. No DOM and no livekit-client imports, so it can be unit tested
// with plain objects.

/** What the layout needs to know about one remote participant. */
export interface ParticipantInfo {
  identity: string;
  /** A subscribed, unmuted screen-share video track is available. */
  hasScreenShare?: boolean;
}

export type GridClass = '' | '1x1' | '2x1' | '2x2' | '3x3';

export const MAX_GRID_TILES = 9;
export const MAX_SIDEBAR_TILES = 6;

/** Grid class for `count` visible tiles: 1→1x1, 2→2x1, 3-4→2x2, 5+→3x3, 0→''. */
export function gridClass(count: number): GridClass {
  if (count <= 0) return '';
  if (count === 1) return '1x1';
  if (count === 2) return '2x1';
  if (count <= 4) return '2x2';
  return '3x3';
}

function unique(ids: readonly string[]): string[] {
  return [...new Set(ids)];
}

/**
 * Stable tile order.
 *
 * - `previous`: the order returned last time (the caller keeps it as state);
 * - `present`: identities of the remote participants now in the room, in join order;
 * - `activeSpeakers`: identities currently speaking, loudest first.
 *
 * Participants that left are dropped, new ones are appended in join order, and
 * active speakers are moved to the front (loudest first). Everybody else keeps
 * their relative order. Returns every present participant (not cut).
 */
export function orderTiles(
  previous: readonly string[],
  present: readonly string[],
  activeSpeakers: readonly string[] = [],
): string[] {
  const here = new Set(present);
  const base = unique(previous).filter((id) => here.has(id));
  const known = new Set(base);
  for (const id of unique(present)) {
    if (!known.has(id)) {
      base.push(id);
      known.add(id);
    }
  }
  const speakers = unique(activeSpeakers).filter((id) => here.has(id));
  const speaking = new Set(speakers);
  return [...speakers, ...base.filter((id) => !speaking.has(id))];
}

export interface GridLayout {
  /** Full stable order, to pass back as `previous` next time. */
  order: string[];
  /** Identities to show, at most `max`, in display order. */
  visible: string[];
  gridClass: GridClass;
}

export function gridLayout(
  previous: readonly string[],
  present: readonly string[],
  activeSpeakers: readonly string[] = [],
  max: number = MAX_GRID_TILES,
): GridLayout {
  const order = orderTiles(previous, present, activeSpeakers);
  const visible = order.slice(0, Math.max(0, max));
  return { order, visible, gridClass: gridClass(visible.length) };
}

export type MainSource = 'screen' | 'camera';

export interface SpeakerChoice {
  identity: string;
  source: MainSource;
}

/**
 * Who fills the centre of the speaker layout.
 *
 * 1. the first participant (join order) sharing a screen, showing the screen;
 * 2. otherwise the loudest active speaker;
 * 3. otherwise the previous main participant, if still present (no flapping
 *    back to the first participant on every silence);
 * 4. otherwise the first participant.
 * Returns null when there are no remote participants.
 */
export function chooseSpeaker(
  participants: readonly ParticipantInfo[],
  activeSpeakers: readonly string[] = [],
  previous: string | null = null,
): SpeakerChoice | null {
  if (participants.length === 0) return null;
  const sharer = participants.find((p) => p.hasScreenShare);
  if (sharer) return { identity: sharer.identity, source: 'screen' };
  const here = new Set(participants.map((p) => p.identity));
  const speaker = activeSpeakers.find((id) => here.has(id));
  if (speaker !== undefined) return { identity: speaker, source: 'camera' };
  if (previous !== null && here.has(previous)) return { identity: previous, source: 'camera' };
  return { identity: participants[0].identity, source: 'camera' };
}

export interface SpeakerLayout {
  main: SpeakerChoice | null;
  /** Camera tiles in the sidebar, display order, at most `max`. */
  sidebar: string[];
  /** Full stable order, to pass back as `previous` next time. */
  order: string[];
}

/**
 * Speaker layout: the main tile plus a sidebar of the other participants'
 * cameras. When the main tile is a screen share, the sharer's camera is in
 * the sidebar too. The sidebar uses the same stable order as the grid.
 */
export function speakerLayout(
  participants: readonly ParticipantInfo[],
  previousOrder: readonly string[],
  activeSpeakers: readonly string[] = [],
  previousMain: string | null = null,
  max: number = MAX_SIDEBAR_TILES,
): SpeakerLayout {
  const present = participants.map((p) => p.identity);
  const order = orderTiles(previousOrder, present, activeSpeakers);
  const main = chooseSpeaker(participants, activeSpeakers, previousMain);
  const sidebar = order
    .filter((id) => !(main && main.source === 'camera' && main.identity === id))
    .slice(0, Math.max(0, max));
  return { main, sidebar, order };
}
