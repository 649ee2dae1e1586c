/*
 * mqsec native randomness for Moddable XS: fills a caller-supplied buffer
 * (ArrayBuffer, Uint8Array or DataView) from the platform's CSPRNG.
 *
 *   import fillRandom from "mqsec/random-native";
 *   fillRandom(new Uint8Array(32));
 *
 * ESP32 family: esp_fill_random() (ESP-IDF esp_random.h). It draws on the
 * hardware RNG, which is a true random source only while the RF subsystem
 * (Wi-Fi or Bluetooth) is enabled or the bootloader entropy source is on
 * (ESP-IDF "Random Number Generation"); mqsec only asks for key material
 * after Wi-Fi is up, so that holds.
 *
 * Desktop fallback (Moddable `lin` simulator build): getrandom(2) from the
 * kernel CSPRNG, looping over partial reads and EINTR. macOS: arc4random_buf.
 * Any other platform fails the build: there is deliberately no weak fallback
 * such as rand().
 *
 * Errors: a non-buffer argument is a TypeError; a failing getrandom is an
 * Error. The JS side never receives unfilled bytes.
 */
#include "xsmc.h"
#include "xsHost.h"

#if ESP32
	#include "esp_random.h"
#elif defined(__linux__)
	#include <errno.h>
	#include <sys/random.h>
#elif defined(__APPLE__)
	#include <stdlib.h>
#else
	#error "mqsec-random: no cryptographically secure random source for this platform"
#endif

/* Keep each getrandom() call at most 256 bytes: such requests are never interrupted (getrandom(2), NOTES). */
#define kMqsecRandomChunk 256

static int mqsecFill(uint8_t *data, size_t count)
{
#if ESP32
	esp_fill_random(data, count);
	return 0;
#elif defined(__linux__)
	while (count > 0) {
		size_t want = (count > kMqsecRandomChunk) ? kMqsecRandomChunk : count;
		ssize_t got = getrandom(data, want, 0);
		if (got < 0) {
			if (EINTR == errno)
				continue;
			return -1;
		}
		data += got;
		count -= (size_t)got;
	}
	return 0;
#elif defined(__APPLE__)
	arc4random_buf(data, count);
	return 0;
#endif
}

void xs_mqsec_random_fill(xsMachine *the)
{
	void *data;
	xsUnsignedValue count;

	if (xsmcArgc < 1)
		xsTypeError("buffer required");
	xsmcGetBufferWritable(xsArg(0), &data, &count);
	if (0 != mqsecFill((uint8_t *)data, (size_t)count)) {
		/* never hand back partially filled key material */
		c_memset(data, 0, count);
		xsUnknownError("random source failed");
	}
}
