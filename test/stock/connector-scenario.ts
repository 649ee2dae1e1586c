/**
 * The firmware StockConnector (firmware/app/stock-connector.ts) against the
 * in-memory stand-in for "stock broker + key service" (stock-stand-in.ts),
 * so the very same scenario runs under Node and inside the XS engine
 * (test/xs/entries/stock.entry.ts).
 */
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { utf8Decode, utf8Encode } from '../../firmware/core/utf8.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { StockConnector } from '../../firmware/app/stock-connector.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { GroupKeyring, deriveKeyServiceKey } from '../../firmware/secure/group.js';
import { deriveDeviceKeys } from '../../firmware/secure/key-schedule.js';
import { toTextForm } from '../../firmware/secure/messages.js';
import { bootPassword } from '../../firmware/secure/stock.js';
import { StockStandIn } from './stock-stand-in.js';

export interface ScenarioResult {
  /** Per connect: [phase1, sessionPresent]. */
  connects: [boolean, boolean][];
  /** What the reader opened, as "publisher|topic|text". */
  read: string[];
  /** Refused logins the stand-in saw (replayed token, plain password). */
  refusedLogins: number;
  /** The payload on the wire never contained the plaintext. */
  plaintextOnWire: boolean;
  errors: string[];
}

const ID = 'xsnode01';
const READER = 'reader01';
const GROUP = 'sensors/xsnode01/#';

export async function connectorScenario(suite: CryptoSuite, keyDevice: Uint8Array, keyReader: Uint8Array): Promise<ScenarioResult> {
  const res: ScenarioResult = { connects: [], read: [], refusedLogins: 0, plaintextOnWire: false, errors: [] };
  const keysOf = new Map([
    [ID, keyDevice],
    [READER, keyReader],
  ]);
  const broker = new StockStandIn(suite, keysOf, [{ filter: GROUP, writers: [ID], readers: [READER] }]);
  const open = broker.open;
  const timer = { set: () => 0, clear: () => {} }; // timeouts are not exercised here
  const make = (id: string, key: Uint8Array, storage: MemoryStorage, onMessage?: (m: { publisher: string; topic: string; plaintext: Uint8Array }) => void) => {
    const k = deriveDeviceKeys(suite, key, id);
    const session = new DeviceSecureSession({ suite, devId: id, deviceKey: key, storage });
    const c = new StockConnector({
      id,
      session,
      keyring: new GroupKeyring({ suite, id, keyServiceKey: deriveKeyServiceKey(suite, key, id) }),
      bootPassword: bootPassword(suite, k.authKey, id),
      open,
      timer,
      onMessage,
      onDropped: (t, e) => res.errors.push(`${id} ${t} ${e.code}`),
    });
    return { c, session };
  };
  const reader = make(READER, keyReader, new MemoryStorage(), (m) => res.read.push(`${m.publisher}|${m.topic}|${utf8Decode(m.plaintext)}`));
  await reader.c.connect();
  await reader.c.subscribe('sensors/#');
  const flash = new MemoryStorage();
  let dev = make(ID, keyDevice, flash);
  const wakeOnce = async (n: number) => {
    const r = await dev.c.connect();
    res.connects.push([r.phase1, r.sessionPresent]);
    await dev.c.publish(`sensors/${ID}/t`, utf8Encode(`reading ${n}`), 1);
    await dev.c.close();
  };
  await wakeOnce(0);
  const older = await flash.get('mqsec.state'); // a copy of the flash as it was after the first wake
  for (let wake = 1; wake < 3; wake++) await wakeOnce(wake);
  // §15.7: a power cut (RAM lost, flash kept): the counter resumes at the next block, the installed
  // token does not match, the broker refuses it, the device runs phase 1 and goes on
  dev = make(ID, keyDevice, flash);
  await wakeOnce(3);
  // §5.5 + §15.2: flash wiped: the counter hint over PUBLISH, then phase 1
  dev = make(ID, keyDevice, new MemoryStorage());
  await wakeOnce(4);
  // §15.7: state restored from that older copy (counter behind, old ticket): the token is refused, the KX1 gets a
  // counter hint, then phase 1 above it and phase 2, in one connect()
  const restored = new MemoryStorage();
  await restored.put('mqsec.state', older!);
  dev = make(ID, keyDevice, restored);
  await wakeOnce(5);
  // a recorded token is refused, and so is a plain password
  const used = broker.installed.get(ID)!;
  for (const pw of ['password', toTextForm(await broker.token(ID, used.sid, used.counter - 1))]) {
    await open({ clientId: ID, username: ID, password: utf8Encode(pw), cleanSession: false, stage: 'phase2', onConnack() {}, onMessage() {}, onClose() {} }).catch(() => undefined);
  }
  await reader.c.close();
  const needle = utf8Encode('reading');
  res.refusedLogins = broker.refusedLogins;
  res.plaintextOnWire = broker.wire.some((b) => b.some((_, i) => needle.every((x, j) => b[i + j] === x)));
  return res;
}
