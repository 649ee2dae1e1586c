/*
 * Binding of the native CSPRNG (mqsec-random.c). XS host-function syntax
 * (`@ "name"`), so this file is plain JavaScript compiled by xsc, typed for
 * TypeScript by ../types/mqsec-modules.d.ts.
 */
export default function fillRandom(buffer) @ "xs_mqsec_random_fill";
