/* Test stub of ESP-IDF esp_sleep.h (signatures only). */
#ifndef MQSEC_TEST_ESP_SLEEP_H
#define MQSEC_TEST_ESP_SLEEP_H
#include <stdint.h>
typedef enum { ESP_SLEEP_WAKEUP_UNDEFINED, ESP_SLEEP_WAKEUP_ALL, ESP_SLEEP_WAKEUP_EXT0, ESP_SLEEP_WAKEUP_EXT1, ESP_SLEEP_WAKEUP_TIMER } esp_sleep_source_t;
typedef int esp_err_t;
esp_err_t esp_sleep_enable_timer_wakeup(uint64_t time_in_us);
void esp_deep_sleep_start(void) __attribute__((noreturn));
esp_sleep_source_t esp_sleep_get_wakeup_cause(void);
#endif
