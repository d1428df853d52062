package io.otarollout.broker;

import java.nio.charset.StandardCharsets;
import java.security.cert.X509Certificate;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;

/**
 * http mode: the control plane decides ({@link AuthClient}, EMQX's contract). Only a client
 * id without the IoTDA shape is refused here, so it never costs a call.
 */
final class HttpDeviceAuth implements DeviceAuthenticator {
    private final AuthClient client;

    HttpDeviceAuth(AuthClient client) {
        this.client = client;
    }

    @Override
    public Optional<AuthDecision> screen(String clientId, String username) {
        return ClientId.parse(clientId).isPresent() ? Optional.empty()
                : Optional.of(new AuthDecision(Reason.MALFORMED_CLIENT_ID, "", "checked by the broker"));
    }

    @Override
    public CompletableFuture<AuthDecision> authenticate(
            String clientId, String username, byte[] password, String peerHost,
            X509Certificate[] certificates) {
        // EMQX's contract carries no certificate: certificate devices need redis mode.
        return client.authenticate(clientId, username, new String(password, StandardCharsets.UTF_8), peerHost);
    }
}
