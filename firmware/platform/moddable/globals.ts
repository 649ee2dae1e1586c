/**
 * Globals that npm ESM packages expect and the Moddable runtime does not
 * install: @noble/* encode domain-separation strings with `TextEncoder` when
 * their modules load. Imported first by main.ts, so it runs before any noble
 * module. (mqsec's own firmware code never uses these globals.)
 */
import TextEncoder from 'text/encoder';
import TextDecoder from 'text/decoder';

const g = globalThis as Record<string, unknown>;
g.TextEncoder ??= TextEncoder;
g.TextDecoder ??= TextDecoder;
