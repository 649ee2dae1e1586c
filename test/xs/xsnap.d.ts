// @agoric/xsnap ships JavaScript with JSDoc only; the harness uses this much of it.
declare module '@agoric/xsnap' {
  export interface XsnapWorker {
    isReady(): Promise<void>;
    evaluate(code: string): Promise<unknown>;
    issueCommand(message: Uint8Array): Promise<{ reply: Uint8Array }>;
    close(): Promise<void>;
    terminate(): Promise<void>;
  }
  export function xsnap(options: Record<string, unknown>): Promise<XsnapWorker>;
}
