/*
 * GF(2^255 - 19) for mqsec-x25519.c in sixteen signed 64-bit limbs of 16 bits
 * each (value = sum limb[i] * 2^(16 i)), the representation TweetNaCl made
 * popular: simple enough to check by eye. It is the reference the faster
 * ten-limb field (mqsec-x25519-field10.h) is tested against; build with
 * -DMQSEC_X25519_FIELD=16 to select it. Reduction uses
 * 2^256 = 2 * 2^255 = 2 * 19 = 38 (mod p).
 *
 * Every product is 32 x 32 -> 64 bits, but there are 256 of them per
 * multiplication, each with a 64-bit accumulation: about 18 million
 * instructions per X25519 on RV32IMC (test/moddable/native-isa.test.ts),
 * which is why the device build uses the ten-limb field.
 */
#include <stdint.h>

static const mqsec_fe kA24 = { 0xdb41, 1 }; /* (486662 - 2) / 4 = 121665 = 0x1db41, RFC 7748 section 5 */

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

/*
 * Limbs stay within +-2^18 between operations, so each product is taken as
 * 32 x 32 -> 64 bits (one or two multiply instructions on the ESP32 cores
 * instead of a full 64-bit multiply routine). Column sums stay below 2^45.
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

/* a24 * a, a24 = 121665 (RFC 7748 section 5) */
static void fe_mul_a24(mqsec_fe o, const mqsec_fe a)
{
	fe_mul(o, kA24, a);
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
	fe_copy(t, a);
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
		fe_cswap(t, m, (uint32_t)(1 - borrow)); /* no borrow: t >= p, keep t - p */
	}
	for (i = 0; i < 16; i++) {
		out[2 * i] = (uint8_t)(t[i] & 0xff);
		out[2 * i + 1] = (uint8_t)((t[i] >> 8) & 0xff);
	}
	mqsec_wipe(t, sizeof(t));
	mqsec_wipe(m, sizeof(m));
}
