/**
 * The pure parts of the desktop run's wipe step (tools/desktop-run.ts, step 6):
 * which files are the device's stored state, and what counts as a recovery
 * through the counter hint (protocol §5.5). The run itself needs the Moddable
 * SDK and is not part of this suite.
 */
import { describe, expect, it, afterAll } from 'vitest';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { FileStorage, type FileApi } from '../../firmware/platform/moddable/file-storage.js';
import { checkWipeRecovery, wipeDeviceState, type BrokerCounts } from '../../tools/desktop-run.js';

const dir = mkdtempSync(join(tmpdir(), 'mqsec-wipe-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The SDK `file` module's calls FileStorage uses, on the host file system (as the desktop target does). */
const nodeFiles: FileApi = {
  open(path, write) {
    const fd = openSync(path, write ? (existsSync(path) ? 'r+' : 'w+') : 'r');
    return {
      read: () => {
        const b = readFileSync(path);
        return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
      },
      write: (data) => void writeSync(fd, new Uint8Array(data)),
      close: () => closeSync(fd),
      get length() {
        return statSync(path).size;
      },
    };
  },
  exists: (path) => existsSync(path),
  delete: (path) => (existsSync(path) ? (unlinkSync(path), true) : false),
  rename: (from, to) => (renameSync(from, join(dirname(from), to)), true),
  createDirectory: (path) => void mkdirSync(path, { recursive: true }),
};

describe('wipeDeviceState', () => {
  it('removes exactly what the desktop storage wrote: a fresh storage on the same root reads nothing', async () => {
    const root = join(dir, 'fs') + '/';
    mkdirSync(root);
    const storage = new FileStorage(nodeFiles, root);
    await storage.put('mqsec.state', new Uint8Array([1, 2, 3]));
    await storage.put('node.seq', new Uint8Array([9]));
    expect(await new FileStorage(nodeFiles, root).get('mqsec.state')).toEqual(new Uint8Array([1, 2, 3]));
    // Other files in the root (the write-pause marker, other apps' files) are not the device's state.
    const marker = join(root, 'mqsec-pause-writes');
    closeSync(openSync(marker, 'w'));
    mkdirSync(join(root, 'unrelated'));
    expect(wipeDeviceState(root)).toEqual(['mqsec.state', 'node.seq']);
    const fresh = new FileStorage(nodeFiles, root);
    expect(await fresh.get('mqsec.state')).toBeUndefined();
    expect(await fresh.get('node.seq')).toBeUndefined();
    expect(existsSync(join(root, 'unrelated'))).toBe(true);
    expect(existsSync(marker)).toBe(true);
  });
  it('refuses to report a wipe of nothing', () => {
    const root = join(dir, 'empty') + '/';
    mkdirSync(join(root, 'mqsec'), { recursive: true });
    expect(() => wipeDeviceState(root)).toThrow(/no device state/);
    expect(() => wipeDeviceState(join(dir, 'missing') + '/')).toThrow(/no device state/);
  });
});

describe('checkWipeRecovery', () => {
  const before: BrokerCounts = { phase1Ok: 1, hints: 0, counter: 1088 };
  const after: BrokerCounts = { phase1Ok: 2, hints: 1, counter: 1089 };
  const lines = [
    'mqsec boot desk-0001 board=lin client=firmware',
    'mqsec state connecting',
    'warn mqsec: counter was behind the broker; jumped past it {"counter":1089}',
    'mqsec phase 1 ok 812 ms',
    'mqsec state ready',
  ];

  it('accepts hint, jump past the broker, one phase 1, counter moved forward', () => {
    expect(checkWipeRecovery(before, after, lines)).toEqual([]);
  });
  it('names each way the recovery can go wrong', () => {
    expect(checkWipeRecovery(before, { ...after, hints: 0 }, lines)).toEqual(['the broker sent no counter hint']);
    expect(checkWipeRecovery(before, after, lines.filter((l) => !l.startsWith('warn')))).toEqual(['the device did not report a counter hint']);
    expect(checkWipeRecovery(before, after, lines.map((l) => l.replace('"counter":1089', '"counter":1088')))).toEqual(['the device jumped to counter 1088, not past 1088']);
    expect(checkWipeRecovery(before, after, lines.filter((l) => !l.startsWith('mqsec phase 1')))).toEqual(['the device did not report phase 1']);
    expect(checkWipeRecovery(before, after, [lines[0], lines[3], lines[2]])).toEqual(['the device reported phase 1 before the counter hint']);
    expect(checkWipeRecovery(before, after, [...lines.slice(0, 3), 'mqsec phase 2 ok 40 ms', lines[3]])).toEqual(['the device reported phase 2 before phase 1 (it had no ticket)']);
    expect(checkWipeRecovery(before, { ...after, phase1Ok: 3 }, lines)).toEqual(['the broker counted 2 phase-1 handshakes, expected 1']);
    // A used counter accepted again leaves the broker's highest counter where it was.
    expect(checkWipeRecovery(before, { ...after, counter: 1088 }, lines)).toEqual(["the broker's highest accepted counter is 1088, not past 1088 from before the wipe"]);
  });
});
