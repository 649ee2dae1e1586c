/** Small loopback helpers shared by the benchmark modules. */
import net from 'node:net';

/** A currently free TCP port on 127.0.0.1 (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on the port; rejects after `timeoutMs`. */
export async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const dirsToRemove = new Set<string>();
let dirHookInstalled = false;

/**
 * Removes a temporary directory now (the returned function) or, if the
 * process ends first (error, Ctrl-C), on exit: throw-away keys and registries
 * never outlive the run.
 */
export function removeOnExit(dir: string, rm: (dir: string) => void): () => void {
  dirsToRemove.add(dir);
  if (!dirHookInstalled) {
    dirHookInstalled = true;
    process.once('exit', () => {
      for (const d of dirsToRemove) {
        try {
          rm(d);
        } catch {
          // best effort on the way out
        }
      }
    });
  }
  return () => {
    dirsToRemove.delete(dir);
    rm(dir);
  };
}
