/*
 * Binding of the native X25519 (mqsec-x25519.c). XS host-function syntax
 * (`@ "name"`), so this file is plain JavaScript compiled by xsc, typed for
 * TypeScript by ../types/mqsec-modules.d.ts.
 */
export default function x25519(out, scalar, u) @ "xs_mqsec_x25519";
