/* Test stub of xsHost.h: the C library aliases mqsec-random.c uses. */
#ifndef MQSEC_TEST_XSHOST_H
#define MQSEC_TEST_XSHOST_H
#include <string.h>
#define c_memset memset
#endif
