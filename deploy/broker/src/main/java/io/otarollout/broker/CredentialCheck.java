package io.otarollout.broker;

import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.Base64;
import java.util.Date;
import java.util.Set;
import java.util.function.LongSupplier;
import java.util.function.Supplier;

/**
 * Decides a screened CONNECT against the device's stored record, as scheduler/credentials.py's
 * verify does: the secret exists only when both kid and box do; a box that does not open
 * (key id not configured, tampered, copied from another device) is the platform's fault, an
 * error there (HTTP 500), so here AUTH_UNAVAILABLE with the cause for the log.
 *
 * <p>Certificates: a device whose record accepts them ({@code auth} "certificate" or "any")
 * and that presented a client certificate in the TLS handshake is decided by the certificate
 * alone ({@link DeviceCertificate}, against the registered device CAs); the password is not
 * looked at. A certificate-only device without one is refused (CERTIFICATE_REQUIRED). A
 * secret-only device's certificate is ignored. Disabled is checked first either way.
 * Pure apart from the two suppliers (the current CAs, the clock).
 */
final class CredentialCheck {
    private final SecretBox box;
    private final Supplier<Set<TrustAnchor>> deviceCas;
    private final LongSupplier epochMs;

    CredentialCheck(SecretBox box) {
        this(box, Set::of, System::currentTimeMillis);
    }

    CredentialCheck(SecretBox box, Supplier<Set<TrustAnchor>> deviceCas, LongSupplier epochMs) {
        this.box = box;
        this.deviceCas = deviceCas;
        this.epochMs = epochMs;
    }

    AuthDecision decide(IotdaCheck.Parsed parsed, byte[] password, StoredCredential record) {
        return decide(parsed, password, record, null);
    }

    /** {@code chain}: the client certificate chain of the TLS handshake, null without one. */
    AuthDecision decide(IotdaCheck.Parsed parsed, byte[] password, StoredCredential record,
            X509Certificate[] chain) {
        String deviceId = parsed.deviceId();
        StoredCredential.Method method = record.method();
        boolean certificate = chain != null && chain.length > 0;
        if (record.exists() && (method == StoredCredential.Method.CERTIFICATE
                || certificate && method.acceptsCertificate())) {
            if (!record.enabled()) {
                return AuthDecision.refuse(Reason.DISABLED);
            }
            return DeviceCertificate.check(chain, deviceId, deviceCas.get(), new Date(epochMs.getAsLong()));
        }
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
        Reason reason = IotdaCheck.decide(parsed, password, secret, record.enabled());
        return reason == Reason.OK ? AuthDecision.allow(deviceId) : AuthDecision.refuse(reason);
    }
}
