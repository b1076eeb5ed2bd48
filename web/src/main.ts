// Entry point of the legacy recorder page (index.html, `{base}/{layout}?url=&token=`,
// livekit-client 1.1.7). Loaded as a classic deferred script, so the "missing
// params" / "unknown layout" errors are in the DOM before the load event (the
// recorder checks `div.error` right after navigation).

import { MISSING_PARAMS, errorMessage, page } from './page';
import { runRoom } from './room';
import { parseRoute } from './route';

function main(): void {
  const { root, showError, showNotice } = page();
  const route = parseRoute(window.location);

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
      }).catch((e: unknown) => showError(`could not connect: ${errorMessage(e)}`));
      return;
    }
  }
}

main();
