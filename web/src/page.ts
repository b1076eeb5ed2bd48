// Page plumbing shared by both entry points (main.ts: legacy recorder page,
// egress/main.ts: egress page): the root element and the `div.error` /
// `div.notice` messages the recorder reads.

export const MISSING_PARAMS = 'missing required params url and token';

export interface Page {
  root: HTMLElement;
  /** Replaces the page with `<div class="error">{message}</div>` (the recorder reads `div.error`). */
  showError: (message: string) => void;
  /** Replaces the page with a neutral notice (not an error). */
  showNotice: (message: string) => void;
}

export function page(): Page {
  const root = document.getElementById('app') ?? document.body.appendChild(document.createElement('div'));
  const show = (cls: string) => (message: string) => {
    const div = document.createElement('div');
    div.className = cls;
    div.textContent = message;
    root.replaceChildren(div);
  };
  return { root, showError: show('error'), showNotice: show('notice') };
}

/** The message of a thrown value, never empty. */
export function errorMessage(e: unknown): string {
  const m = e instanceof Error ? e.message : typeof e === 'string' ? e : '';
  return m && m.trim() !== '' ? m : 'unknown error';
}
