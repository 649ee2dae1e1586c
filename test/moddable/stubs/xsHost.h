/* Test stub of xsHost.h: the C library aliases the native modules use. */
#ifndef MQSEC_TEST_XSHOST_H
#define MQSEC_TEST_XSHOST_H
#include <string.h>
#define c_memset memset
#define c_memcpy memcpy
#endif
