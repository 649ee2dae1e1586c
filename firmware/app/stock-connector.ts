/**
 * The device side of a stock broker (docs/protocol.md §15) over any MQTT
 * client the platform provides: phase 1 on the bootstrap credential with KX1
 * and KX2 as PUBLISHes (§15.2), phase 2 with the text form of the token on a
 * persistent session and the key service's RC (§15.3), then the group keys
 * (§14.6); readings sealed end to end (§14.4) and published as they are (no
 * channel trailer: a stock broker cannot check one). Platform services
 * (the MQTT connection, a timer) are injected, so the same class runs under
 * XS on the device and under Node in the simulator.
 *
 *   idle --connect()--> [no ticket] bootstrap: KX1 up, KX2 down, close --> phase 2
 *   phase 2: CONNECT(token) --CONNACK 0--> [no session: SUBSCRIBE + ask RC] --RC--> GKREQ --GKDEL--> ready
 *   refused token (4/5): the session forgets its ticket (§6.3) --> bootstrap again
 */
import { MqsecError, asMqsecError } from '../core/errors.js';
import type { Timer, TimerHandle } from '../core/platform.js';
import { utf8Encode } from '../core/utf8.js';
import type { DeviceSecureSession } from '../secure/device.js';
import { GK_TOPIC, type GroupKeyring, type OpenedGroupMessage } from '../secure/group.js';
import { toTextForm } from '../secure/messages.js';
import { bootUsername, downTopic, protocolTopicOfDown, upTopic } from '../secure/stock.js';

/** One MQTT connection as the connector needs it. */
export interface StockLink {
  readonly sessionPresent: boolean;
  subscribe(filter: string, qos: 0 | 1): Promise<unknown>;
  publish(topic: string, payload: Uint8Array, qos: 0 | 1): Promise<void>;
  close(): Promise<void>;
}

export interface StockLinkOptions {
  clientId: string;
  username: string;
  /** UTF-8 bytes of the password (stock brokers take it as a string, §15.1). */
  password: Uint8Array;
  cleanSession: boolean;
  /** Which stage opened it (byte counters of a simulator use it). */
  stage: 'phase1' | 'phase2';
  /** CONNACK 0 arrived; called before any PUBLISH that followed it (a queued RC can be in the same segment). */
  onConnack(): void;
  /** Every PUBLISH, in arrival order. */
  onMessage(topic: string, payload: Uint8Array): void;
  onClose(): void;
}

/** Opens a connection; resolves after CONNACK 0, rejects with `returnCode` set on a refusal. */
export type OpenStockLink = (o: StockLinkOptions) => Promise<StockLink>;

export interface StockConnectorOptions {
  id: string;
  session: DeviceSecureSession;
  keyring: GroupKeyring;
  /** The bootstrap password (bootPassword, §15.2), computed once at start-up from K_auth. */
  bootPassword: string;
  open: OpenStockLink;
  timer: Timer;
  /** Wait for KX2 / RC / the key delivery. Default 5 s. */
  timeoutMs?: number;
  /** After CONNACK, wait this long for RC before asking again (§15.3). Default 1 s. */
  rcAskAgainMs?: number;
  onMessage?(m: OpenedGroupMessage & { topic: string }): void;
  onDropped?(topic: string, e: MqsecError): void;
  /** The current connection ended (not by close()). */
  onDown?(): void;
  /** RC verified; the key request goes out next (a simulator counts bytes per stage). */
  onConfirmed?(): void;
}

export interface StockConnectResult {
  phase1: boolean;
  sessionPresent: boolean;
}

type Want = 'kx2' | 'confirmed' | 'keys';

/**
 * Messages of subscribed topics held while the connection has no group keys
 * yet: a persistent session's queue (commands sent while the device slept)
 * arrives right behind CONNACK, before the key delivery of §14.6. Bounded
 * (RAM); the oldest beyond it is dropped and reported.
 */
export const HELD_BEFORE_KEYS = 8;

export class StockConnector {
  private link: StockLink | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private waiter: { want: Want; resolve(): void; reject(e: MqsecError): void } | undefined;
  private closing = false;
  /** Bumped by every connect() and close(): a close ends a connect still under way (a caller's timeout). */
  private connects = 0;
  private held: { topic: string; payload: Uint8Array }[] = [];

  constructor(private readonly o: StockConnectorOptions) {}

  get ready(): boolean {
    return !!this.link && this.o.session.state === 'ready' && this.o.keyring.hasKeys;
  }

  /** Phase 2 if the session holds a ticket; otherwise (or when its token is refused) phase 1 first. */
  async connect(): Promise<StockConnectResult> {
    let phase1 = false;
    // at most: a refused token (§6.3), a phase 1 answered by a counter hint (§5.5: state restored from an older
    // copy), the phase 1 above the hint, then phase 2 (§15.7)
    const mine = ++this.connects;
    const stillMine = () => {
      if (mine !== this.connects) throw new MqsecError('CONNECTION_CLOSED', 'closed while connecting');
    };
    for (let attempt = 0; attempt < 4; attempt++) {
      const creds = await this.o.session.connectCredentials();
      stillMine();
      if (creds.phase === 1) {
        await this.bootstrap(creds.password);
        stillMine();
        phase1 = true;
        continue;
      }
      try {
        const sessionPresent = await this.resume(creds.password);
        stillMine();
        return { phase1, sessionPresent };
      } catch (e) {
        // §6.3: a refused token (4/5) made the session forget its ticket: the loop runs phase 1
        if (this.o.session.hasTicket) throw e;
      }
    }
    throw new MqsecError('CONNECTION_REFUSED', 'no session after phase 1');
  }

  /** §15.2: bootstrap user, SUBSCRIBE to the down topic, KX1 up, KX2 (or HINT) down, close. */
  private async bootstrap(kx1: Uint8Array): Promise<void> {
    const { id, session } = this.o;
    const user = bootUsername(id);
    let link: StockLink | undefined;
    try {
      try {
        link = await this.o.open({
          clientId: user,
          username: user,
          password: utf8Encode(this.o.bootPassword),
          cleanSession: true,
          stage: 'phase1',
          onConnack: () => void this.serialise(() => session.onConnack(0)),
          onMessage: (t, p) => this.incoming(t, p),
          onClose: () => {},
        });
      } catch (e) {
        await this.serialise(() => session.onConnack(returnCodeOf(e) ?? 3));
        throw asMqsecError(e, 'CONNECTION_REFUSED');
      }
      const answered = this.expect('kx2');
      answered.catch(() => undefined); // rejected by the finally below if subscribe or publish throws first
      await link.subscribe(downTopic(id), 0);
      await link.publish(upTopic(id), kx1, 0);
      await answered;
    } finally {
      this.cancelWait();
      await link?.close().catch(() => undefined);
      await this.serialise(() => session.onConnectionLost());
    }
  }

  /** §15.3: CONNECT with the token on the persistent session; RC makes the session ready; then the group keys. */
  private async resume(token: Uint8Array): Promise<boolean> {
    const { id, session } = this.o;
    const confirmed = this.expect('confirmed');
    confirmed.catch(() => undefined);
    let link: StockLink;
    try {
      link = await this.o.open({
        clientId: id,
        username: id,
        password: utf8Encode(toTextForm(token)),
        cleanSession: false,
        stage: 'phase2',
        onConnack: () => void this.serialise(() => session.onConnack(0)),
        onMessage: (t, p) => this.incoming(t, p),
        onClose: () => this.down(link),
      });
    } catch (e) {
      this.cancelWait();
      await this.serialise(() => session.onConnack(returnCodeOf(e) ?? 3));
      await this.serialise(() => session.onConnectionLost());
      throw asMqsecError(e, 'CONNECTION_REFUSED');
    }
    let again: TimerHandle | undefined;
    try {
      if (!link.sessionPresent) {
        // no session, so no subscription: subscribe, then ask for the RC of this connection again
        await link.subscribe(downTopic(id), 1);
        await link.publish(upTopic(id), token, 0);
      }
      // no RC yet: subscribe again (a session the broker kept can stop delivering: Mosquitto 2.0 after the
      // principal's dynamic-security client was re-created while connected, §15.3) and ask again
      again = this.o.timer.set(
        () => void link.subscribe(downTopic(id), 1).then(() => link.publish(upTopic(id), token, 0)).catch(() => undefined),
        this.o.rcAskAgainMs ?? 1000,
      );
      await confirmed;
    } catch (e) {
      await link.close().catch(() => undefined);
      await this.serialise(() => session.onConnectionLost());
      throw asMqsecError(e);
    } finally {
      if (again !== undefined) this.o.timer.clear(again);
    }
    this.link = link;
    this.o.onConfirmed?.();
    const keys = this.expect('keys');
    keys.catch(() => undefined); // a failed publish below leaves it to be superseded by the next wait
    await link.publish(upTopic(id), this.o.keyring.request(), 0);
    await keys;
    return link.sessionPresent;
  }

  private down(link: StockLink | undefined): void {
    if (!link || this.link !== link) return;
    this.link = undefined;
    void this.serialise(() => this.o.session.onConnectionLost());
    if (!this.closing) this.o.onDown?.();
  }

  private serialise<T>(op: () => Promise<T> | T): Promise<T> {
    const next = this.chain.then(op);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private expect(want: Want): Promise<void> {
    this.cancelWait();
    return new Promise((resolve, reject) => {
      const handle = this.o.timer.set(() => {
        this.waiter = undefined;
        reject(new MqsecError('TIMEOUT', `no ${want === 'kx2' ? 'KX2' : want === 'keys' ? 'key delivery' : 'RC'} from the key service`));
      }, this.o.timeoutMs ?? 5000);
      this.waiter = {
        want,
        resolve: () => {
          this.o.timer.clear(handle);
          this.waiter = undefined;
          resolve();
        },
        reject: (e) => {
          this.o.timer.clear(handle);
          this.waiter = undefined;
          reject(e);
        },
      };
    });
  }

  private cancelWait(): void {
    this.waiter?.reject(new MqsecError('CONNECTION_CLOSED', 'superseded'));
  }

  private settle(kind: Want): void {
    if (this.waiter?.want === kind) this.waiter.resolve();
  }

  /** Every PUBLISH of either connection, in order. */
  private incoming(topic: string, payload: Uint8Array): void {
    void this.serialise(async () => {
      if (topic === downTopic(this.o.id)) {
        const proto = protocolTopicOfDown(payload);
        if (proto === GK_TOPIC) {
          try {
            this.o.keyring.acceptDelivery(payload);
            this.settle('keys');
          } catch (e) {
            this.o.onDropped?.(topic, asMqsecError(e));
            return;
          }
          for (const m of this.held.splice(0)) this.openGroupMessage(m.topic, m.payload);
          return;
        }
        if (proto === undefined) return;
        const r = await this.o.session.handleIncoming(proto, payload);
        // KX2 verified (its KX3 reply is not needed on a stock broker, §15.2) or a counter hint: phase 1 is over
        if (r.kind === 'handshake' || r.kind === 'counter-hint') this.settle('kx2');
        else if (r.kind === 'confirmed') this.settle('confirmed');
        else if (r.kind === 'dropped') this.o.onDropped?.(topic, r.error);
        return;
      }
      if (!this.o.keyring.hasKeys) {
        // no key delivery on this connection yet: keep it until the keys arrive (see HELD_BEFORE_KEYS)
        if (this.held.length >= HELD_BEFORE_KEYS) this.o.onDropped?.(this.held.shift()!.topic, new MqsecError('QUEUE_FULL', 'message held before the group keys arrived was dropped'));
        this.held.push({ topic, payload: payload.slice() });
        return;
      }
      this.openGroupMessage(topic, payload);
    });
  }

  private openGroupMessage(topic: string, payload: Uint8Array): void {
    try {
      this.o.onMessage?.({ ...this.o.keyring.open(topic, payload), topic });
    } catch (e) {
      this.o.onDropped?.(topic, asMqsecError(e));
    }
  }

  /**
   * §14.4: asks for the next sequence range (a new GKREQ) on the current
   * connection; the answer is applied when it comes, sealing goes on from the
   * old range meanwhile.
   */
  async requestKeys(): Promise<void> {
    const link = this.link;
    if (!link) throw new MqsecError('NOT_CONNECTED', 'not connected');
    await link.publish(upTopic(this.o.id), this.o.keyring.request(), 0);
  }

  /** §14.4: sealed under the topic's group key, published as it is. */
  async publish(topic: string, plaintext: Uint8Array, qos: 0 | 1 = 1): Promise<void> {
    const link = this.link;
    if (!link || this.o.session.state !== 'ready') throw new MqsecError('NOT_CONNECTED', 'not connected');
    await link.publish(topic, this.o.keyring.seal(topic, plaintext), qos);
  }

  async subscribe(filter: string, qos: 0 | 1 = 1): Promise<unknown> {
    const link = this.link;
    if (!link) throw new MqsecError('NOT_CONNECTED', 'not connected');
    return link.subscribe(filter, qos);
  }

  /** The current connection, for a caller that must reach the raw client (tests of what the broker refuses). */
  get current(): StockLink | undefined {
    return this.link;
  }

  /** Ends the connection, and a connect() still under way (it rejects with CONNECTION_CLOSED). */
  async close(): Promise<void> {
    this.connects++;
    this.cancelWait();
    const link = this.link;
    this.link = undefined;
    this.closing = true;
    try {
      if (link) await link.close().catch(() => undefined);
      await this.serialise(() => this.o.session.onConnectionLost());
    } finally {
      this.closing = false;
    }
  }
}

function returnCodeOf(e: unknown): number | undefined {
  const rc = (e as { returnCode?: unknown } | undefined)?.returnCode;
  return typeof rc === 'number' ? rc : undefined;
}
