/*
 * RV32 port of x25519-probe.c: picolibc's semihosting stdout (QEMU
 * -semihosting-config) and the instret CSR, which QEMU counts exactly under
 * -icount (RISC-V Unprivileged ISA, "Zicntr": rdinstret).
 */
#include <stdio.h>
#include "port.h"

void port_write(const char *s, size_t n)
{
	fwrite(s, 1, n, stdout);
}

uint32_t port_counter(void)
{
	uint32_t v;
	__asm__ volatile("rdinstret %0" : "=r"(v));
	return v;
}

void port_report_extra(const uint8_t k[32], const uint8_t u[32])
{
	(void)k;
	(void)u;
}
