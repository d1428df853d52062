package io.otarollout.broker;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;

class ClientIdTest {
    @Test
    void readsDeviceSignTypeAndHour() {
        ClientId id = ClientId.parse("dev-1_0_1_2026120512").orElseThrow();
        assertEquals(new ClientId("dev-1", 1, "2026120512"), id);
    }

    @Test
    void deviceIdMayContainUnderscores() {
        ClientId id = ClientId.parse("prod_42_node_0_0_2026120512").orElseThrow();
        assertEquals("prod_42_node", id.deviceId());
        assertEquals(0, id.signType());
    }

    @ParameterizedTest
    @ValueSource(strings = {
        "", "dev", "dev_0_1", "_0_1_2026120512", "dev_1_1_2026120512", "dev_0_2_2026120512",
        "dev_0_1_202612051", "dev_0_1_20261205123", "dev_0_1_20261205ab", "a/b_0_1_2026120512",
        "a+_0_1_2026120512", "#_0_1_2026120512", "ota-platform"})
    void rejectsOtherShapes(String clientId) {
        assertTrue(ClientId.parse(clientId).isEmpty(), clientId);
    }

    @Test
    void deviceIdsThatWouldWidenTopicFiltersAreUnusable() {
        assertTrue(ClientId.isUsableDeviceId("dev-1_a.b"));
        for (String bad : new String[] {"", "a/b", "a+", "a#", "a\u0000", "x".repeat(257)}) {
            assertFalse(ClientId.isUsableDeviceId(bad), bad);
        }
    }
}
