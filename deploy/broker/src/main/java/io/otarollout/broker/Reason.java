package io.otarollout.broker;

import com.hivemq.extension.sdk.api.packets.connect.ConnackReasonCode;
import java.util.Locale;
import java.util.Optional;

/**
 * Why a connection was accepted or refused: the control plane's reason codes plus the
 * extension's own. The code is the metrics label and the log word; the CONNACK is what the
 * client sees (HiveMQ maps it to a 3.1.1 return code for MQTT 3 clients).
 */
enum Reason {
    OK(ConnackReasonCode.SUCCESS),
    // The control plane's (POST {OTA_BROKER_AUTH_URL} answers one of these).
    MALFORMED_CLIENT_ID(ConnackReasonCode.BAD_USER_NAME_OR_PASSWORD),
    UNKNOWN_DEVICE(ConnackReasonCode.BAD_USER_NAME_OR_PASSWORD),
    BAD_PASSWORD(ConnackReasonCode.BAD_USER_NAME_OR_PASSWORD),
    DISABLED(ConnackReasonCode.NOT_AUTHORIZED),
    CLOCK_SKEW(ConnackReasonCode.BAD_USER_NAME_OR_PASSWORD),
    USERNAME_MISMATCH(ConnackReasonCode.BAD_USER_NAME_OR_PASSWORD),
    /** A deny with a reason this broker does not know (kept out of the metric's labels). */
    DENIED(ConnackReasonCode.NOT_AUTHORIZED),
    // The extension's.
    AUTH_UNAVAILABLE(ConnackReasonCode.SERVER_UNAVAILABLE),
    DEVICE_ON_PLATFORM_LISTENER(ConnackReasonCode.NOT_AUTHORIZED),
    PLATFORM_ON_DEVICE_LISTENER(ConnackReasonCode.NOT_AUTHORIZED),
    RATE_LIMITED(ConnackReasonCode.SERVER_BUSY),
    // Certificate devices (DeviceCertificate; in http mode the control plane answers these too).
    /** Registered for certificates only, and no client certificate in the handshake. */
    CERTIFICATE_REQUIRED(ConnackReasonCode.BAD_USER_NAME_OR_PASSWORD),
    /** The chain does not lead to a registered device CA (or breaks PKIX's rules). */
    CERTIFICATE_UNTRUSTED(ConnackReasonCode.BAD_USER_NAME_OR_PASSWORD),
    CERTIFICATE_EXPIRED(ConnackReasonCode.BAD_USER_NAME_OR_PASSWORD),
    /** A good certificate naming another device (neither its CN nor a SAN is the user name). */
    CERTIFICATE_MISMATCH(ConnackReasonCode.BAD_USER_NAME_OR_PASSWORD);

    final ConnackReasonCode connack;

    Reason(ConnackReasonCode connack) {
        this.connack = connack;
    }

    String code() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** The reasons the control plane may send with a deny: its own, and the certificate
     * refusals (it matches the names, and passes on the broker's verdict on the chain). */
    static Optional<Reason> ofControlPlane(String code) {
        for (Reason reason : values()) {
            boolean controlPlanes = reason.ordinal() >= MALFORMED_CLIENT_ID.ordinal()
                    && reason.ordinal() <= USERNAME_MISMATCH.ordinal()
                    || reason.ordinal() >= CERTIFICATE_REQUIRED.ordinal();
            if (controlPlanes && reason.code().equals(code)) {
                return Optional.of(reason);
            }
        }
        return Optional.empty();
    }
}
