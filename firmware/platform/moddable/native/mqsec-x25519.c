/*
 * X25519 (RFC 7748) in portable C for Moddable XS: the device's one
 * public-key operation, done natively because an interpreted BigInt ladder
 * costs an ESP32 hundreds of milliseconds per scalar multiplication.
 *
 *   import x25519 from "mqsec/x25519-native";
 *   x25519(out, scalar, u);    // three 32-byte buffers; out may alias an input
 *
 * This file is the Montgomery ladder, the inversion and the XS glue; the
 * field arithmetic mod p = 2^255 - 19 comes from one of two headers:
 *   MQSEC_X25519_FIELD 10 (default): ten limbs of 25.5 bits, ref10/donna
 *     style, mqsec-x25519-field10.h, about 2 million instructions per
 *     X25519 on RV32IMC;
 *   MQSEC_X25519_FIELD 16: sixteen 16-bit limbs (TweetNaCl style),
 *     mqsec-x25519-field16.h, the simple reference, about 18 million.
 * Both run the same tests (test/moddable/native-x25519.test.ts on the host,
 * with and without sanitizers; test/moddable/native-isa.test.ts on RV32IMC
 * and Xtensa under QEMU).
 *
 * Constant time: no branch and no memory index depends on the scalar or on
 * field values; the ladder swaps with a mask (RFC 7748 section 5, cswap),
 * the final reduction subtracts p under a mask, and the exponent of the
 * inversion is the public p - 2. Secret intermediates are wiped on return.
 */
#include "xsmc.h"
#include "xsHost.h"
#include <stddef.h>
#include <stdint.h>

static void mqsec_wipe(void *p, size_t n)
{
	volatile uint8_t *v = (volatile uint8_t *)p;
	while (n--) *v++ = 0;
}

#ifndef MQSEC_X25519_FIELD
	#define MQSEC_X25519_FIELD 10
#endif
#if MQSEC_X25519_FIELD == 10
	typedef int32_t mqsec_limb;
	#define MQSEC_FE_LIMBS 10
#elif MQSEC_X25519_FIELD == 16
	typedef int64_t mqsec_limb;
	#define MQSEC_FE_LIMBS 16
#else
	#error "MQSEC_X25519_FIELD must be 10 or 16"
#endif

/* Carries in both fields need an arithmetic right shift of negative values (floor division). */
typedef char mqsec_x25519_needs_arithmetic_shift[((int64_t)-3 >> 1) == -2 ? 1 : -1];

/* A field element mod 2^255 - 19: signed limbs, not necessarily reduced. */
typedef mqsec_limb mqsec_fe[MQSEC_FE_LIMBS];

static void fe_copy(mqsec_fe o, const mqsec_fe a)
{
	int i;
	for (i = 0; i < MQSEC_FE_LIMBS; i++) o[i] = a[i];
}

static void fe_set_small(mqsec_fe o, int32_t v)
{
	int i;
	o[0] = v;
	for (i = 1; i < MQSEC_FE_LIMBS; i++) o[i] = 0;
}

/* Sums and differences are not carried: the field's bounds allow one before each product. */
static void fe_add(mqsec_fe o, const mqsec_fe a, const mqsec_fe b)
{
	int i;
	for (i = 0; i < MQSEC_FE_LIMBS; i++) o[i] = a[i] + b[i];
}

static void fe_sub(mqsec_fe o, const mqsec_fe a, const mqsec_fe b)
{
	int i;
	for (i = 0; i < MQSEC_FE_LIMBS; i++) o[i] = a[i] - b[i];
}

/* Constant-time conditional swap (RFC 7748 section 5, cswap): b is 0 or 1, turned into an all-zero or all-one mask. */
static void fe_cswap(mqsec_fe p, mqsec_fe q, uint32_t b)
{
	mqsec_limb mask = -(mqsec_limb)b;
	int i;
	for (i = 0; i < MQSEC_FE_LIMBS; i++) {
		mqsec_limb t = mask & (p[i] ^ q[i]);
		p[i] ^= t;
		q[i] ^= t;
	}
}

/* Multiplication, squaring, a24 * x, decoding and canonical encoding: the radix-specific part. */
#if MQSEC_X25519_FIELD == 10
	#include "mqsec-x25519-field10.h"
#else
	#include "mqsec-x25519-field16.h"
#endif

static void fe_sq_times(mqsec_fe o, const mqsec_fe a, int n)
{
	fe_sq(o, a);
	while (--n > 0) fe_sq(o, o);
}

/*
 * 1/z = z^(p - 2), p - 2 = 2^255 - 21, by the addition chain of ref10's
 * fe_invert (254 squarings, 11 multiplications); the exponent is public.
 */
static void fe_invert(mqsec_fe o, const mqsec_fe z)
{
	mqsec_fe z2, z9, z11, z_5_0, z_10_0, z_20_0, z_50_0, z_100_0, t;
	fe_sq(z2, z);                 /* 2 */
	fe_sq_times(t, z2, 2);        /* 8 */
	fe_mul(z9, t, z);             /* 9 */
	fe_mul(z11, z9, z2);          /* 11 */
	fe_sq(t, z11);                /* 22 */
	fe_mul(z_5_0, t, z9);         /* 2^5 - 1 */
	fe_sq_times(t, z_5_0, 5);
	fe_mul(z_10_0, t, z_5_0);     /* 2^10 - 1 */
	fe_sq_times(t, z_10_0, 10);
	fe_mul(z_20_0, t, z_10_0);    /* 2^20 - 1 */
	fe_sq_times(t, z_20_0, 20);
	fe_mul(t, t, z_20_0);         /* 2^40 - 1 */
	fe_sq_times(t, t, 10);
	fe_mul(z_50_0, t, z_10_0);    /* 2^50 - 1 */
	fe_sq_times(t, z_50_0, 50);
	fe_mul(z_100_0, t, z_50_0);   /* 2^100 - 1 */
	fe_sq_times(t, z_100_0, 100);
	fe_mul(t, t, z_100_0);        /* 2^200 - 1 */
	fe_sq_times(t, t, 50);
	fe_mul(t, t, z_50_0);         /* 2^250 - 1 */
	fe_sq_times(t, t, 5);         /* 2^255 - 2^5 */
	fe_mul(o, t, z11);            /* 2^255 - 21 */
	mqsec_wipe(z2, sizeof(z2));
	mqsec_wipe(z9, sizeof(z9));
	mqsec_wipe(z11, sizeof(z11));
	mqsec_wipe(z_5_0, sizeof(z_5_0));
	mqsec_wipe(z_10_0, sizeof(z_10_0));
	mqsec_wipe(z_20_0, sizeof(z_20_0));
	mqsec_wipe(z_50_0, sizeof(z_50_0));
	mqsec_wipe(z_100_0, sizeof(z_100_0));
	mqsec_wipe(t, sizeof(t));
}

/* RFC 7748 section 5: the Montgomery ladder, with decodeScalar25519's clamping. */
void mqsec_x25519(uint8_t out[32], const uint8_t scalar[32], const uint8_t u[32])
{
	uint8_t k[32];
	mqsec_fe x1, x2, z2, x3, z3, a, aa, b, bb, e, c, d, da, cb, t;
	uint32_t swap = 0;
	int i, bit;

	for (i = 0; i < 32; i++) k[i] = scalar[i];
	/* "k_list[0] &= 248; k_list[31] &= 127; k_list[31] |= 64" */
	k[0] &= 248;
	k[31] &= 127;
	k[31] |= 64;

	fe_unpack(x1, u);
	fe_set_small(x2, 1);
	fe_set_small(z2, 0);
	fe_copy(x3, x1);
	fe_set_small(z3, 1);

	for (bit = 254; bit >= 0; bit--) {
		uint32_t kt = (uint32_t)(k[bit >> 3] >> (bit & 7)) & 1;
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
		fe_mul_a24(t, e);
		fe_add(t, aa, t);    /* AA + a24 * E */
		fe_mul(z2, e, t);    /* z_2 = E * (AA + a24 * E) */
	}
	fe_cswap(x2, x3, swap);
	fe_cswap(z2, z3, swap);

	fe_invert(t, z2);
	fe_mul(x2, x2, t);       /* x_2 * z_2^(p - 2) */
	fe_pack(out, x2);

	mqsec_wipe(k, sizeof(k));
	mqsec_wipe(x2, sizeof(x2));
	mqsec_wipe(z2, sizeof(z2));
	mqsec_wipe(x3, sizeof(x3));
	mqsec_wipe(z3, sizeof(z3));
	mqsec_wipe(a, sizeof(a));
	mqsec_wipe(aa, sizeof(aa));
	mqsec_wipe(b, sizeof(b));
	mqsec_wipe(bb, sizeof(bb));
	mqsec_wipe(e, sizeof(e));
	mqsec_wipe(c, sizeof(c));
	mqsec_wipe(d, sizeof(d));
	mqsec_wipe(da, sizeof(da));
	mqsec_wipe(cb, sizeof(cb));
	mqsec_wipe(t, sizeof(t));
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
	mqsec_wipe(k, sizeof(k));
	mqsec_wipe(result, sizeof(result));
}
