package io.otarollout.broker;

import java.util.Base64;

/**
 * Decides a screened CONNECT against the device's stored record, as scheduler/credentials.py's
 * verify does: the secret exists only when both kid and box do; a box that does not open
 * (key id not configured, tampered, copied from another device) is the platform's fault, an
 * error there (HTTP 500), so here AUTH_UNAVAILABLE with the cause for the log. Pure.
 */
final class CredentialCheck {
    private final SecretBox box;

    CredentialCheck(SecretBox box) {
        this.box = box;
    }

    AuthDecision decide(IotdaCheck.Parsed parsed, byte[] password, StoredCredential record) {
        String deviceId = parsed.deviceId();
        String secret = null;
        if (record.kid() != null && record.box() != null) {
            try {
                // The MIME decoder skips characters outside the alphabet, as Python's b64decode does.
                secret = box.open(deviceId, record.kid(), Base64.getMimeDecoder().decode(record.box()));
            } catch (SecretBox.Unreadable e) {
                return AuthDecision.unavailable("cannot open the credentials: " + e.getMessage());
            } catch (IllegalArgumentException e) {
                return AuthDecision.unavailable("cannot open the credentials of device '" + deviceId
                        + "': the box is not base64");
            }
        }
        Reason reason = IotdaCheck.decide(parsed, password, secret, "1".equals(record.on()));
        return reason == Reason.OK ? AuthDecision.allow(deviceId) : AuthDecision.refuse(reason);
    }
}
