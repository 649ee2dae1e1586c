/*
 * X25519 (RFC 7748) in portable C for Moddable XS: the device's one
 * public-key operation, done natively because an interpreted BigInt ladder
 * costs an ESP32 hundreds of milliseconds per scalar multiplication.
 *
 *   import x25519 from "mqsec/x25519-native";
 *   x25519(out, scalar, u);    // three 32-byte buffers; out may alias an input
 *
 * Field elements are sixteen signed 64-bit limbs of 16 bits each
 * (value = sum limb[i] * 2^(16 i)), the representation TweetNaCl made
 * popular: simple enough to check by eye, with 32x32->64-bit products only,
 * which the ESP32's Xtensa and RISC-V cores compute in one or two instructions. Reduction uses
 * 2^256 = 2 * 2^255 = 2 * 19 = 38 (mod p).
 *
 * Constant time: no branch and no memory index depends on the scalar or on
 * field values; the ladder swaps with a mask (RFC 7748 section 5, cswap),
 * the final reduction subtracts p under a mask, and the exponent of the
 * inversion is the public p - 2. Secret intermediates are wiped on return.
 *
 * Checked by test/moddable/native-x25519.test.ts against RFC 7748 sections
 * 5.2 and 6.1 and against OpenSSL (node:crypto) on random and edge inputs.
 */
#include "xsmc.h"
#include "xsHost.h"
#include <stdint.h>

typedef int64_t mqsec_fe[16];

/* The carry below needs an arithmetic right shift of negative values (floor division). */
typedef char mqsec_x25519_needs_arithmetic_shift[((int64_t)-3 >> 1) == -2 ? 1 : -1];

static const mqsec_fe kA24 = { 0xdb41, 1 }; /* (486662 - 2) / 4 = 121665 = 0x1db41, RFC 7748 section 5 */

static void fe_set(mqsec_fe o, const mqsec_fe a)
{
	int i;
	for (i = 0; i < 16; i++) o[i] = a[i];
}

static void fe_set_small(mqsec_fe o, int64_t v)
{
	int i;
	o[0] = v;
	for (i = 1; i < 16; i++) o[i] = 0;
}

/* Moves everything above 16 bits of each limb into the next; the top limb's carry wraps as 38 times itself. */
static void fe_carry(mqsec_fe o)
{
	int i;
	for (i = 0; i < 16; i++) {
		int64_t c = o[i] >> 16;
		o[i] -= c * 65536;
		if (i < 15)
			o[i + 1] += c;
		else
			o[0] += 38 * c;
	}
}

static void fe_add(mqsec_fe o, const mqsec_fe a, const mqsec_fe b)
{
	int i;
	for (i = 0; i < 16; i++) o[i] = a[i] + b[i];
}

static void fe_sub(mqsec_fe o, const mqsec_fe a, const mqsec_fe b)
{
	int i;
	for (i = 0; i < 16; i++) o[i] = a[i] - b[i];
}

/*
 * Limbs stay within +-2^18 between operations, so each product is taken as
 * 32 x 32 -> 64 bits (one multiply instruction on the ESP32 cores instead of
 * a full 64-bit multiply routine). Column sums stay below 2^45.
 */
#define MUL32(x, y) ((int64_t)(int32_t)(x) * (int32_t)(y))

/* Folds columns 16..30 (weight 2^256 and up) into 0..14 with 2^256 = 38 (mod p), then carries. */
static void fe_reduce(mqsec_fe o, int64_t t[31])
{
	int i;
	for (i = 0; i < 15; i++) t[i] += 38 * t[i + 16];
	for (i = 0; i < 16; i++) o[i] = t[i];
	fe_carry(o);
	fe_carry(o);
}

static void fe_mul(mqsec_fe o, const mqsec_fe a, const mqsec_fe b)
{
	int64_t t[31];
	int i, j;
	for (i = 0; i < 31; i++) t[i] = 0;
	for (i = 0; i < 16; i++)
		for (j = 0; j < 16; j++)
			t[i + j] += MUL32(a[i], b[j]);
	fe_reduce(o, t);
}

/* Squaring: each cross product once, doubled (136 products instead of 256). */
static void fe_sq(mqsec_fe o, const mqsec_fe a)
{
	int64_t t[31];
	int i, j;
	for (i = 0; i < 31; i++) t[i] = 0;
	for (i = 0; i < 16; i++) {
		t[2 * i] += MUL32(a[i], a[i]);
		for (j = i + 1; j < 16; j++)
			t[i + j] += 2 * MUL32(a[i], a[j]);
	}
	fe_reduce(o, t);
}

/* Constant-time conditional swap: b is 0 or 1. */
static void fe_cswap(mqsec_fe p, mqsec_fe q, int64_t b)
{
	int64_t mask = -b;
	int i;
	for (i = 0; i < 16; i++) {
		int64_t t = mask & (p[i] ^ q[i]);
		p[i] ^= t;
		q[i] ^= t;
	}
}

/* 1/a = a^(p-2): p - 2 = 2^255 - 21 has every bit from 0 to 254 set except bits 2 and 4 (a public exponent). */
static void fe_invert(mqsec_fe o, const mqsec_fe a)
{
	mqsec_fe c;
	int bit;
	fe_set(c, a);
	for (bit = 253; bit >= 0; bit--) {
		fe_sq(c, c);
		if (bit != 2 && bit != 4)
			fe_mul(c, c, a);
	}
	fe_set(o, c);
}

/*
 * RFC 7748 section 5: "When receiving such an array, implementations of X25519
 * (but not X448) MUST mask the most significant bit in the final byte." Values
 * of p and above are accepted and reduce naturally in the arithmetic ("MUST
 * accept non-canonical values and process them as if they had been reduced").
 */
static void fe_unpack(mqsec_fe o, const uint8_t in[32])
{
	int i;
	for (i = 0; i < 16; i++) o[i] = (int64_t)in[2 * i] + ((int64_t)in[2 * i + 1] << 8);
	o[15] &= 0x7fff;
}

/* Canonical little-endian encoding: fully carried, then p subtracted (under a mask) up to twice. */
static void fe_pack(uint8_t out[32], const mqsec_fe a)
{
	mqsec_fe t, m;
	int i, pass;
	fe_set(t, a);
	fe_carry(t);
	fe_carry(t);
	fe_carry(t);
	for (pass = 0; pass < 2; pass++) {
		int64_t borrow;
		m[0] = t[0] - 0xffed;
		for (i = 1; i < 15; i++) {
			m[i] = t[i] - 0xffff - ((m[i - 1] >> 16) & 1);
			m[i - 1] &= 0xffff;
		}
		m[15] = t[15] - 0x7fff - ((m[14] >> 16) & 1);
		borrow = (m[15] >> 16) & 1;
		m[14] &= 0xffff;
		fe_cswap(t, m, 1 - borrow); /* no borrow: t >= p, keep t - p */
	}
	for (i = 0; i < 16; i++) {
		out[2 * i] = (uint8_t)(t[i] & 0xff);
		out[2 * i + 1] = (uint8_t)((t[i] >> 8) & 0xff);
	}
	c_memset(t, 0, sizeof(t));
	c_memset(m, 0, sizeof(m));
}

static void wipe(void *p, size_t n)
{
	volatile uint8_t *v = (volatile uint8_t *)p;
	while (n--) *v++ = 0;
}

/* RFC 7748 section 5: the Montgomery ladder, with decodeScalar25519's clamping. */
void mqsec_x25519(uint8_t out[32], const uint8_t scalar[32], const uint8_t u[32])
{
	uint8_t k[32];
	mqsec_fe x1, x2, z2, x3, z3, a, aa, b, bb, e, c, d, da, cb, t;
	int64_t swap = 0;
	int i, bit;

	for (i = 0; i < 32; i++) k[i] = scalar[i];
	/* "k_list[0] &= 248; k_list[31] &= 127; k_list[31] |= 64" */
	k[0] &= 248;
	k[31] &= 127;
	k[31] |= 64;

	fe_unpack(x1, u);
	fe_set_small(x2, 1);
	fe_set_small(z2, 0);
	fe_set(x3, x1);
	fe_set_small(z3, 1);

	for (bit = 254; bit >= 0; bit--) {
		int64_t kt = (k[bit >> 3] >> (bit & 7)) & 1;
		swap ^= kt;
		fe_cswap(x2, x3, swap);
		fe_cswap(z2, z3, swap);
		swap = kt;

		fe_add(a, x2, z2);   /* A = x_2 + z_2 */
		fe_sq(aa, a);        /* AA = A^2 */
		fe_sub(b, x2, z2);   /* B = x_2 - z_2 */
		fe_sq(bb, b);        /* BB = B^2 */
		fe_sub(e, aa, bb);   /* E = AA - BB */
		fe_add(c, x3, z3);   /* C = x_3 + z_3 */
		fe_sub(d, x3, z3);   /* D = x_3 - z_3 */
		fe_mul(da, d, a);    /* DA = D * A */
		fe_mul(cb, c, b);    /* CB = C * B */
		fe_add(t, da, cb);
		fe_sq(x3, t);        /* x_3 = (DA + CB)^2 */
		fe_sub(t, da, cb);
		fe_sq(t, t);
		fe_mul(z3, x1, t);   /* z_3 = x_1 * (DA - CB)^2 */
		fe_mul(x2, aa, bb);  /* x_2 = AA * BB */
		fe_mul(t, kA24, e);
		fe_add(t, aa, t);
		fe_mul(z2, e, t);    /* z_2 = E * (AA + a24 * E) */
	}
	fe_cswap(x2, x3, swap);
	fe_cswap(z2, z3, swap);

	fe_invert(t, z2);
	fe_mul(x2, x2, t);       /* x_2 * z_2^(p - 2) */
	fe_pack(out, x2);

	wipe(k, sizeof(k));
	wipe(x2, sizeof(x2));
	wipe(z2, sizeof(z2));
	wipe(x3, sizeof(x3));
	wipe(z3, sizeof(z3));
	wipe(a, sizeof(a));
	wipe(aa, sizeof(aa));
	wipe(b, sizeof(b));
	wipe(bb, sizeof(bb));
	wipe(e, sizeof(e));
	wipe(c, sizeof(c));
	wipe(d, sizeof(d));
	wipe(da, sizeof(da));
	wipe(cb, sizeof(cb));
	wipe(t, sizeof(t));
}

void xs_mqsec_x25519(xsMachine *the)
{
	void *out, *scalar, *u;
	xsUnsignedValue outLength, scalarLength, uLength;
	uint8_t k[32], point[32], result[32];

	if (xsmcArgc < 3)
		xsTypeError("x25519(out, scalar, u)");
	xsmcGetBufferWritable(xsArg(0), &out, &outLength);
	xsmcGetBufferReadable(xsArg(1), &scalar, &scalarLength);
	xsmcGetBufferReadable(xsArg(2), &u, &uLength);
	if ((32 != outLength) || (32 != scalarLength) || (32 != uLength))
		xsRangeError("x25519: buffers must be 32 bytes");
	/* copies: out may alias an input, and nothing here calls back into XS */
	c_memcpy(k, scalar, 32);
	c_memcpy(point, u, 32);
	mqsec_x25519(result, k, point);
	c_memcpy(out, result, 32);
	wipe(k, sizeof(k));
	wipe(result, sizeof(result));
}
