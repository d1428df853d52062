package io.otarollout.broker;

import java.util.Base64;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The keys that open device secrets, parsed exactly as scheduler/secretbox.py's
 * {@code CredentialKeys.parse}: {@code kid:base64key[,kid:base64key...]}, 1-16 ASCII letters
 * or digits per key id, 32-byte (AES-256) keys; the first seals (the scheduler's business),
 * all open. {@link #DEV} is the public development key the scheduler uses when nothing is set.
 */
record CredentialKeys(String current, Map<String, byte[]> keys) {
    static final String DEV = "dev0:6B9do11xnNJnuYi9LJKHuS5PIRgh1jGd9+8yzBEBn8c=";
    static final String NAME = "OTA_CREDENTIAL_KEYS";
    private static final int KEY_BYTES = 32;
    private static final int MAX_KID_CHARS = 16;

    /** The spec's keys, or an {@link IllegalArgumentException} naming what is wrong. */
    static CredentialKeys parse(String spec) {
        Map<String, byte[]> keys = new LinkedHashMap<>();
        for (String raw : spec.split(",", -1)) {
            String item = raw.strip();
            int colon = item.indexOf(':');
            String kid = colon < 0 ? item : item.substring(0, colon);
            String encoded = colon < 0 ? "" : item.substring(colon + 1);
            if (colon < 0 || kid.isEmpty() || encoded.isEmpty()) {
                throw new IllegalArgumentException(NAME + " entry '" + clip(kid) + "' is not kid:base64key");
            }
            if (!isKid(kid)) {
                throw new IllegalArgumentException(NAME + " key id '" + clip(kid) + "' must be 1-"
                        + MAX_KID_CHARS + " letters or digits");
            }
            if (keys.containsKey(kid)) {
                throw new IllegalArgumentException(NAME + " lists key id '" + kid + "' twice");
            }
            byte[] key;
            try {
                // Python's b64decode(validate=True) also insists on the padding.
                if (encoded.length() % 4 != 0) {
                    throw new IllegalArgumentException("padding");
                }
                key = Base64.getDecoder().decode(encoded);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(NAME + " key '" + kid + "' is not valid base64");
            }
            if (key.length != KEY_BYTES) {
                throw new IllegalArgumentException(NAME + " key '" + kid + "' is " + key.length
                        + " bytes; AES-256 needs " + KEY_BYTES
                        + " (make one with: head -c 32 /dev/urandom | base64)");
            }
            keys.put(kid, key);
        }
        return new CredentialKeys(keys.keySet().iterator().next(), Collections.unmodifiableMap(keys));
    }

    private static boolean isKid(String kid) {
        if (kid.length() > MAX_KID_CHARS) {
            return false;
        }
        for (int i = 0; i < kid.length(); i++) {
            char ch = kid.charAt(i);
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))) {
                return false;
            }
        }
        return true;
    }

    private static String clip(String text) {
        return text.length() > 20 ? text.substring(0, 20) : text;
    }

    /** Never prints the keys. */
    @Override
    public String toString() {
        return "CredentialKeys[current=" + current + ", kids=" + keys.keySet() + "]";
    }
}
