// Pure routing: works out the layout name and the `url` / `token` params from
// a location. Both address forms are accepted:
//   hash: {base}/#/speaker-dark?url=ws%3A%2F%2F...&token=eyJ...   (original recorder)
//   path: {base}/speaker-dark?url=ws%3A%2F%2F...&token=eyJ...     (server falls back to index.html)
// No DOM imports: the caller passes `location` (or anything shaped like it).

export type Theme = 'light' | 'dark';
export type LayoutKind = 'speaker' | 'grid';

export const LAYOUTS = ['speaker-light', 'speaker-dark', 'grid-light', 'grid-dark'] as const;
export type LayoutName = (typeof LAYOUTS)[number];

export type Route =
  | { kind: 'home' }
  | { kind: 'unknown'; name: string }
  | {
      kind: 'layout';
      name: LayoutName;
      layout: LayoutKind;
      theme: Theme;
      /** LiveKit server ws url, or null when missing/empty. */
      url: string | null;
      /** Access token, or null when missing/empty. */
      token: string | null;
    };

export interface LocationLike {
  hash: string;
  pathname: string;
  search: string;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Last non-empty path segment, ignoring `index.html`. */
function lastSegment(path: string): string {
  const parts = path.split('/').filter((s) => s !== '' && s !== 'index.html');
  return parts.length ? safeDecode(parts[parts.length - 1]) : '';
}

function nonEmpty(v: string | null): string | null {
  return v === null || v === '' ? null : v;
}

export function parseRoute(loc: LocationLike): Route {
  let path: string;
  let query: string;
  const hash = loc.hash.startsWith('#') ? loc.hash.slice(1) : loc.hash;
  if (hash.startsWith('/')) {
    const q = hash.indexOf('?');
    path = q >= 0 ? hash.slice(0, q) : hash;
    query = q >= 0 ? hash.slice(q + 1) : '';
  } else {
    path = loc.pathname;
    query = '';
  }
  // Params inside the hash win; the real query string is a fallback.
  const inner = new URLSearchParams(query);
  const outer = new URLSearchParams(loc.search.startsWith('?') ? loc.search.slice(1) : loc.search);
  const param = (k: string) => nonEmpty(inner.get(k)) ?? nonEmpty(outer.get(k));

  const name = lastSegment(path);
  if (name === '') return { kind: 'home' };
  if (!(LAYOUTS as readonly string[]).includes(name)) return { kind: 'unknown', name };
  const [layout, theme] = name.split('-') as [LayoutKind, Theme];
  return {
    kind: 'layout',
    name: name as LayoutName,
    layout,
    theme,
    url: param('url'),
    token: param('token'),
  };
}
