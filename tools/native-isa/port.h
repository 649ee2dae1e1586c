/* What x25519-probe.c needs from the bare-metal platform (port-riscv.c, port-xtensa.c). */
#ifndef MQSEC_PROBE_PORT_H
#define MQSEC_PROBE_PORT_H
#include <stddef.h>
#include <stdint.h>
void port_write(const char *s, size_t n);
/* A counter that advances in proportion to retired instructions (calibrated by the probe). */
uint32_t port_counter(void);
/* Port-specific facts printed after the instruction counts (may print nothing). */
void port_report_extra(const uint8_t k[32], const uint8_t u[32]);
#endif
