package io.otarollout.broker;

/**
 * A device's record in the credential store, the hash {@code <prefix><device_id>} written by
 * scheduler/credentials.py: {@code kid} (the sealing key's id), {@code box} (base64 of the
 * sealed secret), {@code on} ("1" enabled), {@code auth} (how the device proves itself:
 * absent or "secret", "certificate", or "any" for either). A field is null when absent; all
 * null: no record. A certificate-only device has no kid and no box.
 */
record StoredCredential(String kid, String box, String on, String auth) {
    static final String[] FIELDS = {"kid", "box", "on", "auth"};

    /** What a device may authenticate with. */
    enum Method {
        SECRET, CERTIFICATE, ANY;

        boolean acceptsCertificate() {
            return this != SECRET;
        }

        boolean acceptsSecret() {
            return this != CERTIFICATE;
        }
    }

    StoredCredential(String kid, String box, String on) {
        this(kid, box, on, null);
    }

    /** A value this broker does not know accepts the secret only: never more than asked. */
    Method method() {
        if ("certificate".equals(auth)) {
            return Method.CERTIFICATE;
        }
        return "any".equals(auth) ? Method.ANY : Method.SECRET;
    }

    /** Present in the store: every record the scheduler writes has {@code on}. */
    boolean exists() {
        return on != null || kid != null;
    }

    boolean enabled() {
        return "1".equals(on);
    }
}
