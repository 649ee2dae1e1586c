/**
 * The `mqsec` command line. Each sub-command is its own module under
 * cli/commands/ and is registered from the one list below.
 */
import { Command, CommanderError } from 'commander';
import { CliError, type CliIo, type CommandModule } from './command.js';
import { brokerCommand } from './commands/broker.js';
import { deviceCommand } from './commands/device.js';
import { appCommand } from './commands/app.js';
import { pubCommand, subCommand } from './commands/sub-pub.js';
import { userCommand } from './commands/user.js';
import { roleCommand } from './commands/role.js';
import { aclCommand } from './commands/acl.js';
import { auditCommand } from './commands/audit.js';
import { simCommand } from './commands/sim.js';
import { demoCommand } from './commands/demo.js';
import { benchCommand } from './commands/bench.js';
import { deviceDesktopCommand } from './commands/device-desktop.js';
import { deviceCheckCommand } from './commands/device-check.js';
import { hilCommand } from './commands/hil.js';
import { keyserviceCommand } from './commands/keyservice.js';
import { statusCommand } from './commands/status.js';
import { groupCommand } from './commands/group.js';

/** Every sub-command, in help order. Add new command modules here. */
export const COMMANDS: CommandModule[] = [brokerCommand, deviceCommand, appCommand, subCommand, pubCommand, userCommand, roleCommand, aclCommand, auditCommand, simCommand, demoCommand, benchCommand, deviceDesktopCommand, deviceCheckCommand, hilCommand, keyserviceCommand, statusCommand, groupCommand];

export const processIo: CliIo = {
  out: (line) => process.stdout.write(line + '\n'),
  err: (line) => process.stderr.write(line + '\n'),
  readStdin: async () => {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  },
};

export function buildProgram(io: CliIo = processIo, modules: CommandModule[] = COMMANDS): Command {
  const program = new Command('mqsec')
    .description('mqsec: authenticated, encrypted MQTT for microcontrollers, with a security-enhanced broker')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) })
    .showHelpAfterError(false);
  for (const m of modules) m.register(program, io);
  // every sub-command inherits the exit override and output
  for (const c of program.commands) {
    c.exitOverride();
    for (const s of c.commands) s.exitOverride();
  }
  return program;
}

/**
 * Runs the CLI with `argv` as in process.argv (node, script, ...args).
 * Resolves with the exit code and also sets process.exitCode.
 */
export async function main(argv: string[], io: CliIo = processIo): Promise<number> {
  const program = buildProgram(io);
  let code = 0;
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      code = e.exitCode; // commander already printed its one-line message (or help: 0)
    } else if (e instanceof CliError) {
      io.err(`mqsec: ${e.message}`);
      code = e.exitCode;
    } else {
      io.err(`mqsec: ${e instanceof Error ? e.message : String(e)}`);
      code = 1;
    }
  }
  process.exitCode = code;
  return code;
}
