/**
 * A small Dockerfile reader for the deployment tests (no Docker engine on
 * the test machines): instructions with their arguments, line continuations
 * joined, comments dropped, stages split at FROM. JSON-form arguments
 * (`["a", "b"]`) are parsed as JSON, shell form is kept as one string.
 */
export interface Instruction {
  keyword: string;
  /** Raw argument text after the keyword. */
  args: string;
  /** JSON form parsed, else undefined. */
  json?: string[];
  line: number;
}

export const DOCKERFILE_KEYWORDS = new Set([
  'FROM', 'RUN', 'CMD', 'LABEL', 'MAINTAINER', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT',
  'VOLUME', 'USER', 'WORKDIR', 'ARG', 'ONBUILD', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL',
]);

export function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split('\n');
  let buf = '';
  let start = 0;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i];
    const trimmed = raw.trim();
    if (buf === '' && (trimmed === '' || trimmed.startsWith('#'))) continue;
    if (buf !== '' && trimmed.startsWith('#')) continue; // comment inside a continued instruction
    if (buf === '') start = i + 1;
    if (trimmed.endsWith('\\')) {
      buf += trimmed.slice(0, -1) + ' ';
      continue;
    }
    buf += trimmed;
    const m = /^(\S+)\s*(.*)$/s.exec(buf)!;
    const keyword = m[1].toUpperCase();
    if (!DOCKERFILE_KEYWORDS.has(keyword)) throw new Error(`line ${start}: unknown instruction ${m[1]}`);
    const args = m[2].trim();
    let json: string[] | undefined;
    if (args.startsWith('[')) {
      const parsed = JSON.parse(args) as unknown;
      if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) throw new Error(`line ${start}: JSON form must be an array of strings`);
      json = parsed;
    }
    out.push({ keyword, args, json, line: start });
    buf = '';
  }
  if (buf !== '') throw new Error('Dockerfile ends inside a continued line');
  return out;
}

/** The instructions of each build stage (a stage starts at FROM). */
export function stages(instructions: Instruction[]): Instruction[][] {
  const out: Instruction[][] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') out.push([]);
    if (out.length === 0) {
      if (ins.keyword !== 'ARG') throw new Error(`line ${ins.line}: ${ins.keyword} before the first FROM`);
      continue;
    }
    out[out.length - 1].push(ins);
  }
  return out;
}

/** HEALTHCHECK's own options and its command: `--interval=30s ... CMD [...]`. */
export function healthcheckCommand(ins: Instruction): { options: Record<string, string>; command: string[] } {
  const m = /^((?:--\S+=\S+\s+)*)CMD\s+(.*)$/s.exec(ins.args);
  if (!m) throw new Error(`line ${ins.line}: HEALTHCHECK without CMD`);
  const options: Record<string, string> = {};
  for (const o of m[1].trim().split(/\s+/).filter(Boolean)) {
    const [k, v] = o.slice(2).split('=');
    options[k] = v;
  }
  const rest = m[2].trim();
  return { options, command: rest.startsWith('[') ? (JSON.parse(rest) as string[]) : ['/bin/sh', '-c', rest] };
}
