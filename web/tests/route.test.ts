import { describe, expect, it } from 'vitest';
import { type LocationLike, parseRoute } from '../src/route';

function loc(href: string): LocationLike {
  const u = new URL(href);
  return { hash: u.hash, pathname: u.pathname, search: u.search };
}

const WS = encodeURIComponent('wss://fake.url.io');

describe('parseRoute', () => {
  it('parses the original hash address', () => {
    expect(parseRoute(loc(`https://recorder.livekit.io/#/speaker-dark?url=${WS}&token=eyJ.a.b`))).toEqual({
      kind: 'layout',
      name: 'speaker-dark',
      layout: 'speaker',
      theme: 'dark',
      url: 'wss://fake.url.io',
      token: 'eyJ.a.b',
    });
  });

  it('parses the path address', () => {
    expect(parseRoute(loc(`http://127.0.0.1:8080/grid-light?url=${WS}&token=t`))).toMatchObject({
      kind: 'layout',
      layout: 'grid',
      theme: 'light',
      url: 'wss://fake.url.io',
      token: 't',
    });
  });

  it('accepts a base with a prefix and trailing slashes', () => {
    expect(parseRoute(loc(`http://h/templates/#/grid-dark/?url=${WS}&token=t`))).toMatchObject({
      name: 'grid-dark',
      url: 'wss://fake.url.io',
    });
    expect(parseRoute(loc(`http://h/templates/speaker-light/?url=${WS}&token=t`))).toMatchObject({
      name: 'speaker-light',
    });
  });

  it.each(['speaker-light', 'speaker-dark', 'grid-light', 'grid-dark'])('knows %s', (name) => {
    expect(parseRoute(loc(`http://h/#/${name}`))).toMatchObject({ kind: 'layout', name, url: null, token: null });
  });

  it('reports missing or empty params as null', () => {
    expect(parseRoute(loc(`http://h/#/grid-dark?url=${WS}`))).toMatchObject({ url: 'wss://fake.url.io', token: null });
    expect(parseRoute(loc(`http://h/#/grid-dark?url=&token=`))).toMatchObject({ url: null, token: null });
  });

  it('falls back to the real query string', () => {
    expect(parseRoute(loc(`http://h/?url=${WS}&token=t#/speaker-dark`))).toMatchObject({
      url: 'wss://fake.url.io',
      token: 't',
    });
  });

  it('routes / and /index.html to home', () => {
    expect(parseRoute(loc('http://h/'))).toEqual({ kind: 'home' });
    expect(parseRoute(loc('http://h/#/'))).toEqual({ kind: 'home' });
    expect(parseRoute(loc('http://h/index.html'))).toEqual({ kind: 'home' });
    expect(parseRoute(loc('http://h/#'))).toEqual({ kind: 'home' });
  });

  it('reports unknown layouts', () => {
    expect(parseRoute(loc('http://h/#/fancy?url=x&token=y'))).toEqual({ kind: 'unknown', name: 'fancy' });
    expect(parseRoute(loc('http://h/single-speaker'))).toEqual({ kind: 'unknown', name: 'single-speaker' });
  });
});
