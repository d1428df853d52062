package io.otarollout.broker;

import java.nio.charset.StandardCharsets;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.Date;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.function.LongSupplier;
import java.util.function.Supplier;

/**
 * http mode: the control plane decides ({@link AuthClient}, EMQX's contract). Only a client
 * id without the IoTDA shape is refused here, so it never costs a call. A client certificate
 * goes along as {@link CertificateFacts}, its chain checked here against the registered
 * device CAs (the only party holding the chain); who the certificate names, and whether the
 * device may use one, the control plane decides.
 */
final class HttpDeviceAuth implements DeviceAuthenticator {
    private final AuthClient client;
    private final Supplier<Set<TrustAnchor>> deviceCas;
    private final LongSupplier epochMs;

    HttpDeviceAuth(AuthClient client, Supplier<Set<TrustAnchor>> deviceCas, LongSupplier epochMs) {
        this.client = client;
        this.deviceCas = deviceCas;
        this.epochMs = epochMs;
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
        // The chain check is CPU only (no I/O, well under a millisecond), like the handshake's.
        CertificateFacts certificate = certificates == null || certificates.length == 0 ? null
                : CertificateFacts.of(certificates, deviceCas.get(), new Date(epochMs.getAsLong()));
        return client.authenticate(clientId, username, new String(password, StandardCharsets.UTF_8),
                peerHost, certificate);
    }
}
