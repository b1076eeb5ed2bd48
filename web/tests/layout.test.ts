import { describe, expect, it } from 'vitest';
import {
  MAX_GRID_TILES,
  type ParticipantInfo,
  chooseSpeaker,
  gridClass,
  gridLayout,
  orderTiles,
  speakerLayout,
} from '../src/layout';

const ids = (n: number) => Array.from({ length: n }, (_, i) => `p${i + 1}`);
const people = (...names: string[]): ParticipantInfo[] => names.map((identity) => ({ identity }));

describe('gridClass', () => {
  it.each([
    [0, ''],
    [1, '1x1'],
    [2, '2x1'],
    [3, '2x2'],
    [4, '2x2'],
    [5, '3x3'],
    [6, '3x3'],
    [8, '3x3'],
    [9, '3x3'],
    [12, '3x3'],
  ])('%i tiles -> %s', (n, cls) => {
    expect(gridClass(n)).toBe(cls);
  });
});

describe('orderTiles', () => {
  it('keeps join order for new participants', () => {
    expect(orderTiles([], ['a', 'b', 'c'])).toEqual(['a', 'b', 'c']);
  });

  it('keeps the previous order stable and appends newcomers', () => {
    expect(orderTiles(['c', 'a', 'b'], ['a', 'b', 'c', 'd'])).toEqual(['c', 'a', 'b', 'd']);
  });

  it('drops participants that left without reordering the rest', () => {
    expect(orderTiles(['c', 'a', 'b', 'd'], ['a', 'b', 'd'])).toEqual(['a', 'b', 'd']);
  });

  it('moves active speakers to the front, loudest first, keeping the others in order', () => {
    expect(orderTiles(['a', 'b', 'c', 'd', 'e'], ['a', 'b', 'c', 'd', 'e'], ['d', 'b'])).toEqual([
      'd',
      'b',
      'a',
      'c',
      'e',
    ]);
  });

  it('keeps a former speaker in front after it stops speaking', () => {
    const first = orderTiles([], ['a', 'b', 'c'], ['c']);
    expect(first).toEqual(['c', 'a', 'b']);
    expect(orderTiles(first, ['a', 'b', 'c'], [])).toEqual(['c', 'a', 'b']);
    expect(orderTiles(first, ['a', 'b', 'c'], ['b'])).toEqual(['b', 'c', 'a']);
  });

  it('ignores speakers that are not remote participants (e.g. the local one)', () => {
    expect(orderTiles(['a', 'b'], ['a', 'b'], ['local', 'b'])).toEqual(['b', 'a']);
  });

  it('ignores duplicates', () => {
    expect(orderTiles(['a', 'a', 'b'], ['b', 'a', 'b', 'c'], ['c', 'c'])).toEqual(['c', 'a', 'b']);
  });

  it('is the same when nothing changed', () => {
    const o = orderTiles([], ids(5), ['p3']);
    expect(orderTiles(o, ids(5), ['p3'])).toEqual(o);
  });
});

describe('gridLayout', () => {
  it('shows nothing without participants', () => {
    expect(gridLayout([], [])).toEqual({ order: [], visible: [], gridClass: '' });
  });

  it.each([
    [1, '1x1'],
    [2, '2x1'],
    [3, '2x2'],
    [4, '2x2'],
    [5, '3x3'],
    [9, '3x3'],
  ])('%i participants -> all visible, grid %s', (n, cls) => {
    const g = gridLayout([], ids(n));
    expect(g.visible).toEqual(ids(n));
    expect(g.gridClass).toBe(cls);
  });

  it('cuts to 9 tiles, keeping the full order as state', () => {
    const g = gridLayout([], ids(12));
    expect(g.visible).toHaveLength(MAX_GRID_TILES);
    expect(g.visible).toEqual(ids(9));
    expect(g.order).toEqual(ids(12));
    expect(g.gridClass).toBe('3x3');
  });

  it('brings a speaker beyond the 9th tile into view', () => {
    const g = gridLayout(ids(12), ids(12), ['p11']);
    expect(g.visible[0]).toBe('p11');
    expect(g.visible).toEqual(['p11', ...ids(8)]);
    expect(g.visible).not.toContain('p9');
  });

  it('keeps order across updates while participants come and go', () => {
    let g = gridLayout([], ['a', 'b', 'c']);
    g = gridLayout(g.order, ['a', 'b', 'c', 'd'], ['c']);
    expect(g.visible).toEqual(['c', 'a', 'b', 'd']);
    g = gridLayout(g.order, ['b', 'c', 'd', 'e']);
    expect(g.visible).toEqual(['c', 'b', 'd', 'e']);
    expect(g.gridClass).toBe('2x2');
  });
});

describe('chooseSpeaker', () => {
  it('returns null without participants', () => {
    expect(chooseSpeaker([], ['a'])).toBeNull();
  });

  it('falls back to the first participant', () => {
    expect(chooseSpeaker(people('a', 'b', 'c'))).toEqual({ identity: 'a', source: 'camera' });
  });

  it('picks the loudest active speaker', () => {
    expect(chooseSpeaker(people('a', 'b', 'c'), ['c', 'b'])).toEqual({ identity: 'c', source: 'camera' });
  });

  it('skips speakers that are not remote participants', () => {
    expect(chooseSpeaker(people('a', 'b'), ['local', 'b'])).toEqual({ identity: 'b', source: 'camera' });
  });

  it('lets a screen share win over active speakers', () => {
    const ps: ParticipantInfo[] = [{ identity: 'a' }, { identity: 'b', hasScreenShare: true }, { identity: 'c' }];
    expect(chooseSpeaker(ps, ['a', 'c'], 'a')).toEqual({ identity: 'b', source: 'screen' });
  });

  it('takes the first screen share in join order', () => {
    const ps: ParticipantInfo[] = [
      { identity: 'a' },
      { identity: 'b', hasScreenShare: true },
      { identity: 'c', hasScreenShare: true },
    ];
    expect(chooseSpeaker(ps)).toEqual({ identity: 'b', source: 'screen' });
  });

  it('keeps the previous speaker during silence', () => {
    expect(chooseSpeaker(people('a', 'b', 'c'), [], 'b')).toEqual({ identity: 'b', source: 'camera' });
  });

  it('forgets a previous speaker who left', () => {
    expect(chooseSpeaker(people('a', 'c'), [], 'b')).toEqual({ identity: 'a', source: 'camera' });
  });
});

describe('speakerLayout', () => {
  it('shows nothing without participants', () => {
    expect(speakerLayout([], [], [])).toEqual({ main: null, sidebar: [], order: [] });
  });

  it('single participant: main only, empty sidebar', () => {
    const s = speakerLayout(people('a'), []);
    expect(s.main).toEqual({ identity: 'a', source: 'camera' });
    expect(s.sidebar).toEqual([]);
  });

  it('puts the others in the sidebar, not the main speaker', () => {
    const s = speakerLayout(people('a', 'b', 'c'), [], ['b']);
    expect(s.main).toEqual({ identity: 'b', source: 'camera' });
    expect(s.sidebar).toEqual(['a', 'c']);
  });

  it("keeps the sharer's camera in the sidebar during a screen share", () => {
    const ps: ParticipantInfo[] = [{ identity: 'a' }, { identity: 'b', hasScreenShare: true }];
    const s = speakerLayout(ps, []);
    expect(s.main).toEqual({ identity: 'b', source: 'screen' });
    expect(s.sidebar).toEqual(['a', 'b']);
  });

  it('cuts the sidebar', () => {
    const s = speakerLayout(people(...ids(10)), [], [], null, 6);
    expect(s.main?.identity).toBe('p1');
    expect(s.sidebar).toEqual(['p2', 'p3', 'p4', 'p5', 'p6', 'p7']);
    expect(s.order).toEqual(ids(10));
  });
});
