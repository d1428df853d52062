package io.otarollout.broker;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.util.Optional;
import java.util.Set;

/**
 * A message of the revocation channel (scheduler/credentials.py's announce_revocation):
 * {@code {"device_id": "<id>", "action": "rotated"|"disabled"|"deleted"}}. Pure. The action
 * is a metric label, so one this broker does not know becomes "other".
 */
record Revocation(String deviceId, String action) {
    static final Set<String> ACTIONS = Set.of("rotated", "disabled", "deleted");
    private static final ObjectMapper JSON = new ObjectMapper();

    static Optional<Revocation> parse(String message) {
        JsonNode root;
        try {
            root = JSON.readTree(message);
        } catch (IOException e) {
            return Optional.empty();
        }
        if (root == null || !root.isObject()) {
            return Optional.empty();
        }
        JsonNode device = root.get("device_id");
        JsonNode action = root.get("action");
        if (device == null || !device.isTextual() || !ClientId.isUsableDeviceId(device.asText())) {
            return Optional.empty();
        }
        String known = action != null && ACTIONS.contains(action.asText()) ? action.asText() : "other";
        return Optional.of(new Revocation(device.asText(), known));
    }
}
