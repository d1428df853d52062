package io.otarollout.broker;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.hivemq.extension.sdk.api.packets.general.DisconnectedReasonCode;
import io.otarollout.broker.OfflineReason.Ending;
import java.nio.charset.StandardCharsets;
import java.util.Optional;
import org.junit.jupiter.api.Test;

class PresenceEventTest {
    private static String json(boolean held) {
        return new String(new PresenceEvent("d1", "d1_0_0_2026120512", true, 1765000000123L,
                "connect").toJson(held), StandardCharsets.UTF_8);
    }

    @Test
    void encodesTheDocumentedFieldsInOrder() {
        assertEquals("{\"device_id\":\"d1\",\"client_id\":\"d1_0_0_2026120512\",\"online\":true,"
                + "\"at_ms\":1765000000123,\"reason\":\"connect\",\"held\":false}", json(false));
    }

    @Test
    void aReleasedEventIsMarkedHeld() {
        assertEquals("{\"device_id\":\"d1\",\"client_id\":\"d1_0_0_2026120512\",\"online\":true,"
                + "\"at_ms\":1765000000123,\"reason\":\"connect\",\"held\":true}", json(true));
    }

    @Test
    void offlineReasons() {
        Optional<DisconnectedReasonCode> none = Optional.empty();
        assertEquals(Optional.of("graceful"), OfflineReason.of(Ending.CLIENT_DISCONNECT, none));
        assertEquals(Optional.of("connection_lost"), OfflineReason.of(Ending.CONNECTION_LOST, none));
        assertEquals(Optional.of("kicked"), OfflineReason.of(Ending.SERVER_DISCONNECT,
                Optional.of(DisconnectedReasonCode.ADMINISTRATIVE_ACTION)));
        assertEquals(Optional.of("keepalive_timeout"), OfflineReason.of(Ending.SERVER_DISCONNECT,
                Optional.of(DisconnectedReasonCode.KEEP_ALIVE_TIMEOUT)));
        assertEquals(Optional.of("protocol_error"), OfflineReason.of(Ending.SERVER_DISCONNECT,
                Optional.of(DisconnectedReasonCode.PROTOCOL_ERROR)));
        assertEquals(Optional.of("server_disconnect"), OfflineReason.of(Ending.SERVER_DISCONNECT, none));
        assertEquals(Optional.empty(), OfflineReason.of(Ending.SERVER_DISCONNECT,
                Optional.of(DisconnectedReasonCode.SESSION_TAKEN_OVER)));
    }
}
