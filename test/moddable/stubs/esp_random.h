/* Test stub of ESP-IDF esp_random.h (signature only): lets the ESP32 branch be compiled on the host. */
#ifndef MQSEC_TEST_ESP_RANDOM_H
#define MQSEC_TEST_ESP_RANDOM_H
#include <stddef.h>
#include <stdint.h>
uint32_t esp_random(void);
void esp_fill_random(void *buf, size_t len);
#endif
