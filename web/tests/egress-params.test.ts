import { describe, expect, it } from 'vitest';
import {
  LayoutFollower,
  bodyClasses,
  effectiveLayout,
  layoutFromMetadata,
  layoutName,
  parseEgressLayout,
  parseEgressParams,
} from '../src/egress/params';

const WS = 'ws://127.0.0.1:7880';

/** What egress builds: the base's query plus layout, token, url (Go's url.Values.Encode, keys sorted). */
function egressUrl(base: string, layout: string, token = 'eyJ.a.b', url = WS): URL {
  const u = new URL(base);
  u.searchParams.set('layout', layout);
  u.searchParams.set('token', token);
  u.searchParams.set('url', url);
  u.searchParams.sort();
  return u;
}

describe('parseEgressParams', () => {
  it('reads the address egress builds', () => {
    const u = egressUrl('http://127.0.0.1:4321/egress.html', 'speaker');
    expect(u.search).toBe('?layout=speaker&token=eyJ.a.b&url=ws%3A%2F%2F127.0.0.1%3A7880');
    expect(parseEgressParams(u.search)).toEqual({
      layout: { kind: 'speaker', theme: 'dark', requested: 'speaker', known: true },
      url: WS,
      token: 'eyJ.a.b',
    });
  });

  it('keeps working when the base already has a path and a query', () => {
    const u = egressUrl('https://h/some/path/egress.html?a=1&zz=2', 'grid-light', 't', 'wss://x.example');
    expect(u.search).toBe('?a=1&layout=grid-light&token=t&url=wss%3A%2F%2Fx.example&zz=2');
    expect(parseEgressParams(u.search)).toMatchObject({
      layout: { kind: 'grid', theme: 'light', known: true },
      url: 'wss://x.example',
      token: 't',
    });
  });

  it('decodes a token with characters that need escaping', () => {
    const token = 'a+b/c=d&e';
    const u = egressUrl('http://h/egress.html', 'grid', token);
    expect(parseEgressParams(u.search).token).toBe(token);
  });

  it('reports missing or empty url and token as null', () => {
    expect(parseEgressParams('?layout=grid')).toMatchObject({ url: null, token: null });
    expect(parseEgressParams('layout=grid&url=&token=')).toMatchObject({ url: null, token: null });
    expect(parseEgressParams('')).toMatchObject({ url: null, token: null, layout: { kind: 'grid', known: true } });
  });
});

describe('parseEgressLayout', () => {
  it.each([
    ['grid', 'grid', 'dark'],
    ['grid-light', 'grid', 'light'],
    ['grid-dark', 'grid', 'dark'],
    ['speaker', 'speaker', 'dark'],
    ['speaker-light', 'speaker', 'light'],
    ['speaker-dark', 'speaker', 'dark'],
    ['single-speaker', 'single-speaker', 'dark'],
    ['single-speaker-light', 'single-speaker', 'light'],
    ['single-speaker-dark', 'single-speaker', 'dark'],
  ])('knows %s', (name, kind, theme) => {
    expect(parseEgressLayout(name)).toEqual({ kind, theme, requested: name, known: true });
  });

  it('defaults to dark grid when no layout is given', () => {
    expect(parseEgressLayout(null)).toEqual({ kind: 'grid', theme: 'dark', requested: '', known: true });
    expect(parseEgressLayout('')).toMatchObject({ kind: 'grid', known: true });
  });

  it('falls back to grid for unknown layouts, keeping the theme suffix', () => {
    expect(parseEgressLayout('fancy')).toEqual({ kind: 'grid', theme: 'dark', requested: 'fancy', known: false });
    expect(parseEgressLayout('fancy-light')).toEqual({
      kind: 'grid',
      theme: 'light',
      requested: 'fancy-light',
      known: false,
    });
    expect(parseEgressLayout('-light')).toMatchObject({ kind: 'grid', theme: 'light', known: false });
    expect(parseEgressLayout('speaker-blue')).toMatchObject({ kind: 'grid', theme: 'dark', known: false });
  });

  it('ignores case and surrounding blanks', () => {
    expect(parseEgressLayout(' Speaker-Light ')).toMatchObject({ kind: 'speaker', theme: 'light', known: true });
  });

  it('names and classes', () => {
    const l = parseEgressLayout('single-speaker-light');
    expect(layoutName(l)).toBe('single-speaker-light');
    expect(layoutName(parseEgressLayout('grid'))).toBe('grid-dark');
    expect(bodyClasses(l)).toEqual(['theme-light', 'layout-single-speaker']);
  });
});

describe('effectiveLayout', () => {
  it('turns a grid into the speaker layout while a screen is shared', () => {
    expect(effectiveLayout('grid', false)).toBe('grid');
    expect(effectiveLayout('grid', true)).toBe('speaker');
    expect(effectiveLayout('speaker', true)).toBe('speaker');
    expect(effectiveLayout('single-speaker', true)).toBe('single-speaker');
    expect(effectiveLayout('single-speaker', false)).toBe('single-speaker');
  });
});

describe('layoutFromMetadata', () => {
  it('reads UpdateLayout metadata', () => {
    expect(layoutFromMetadata('{"layout":"speaker-light"}')).toBe('speaker-light');
    expect(layoutFromMetadata('{"layout":"grid","other":1}')).toBe('grid');
  });

  it('ignores empty, non-JSON and layout-less metadata', () => {
    for (const md of [undefined, null, '', 'speaker', '{', '[]', '"grid"', '{"layout":""}', '{"layout":3}', 'null', '{}']) {
      expect(layoutFromMetadata(md), String(md)).toBeNull();
    }
  });
});

describe('LayoutFollower (metadata-driven layout switching)', () => {
  it('switches on a metadata change and ignores repeats', () => {
    const f = new LayoutFollower(parseEgressLayout('grid'));
    expect(f.update('{"layout":"speaker-light"}')).toMatchObject({ kind: 'speaker', theme: 'light' });
    expect(f.current).toMatchObject({ kind: 'speaker', theme: 'light' });
    expect(f.update('{"layout":"speaker-light"}')).toBeNull();
    expect(f.update('{"layout":"single-speaker"}')).toMatchObject({ kind: 'single-speaker', theme: 'dark' });
    expect(f.update('{"layout":"grid-dark"}')).toMatchObject({ kind: 'grid', theme: 'dark' });
  });

  it('honours metadata already set at connect', () => {
    const f = new LayoutFollower(parseEgressLayout('grid-light'));
    expect(f.update('{"layout":"speaker"}')).toMatchObject({ kind: 'speaker', theme: 'dark' });
  });

  it('does not report a switch when the metadata names the current layout', () => {
    const f = new LayoutFollower(parseEgressLayout('speaker'));
    expect(f.update('{"layout":"speaker-dark"}')).toBeNull();
    expect(f.current).toMatchObject({ kind: 'speaker', theme: 'dark' });
  });

  it('leaves the layout alone for metadata naming none', () => {
    const f = new LayoutFollower(parseEgressLayout('speaker'));
    expect(f.update('')).toBeNull();
    expect(f.update('not json')).toBeNull();
    expect(f.update('{"name":"x"}')).toBeNull();
    expect(f.current.kind).toBe('speaker');
  });

  it('falls back to grid for an unknown layout, and reports it', () => {
    const f = new LayoutFollower(parseEgressLayout('grid'));
    expect(f.update('{"layout":"mosaic"}')).toMatchObject({ kind: 'grid', known: false, requested: 'mosaic' });
    const g = new LayoutFollower(parseEgressLayout('speaker-light'));
    expect(g.update('{"layout":"mosaic-light"}')).toMatchObject({ kind: 'grid', theme: 'light', known: false });
  });

  it('switches back when the same name comes again after another one', () => {
    const f = new LayoutFollower(parseEgressLayout('grid'));
    f.update('{"layout":"speaker"}');
    f.update('{"layout":"grid"}');
    expect(f.update('{"layout":"speaker"}')).toMatchObject({ kind: 'speaker' });
  });
});
