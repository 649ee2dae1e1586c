/*
 * GF(2^255 - 19) for mqsec-x25519.c in ten signed 32-bit limbs of 25.5 bits
 * (limb i has weight 2^ceil(25.5 i): 26 bits at even i, 25 at odd i), the
 * representation of the ref10 and curve25519-donna family (D. J. Bernstein
 * et al., SUPERCOP crypto_scalarmult/curve25519/ref10). A multiplication is
 * 100 products of 32 x 32 -> 64 bits (55 for a square): RV32IMC's mul + mulh,
 * the ESP32's mull + mulsh. Selected by default (MQSEC_X25519_FIELD 10);
 * the sixteen-limb field (mqsec-x25519-field16.h) is its tested reference.
 *
 * The limb type and count, copy, add, subtract and the masked swap are in
 * mqsec-x25519.c; this file has what depends on the radix.
 *
 * Bounds (as in ref10): every input of fe_mul/fe_sq is a carried value or the
 * sum or difference of two, so |limb| <= 1.1 * 2^26 at even and 1.1 * 2^25 at
 * odd positions. Then 19 * g (even limb) and 38 * f (odd limb) stay below
 * 2^31, every product below 2^59 and every column sum below 2^63; a carried
 * result has |limb| <= 1.01 * 2^25 (even) and 1.01 * 2^24 (odd).
 */
#include <stdint.h>

/* The products below are written as loops over limb indices; fully unrolled, every condition on an index disappears. */
#if defined(__clang__)
	#define MQSEC_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
	#define MQSEC_UNROLL _Pragma("GCC unroll 10")
#else
	#define MQSEC_UNROLL
#endif

#define LIMB_BITS(i) (((i) & 1) ? 25 : 26)
#define LIMB_LOW_BIT(i) ((51 * (i) + 1) / 2) /* ceil(25.5 i) */

/*
 * Rounded carry out of limb i into limb i + 1 (limb 9 into limb 0 as 19 times
 * itself: 2^255 = 19 mod p). A macro, so that i, the shift and the wrap are
 * constants in the code (no 64-bit shift routine, no index arithmetic).
 */
#define FE_CARRY(t, i) \
	do { \
		int64_t c_ = ((t)[i] + ((int64_t)1 << (LIMB_BITS(i) - 1))) >> LIMB_BITS(i); \
		(t)[i] -= c_ * ((int64_t)1 << LIMB_BITS(i)); \
		if ((i) < 9) \
			(t)[((i) + 1) % 10] += c_; \
		else \
			(t)[0] += 19 * c_; \
	} while (0)

/* ref10's carry order: two interleaved chains keep every limb below 2^63 on the way; the result is carried. */
static void fe_carry_wide(mqsec_fe o, int64_t t[10])
{
	int i;
	FE_CARRY(t, 0);
	FE_CARRY(t, 4);
	FE_CARRY(t, 1);
	FE_CARRY(t, 5);
	FE_CARRY(t, 2);
	FE_CARRY(t, 6);
	FE_CARRY(t, 3);
	FE_CARRY(t, 7);
	FE_CARRY(t, 4);
	FE_CARRY(t, 8);
	FE_CARRY(t, 9);
	FE_CARRY(t, 0);
	for (i = 0; i < 10; i++) o[i] = (int32_t)t[i];
}

/*
 * Column k of f * g: f_i g_j with i + j = k, and 19 f_i g_j with i + j = k + 10
 * (2^255 = 19). Two odd limbs' weights add up to one bit more than the
 * column's (25.5 (i + j) rounds up twice), hence 2 f_i for odd i and j.
 */
static void fe_mul(mqsec_fe o, const mqsec_fe f, const mqsec_fe g)
{
	int32_t f2[10], g19[10];
	int64_t t[10];
	int i, k;
	for (i = 0; i < 10; i++) {
		f2[i] = 2 * f[i];
		g19[i] = 19 * g[i];
	}
	MQSEC_UNROLL
	for (k = 0; k < 10; k++) {
		int64_t column = 0;
		MQSEC_UNROLL
		for (i = 0; i < 10; i++) {
			int j = (k + 10 - i) % 10;
			int32_t a = (i & j & 1) ? f2[i] : f[i];
			int32_t b = (i > k) ? g19[j] : g[j];
			column += (int64_t)a * b;
		}
		t[k] = column;
	}
	fe_carry_wide(o, t);
}

/* As fe_mul with g = f, each cross product once and doubled: 55 products. */
static void fe_sq(mqsec_fe o, const mqsec_fe f)
{
	int32_t f2[10], f19[10], f38[10];
	int64_t t[10];
	int i, k;
	for (i = 0; i < 10; i++) {
		f2[i] = 2 * f[i];
		f19[i] = 19 * f[i];
		f38[i] = (i & 1) ? 38 * f[i] : 0; /* used for odd limbs only: 38 times a 26-bit limb would not fit */
	}
	MQSEC_UNROLL
	for (k = 0; k < 10; k++) {
		int64_t column = 0;
		MQSEC_UNROLL
		for (i = 0; i < 10; i++) {
			int j = (k + 10 - i) % 10;
			int32_t a, b;
			if (i > j)
				continue; /* counted twice by (j, i) */
			a = (i != j) ? f2[i] : f[i];
			if (i > k)
				b = (i & j & 1) ? f38[j] : f19[j];
			else
				b = (i & j & 1) ? f2[j] : f[j];
			column += (int64_t)a * b;
		}
		t[k] = column;
	}
	fe_carry_wide(o, t);
}

/* a24 * f, a24 = 121665 (RFC 7748 section 5) */
static void fe_mul_a24(mqsec_fe o, const mqsec_fe f)
{
	int64_t t[10];
	int i;
	for (i = 0; i < 10; i++) t[i] = (int64_t)f[i] * 121665;
	fe_carry_wide(o, t);
}

static uint32_t load32_le(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/*
 * Limb i is bits ceil(25.5 i) .. ceil(25.5 (i + 1)) - 1 of the input; bit 255
 * is in no limb: RFC 7748 section 5, implementations of X25519 "MUST mask the
 * most significant bit in the final byte". Values of p and above reduce in the
 * arithmetic ("MUST accept non-canonical values"). Each limb's bits lie within
 * the four bytes from its first one (bit offset + width <= 32).
 */
static void fe_unpack(mqsec_fe o, const uint8_t in[32])
{
	int i;
	for (i = 0; i < 10; i++) {
		int low = LIMB_LOW_BIT(i);
		o[i] = (int32_t)((load32_le(in + low / 8) >> (low % 8)) & ((1u << LIMB_BITS(i)) - 1));
	}
}

/*
 * Canonical little-endian encoding (ref10 fe_tobytes): q = floor(h / p), which
 * is 0 or 1 for a carried h, comes from a carry chain over h + 19; then
 * h - q p = h + 19 q - q 2^255 is carried exactly (floor, not rounded) and
 * the carry out of bit 255 dropped. No branch on the value.
 */
static void fe_pack(uint8_t out[32], const mqsec_fe h)
{
	int32_t t[10];
	int32_t q;
	int i;
	fe_copy(t, h);
	q = (19 * t[9] + ((int32_t)1 << 24)) >> 25;
	for (i = 0; i < 10; i++) q = (t[i] + q) >> LIMB_BITS(i);
	t[0] += 19 * q;
	for (i = 0; i < 10; i++) {
		int32_t c = t[i] >> LIMB_BITS(i);
		t[i] -= c * ((int32_t)1 << LIMB_BITS(i));
		if (i < 9)
			t[i + 1] += c; /* the carry out of limb 9 is q 2^255 */
	}
	for (i = 0; i < 32; i++) out[i] = 0;
	for (i = 0; i < 10; i++) {
		int low = LIMB_LOW_BIT(i);
		uint32_t v = (uint32_t)t[i] << (low % 8);
		out[low / 8] |= (uint8_t)v;
		out[low / 8 + 1] |= (uint8_t)(v >> 8);
		out[low / 8 + 2] |= (uint8_t)(v >> 16);
		out[low / 8 + 3] |= (uint8_t)(v >> 24);
	}
	mqsec_wipe(t, sizeof(t));
}
