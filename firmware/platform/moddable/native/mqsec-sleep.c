/*
 * Deep sleep for the ESP32 family (the Moddable SDK has no deep-sleep module
 * for ESP32). The timer wake-up restarts the chip: the program runs again from
 * its first module, so the caller must have persisted everything it needs
 * (mqsec keeps its ticket and counter in NVS).
 *
 *   import { deepSleep, wakeCause } from "mqsec/sleep-native";
 *   deepSleep(60_000);          // does not return
 *   wakeCause();                // "timer" after such a sleep, "cold" after power-on/reset
 *
 * ESP-IDF "Sleep Modes": esp_sleep_enable_timer_wakeup() takes microseconds;
 * esp_deep_sleep_start() never returns.
 */
#include "xsmc.h"
#include "xsHost.h"
#include "esp_sleep.h"

void xs_mqsec_deep_sleep(xsMachine *the)
{
	xsIntegerValue ms;

	if (xsmcArgc < 1)
		xsTypeError("milliseconds required");
	ms = xsmcToInteger(xsArg(0));
	if (ms < 1)
		xsRangeError("milliseconds must be positive");
	esp_sleep_enable_timer_wakeup((uint64_t)ms * 1000u);
	esp_deep_sleep_start();
}

void xs_mqsec_wake_cause(xsMachine *the)
{
	switch (esp_sleep_get_wakeup_cause()) {
		case ESP_SLEEP_WAKEUP_TIMER:
			xsmcSetString(xsResult, "timer");
			break;
		case ESP_SLEEP_WAKEUP_UNDEFINED:
			xsmcSetString(xsResult, "cold");
			break;
		default:
			xsmcSetString(xsResult, "other");
			break;
	}
}
