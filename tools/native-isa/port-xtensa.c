/*
 * Xtensa (lx106 core) port of x25519-probe.c, for QEMU's "sim" machine with
 * -semihosting: output and exit through the simulator call (SIMCALL, a2 =
 * call number as in QEMU target/xtensa/xtensa-semi.c: 1 exit, 4 write), and
 * the CCOUNT cycle register, which QEMU advances from the virtual clock: under
 * -icount it is proportional to executed instructions (the probe calibrates
 * it on 1000 nops).
 *
 * The lx106 has a 32-bit multiplier for the low half only (MUL32, no
 * MUL32_HIGH), so GCC calls __muldi3 for every 32 x 32 -> 64-bit product; the
 * Debian toolchain's libgcc lacks that routine, so it is here, built from
 * 16-bit partial products like libgcc's Xtensa assembly. The ESP32's LX6 has
 * MUL32_HIGH and does the same product in two instructions (mull, mulsh): the
 * probe reports the number of calls and their cost so the host can estimate
 * the ESP32's count (tools/native-isa.ts).
 */
#include <stdint.h>
#include "port.h"

static long simcall(long number, long a, long b, long c)
{
	register long a2 __asm__("a2") = number;
	register long a3 __asm__("a3") = a;
	register long a4 __asm__("a4") = b;
	register long a5 __asm__("a5") = c;
	__asm__ volatile("simcall" : "+r"(a2), "+r"(a3) : "r"(a4), "r"(a5) : "memory");
	return a2;
}

void port_write(const char *s, size_t n)
{
	simcall(4, 1, (long)s, (long)n);
}

void port_exit(int code);
void port_exit(int code)
{
	simcall(1, code, 0, 0);
	for (;;) {
	}
}

uint32_t port_counter(void)
{
	uint32_t v;
	__asm__ volatile("rsr.ccount %0" : "=r"(v));
	return v;
}

#ifdef PROBE_COUNT_CALLS
static volatile uint32_t muldi3_calls;
#endif

/* High 32 bits of a 32 x 32-bit product from four 16 x 16 products (no carries lost). */
static uint32_t mul_high_u32(uint32_t a, uint32_t b)
{
	uint32_t a0 = a & 0xffff, a1 = a >> 16, b0 = b & 0xffff, b1 = b >> 16;
	uint32_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
	uint32_t middle = (p00 >> 16) + (p01 & 0xffff) + (p10 & 0xffff);
	return p11 + (p01 >> 16) + (p10 >> 16) + (middle >> 16);
}

/* libgcc's 64 x 64 -> 64-bit multiplication (the low 64 bits are the same signed or unsigned). */
long long __muldi3(long long a, long long b);
long long __muldi3(long long a, long long b)
{
	uint64_t ua = (uint64_t)a, ub = (uint64_t)b;
	uint32_t al = (uint32_t)ua, ah = (uint32_t)(ua >> 32), bl = (uint32_t)ub, bh = (uint32_t)(ub >> 32);
	uint32_t high = mul_high_u32(al, bl) + al * bh + ah * bl;
#ifdef PROBE_COUNT_CALLS
	muldi3_calls++;
#endif
	return (long long)(((uint64_t)high << 32) | (uint32_t)(al * bl));
}

static void put_line(const char *label, uint32_t v)
{
	static const char digits[] = "0123456789abcdef";
	char hex[9];
	int i, n = 0;
	for (i = 0; i < 8; i++) hex[i] = digits[(v >> (28 - 4 * i)) & 15];
	hex[8] = '\n';
	while (label[n]) n++;
	port_write(label, (size_t)n);
	port_write(hex, 9);
}

void mqsec_x25519(uint8_t out[32], const uint8_t scalar[32], const uint8_t u[32]);

volatile int64_t product_sink;

/*
 * muldi3-loop: counter units for 1000 products through __muldi3 (operands and
 * result in memory), copy-loop: the same loop with a copy instead of the
 * product; the difference is what one call costs. muldi3-calls: calls per
 * X25519 (only in the PROBE_COUNT_CALLS build, where the count itself costs).
 */
void port_report_extra(const uint8_t k[32], const uint8_t u[32])
{
	static volatile int64_t x = 0x123456789abcdefLL, y = -0x76543210fedcbaLL;
	volatile int64_t *sink = &product_sink;
	uint32_t before;
	int i;
	before = port_counter();
	for (i = 0; i < 1000; i++) *sink = x * y;
	put_line("muldi3-loop ", port_counter() - before);
	before = port_counter();
	for (i = 0; i < 1000; i++) {
		int64_t xv = x, yv = y;
		*sink = xv;
		(void)yv;
	}
	put_line("copy-loop ", port_counter() - before);
#ifdef PROBE_COUNT_CALLS
	{
		uint8_t out[32];
		muldi3_calls = 0;
		mqsec_x25519(out, k, u);
		put_line("muldi3-calls ", muldi3_calls);
	}
#else
	(void)k;
	(void)u;
#endif
}
