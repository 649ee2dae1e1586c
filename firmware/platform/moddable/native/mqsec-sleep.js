/*
 * Binding of the ESP32 deep-sleep functions (mqsec-sleep.c), typed for
 * TypeScript by ../moddable-modules.d.ts. Only built for esp32 targets.
 */
export function deepSleep(milliseconds) @ "xs_mqsec_deep_sleep";
export function wakeCause() @ "xs_mqsec_wake_cause";
