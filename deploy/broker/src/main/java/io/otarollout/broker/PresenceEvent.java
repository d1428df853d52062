package io.otarollout.broker;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A device came online or went offline, as published on {@code $ota/presence/{device_id}}:
 * {@code {"device_id", "client_id", "online", "at_ms", "reason"}}; {@code at_ms} is the
 * broker's epoch milliseconds (the platform orders by its own log, this is information).
 */
record PresenceEvent(String deviceId, String clientId, boolean online, long atMs, String reason) {
    private static final ObjectMapper JSON = new ObjectMapper();

    byte[] toJson() {
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("device_id", deviceId);
        body.put("client_id", clientId);
        body.put("online", online);
        body.put("at_ms", atMs);
        body.put("reason", reason);
        try {
            return JSON.writeValueAsBytes(body);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("strings, a boolean and a long always serialise", e);
        }
    }
}
