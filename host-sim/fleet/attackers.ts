/**
 * Attackers that run alongside the fleet (`--attackers K`): each repeatedly
 * tries one of the attacks a network attacker can mount without the device
 * key, over raw TCP with hand-built MQTT (firmware codec), and records whether
 * the broker let it in. Every attempt must be refused, and the genuine
 * devices must not notice.
 *
 * - replay: resend a CONNECT captured from a genuine device (KX1 or resume token)
 * - forge: a genuine device's CONNECT with one password byte flipped
 * - downgrade: log in as a registered device id with a plain password
 * - takeover: an mqsec-shaped CONNECT with random bytes for a live device id
 *
 * On a stock broker (docs/protocol.md §15) the same four run against the
 * broker's own password checks, which the key service feeds: a replayed
 * phase-2 CONNECT carries a one-connection token (§15.3), refused by the
 * broker once its connection was seen (dynamic security: the password is
 * replaced; HTTP auth: the login consumed the counter) or kicked at once if
 * it races the live one; a forged or random token and a plain password were
 * never installed. Bootstrap CONNECTs (`boot@ID`) are not replayed: their
 * static password is public by design and opens nothing but KX1/KX2 (§15.2).
 * An attempt counts as accepted when the broker keeps the connection
 * (CONNACK 0 and not closed within STOCK_HOLD_MS).
 */
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { encodePacket, decodePacket, MqttParser, type ConnectPacket } from '../../firmware/mqtt/codec.js';
import { KX_TOPIC, MSG_COUNTER_HINT } from '../../firmware/secure/constants.js';

export type AttackKind = 'replay' | 'forge' | 'downgrade' | 'takeover';
export const ATTACK_KINDS: AttackKind[] = ['replay', 'forge', 'downgrade', 'takeover'];

export interface AttackStats {
  attempts: number;
  refused: number;
  accepted: number;
  byKind: Record<AttackKind, { attempts: number; accepted: number }>;
}

/** §15: a stock broker's connection that survives this long after CONNACK 0 was let in. */
export const STOCK_HOLD_MS = 3000;

/** The broker kind the attackers face (docs/protocol.md §15). */
export type AttackFlavour = 'mqsec' | 'stock';

/** Captures the CONNECT packets genuine devices send (the tap of their transport). */
export class ConnectCapture {
  private readonly captured: Uint8Array[] = [];
  constructor(private readonly capacity = 64) {}
  offer(bytes: Uint8Array): void {
    // a CONNECT is the first packet on a connection and starts with 0x10
    if (bytes.length < 12 || bytes[0] !== 0x10) return;
    if (this.captured.length < this.capacity) this.captured.push(bytes.slice());
    else this.captured[Math.floor(Math.random() * this.capacity)] = bytes.slice();
  }
  pick(): Uint8Array | undefined {
    if (this.captured.length === 0) return undefined;
    return this.captured[Math.floor(Math.random() * this.captured.length)];
  }
}

/**
 * Sends one raw CONNECT and reports whether the broker let it in: CONNACK 0
 * not followed by a counter hint. (A MAC-valid KX1 with a used counter gets
 * CONNACK 0, the hint on $mqsec/kx and a close, never a session:
 * docs/protocol.md §5.5.)
 */
export function tryConnect(host: string, port: number, bytes: Uint8Array, timeoutMs = 3000, flavour: AttackFlavour = 'mqsec'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const parser = new MqttParser({ maxPacketSize: 4096 });
    let done = false;
    const finish = (accepted: boolean) => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve(accepted);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (b) => {
      try {
        parser.feed(new Uint8Array(b), (p) => {
          if (p.type === 'connack') {
            if (p.returnCode !== 0) return finish(false);
            // §15: no protocol message follows on a stock broker; let in = still connected a while later
            if (flavour === 'stock') return void socket.setTimeout(STOCK_HOLD_MS, () => finish(true));
            // the broker's protocol message follows at once; give a loaded machine time to send it
            socket.setTimeout(Math.max(timeoutMs, 10_000), () => finish(true));
          } else if (p.type === 'publish' && p.topic === KX_TOPIC) {
            finish(p.payload[0] !== MSG_COUNTER_HINT);
          }
        });
      } catch {
        finish(false);
      }
    });
    socket.on('error', () => finish(false));
    // closed right after CONNACK 0 with no KX2 / confirmation: no session survived it
    socket.on('close', () => finish(false));
  });
}

function decodeConnect(bytes: Uint8Array): ConnectPacket | undefined {
  try {
    const p = decodePacket(bytes);
    return p.type === 'connect' ? p : undefined;
  } catch {
    return undefined;
  }
}

export function buildAttack(kind: AttackKind, capture: ConnectCapture, deviceIds: string[], flavour: AttackFlavour = 'mqsec'): Uint8Array | undefined {
  let sample = capture.pick();
  // §15.2: the bootstrap login is static by design (it opens KX1/KX2 only): not an attack to count
  if (flavour === 'stock' && sample && decodeConnect(sample)?.username?.startsWith('boot@')) sample = undefined;
  const devId = deviceIds[Math.floor(Math.random() * deviceIds.length)];
  switch (kind) {
    case 'replay':
      return sample;
    case 'forge': {
      const c = sample && decodeConnect(sample);
      if (!c || !c.password) return undefined;
      const pw = c.password.slice();
      pw[Math.floor(Math.random() * pw.length)] ^= 1 << Math.floor(Math.random() * 8);
      return encodePacket({ ...c, password: pw });
    }
    case 'downgrade':
      return encodePacket({
        type: 'connect',
        clientId: devId,
        cleanSession: true,
        keepalive: 30,
        username: devId,
        password: new TextEncoder().encode('password123'),
      });
    case 'takeover': {
      const c = sample && decodeConnect(sample);
      const len = c?.password?.length ?? 51;
      return encodePacket({
        type: 'connect',
        clientId: devId,
        cleanSession: true,
        keepalive: 30,
        username: devId,
        password: new Uint8Array(randomBytes(len)),
      });
    }
  }
}

export class AttackerPool {
  private running = false;
  private loops: Promise<void>[] = [];
  readonly stats: AttackStats = {
    attempts: 0,
    refused: 0,
    accepted: 0,
    byKind: { replay: { attempts: 0, accepted: 0 }, forge: { attempts: 0, accepted: 0 }, downgrade: { attempts: 0, accepted: 0 }, takeover: { attempts: 0, accepted: 0 } },
  };

  constructor(
    private readonly count: number,
    private readonly target: () => { host: string; port: number },
    private readonly capture: ConnectCapture,
    private readonly deviceIds: string[],
    private readonly pauseMs = 250,
    private readonly flavour: AttackFlavour = 'mqsec',
  ) {}

  start(): void {
    this.running = true;
    for (let i = 0; i < this.count; i++) this.loops.push(this.loop(i));
  }

  private async loop(i: number): Promise<void> {
    let k = i;
    while (this.running) {
      const kind = ATTACK_KINDS[k++ % ATTACK_KINDS.length];
      const bytes = buildAttack(kind, this.capture, this.deviceIds, this.flavour);
      if (bytes) {
        const { host, port } = this.target();
        const accepted = await tryConnect(host, port, bytes, 3000, this.flavour);
        if (!this.running) break;
        this.stats.attempts++;
        this.stats.byKind[kind].attempts++;
        if (accepted) {
          this.stats.accepted++;
          this.stats.byKind[kind].accepted++;
        } else this.stats.refused++;
      }
      await new Promise((r) => setTimeout(r, this.pauseMs));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}
