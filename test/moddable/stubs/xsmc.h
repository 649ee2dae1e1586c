/*
 * Test stub of the slice of the Moddable XS host API (xs/includes/xsmc.h)
 * used by the C modules in firmware/platform/moddable/native. Written for the
 * test only: same names and argument shapes, so the C module is compiled and
 * run by the host C compiler without the SDK. Errors longjmp back to the
 * test driver like XS exceptions do.
 */
#ifndef MQSEC_TEST_XSMC_H
#define MQSEC_TEST_XSMC_H
#include <setjmp.h>
#include <stdint.h>
#include <stddef.h>

typedef int32_t xsIntegerValue;
typedef uint32_t xsUnsignedValue;

typedef struct {
	void *data;            /* NULL: not a buffer (e.g. a number) */
	xsUnsignedValue count;
} xsSlot;

typedef struct xsMachineRecord {
	xsSlot args[4];
	xsIntegerValue argc;
	xsSlot result;
	jmp_buf onError;
	const char *errorKind;
	const char *errorMessage;
} xsMachine;

static inline void stubThrow(xsMachine *the, const char *kind, const char *message)
{
	the->errorKind = kind;
	the->errorMessage = message;
	longjmp(the->onError, 1);
}

#define xsArg(_INDEX) (the->args[_INDEX])
#define xsmcArgc (the->argc)
#define xsTypeError(...) stubThrow(the, "TypeError", __VA_ARGS__)
#define xsUnknownError(...) stubThrow(the, "Error", __VA_ARGS__)

static inline void stubGetBuffer(xsMachine *the, xsSlot *slot, void **data, xsUnsignedValue *count)
{
	if (!slot->data)
		xsTypeError("expected buffer");
	*data = slot->data;
	*count = slot->count;
}
#define xsmcGetBufferWritable(_SLOT, data, count) stubGetBuffer(the, &(_SLOT), data, count)
#define xsmcGetBufferReadable(_SLOT, data, count) stubGetBuffer(the, &(_SLOT), data, count)
#define xsRangeError(...) stubThrow(the, "RangeError", __VA_ARGS__)

#endif

/* Used by mqsec-sleep.c (checked with -fsyntax-only only). */
#define xsResult (the->result)
static inline xsIntegerValue stubToInteger(xsSlot slot) { return (xsIntegerValue)slot.count; }
#define xsmcToInteger(_SLOT) stubToInteger(_SLOT)
static inline void stubSetString(xsSlot *slot, const char *s) { slot->data = (void *)s; }
#define xsmcSetString(_SLOT, _STRING) stubSetString(&(_SLOT), _STRING)
