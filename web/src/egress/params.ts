// Pure parsing for the egress page (egress.html): the address livekit egress
// builds for a room composite recording, and the layout updates livekit-server's
// UpdateLayout sends through the recorder participant's metadata.
//
//   {base}?layout=speaker-light&token=eyJ...&url=wss%3A%2F%2F...
//
// egress adds `layout`, `token` and `url` to the base's own query (Go's
// url.Values.Encode: keys sorted, so the base's other params may come first).
// No DOM and no livekit-client imports.

import type { Theme } from '../route';
import type { StageLayout } from '../stage';

/** The layouts egress names (each also with a `-light` / `-dark` suffix). */
export const EGRESS_LAYOUT_KINDS = ['grid', 'speaker', 'single-speaker'] as const;
export type EgressLayoutKind = (typeof EGRESS_LAYOUT_KINDS)[number];

export interface EgressLayout {
  kind: EgressLayoutKind;
  theme: Theme;
  /** The name as asked for ('' when none was given). */
  requested: string;
  /** False when `requested` named no known layout (the page falls back to grid). */
  known: boolean;
}

export interface EgressParams {
  layout: EgressLayout;
  /** LiveKit server ws url, or null when missing/empty. */
  url: string | null;
  /** Access token, or null when missing/empty. */
  token: string | null;
}

/**
 * `grid`, `speaker`, `single-speaker`, each optionally with `-light` / `-dark`;
 * dark is the default look. No name means grid (egress's default). Anything else
 * falls back to grid (`known: false`), keeping a `-light` / `-dark` suffix.
 */
export function parseEgressLayout(name: string | null | undefined): EgressLayout {
  const requested = (name ?? '').trim();
  let base = requested.toLowerCase();
  let theme: Theme = 'dark';
  const suffix = /-(light|dark)$/.exec(base);
  if (suffix) {
    theme = suffix[1] as Theme;
    base = base.slice(0, -suffix[0].length);
  }
  if (base === '') return { kind: 'grid', theme, requested, known: suffix === null };
  const known = (EGRESS_LAYOUT_KINDS as readonly string[]).includes(base);
  return { kind: known ? (base as EgressLayoutKind) : 'grid', theme, requested, known };
}

function nonEmpty(v: string | null): string | null {
  return v === null || v === '' ? null : v;
}

/** Reads `layout`, `url` and `token` from a query string (`location.search`). */
export function parseEgressParams(search: string): EgressParams {
  const q = new URLSearchParams(search.startsWith('?') ? search.slice(1) : search);
  return {
    layout: parseEgressLayout(q.get('layout')),
    url: nonEmpty(q.get('url')),
    token: nonEmpty(q.get('token')),
  };
}

/**
 * The layout named by the recorder participant's metadata, `{"layout":"<name>"}`
 * (livekit-server's UpdateLayout). Null when the metadata is empty, not JSON, or
 * names no layout.
 */
export function layoutFromMetadata(metadata: string | null | undefined): string | null {
  if (!metadata) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(metadata);
  } catch {
    return null;
  }
  if (parsed === null || typeof parsed !== 'object') return null;
  const layout = (parsed as { layout?: unknown }).layout;
  return typeof layout === 'string' && layout.trim() !== '' ? layout.trim() : null;
}

/** The class names the page puts on <body> for a layout. */
export function bodyClasses(l: EgressLayout): string[] {
  return [`theme-${l.theme}`, `layout-${l.kind}`];
}

/**
 * What to draw: like egress's template, a grid turns into the speaker layout
 * while somebody shares a screen.
 */
export function effectiveLayout(kind: EgressLayoutKind, hasScreenShare: boolean): StageLayout {
  return kind === 'grid' && hasScreenShare ? 'speaker' : kind;
}

/** `speaker-light`-style name of a layout (for the console). */
export function layoutName(l: EgressLayout): string {
  return `${l.kind}-${l.theme}`;
}

/**
 * The page's current layout, switched by the recorder participant's metadata.
 * Only a change of the metadata's layout name counts (like egress's template);
 * metadata naming no layout leaves the layout alone.
 */
export class LayoutFollower {
  private lastName: string | null = null;

  constructor(private layout: EgressLayout) {}

  get current(): EgressLayout {
    return this.layout;
  }

  /**
   * Feeds the local participant's metadata; returns the new layout when it
   * switches (or names an unknown layout, which falls back to grid), else null.
   */
  update(metadata: string | null | undefined): EgressLayout | null {
    const name = layoutFromMetadata(metadata);
    if (name === null || name === this.lastName) return null;
    this.lastName = name;
    const next = parseEgressLayout(name);
    if (next.known && next.kind === this.layout.kind && next.theme === this.layout.theme) return null;
    this.layout = next;
    return next;
  }
}
