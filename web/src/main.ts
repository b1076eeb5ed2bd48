// Entry point of the built-in templates. Loaded as a classic deferred script,
// so the "missing params" / "unknown layout" errors are in the DOM before the
// load event (the recorder checks `div.error` right after navigation).

import { runRoom } from './room';
import { parseRoute } from './route';

export const MISSING_PARAMS = 'missing required params url and token';

function main(): void {
  const root = document.getElementById('app') ?? document.body.appendChild(document.createElement('div'));
  const route = parseRoute(window.location);

  const showError = (message: string) => {
    const div = document.createElement('div');
    div.className = 'error';
    div.textContent = message;
    root.replaceChildren(div);
  };
  const showNotice = (message: string) => {
    const div = document.createElement('div');
    div.className = 'notice';
    div.textContent = message;
    root.replaceChildren(div);
  };

  // The recorder opens one address per page; a changed hash means a new page.
  window.addEventListener('hashchange', () => window.location.reload());

  switch (route.kind) {
    case 'home':
      root.replaceChildren();
      return;
    case 'unknown':
      showError(`unknown layout ${route.name}`);
      return;
    case 'layout': {
      document.body.classList.add(`theme-${route.theme}`, `layout-${route.layout}`);
      if (route.url === null || route.token === null) {
        showError(MISSING_PARAMS);
        return;
      }
      const stage = document.createElement('div');
      const audio = document.createElement('div');
      audio.className = 'audio';
      root.replaceChildren(stage, audio);
      runRoom({
        stage,
        audio,
        layout: route.layout,
        url: route.url,
        token: route.token,
        showError,
        showNotice,
      }).catch((e: unknown) => showError(`could not connect: ${e instanceof Error ? e.message : String(e)}`));
      return;
    }
  }
}

main();
