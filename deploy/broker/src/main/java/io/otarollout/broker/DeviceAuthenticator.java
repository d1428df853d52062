package io.otarollout.broker;

import java.security.cert.X509Certificate;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;

/**
 * Who decides a device's CONNECT: the control plane over HTTP ({@link HttpDeviceAuth}) or the
 * credential store read directly ({@link RedisDeviceAuth}). {@link #screen} runs first, on
 * HiveMQ's thread, without I/O: its refusals are neither rate limited nor sent anywhere.
 */
interface DeviceAuthenticator {
    /** A refusal decided from the CONNECT alone, or empty to go on. */
    Optional<AuthDecision> screen(String clientId, String username);

    /** Never blocks; the future never completes exceptionally (failures: AUTH_UNAVAILABLE).
     * {@code certificates}: the client certificate chain of the TLS handshake (leaf first),
     * null when the device sent none or came in over plain TCP. */
    CompletableFuture<AuthDecision> authenticate(
            String clientId, String username, byte[] password, String peerHost,
            X509Certificate[] certificates);
}
