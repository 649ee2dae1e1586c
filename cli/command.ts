/**
 * What every `mqsec` sub-command module exports. cli/main.ts lists the
 * modules; each registers its own commander sub-command(s).
 */
import type { Command } from 'commander';

export interface CommandModule {
  /** Top-level command name (for the listing in cli/main.ts). */
  name: string;
  register(program: Command, io: CliIo): void;
}

/** Output streams and stdin, injectable so tests run commands in-process. */
export interface CliIo {
  out(line: string): void;
  err(line: string): void;
  readStdin(): Promise<string>;
}

/** An expected failure: printed as one line, exit code 1 (or `exitCode`). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export const DEFAULT_DATA_DIR = process.env.MQSEC_DATA ?? '.mqsec';

export function parsePort(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535) throw new CliError(`invalid port "${value}"`);
  return n;
}
