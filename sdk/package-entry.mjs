// What `import ... from 'mqsec'` loads. The package ships TypeScript (like the
// `mqsec` command, cli/bin.mjs); tsx's scoped loader (tsImport) compiles the
// SDK's sources for this import only, leaving the importing program's own
// module loading alone. Types: types/sdk/index.d.ts, generated at pack time.
import { tsImport } from 'tsx/esm/api';

const sdk = await tsImport('./index.ts', import.meta.url);

export const { connectApp, MqsecApp, readAppConfig, MqsecError, isMqsecError, MemoryStorage, FileStorage } = sdk;
