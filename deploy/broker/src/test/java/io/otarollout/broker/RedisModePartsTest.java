package io.otarollout.broker;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Optional;
import org.junit.jupiter.api.Test;

/** The pure parts of redis mode: the keys setting, revocation messages, the IoTDA rules. */
class RedisModePartsTest {
    private static final String K1 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    @Test
    void credentialKeysParseLikeTheScheduler() {
        CredentialKeys keys = CredentialKeys.parse("k1:" + K1 + ", k0:" + CredentialKeys.DEV.split(":")[1]);
        assertEquals("k1", keys.current());
        assertEquals(2, keys.keys().size());
        assertFalse(keys.toString().contains(K1));
        assertEquals("dev0", CredentialKeys.parse(CredentialKeys.DEV).current());
    }

    @Test
    void badCredentialKeysAreNamed() {
        String[][] bad = {
            {"k1", "is not kid:base64key"},
            {"k1:" + K1 + ",", "entry '' is not kid:base64key"},
            {"k-1:" + K1, "must be 1-16 letters or digits"},
            {"k1:" + K1 + ",k1:" + K1, "twice"},
            {"k1:not base64!", "is not valid base64"},
            {"k1:" + K1.substring(0, 43), "is not valid base64"},
            {"k1:AAEC", "is 3 bytes; AES-256 needs 32"},
        };
        for (String[] c : bad) {
            String message = assertThrows(IllegalArgumentException.class, () -> CredentialKeys.parse(c[0])).getMessage();
            assertTrue(message.startsWith("OTA_CREDENTIAL_KEYS") && message.contains(c[1]), c[0] + ": " + message);
        }
    }

    @Test
    void revocationMessages() {
        assertEquals(Optional.of(new Revocation("dev-1", "disabled")),
                Revocation.parse("{\"device_id\": \"dev-1\", \"action\": \"disabled\"}"));
        assertEquals("other", Revocation.parse("{\"device_id\": \"dev-1\", \"action\": \"x\"}").get().action());
        assertTrue(Revocation.parse("{\"device_id\": \"dev/+\"}").isEmpty());
        assertTrue(Revocation.parse("[1]").isEmpty());
        assertTrue(Revocation.parse("not json").isEmpty());
    }

    @Test
    void passwordIsTheSdksHmac() {
        // ota/device_auth.py password_for("s3cret-Device-Key_01", "2026112712")
        assertEquals("286612f264bb0d3b982d54fb6507b8faca7e9423b6cb00ef33fdae792071bc21",
                IotdaCheck.passwordFor("s3cret-Device-Key_01", "2026112712"));
    }

    @Test
    void epochHourIsUtc() {
        assertEquals(0L, IotdaCheck.epochHour("1970010100"));
        assertEquals(-1L, IotdaCheck.epochHour("1969123123"));
        assertEquals(null, IotdaCheck.epochHour("0000010100"));
        assertEquals(null, IotdaCheck.epochHour("2026022912"));
    }
}
