package io.otarollout.broker;

import java.nio.charset.StandardCharsets;
import java.security.InvalidKeyException;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.DateTimeException;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.util.HexFormat;
import java.util.regex.Pattern;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * IoTDA device authentication, a line-for-line port of ota/device_auth.py (screen, decide)
 * plus the device id check of scheduler/credentials.py's verify. Pure: no I/O, the time is
 * a parameter. tests/vectors/device_auth.json, made by the Python code, keeps the two equal
 * (DeviceAuthVectorsTest); change both together.
 *
 * <p>Client id {@code {device_id}_0_{sign_type}_{yyyyMMddHH}} read from the right (device ids
 * may hold '_'); sign type 1 checks the hour within one of the platform's; user name = device
 * id; password = lowercase hex HMAC-SHA256, key the yyyyMMddHH string, message the secret.
 */
final class IotdaCheck {
    static final long HOUR_MS = 3_600_000L;
    static final int SKEW_HOURS = 1;
    static final int MAX_CLIENT_ID_CHARS = 256;
    // ota/protocol.py's check_device_id: what the platform can register.
    private static final Pattern REGISTRABLE = Pattern.compile("[A-Za-z0-9_\\-.:@]{1,128}");

    /** A client id that has the IoTDA shape. */
    record Parsed(String deviceId, boolean timeChecked, String timestamp, long hour) {}

    /** The outcome of {@link #screen}: a refusal, or the parsed client id to look up. */
    record Screened(Reason refusal, Parsed parsed) {
        boolean refused() {
            return refusal != null;
        }
    }

    private IotdaCheck() {}

    /** The checks that need no stored record (device_auth.screen, then verify's id check). */
    static Screened screen(String clientId, String username, long nowMs) {
        Parsed parsed = parse(clientId);
        if (parsed == null) {
            return new Screened(Reason.MALFORMED_CLIENT_ID, null);
        }
        if (!username.equals(parsed.deviceId())) {
            return new Screened(Reason.USERNAME_MISMATCH, null);
        }
        if (parsed.timeChecked()
                && Math.abs(parsed.hour() - Math.floorDiv(nowMs, HOUR_MS)) > SKEW_HOURS) {
            return new Screened(Reason.CLOCK_SKEW, null);
        }
        if (!REGISTRABLE.matcher(parsed.deviceId()).matches()) {
            // No such id can be registered: answered without asking the store.
            return new Screened(Reason.UNKNOWN_DEVICE, null);
        }
        return new Screened(null, parsed);
    }

    /** The checks against the stored record ({@code secret} null: no such device). */
    static Reason decide(Parsed parsed, byte[] password, String secret, boolean enabled) {
        if (secret == null) {
            return Reason.UNKNOWN_DEVICE;
        }
        if (!enabled) {
            return Reason.DISABLED;
        }
        byte[] expected = passwordFor(secret, parsed.timestamp()).getBytes(StandardCharsets.US_ASCII);
        // Bytes equal to the ASCII hex are that ASCII string; anything else cannot match.
        return MessageDigest.isEqual(expected, password) ? Reason.OK : Reason.BAD_PASSWORD;
    }

    static String passwordFor(String secret, String timestamp) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(timestamp.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
            return HexFormat.of().formatHex(mac.doFinal(secret.getBytes(StandardCharsets.UTF_8)));
        } catch (NoSuchAlgorithmException | InvalidKeyException e) {
            throw new IllegalStateException("every JDK has HmacSHA256", e);
        }
    }

    /** device_auth.parse_client_id; null when malformed. */
    static Parsed parse(String clientId) {
        if (clientId.codePointCount(0, clientId.length()) > MAX_CLIENT_ID_CHARS) {
            return null;
        }
        // rsplit("_", 3): the last three underscores split; the device id keeps the others.
        int third = clientId.lastIndexOf('_');
        int second = third < 0 ? -1 : clientId.lastIndexOf('_', third - 1);
        int first = second < 0 ? -1 : clientId.lastIndexOf('_', second - 1);
        if (first <= 0) {
            return null; // fewer than three underscores, or an empty device id
        }
        String deviceId = clientId.substring(0, first);
        String zero = clientId.substring(first + 1, second);
        String sign = clientId.substring(second + 1, third);
        String stamp = clientId.substring(third + 1);
        if (!"0".equals(zero) || !("0".equals(sign) || "1".equals(sign))) {
            return null;
        }
        Long hour = epochHour(stamp);
        return hour == null ? null : new Parsed(deviceId, "1".equals(sign), stamp, hour);
    }

    /** Hours since the epoch of a valid UTC yyyyMMddHH, or null (device_auth.epoch_hour). */
    static Long epochHour(String stamp) {
        if (stamp.length() != 10) {
            return null;
        }
        for (int i = 0; i < stamp.length(); i++) {
            if (stamp.charAt(i) < '0' || stamp.charAt(i) > '9') {
                return null;
            }
        }
        int year = Integer.parseInt(stamp.substring(0, 4));
        if (year < 1) {
            return null; // Python's datetime starts at year 1; java.time would take year 0
        }
        try {
            LocalDateTime at = LocalDateTime.of(year, Integer.parseInt(stamp.substring(4, 6)),
                    Integer.parseInt(stamp.substring(6, 8)), Integer.parseInt(stamp.substring(8)), 0);
            return Math.floorDiv(at.toEpochSecond(ZoneOffset.UTC), 3600L);
        } catch (DateTimeException e) {
            return null;
        }
    }
}
