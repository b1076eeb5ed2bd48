// Entry point of the egress page (egress.html): the address livekit egress uses
// for room composite recordings, `{base}?layout=...&token=...&url=...`, with
// livekit-client 2.x. Loaded as a classic deferred script, so the "missing
// params" error is in the DOM before the load event.

import { MISSING_PARAMS, errorMessage, page } from '../page';
import { type EgressLayout, bodyClasses, layoutName, parseEgressParams } from './params';
import { runEgressRoom, warnUnknownLayout } from './room';

function main(): void {
  const { root, showError, showNotice } = page();
  const params = parseEgressParams(window.location.search);

  let classes: string[] = [];
  const applyLayout = (l: EgressLayout) => {
    document.body.classList.remove(...classes);
    classes = bodyClasses(l);
    document.body.classList.add(...classes);
  };
  warnUnknownLayout(params.layout, 'address');
  applyLayout(params.layout);

  if (params.url === null || params.token === null) {
    showError(MISSING_PARAMS);
    return;
  }
  console.log(`layout ${layoutName(params.layout)}`);
  const stage = document.createElement('div');
  stage.className = 'stage';
  const audio = document.createElement('div');
  audio.className = 'audio';
  root.replaceChildren(stage, audio);
  runEgressRoom({
    stage,
    audio,
    layout: params.layout,
    url: params.url,
    token: params.token,
    onLayout: applyLayout,
    showError,
    showNotice,
  }).catch((e: unknown) => showError(`could not connect: ${errorMessage(e)}`));
}

main();
