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

/**
 * commander argument parser for a count, a port or a time in ms: a whole
 * number (decimal digits only: no "2.5", "1e3", "0x10" or "") in [min, max].
 */
export function wholeNumber(flag: string, min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || n < min || n > max) throw new CliError(`${flag} must be a whole number from ${min} to ${max}, got "${value}"`);
    return n;
  };
}

/** commander argument parser for a rate, a probability or a time in s: a finite decimal number in [min, max]. */
export function decimalNumber(flag: string, min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new CliError(`${flag} must be a number from ${min} to ${max}, got "${value}"`);
    return n;
  };
}
