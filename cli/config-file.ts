/**
 * `--config FILE` for a command: a JSON object whose keys are the command's
 * long flags without the dashes (`"port": 1883`, `"node-id": "a"`,
 * `"allow-plain-accounts": true`). Generic over the command's own options, so
 * every flag the command takes has its key and a new flag gets one for free;
 * each value goes through the flag's own parser, so the file is checked
 * exactly like the command line. A flag given on the command line wins over
 * the file.
 *
 * Secrets do not belong in a file that is copied around, versioned and
 * printed: any string value may instead be a reference, `{"env": "NAME"}`
 * (the variable's value) or `{"file": "PATH"}` (the file's content without its
 * trailing newline; the file must not be readable by others), and a URL
 * holding a password inline (`postgres://user:secret@...`) is refused.
 *
 * Errors are one line naming the file and the key: an unknown key, a wrong
 * type, a missing variable or file, a bad value.
 */
import { readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import type { Command, Option } from 'commander';
import { CliError } from './command.js';

export interface ConfigFileOptions {
  /** Keys whose values are file or directory paths: relative ones are taken from the config file's directory. */
  paths?: string[];
  /**
   * Keys of flags that may be given several times (`--broker a --broker b`, a
   * parser that adds to the previous value): they take one value or a list.
   */
  repeatable?: string[];
  /** Where `{"env": ...}` references are read (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** A flag's key in the file: its long name without the leading dashes. */
function keyOf(o: Option): string | undefined {
  return o.long?.replace(/^--/, '');
}

/** True when a URL carries a password between `user:` and `@` (postgres://u:pw@h, redis://:pw@h). */
export function urlHasPassword(value: string): boolean {
  const m = /^[a-z][a-z0-9+.-]*:\/\/([^/@?#]*)@/i.exec(value);
  return !!m && m[1]!.includes(':') && m[1]!.slice(m[1]!.indexOf(':') + 1) !== '';
}

/** The string a value or reference stands for. */
function resolveString(file: string, key: string, v: unknown, baseDir: string, env: NodeJS.ProcessEnv): { value: string; inline: boolean } {
  if (typeof v === 'string') return { value: v, inline: true };
  if (typeof v === 'number' && Number.isFinite(v)) return { value: String(v), inline: true };
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const ref = v as Record<string, unknown>;
    const kinds = Object.keys(ref);
    if (kinds.length === 1 && kinds[0] === 'env' && typeof ref.env === 'string') {
      const value = env[ref.env];
      if (value === undefined || value === '') throw new CliError(`config ${file}: "${key}" names the environment variable ${ref.env}, which is not set`);
      return { value, inline: false };
    }
    if (kinds.length === 1 && kinds[0] === 'file' && typeof ref.file === 'string') {
      const path = isAbsolute(ref.file) ? ref.file : resolve(baseDir, ref.file);
      let mode: number;
      let text: string;
      try {
        mode = statSync(path).mode;
        text = readFileSync(path, 'utf8');
      } catch (e) {
        throw new CliError(`config ${file}: "${key}" names the file ${path}, which cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
      // a secret readable by every local user is no secret (as master.key, docs/operations.md)
      if (mode & 0o004) throw new CliError(`config ${file}: "${key}" names the file ${path}, which every user may read (chmod o-r it)`);
      return { value: text.replace(/\r?\n$/, ''), inline: false };
    }
  }
  throw new CliError(`config ${file}: "${key}" must be a string, a number, {"env": "NAME"} or {"file": "PATH"}`);
}

/** Reads and checks the file: a JSON object. */
function readConfig(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read config ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new CliError(`config ${file}: not valid JSON (${(e as Error).message})`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new CliError(`config ${file}: must be one JSON object of flag names and values`);
  return parsed as Record<string, unknown>;
}

/**
 * Applies the config file named by the command's `--config` option (if
 * given): every key sets its flag's value unless that flag was given on the
 * command line. Call from a `preAction` hook, before the action reads its
 * options.
 */
export function applyConfigFile(cmd: Command, opts: ConfigFileOptions = {}): void {
  const file = cmd.getOptionValue('config') as string | undefined;
  if (file === undefined) return;
  const config = readConfig(file);
  const baseDir = dirname(resolve(file));
  const env = opts.env ?? process.env;
  const byKey = new Map<string, Option>();
  for (const o of cmd.options) {
    const k = keyOf(o);
    if (k && k !== 'config' && k !== 'help') byKey.set(k, o);
  }
  for (const [key, raw] of Object.entries(config)) {
    const o = byKey.get(key);
    if (!o) {
      throw new CliError(`config ${file}: unknown key "${key}" (known: ${[...byKey.keys()].sort().join(', ')})`);
    }
    const attr = o.attributeName();
    const source = cmd.getOptionValueSource(attr);
    if (source === 'cli' || source === 'env') continue; // the command line wins
    let value: unknown;
    if (!o.required && !o.optional) {
      // a switch: true or false
      if (typeof raw !== 'boolean') throw new CliError(`config ${file}: "${key}" is a switch: true or false`);
      if (o.negate) value = !raw;
      else value = raw ? true : undefined;
    } else if (o.variadic) {
      if (!Array.isArray(raw)) throw new CliError(`config ${file}: "${key}" takes a list: [ ... ]`);
      value = raw.map((item) => convert(o, key, item));
    } else if (opts.repeatable?.includes(key) && Array.isArray(raw)) {
      // as the flag given once per item, in order: each goes through the parser with the value so far
      value = o.defaultValue;
      for (const item of raw) value = convert(o, key, item, value);
    } else {
      value = convert(o, key, raw);
    }
    cmd.setOptionValueWithSource(attr, value, 'config');
  }

  function convert(o: Option, key: string, item: unknown, previous: unknown = o.defaultValue): unknown {
    const { value, inline } = resolveString(file!, key, item, baseDir, env);
    if (inline && urlHasPassword(value)) {
      throw new CliError(`config ${file}: "${key}" holds a password inline; give the URL as {"env": "NAME"} or {"file": "PATH"}${/^postgres(ql)?:/i.test(value) ? ' (or leave the password out of the URL: PostgreSQL reads PGPASSWORD)' : ''}`);
    }
    // `-` (stdin, as `--password-file -`) is no path
    const v = opts.paths?.includes(key) && inline && value !== '' && value !== '-' && !isAbsolute(value) ? resolve(baseDir, value) : value;
    if (!o.parseArg) return v;
    try {
      return o.parseArg(v, previous as never);
    } catch (e) {
      throw new CliError(`config ${file}: "${key}": ${(e as Error).message}`);
    }
  }
}
