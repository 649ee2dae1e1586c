/*
 * Runs xs_mqsec_random_fill from mqsec-random.c with the stub XS API and
 * prints one JSON line of observations for test/moddable/native-rng.test.ts.
 */
#include <stdio.h>
#include <string.h>
#include "xsmc.h"

void xs_mqsec_random_fill(xsMachine *the);

static const char *call(xsMachine *the, void *data, xsUnsignedValue count, int argc)
{
	the->argc = argc;
	the->args[0].data = data;
	the->args[0].count = count;
	the->errorKind = NULL;
	if (setjmp(the->onError) == 0)
		xs_mqsec_random_fill(the);
	return the->errorKind ? the->errorKind : "ok";
}

int main(void)
{
	static xsMachine machine;
	xsMachine *the = &machine;
	uint8_t a[32] = {0}, b[32] = {0}, big[4099];
	int i, zerosA = 0, same = 1, histogram[256] = {0}, maxBucket = 0;

	const char *ra = call(the, a, sizeof(a), 1);
	const char *rb = call(the, b, sizeof(b), 1);
	for (i = 0; i < 32; i++) {
		zerosA += (0 == a[i]);
		same &= (a[i] == b[i]);
	}
	memset(big, 0, sizeof(big));
	const char *rbig = call(the, big, sizeof(big), 1);
	for (i = 0; i < (int)sizeof(big); i++)
		histogram[big[i]]++;
	for (i = 0; i < 256; i++)
		if (histogram[i] > maxBucket) maxBucket = histogram[i];
	const char *rempty = call(the, big, 0, 1);
	const char *rnoarg = call(the, NULL, 0, 0);
	const char *rnumber = call(the, NULL, 0, 1);
	printf("{\"a\":\"%s\",\"b\":\"%s\",\"zerosA\":%d,\"sameAB\":%d,\"big\":\"%s\",\"bigMaxBucket\":%d,\"empty\":\"%s\",\"noArg\":\"%s\",\"number\":\"%s\"}\n",
		ra, rb, zerosA, same, rbig, maxBucket, rempty, rnoarg, rnumber);
	return 0;
}
