package io.otarollout.broker;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class PresenceFiltersTest {
    @ParameterizedTest
    @ValueSource(strings = {"$ota/presence/+", "$ota/presence/#", "$ota/#", "$ota/+/+", "$ota/+/#",
        "$ota/presence/+/#", "$share/ota-gateway/$ota/presence/+", "$share/g/$ota/#"})
    void filtersForEveryDevicesPresenceCount(String filter) {
        assertTrue(PresenceFilters.coversAllPresence(filter), filter);
    }

    @ParameterizedTest
    @ValueSource(strings = {"$ota/presence/dev-1", "#", "+/presence/+", "+/+/+", "$ota/presence",
        "$ota/presence/+/x", "$ota/kick/+", "$oc/devices/+/sys/events/up", "$share/g", "$share/g/#",
        "$share/g/$ota/presence/dev-1", "ota/presence/+", ""})
    void otherFiltersDoNot(String filter) {
        assertFalse(PresenceFilters.coversAllPresence(filter), filter);
    }
}
