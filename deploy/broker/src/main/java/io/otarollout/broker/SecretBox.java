package io.otarollout.broker;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.util.HashMap;
import java.util.Map;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * Opens a device secret sealed by scheduler/secretbox.py: AES-256-GCM, the box is
 * {@code nonce (12) || ciphertext || tag (16)}, the associated data
 * {@code "ota-device-secret-v1|" + kid + "|" + device_id} binds it to its device and key id
 * (a box copied onto another device, or relabelled with another key id, does not open).
 * Opening only: the broker never seals. Thread-safe (a Cipher per call; they are not).
 */
final class SecretBox {
    private static final int NONCE_BYTES = 12;
    private static final int TAG_BITS = 128;
    private static final String AAD_PREFIX = "ota-device-secret-v1|";

    /** The box cannot be opened: unknown key id, or it does not verify. Never the secret. */
    static final class Unreadable extends Exception {
        private static final long serialVersionUID = 1L;

        Unreadable(String message) {
            super(message);
        }
    }

    private final Map<String, SecretKeySpec> keys = new HashMap<>();

    SecretBox(CredentialKeys credentialKeys) {
        credentialKeys.keys().forEach((kid, key) -> keys.put(kid, new SecretKeySpec(key, "AES")));
    }

    String open(String deviceId, String kid, byte[] box) throws Unreadable {
        SecretKeySpec key = keys.get(kid);
        if (key == null) {
            throw new Unreadable("device '" + deviceId + "': key id '" + kid + "' is not configured");
        }
        byte[] plain;
        try {
            if (box.length < NONCE_BYTES + TAG_BITS / 8) {
                throw new GeneralSecurityException("too short");
            }
            Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
            cipher.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(TAG_BITS, box, 0, NONCE_BYTES));
            cipher.updateAAD((AAD_PREFIX + kid + "|" + deviceId).getBytes(StandardCharsets.UTF_8));
            plain = cipher.doFinal(box, NONCE_BYTES, box.length - NONCE_BYTES);
        } catch (GeneralSecurityException e) {
            throw new Unreadable("device '" + deviceId + "': the sealed secret does not verify under key '"
                    + kid + "'");
        }
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(plain)).toString();
        } catch (CharacterCodingException e) {
            throw new Unreadable("device '" + deviceId + "': the secret is not UTF-8");
        }
    }
}
