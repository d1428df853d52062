package io.otarollout.broker;

import java.security.cert.X509Certificate;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.function.LongSupplier;

/**
 * redis mode: the decision of scheduler/credentials.py's verify, made here: the IoTDA checks
 * ({@link IotdaCheck}), one HMGET of the device's record ({@link RedisCredentialStore}), the
 * secret opened and the HMAC compared ({@link CredentialCheck}) on Lettuce's thread, which is
 * not HiveMQ's (both take microseconds). A store error or timeout is AUTH_UNAVAILABLE.
 */
final class RedisDeviceAuth implements DeviceAuthenticator {
    private final RedisCredentialStore store;
    private final CredentialCheck check;
    private final LongSupplier epochMs;

    RedisDeviceAuth(RedisCredentialStore store, CredentialCheck check, LongSupplier epochMs) {
        this.store = store;
        this.check = check;
        this.epochMs = epochMs;
    }

    @Override
    public Optional<AuthDecision> screen(String clientId, String username) {
        IotdaCheck.Screened screened = IotdaCheck.screen(clientId, username, epochMs.getAsLong());
        return screened.refused() ? Optional.of(AuthDecision.refuse(screened.refusal())) : Optional.empty();
    }

    @Override
    public CompletableFuture<AuthDecision> authenticate(
            String clientId, String username, byte[] password, String peerHost,
            X509Certificate[] certificates) {
        // Screened again (cheap) rather than carried over: this call stands on its own.
        IotdaCheck.Screened screened = IotdaCheck.screen(clientId, username, epochMs.getAsLong());
        if (screened.refused()) {
            return CompletableFuture.completedFuture(AuthDecision.refuse(screened.refusal()));
        }
        IotdaCheck.Parsed parsed = screened.parsed();
        return store.fetch(parsed.deviceId()).handle((record, error) -> error == null
                ? check.decide(parsed, password, record, certificates)
                : AuthDecision.unavailable("credential store: " + describe(error)));
    }

    static String describe(Throwable error) {
        Throwable cause = error instanceof CompletionException && error.getCause() != null
                ? error.getCause() : error;
        String message = cause.getMessage();
        return cause.getClass().getSimpleName() + (message == null ? "" : ": " + message);
    }
}
