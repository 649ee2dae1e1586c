/*
 * Runs xs_mqsec_x25519 from mqsec-x25519.c with the stub XS API, for
 * test/moddable/native-x25519.test.ts.
 *   stdin lines "<scalar hex> <u hex>"  ->  stdout lines "<result hex>" (or "error <kind>")
 *   argument "iterate N"                ->  RFC 7748 section 5.2 iteration, result after N steps
 *   argument "errors"                   ->  one JSON line: how bad arguments are refused
 *   argument "bench N"                  ->  N scalar multiplications, prints microseconds per operation
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "xsmc.h"

void xs_mqsec_x25519(xsMachine *the);

static const char *call(xsMachine *the, uint8_t *out, int outLen, uint8_t *k, int kLen, uint8_t *u, int uLen, int argc)
{
	the->argc = argc;
	the->args[0].data = out;
	the->args[0].count = (xsUnsignedValue)outLen;
	the->args[1].data = k;
	the->args[1].count = (xsUnsignedValue)kLen;
	the->args[2].data = u;
	the->args[2].count = (xsUnsignedValue)uLen;
	the->errorKind = NULL;
	if (setjmp(the->onError) == 0)
		xs_mqsec_x25519(the);
	return the->errorKind ? the->errorKind : "ok";
}

static int unhex(const char *s, uint8_t out[32])
{
	int i;
	for (i = 0; i < 32; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
		out[i] = (uint8_t)v;
	}
	return 0;
}

static void puthex(const uint8_t b[32])
{
	int i;
	for (i = 0; i < 32; i++) printf("%02x", b[i]);
	printf("\n");
}

int main(int argc, char **argv)
{
	static xsMachine machine;
	xsMachine *the = &machine;
	uint8_t k[32], u[32], out[32];

	if (argc == 3 && strcmp(argv[1], "iterate") == 0) {
		long n = atol(argv[2]), i;
		memset(k, 0, 32);
		k[0] = 9;
		memcpy(u, k, 32);
		for (i = 0; i < n; i++) {
			call(the, out, 32, k, 32, u, 32, 3);
			memcpy(u, k, 32);
			memcpy(k, out, 32);
		}
		puthex(k);
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "errors") == 0) {
		uint8_t big[33] = {0};
		memset(k, 1, 32);
		memset(u, 9, 32);
		printf("{\"argc\":\"%s\",", call(the, out, 32, k, 32, u, 32, 2));
		printf("\"shortOut\":\"%s\",", call(the, out, 31, k, 32, u, 32, 3));
		printf("\"longScalar\":\"%s\",", call(the, out, 32, big, 33, u, 32, 3));
		printf("\"notBuffer\":\"%s\",", call(the, out, 32, k, 32, NULL, 0, 3));
		/* out aliasing the u-coordinate: the result must equal the unaliased one */
		uint8_t expect[32], alias[32];
		call(the, expect, 32, k, 32, u, 32, 3);
		memcpy(alias, u, 32);
		call(the, alias, 32, k, 32, alias, 32, 3);
		printf("\"aliasOk\":%d}\n", memcmp(expect, alias, 32) == 0);
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "bench") == 0) {
		long n = atol(argv[2]), i;
		struct timespec t0, t1;
		memset(k, 7, 32);
		memset(u, 0, 32);
		u[0] = 9;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (i = 0; i < n; i++) {
			call(the, out, 32, k, 32, u, 32, 3);
			k[i & 31] ^= out[0];
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		printf("%.1f\n", ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3) / (double)n);
		return 0;
	}
	char line[256];
	while (fgets(line, sizeof(line), stdin)) {
		if (strlen(line) < 129 || unhex(line, k) || unhex(line + 65, u)) {
			printf("error input\n");
			continue;
		}
		const char *r = call(the, out, 32, k, 32, u, 32, 3);
		if (strcmp(r, "ok") == 0) puthex(out);
		else printf("error %s\n", r);
	}
	return 0;
}
