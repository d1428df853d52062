package io.otarollout.broker;

/**
 * The outcome of authenticating one CONNECT: {@code deviceId} is set when allowed, and
 * {@code detail} says for the log why the control plane could not answer (never a secret).
 */
record AuthDecision(Reason reason, String deviceId, String detail) {
    static AuthDecision allow(String deviceId) {
        return new AuthDecision(Reason.OK, deviceId, "");
    }

    static AuthDecision refuse(Reason reason) {
        return new AuthDecision(reason, "", "");
    }

    static AuthDecision unavailable(String detail) {
        return new AuthDecision(Reason.AUTH_UNAVAILABLE, "", detail);
    }

    boolean allowed() {
        return reason == Reason.OK;
    }
}
