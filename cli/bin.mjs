#!/usr/bin/env node
// Launcher for the `mqsec` command: registers the TypeScript loader (tsx) so
// the CLI, broker and host simulator run straight from their .ts sources.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('./main.ts');
await main(process.argv);
