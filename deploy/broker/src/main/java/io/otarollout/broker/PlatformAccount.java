package io.otarollout.broker;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;

/** The platform services' account, checked locally (no control-plane call). */
final class PlatformAccount {
    private final String user;
    private final byte[] password;

    PlatformAccount(String user, String password) {
        this.user = user;
        this.password = password.getBytes(StandardCharsets.UTF_8);
    }

    boolean isPlatformUser(String username) {
        return user.equals(username);
    }

    /** Constant time in the password's content, so timing reveals nothing of it. */
    boolean passwordMatches(byte[] candidate) {
        return MessageDigest.isEqual(password, candidate);
    }
}
