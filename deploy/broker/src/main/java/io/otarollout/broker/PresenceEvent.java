package io.otarollout.broker;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A device came online or went offline, as published on {@code $ota/presence/{device_id}}:
 * {@code {"device_id", "client_id", "online", "at_ms", "reason", "held"}}; {@code at_ms} is
 * the broker's epoch milliseconds (the platform orders by its own log, this is information).
 * {@code held} is true on an event released after a hold ({@link PresenceHold}): it went only
 * to the platform clients subscribed during the release, so a gateway replica forwards it
 * whatever slot its device is in.
 */
record PresenceEvent(String deviceId, String clientId, boolean online, long atMs, String reason) {
    private static final ObjectMapper JSON = new ObjectMapper();

    byte[] toJson(boolean held) {
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("device_id", deviceId);
        body.put("client_id", clientId);
        body.put("online", online);
        body.put("at_ms", atMs);
        body.put("reason", reason);
        body.put("held", held);
        try {
            return JSON.writeValueAsBytes(body);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("strings, booleans and a long always serialise", e);
        }
    }
}
