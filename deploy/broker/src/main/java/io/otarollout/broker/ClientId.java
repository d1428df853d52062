package io.otarollout.broker;

import java.util.Optional;

/**
 * An IoTDA device client id, {@code {device_id}_0_{sign_type}_{yyyyMMddHH}} (PROTOCOL.md).
 * The device id may itself contain underscores, so the id is read from the right.
 * Only the shape is checked here; whether the hour is recent is the control plane's call.
 */
record ClientId(String deviceId, int signType, String hour) {

    static Optional<ClientId> parse(String clientId) {
        String[] parts = clientId.split("_", -1);
        int n = parts.length;
        if (n < 4 || !"0".equals(parts[n - 3])) {
            return Optional.empty();
        }
        String sign = parts[n - 2];
        String hour = parts[n - 1];
        if (!("0".equals(sign) || "1".equals(sign)) || !isHour(hour)) {
            return Optional.empty();
        }
        String deviceId = String.join("_", java.util.Arrays.copyOfRange(parts, 0, n - 3));
        if (!isUsableDeviceId(deviceId)) {
            return Optional.empty();
        }
        return Optional.of(new ClientId(deviceId, sign.charAt(0) - '0', hour));
    }

    /**
     * A device id goes into topic filters of the device's permissions, so one holding an
     * MQTT wildcard or level separator would widen them to other devices' topics.
     */
    static boolean isUsableDeviceId(String deviceId) {
        if (deviceId.isEmpty() || deviceId.length() > 256) {
            return false;
        }
        for (int i = 0; i < deviceId.length(); i++) {
            char ch = deviceId.charAt(i);
            if (ch == '/' || ch == '+' || ch == '#' || Character.isISOControl(ch)) {
                return false;
            }
        }
        return true;
    }

    private static boolean isHour(String text) {
        if (text.length() != 10) {
            return false;
        }
        for (int i = 0; i < text.length(); i++) {
            if (text.charAt(i) < '0' || text.charAt(i) > '9') {
                return false;
            }
        }
        return true;
    }
}
